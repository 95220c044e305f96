"""Audit exports to S3 over HTTP against a local S3/KMS server (moto's server mode).

The bucket has Object Lock on; every object must come back with SSE-KMS and a COMPLIANCE
retention date, `verify` must read the export back from S3, and signing through KMS (an
ECC_NIST_P256 key) must verify against the key's public half.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import moto.server as moto_server
import pytest

from compliance.audit import (
    AuditEvent,
    AuditLog,
    KmsSigner,
    S3Destination,
    S3Location,
    S3Source,
    VerificationError,
    canonical,
    export,
    fingerprint,
    verify_export,
)
from compliance.audit.signer import verify_signature
from gateway import _cli_audit
from gateway.store import async_upgrade_to_head, create_engine, database_url
from tests.fixtures.report_page import read_page
from tests.integration._postgres import reset_schema

pytestmark = pytest.mark.integration

BUCKET = "tacet-audit"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Clients for the local server; the environment points the CLI's boto3 at it too."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    kms = boto3.client("kms", endpoint_url=endpoint, region_name=REGION)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if BUCKET not in existing:
        s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    sse_key = kms.create_key(KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    sign_key = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"][
        "KeyId"
    ]
    return {"s3": s3, "kms": kms, "sse_key": sse_key, "sign_key": sign_key}


T0 = datetime(2026, 3, 1, tzinfo=UTC)


async def _populate_and_export(data: Path, signer: Any, destination: Any) -> None:
    engine = create_engine(database_url(data, {}))
    await async_upgrade_to_head(engine)
    moments = iter(T0 + timedelta(seconds=i) for i in range(1, 100))
    log = AuditLog(engine, now=lambda: next(moments))
    try:
        for i in range(5):
            await log.append(
                AuditEvent(operation="classify", status=200, tenant_id="t1", request_id=f"r{i}")
            )
        await export(log, signer, destination, T0, T0 + timedelta(hours=1), records_per_file=2)
    finally:
        await engine.dispose()


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    _cli_audit.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *argv])
    return int(args.func(args))


def test_kms_signer_signs_verifiably(aws: dict[str, Any]) -> None:
    signer = KmsSigner(aws["sign_key"], aws["kms"])
    public = signer.public_key_pem()
    signature = signer.sign(b"manifest bytes")
    assert verify_signature(public, b"manifest bytes", signature)
    assert not verify_signature(public, b"other bytes", signature)


def test_s3_export_is_encrypted_locked_and_verifies_from_s3(
    aws: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s3 = aws["s3"]
    location = S3Location.parse(f"s3://{BUCKET}/exports/run1")
    destination = S3Destination(
        s3, location, kms_key_id=aws["sse_key"], retention=timedelta(days=30)
    )
    signer = KmsSigner(aws["sign_key"], aws["kms"])
    asyncio.run(_populate_and_export(tmp_path / "data", signer, destination))

    keys = sorted(
        o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="exports/run1/")["Contents"]
    )
    assert keys == [
        "exports/run1/manifest.json",
        "exports/run1/manifest.sig",
        "exports/run1/records/t1-00001.jsonl",
        "exports/run1/records/t1-00002.jsonl",
        "exports/run1/records/t1-00003.jsonl",
        "exports/run1/signer.pub.pem",
    ]
    soon = datetime.now(UTC) + timedelta(days=29)
    for key in keys:
        head = s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
        assert head["ServerSideEncryption"] == "aws:kms"
        assert aws["sse_key"] in head["SSEKMSKeyId"]
        assert head.get("ChecksumSHA256")
        # Object Lock as S3 reports it on HEAD (moto 5.2 answers GetObjectRetention with a 500).
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] > soon

    pinned = fingerprint(signer.public_key_pem())
    report = verify_export(S3Source(s3, location), pinned=pinned)
    assert report.records == 5 and report.chains == {"t1": (1, 5)}
    assert {f["lock_mode"] for f in report.storage.values()} == {"COMPLIANCE"}
    assert _cli("verify", f"s3://{BUCKET}/exports/run1", "--fingerprint", pinned) == 0
    assert "result: verified" in capsys.readouterr().out
    # The compliance report reads the same objects back from S3 and shows how they are stored.
    page_file = tmp_path / "report.html"
    assert _cli("report", f"s3://{BUCKET}/exports/run1", "--out", str(page_file),
                "--fingerprint", pinned) == 0
    page = read_page(page_file.read_text(encoding="utf-8"))
    assert page.texts["total-records"] == "5" and "Verified" in page.texts["verdict"]
    assert "ecdsa-p256-sha256" in page_file.read_text(encoding="utf-8")
    stored = page.tables["storage"][1:]
    assert len(stored) == 3 and all(row[1:3] == ["aws:kms", "COMPLIANCE"] for row in stored)

    # Same bytes, but a new version without SSE-KMS or Object Lock: not acceptable storage.
    pem_key = location.key("signer.pub.pem")
    s3.put_object(
        Bucket=BUCKET, Key=pem_key, Body=s3.get_object(Bucket=BUCKET, Key=pem_key)["Body"].read()
    )
    with pytest.raises(VerificationError, match="Object Lock") as caught:
        verify_export(S3Source(s3, location), pinned=pinned)
    assert caught.value.first_bad == "manifest.json"


def test_tampered_s3_export_fails_naming_the_record(
    aws: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A GOVERNANCE-mode copy (which an attacker with bypass rights could overwrite) is caught."""
    s3 = aws["s3"]
    location = S3Location.parse(f"s3://{BUCKET}/exports/run2")
    destination = S3Destination(
        s3,
        location,
        kms_key_id=aws["sse_key"],
        retention=timedelta(days=1),
        lock_mode="GOVERNANCE",
    )
    signer = KmsSigner(aws["sign_key"], aws["kms"])
    asyncio.run(_populate_and_export(tmp_path / "data", signer, destination))
    key = location.key("records/t1-00002.jsonl")
    lines = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().splitlines()
    record = json.loads(lines[0])
    record["http_response"]["code"] = 404
    lines[0] = canonical(record)
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"\n".join(lines) + b"\n")  # a new version

    pinned = fingerprint(signer.public_key_pem())
    with pytest.raises(VerificationError) as caught:
        verify_export(S3Source(s3, location), pinned=pinned)
    assert caught.value.first_bad == "chain t1 seq 3 (records/t1-00002.jsonl line 1)"
    assert _cli("verify", f"s3://{BUCKET}/exports/run2", "--fingerprint", pinned) == 1
    assert "first bad record: chain t1 seq 3" in capsys.readouterr().out


