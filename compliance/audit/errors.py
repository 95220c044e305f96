"""The audit package's exception tree; messages name seqs, files and fingerprints, never content.

AuditError
 +-- AuditWriteError     the record was not made durable: the caller must fail the request closed
 +-- SignerError         a key could not be loaded, created or used
 +-- ExportError         an export could not be written (destination, range, key)
 +-- VerificationError   an export does not verify; `first_bad` names the first bad record
"""

from __future__ import annotations

__all__ = ["AuditError", "AuditWriteError", "ExportError", "SignerError", "VerificationError"]


class AuditError(Exception):
    """Base of every audit error."""


class AuditWriteError(AuditError):
    pass


class SignerError(AuditError):
    pass


class ExportError(AuditError):
    pass


class VerificationError(AuditError):
    """`first_bad` is e.g. `tenant t1 seq 7 (records-t1-0001.jsonl line 3)` or `manifest.json`."""

    def __init__(self, reason: str, first_bad: str) -> None:
        super().__init__(f"{reason}; first bad record: {first_bad}")
        self.reason = reason
        self.first_bad = first_bad
