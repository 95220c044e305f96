"""Compliance audit trail: metadata-only OCSF 6003 records, hash-chained, signed exports.

`AuditLog.append(AuditEvent(...))` makes a record durable (committed) before it returns, or
raises AuditWriteError, and the request must then fail closed. `export` writes JSONL + a signed
manifest to a folder or S3 (SSE-KMS, Object Lock); `verify_export` checks one offline;
`compliance.audit.report.render_export` verifies one and writes the compliance officer's page.
"""

from __future__ import annotations

from compliance.audit.chain import GENESIS, canonical, check_run, record_hash
from compliance.audit.errors import (
    AuditError,
    AuditWriteError,
    ExportError,
    SignerError,
    VerificationError,
)
from compliance.audit.export import ExportResult, export
from compliance.audit.log import AuditLog, Checkpoint
from compliance.audit.record import Activity, AuditEvent
from compliance.audit.signer import Ed25519Signer, KmsSigner, Signer, fingerprint
from compliance.audit.storage import (
    FolderDestination,
    FolderSource,
    S3Destination,
    S3Location,
    S3Source,
)
from compliance.audit.verify import Report, verify_export

__all__ = [
    "GENESIS",
    "Activity",
    "AuditError",
    "AuditEvent",
    "AuditLog",
    "AuditWriteError",
    "Checkpoint",
    "Ed25519Signer",
    "ExportError",
    "ExportResult",
    "FolderDestination",
    "FolderSource",
    "KmsSigner",
    "Report",
    "S3Destination",
    "S3Location",
    "S3Source",
    "Signer",
    "SignerError",
    "VerificationError",
    "canonical",
    "check_run",
    "export",
    "fingerprint",
    "record_hash",
    "verify_export",
]
