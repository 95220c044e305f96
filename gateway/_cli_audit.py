"""`tacet audit export|verify`: signed audit exports to a folder or S3, and their verification.

export  reads the audit chain from the control-plane database (the data dir's SQLite, or
        TACET_DATABASE_URL), signs with the data dir's Ed25519 key or `--kms-key-id`, and writes
        to `--out DIR` (new or empty) or `--s3 s3://bucket/prefix` (SSE-KMS, Object Lock).
verify  checks an export offline (S3 objects are read back) against `--public-key` or
        `--fingerprint` (taken out of band); exits 1 naming the first bad record.
report  verifies the same way, then writes one self-contained HTML page for a compliance
        officer (`--out report.html`); exits 1, with a failing verdict on the page, when the
        export does not verify.
S3 and KMS use the usual AWS environment (credentials, region, AWS_ENDPOINT_URL).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from compliance.audit import (
    AuditError,
    AuditLog,
    Ed25519Signer,
    FolderDestination,
    FolderSource,
    KmsSigner,
    S3Destination,
    S3Location,
    S3Source,
    Signer,
    VerificationError,
    export,
    verify_export,
)
from compliance.audit.signer import LOCAL_KEY_FILE
from compliance.audit.storage import Destination, Source, s3_client

__all__ = ["register", "run_export", "run_report", "run_verify"]


def _utc(text: str) -> datetime:
    """ISO 8601; a time without a zone is refused rather than guessed."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give a UTC offset, e.g. 2026-01-01T00:00:00Z")
    return moment.astimezone(UTC)


def _data_dir(args: argparse.Namespace) -> Path:
    return args.data_dir or Path(os.environ.get("TACET_DATA_DIR") or ".tacet")


def _signer(args: argparse.Namespace) -> Signer:
    if args.kms_key_id:
        return KmsSigner(args.kms_key_id, s3_client("kms"))
    return Ed25519Signer.load_or_create(_data_dir(args))


def _destination(args: argparse.Namespace) -> Destination:
    if args.out is not None:
        return FolderDestination(args.out)
    if not args.sse_kms_key_id:
        raise AuditError("--s3 needs --sse-kms-key-id (objects are encrypted with SSE-KMS)")
    return S3Destination(
        s3_client(),
        S3Location.parse(args.s3),
        kms_key_id=args.sse_kms_key_id,
        retention=timedelta(days=args.retention_days),
        lock_mode=args.lock_mode,
    )


async def _export(args: argparse.Namespace) -> int:
    from gateway.store import async_upgrade_to_head, create_engine, database_url

    engine = create_engine(database_url(_data_dir(args)))
    try:
        await async_upgrade_to_head(engine)
        result = await export(
            AuditLog(engine),
            _signer(args),
            _destination(args),
            args.start,
            args.end,
            tenant=args.tenant,
            records_per_file=args.records_per_file,
        )
    finally:
        await engine.dispose()
    print(f"exported {result.records} records in {result.files} files")
    print(f"manifest sha256: {result.manifest_sha256}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Entry point of `tacet audit export`."""
    try:
        return asyncio.run(_export(args))
    except AuditError as exc:
        print(f"audit export failed: {exc}", file=sys.stderr)
        return 1


def _source(target: str) -> Source:
    if target.startswith("s3://"):
        return S3Source(s3_client(), S3Location.parse(target))
    return FolderSource(Path(target))


def _trusted_key(args: argparse.Namespace) -> bytes | None:
    if args.public_key is not None:
        return Path(args.public_key).read_bytes()
    local = _data_dir(args) / LOCAL_KEY_FILE
    if args.fingerprint is None and local.exists():  # dev: the local signer's own key
        return Ed25519Signer.load(local).public_key_pem()
    return None


def run_verify(args: argparse.Namespace) -> int:
    """Entry point of `tacet audit verify`: 0 verified, 1 any mismatch, 2 no usable input."""
    try:
        report = verify_export(
            _source(args.target), public_pem=_trusted_key(args), pinned=args.fingerprint
        )
    except VerificationError as exc:
        print(f"FAILED: {exc.reason}")
        print(f"first bad record: {exc.first_bad}")
        return 1
    except AuditError as exc:
        print(f"audit verify failed: {exc}", file=sys.stderr)
        return 2
    for line in report.lines():
        print(line)
    print("result: verified")
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Entry point of `tacet audit report`: 0 verified, 1 written with a failing verdict, 2 no
    usable input (nothing written)."""
    from compliance.audit.report import render_export

    partial = args.out.with_name(f".{args.out.name}.partial")  # renamed into place when whole
    try:
        source = _source(args.target)
        trusted = _trusted_key(args)
        with partial.open("w", encoding="utf-8") as out:
            verdict = render_export(
                source, out, public_pem=trusted, pinned=args.fingerprint, target=args.target
            )
        partial.replace(args.out)
    except (AuditError, OSError) as exc:
        print(f"audit report failed: {exc}", file=sys.stderr)
        return 2
    finally:
        partial.unlink(missing_ok=True)
    if not verdict.verified:
        print(f"FAILED: {verdict.reason}")
        print(f"first bad record: {verdict.first_bad}")
        print(f"report (with the failing verdict): {args.out}")
        return 1
    print(f"result: verified; report: {args.out}")
    return 0


def _export_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("export", help="write a signed export for a time range")
    parser.add_argument("--from", dest="start", type=_utc, required=True, help="UTC, ISO 8601")
    parser.add_argument("--to", dest="end", type=_utc, required=True, help="UTC, exclusive")
    parser.add_argument("--tenant", help="one tenant's chain (default: every chain)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="a new or empty folder")
    where.add_argument("--s3", help="s3://bucket/prefix (bucket with Object Lock enabled)")
    parser.add_argument("--sse-kms-key-id", help="KMS key for SSE-KMS on every S3 object")
    parser.add_argument("--retention-days", type=int, default=365, help="Object Lock retention")
    parser.add_argument("--lock-mode", default="COMPLIANCE", choices=["COMPLIANCE", "GOVERNANCE"])
    parser.add_argument("--kms-key-id", help="sign with this KMS key (default: local Ed25519)")
    parser.add_argument("--records-per-file", type=int, default=10_000)
    parser.add_argument("--data-dir", type=Path, help="state directory (default .tacet)")
    parser.set_defaults(func=run_export)


def _verify_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("verify", help="verify an export offline; exit 1 on any mismatch")
    parser.add_argument("target", help="export folder or s3://bucket/prefix")
    parser.add_argument("--public-key", type=Path, help="trusted signer public key (PEM)")
    parser.add_argument("--fingerprint", help="trusted key fingerprint, sha256:<hex>")
    parser.add_argument("--data-dir", type=Path, help="dev: trust this data dir's local key")
    parser.set_defaults(func=run_verify)


def _report_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "report", help="verify an export, then write one self-contained HTML report"
    )
    parser.add_argument("target", help="export folder or s3://bucket/prefix")
    parser.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    parser.add_argument("--public-key", type=Path, help="trusted signer public key (PEM)")
    parser.add_argument("--fingerprint", help="trusted key fingerprint, sha256:<hex>")
    parser.add_argument("--data-dir", type=Path, help="dev: trust this data dir's local key")
    parser.set_defaults(func=run_report)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `tacet audit export` and `tacet audit verify` to the top-level parser."""
    audit = subparsers.add_parser(
        "audit",
        help="signed audit trail exports",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    _export_parser(audit_sub)
    _verify_parser(audit_sub)
    _report_parser(audit_sub)
