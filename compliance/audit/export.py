"""Exports: JSONL files per chain, a `manifest.json` that pins them, and its signature.

Modelled on CloudTrail's digest files (research/infra.md, section 6): the manifest lists each
file's SHA-256 over its exact bytes, its record count and chain span (first/last seq and hash,
the hash before the first record), the time range, and the previous manifest's hash; the
signature covers the manifest's SHA-256 (`signed_statement`). The signer's public key travels
with the export, but a verifier trusts it only against a key or fingerprint taken out of band.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from compliance.audit.chain import canonical
from compliance.audit.errors import ExportError
from compliance.audit.log import AuditLog
from compliance.audit.record import is_chain_id
from compliance.audit.signer import Signer, fingerprint
from compliance.audit.storage import Destination

__all__ = [
    "FORMAT",
    "MANIFEST",
    "PUBLIC_KEY",
    "SIGNATURE",
    "ExportResult",
    "export",
    "signed_statement",
]

FORMAT = "tacet-audit-export/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"  # base64 of the signature over signed_statement(manifest.json)
PUBLIC_KEY = "signer.pub.pem"


def signed_statement(manifest: bytes) -> bytes:
    """What is signed: a short, typed statement of the manifest's SHA-256 (as CloudTrail signs
    a string holding the digest's hash), so every signer, KMS included, signs a few bytes."""
    return b"tacet-audit-manifest/1\nsha256:" + hashlib.sha256(manifest).hexdigest().encode()


@dataclass(frozen=True)
class ExportResult:
    manifest_sha256: str
    files: int
    records: int


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _file_entry(name: str, chain: str, data: bytes, part: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "chain": chain,
        "sha256": hashlib.sha256(data).hexdigest(),
        "records": len(part),
        "first_seq": part[0]["chain"]["seq"],
        "last_seq": part[-1]["chain"]["seq"],
        "prev": part[0]["chain"]["prev"],
        "first_hash": part[0]["chain"]["hash"],
        "last_hash": part[-1]["chain"]["hash"],
        "time_first": part[0]["time"],
        "time_last": part[-1]["time"],
    }


async def export(
    log: AuditLog,
    signer: Signer,
    destination: Destination,
    start: datetime,
    end: datetime,
    *,
    tenant: str | None = None,
    records_per_file: int = 10_000,
) -> ExportResult:
    """Write one tenant's chain (or every chain) for [start, end) and a signed manifest."""
    if start.tzinfo is None or end.tzinfo is None or end <= start:
        raise ExportError("an export range is two UTC-aware times with from < to")
    if records_per_file < 1:
        raise ExportError("records_per_file must be at least 1")
    if tenant is not None and not is_chain_id(tenant):
        raise ExportError("a tenant id is letters, digits, '-' or '_' (at most 64)")
    chains = [tenant] if tenant else await log.chains()
    files: list[dict[str, Any]] = []
    for chain in chains:
        records = await log.records(chain, start, end)
        for index in range(0, len(records), records_per_file):
            part = records[index : index + records_per_file]
            name = f"records/{chain}-{index // records_per_file + 1:05d}.jsonl"
            data = b"".join(canonical(r) + b"\n" for r in part)
            destination.put(name, data)
            files.append(_file_entry(name, chain, data, part))
    public = signer.public_key_pem()
    manifest = {
        "format": FORMAT,
        "created": _iso(datetime.now(UTC)),
        "range": {"from": _iso(start), "to": _iso(end)},
        "tenant": tenant,
        "files": files,
        "records": sum(f["records"] for f in files),
        "first_hash": files[0]["first_hash"] if files else None,
        "last_hash": files[-1]["last_hash"] if files else None,
        "previous_manifest_sha256": await log.last_manifest_hash(),
        "signer": {"algorithm": signer.algorithm, "fingerprint": fingerprint(public)},
    }
    body = canonical(manifest)
    signature = signer.sign(signed_statement(body))
    destination.put(MANIFEST, body)
    destination.put(SIGNATURE, base64.b64encode(signature) + b"\n")
    destination.put(PUBLIC_KEY, public)
    digest = hashlib.sha256(body).hexdigest()
    await log.record_export(digest)
    return ExportResult(digest, len(files), manifest["records"])