def test_cli_export_to_s3_needs_an_sse_key(
    aws: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _cli(
        "export",
        "--from",
        "2026-03-01T00:00:00Z",
        "--to",
        "2026-03-02T00:00:00Z",
        "--s3",
        f"s3://{BUCKET}/exports/cli",
        "--data-dir",
        str(tmp_path),
    )
    assert code == 1
    assert "--sse-kms-key-id" in capsys.readouterr().err
    code = _cli(
        "export",
        "--from",
        "2026-03-01T00:00:00Z",
        "--to",
        "2026-03-02T00:00:00Z",
        "--s3",
        f"s3://{BUCKET}/exports/cli",
        "--data-dir",
        str(tmp_path),
        "--sse-kms-key-id",
        aws["sse_key"],
        "--kms-key-id",
        aws["sign_key"],
    )
    assert code == 0
    pinned = fingerprint(KmsSigner(aws["sign_key"], aws["kms"]).public_key_pem())
    assert _cli("verify", f"s3://{BUCKET}/exports/cli", "--fingerprint", pinned) == 0


# --- PostgreSQL: several gateways share one audit chain --------------------------------------


def test_postgres_writers_never_fork_a_chain(postgres_url: Any) -> None:
    """Two engines (two gateways) append concurrently; the advisory lock keeps one chain."""

    async def body() -> None:
        await reset_schema(postgres_url)
        engines = [create_engine(postgres_url), create_engine(postgres_url)]
        await async_upgrade_to_head(engines[0])
        logs = [AuditLog(e) for e in engines]
        try:
            await asyncio.gather(
                *(
                    logs[i % 2].append(AuditEvent(operation="classify", status=200, tenant_id="t1"))
                    for i in range(30)
                )
            )
            rows = await logs[0].records("t1", T0, datetime.now(UTC) + timedelta(minutes=1))
        finally:
            for engine in engines:
                await engine.dispose()
        assert [r["chain"]["seq"] for r in rows] == list(range(1, 31))
        for before, after in itertools.pairwise(rows):
            assert after["chain"]["prev"] == before["chain"]["hash"]

    asyncio.run(body())
