"""Offline verification of an export: pinned key, manifest signature, files, and every chain.

The first failure is raised as VerificationError naming the first bad record (or manifest.json
when the manifest itself is what fails). Checks, in order: the export's key matches the pinned
key or fingerprint; the signature covers manifest.json's SHA-256; then, file by file, each
record's hash, seq and prev continue the chain from the span the manifest pins, the file ends
where the manifest says, and its bytes hash to the manifest's SHA-256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from compliance.audit.chain import Link, check_run, link_of
from compliance.audit.errors import AuditError, VerificationError
from compliance.audit.export import FORMAT, MANIFEST, PUBLIC_KEY, SIGNATURE, signed_statement
from compliance.audit.signer import fingerprint, verify_signature
from compliance.audit.storage import Source

__all__ = ["FileObserver", "Report", "verify_export"]

FileObserver = Callable[[dict[str, Any], list[Any]], None]  # (manifest file entry, its records)


@dataclass
class Report:
    records: int = 0
    files: int = 0
    range: tuple[str, str] = ("", "")
    key: str = ""
    chains: dict[str, tuple[int, int]] = field(default_factory=dict)  # chain -> (first, last)
    previous_manifest: str | None = None
    manifest_sha256: str = ""
    storage: dict[str, dict[str, Any]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [
            f"records: {self.records} in {self.files} files",
            f"range: {self.range[0]} .. {self.range[1]}",
            f"key: {self.key}",
            f"manifest sha256: {self.manifest_sha256}",
            f"previous manifest: {self.previous_manifest or 'none'}",
            "gaps: none",
        ]
        out += [f"chain {c}: seq {a}..{b}" for c, (a, b) in sorted(self.chains.items())]
        out += [f"object {n}: {facts}" for n, facts in sorted(self.storage.items())]
        return out


def _read(source: Source, name: str, first_bad: str) -> bytes:
    try:
        return source.get(name)
    except FileNotFoundError:
        raise VerificationError(f"{name} is missing", first_bad) from None


def _pinned_key(source: Source, public_pem: bytes | None, pinned: str | None) -> bytes:
    exported = _read(source, PUBLIC_KEY, MANIFEST)
    try:
        exported_print = fingerprint(exported)
    except ValueError:
        raise VerificationError("the exported public key is unreadable", MANIFEST) from None
    try:
        trusted_print = fingerprint(public_pem) if public_pem is not None else None
    except ValueError:
        raise AuditError("the trusted public key is not a PEM public key") from None
    if trusted_print is not None and trusted_print != exported_print:
        raise VerificationError("the export was signed by another key", MANIFEST)
    if pinned is not None and pinned.lower() != exported_print:
        raise VerificationError("the export was signed by another key", MANIFEST)
    if public_pem is None and pinned is None:
        raise VerificationError("no trusted key or fingerprint was given", MANIFEST)
    return exported


def _manifest(source: Source, key: bytes) -> dict[str, Any]:
    body = _read(source, MANIFEST, MANIFEST)
    try:
        signature = base64.b64decode(_read(source, SIGNATURE, MANIFEST).strip(), validate=True)
    except binascii.Error:
        raise VerificationError("manifest.sig is not base64", MANIFEST) from None
    if not verify_signature(key, signed_statement(body), signature):
        raise VerificationError("the manifest signature does not verify", MANIFEST)
    manifest = json.loads(body)
    if manifest.get("format") != FORMAT:
        raise VerificationError("unknown export format", MANIFEST)
    return manifest


def _name(entry: dict[str, Any], seq: object, line: int) -> str:
    return f"chain {entry['chain']} seq {seq} ({entry['name']} line {line})"


def _parse(data: bytes, entry: dict[str, Any]) -> list[Any]:
    records = []
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            records.append(json.loads(line))
        except ValueError:
            raise VerificationError("a line is not JSON", _name(entry, "?", number)) from None
    return records


def _check_file(entry: dict[str, Any], data: bytes) -> list[Any]:
    records = _parse(data, entry)
    anchor = Link(entry["first_seq"] - 1, "", entry["prev"])
    broken = check_run(records, anchor)
    if broken is not None:
        raise VerificationError(broken.reason, _name(entry, broken.seq, broken.index + 1))
    last = link_of(records[-1]) if records else None
    if last is not None and last.seq > entry["last_seq"]:
        extra = entry["last_seq"] - entry["first_seq"] + 1  # index of the first extra record
        raise VerificationError(
            "records beyond the manifest's last record",
            _name(entry, entry["last_seq"] + 1, extra + 1),
        )
    if last is None or last.seq != entry["last_seq"] or last.hash != entry["last_hash"]:
        missing = (last.seq + 1) if last else entry["first_seq"]
        raise VerificationError(
            "the file ends before the manifest's last record",
            _name(entry, missing, len(records) + 1),
        )
    if len(records) != entry["records"]:
        raise VerificationError(
            "record count differs from the manifest", _name(entry, entry["first_seq"], 1)
        )
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise VerificationError(
            "file bytes differ from the manifest's SHA-256", _name(entry, entry["first_seq"], 1)
        )
    return records


def _stored_safely(source: Source, name: str, first_bad: str) -> dict[str, Any]:
    """S3 objects must be SSE-KMS encrypted and under Object Lock; a folder reports {}."""
    facts = source.describe(name)
    if facts and (facts.get("sse") != "aws:kms" or not facts.get("lock_mode")):
        raise VerificationError(f"{name} is not SSE-KMS encrypted under Object Lock", first_bad)
    return facts


def verify_export(
    source: Source,
    *,
    public_pem: bytes | None = None,
    pinned: str | None = None,
    on_file: FileObserver | None = None,
) -> Report:
    """A report of a verified export; VerificationError at the first thing that is wrong.

    `on_file(entry, records)` sees each file's parsed records once that file has verified (one
    file in memory at a time), so a reader such as the HTML report needs no second pass."""
    key = _pinned_key(source, public_pem, pinned)
    manifest = _manifest(source, key)
    for name in (MANIFEST, SIGNATURE, PUBLIC_KEY):
        _stored_safely(source, name, MANIFEST)
    report = Report(
        files=len(manifest["files"]),
        range=(manifest["range"]["from"], manifest["range"]["to"]),
        key=manifest["signer"]["fingerprint"],
        previous_manifest=manifest.get("previous_manifest_sha256"),
        manifest_sha256=hashlib.sha256(source.get(MANIFEST)).hexdigest(),
    )
    heads: dict[str, tuple[int, str]] = {}
    for entry in manifest["files"]:
        chain = entry["chain"]
        if chain in heads and heads[chain] != (entry["first_seq"] - 1, entry["prev"]):
            raise VerificationError("the manifest's parts do not join", _name(entry, "?", 1))
        data = _read(source, entry["name"], _name(entry, entry["first_seq"], 1))
        records = _check_file(entry, data)
        heads[chain] = (entry["last_seq"], entry["last_hash"])
        first = report.chains.get(chain, (entry["first_seq"], 0))[0]
        report.chains[chain] = (first, entry["last_seq"])
        report.records += entry["records"]
        facts = _stored_safely(source, entry["name"], _name(entry, entry["first_seq"], 1))
        if facts:
            report.storage[entry["name"]] = facts
        if on_file is not None:
            on_file(entry, records)
        del data, records  # one file in memory at a time, not two while the next is read
    if report.records != manifest["records"]:
        raise VerificationError("the manifest's total does not add up", MANIFEST)
    return report
