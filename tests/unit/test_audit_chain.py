"""Audit chain, signed exports and offline verification against a real SQLite store.

Every tampering listed in issue 7 is applied to a real export folder and must make `tacet audit
verify` exit 1 naming the first bad record; the untouched export verifies.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import json
import shutil
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text

from compliance.audit import (
    GENESIS,
    Activity,
    AuditEvent,
    AuditLog,
    AuditWriteError,
    Ed25519Signer,
    FolderDestination,
    FolderSource,
    VerificationError,
    canonical,
    export,
    fingerprint,
    record_hash,
    verify_export,
)
from compliance.audit.chain import seal
from compliance.audit.export import signed_statement
from compliance.audit.signer import LOCAL_KEY_FILE, verify_signature
from compliance.zdr import REDACTED
from gateway import _cli_audit
from gateway.store import async_upgrade_to_head, create_engine, database_url
from gateway.store.audit_models import AuditBase

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CANARY = "ZDR CANARY document text 7f3a"


class Clock:
    """Deterministic append times, one second apart."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def classify_event(tenant: str, i: int) -> AuditEvent:
    return AuditEvent(
        operation="classify",
        status=200,
        request_id=f"req{i:04d}",
        tenant_id=tenant,
        key_id="key1",
        activity=Activity.CREATE,
        model_id="tiny-llada",
        taxonomy="subjects@3",
        mode="diffusion",
        documents=2,
        bytes=120,
        tokens=40,
        duration_ms=12.5,
        source_ip="192.0.2.10",
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _log(data_dir: Path, clock: Clock | None = None) -> AuditLog:
    engine = create_engine(database_url(data_dir, {}))
    await async_upgrade_to_head(engine)
    return AuditLog(engine, now=clock or Clock())


async def _populate(data_dir: Path, clock: Clock, n: int = 10) -> None:
    log = await _log(data_dir, clock)
    try:
        for i in range(n):
            await log.append(classify_event("t1", i))
            await log.append(classify_event("t2", i))
        await log.append(AuditEvent(operation="config.start", status=200, setting="unsafe_tls12"))
    finally:
        await log.engine.dispose()


async def _export(data_dir: Path, out: Path, start: datetime, end: datetime, **kw: Any) -> None:
    log = await _log(data_dir)
    try:
        signer = Ed25519Signer.load_or_create(data_dir)
        await export(log, signer, FolderDestination(out), start, end, records_per_file=4, **kw)
    finally:
        await log.engine.dispose()


@pytest.fixture
def exported(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(data dir, export folder): 10 records each for t1 and t2, one system record."""
    data = tmp_path / "data"
    run(_populate(data, Clock()))
    out = tmp_path / "export"
    run(_export(data, out, T0, T0 + timedelta(hours=1)))
    yield data, out


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    _cli_audit.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *argv])
    return int(args.func(args))


def _pin(data: Path) -> str:
    return fingerprint(Ed25519Signer.load(data / LOCAL_KEY_FILE).public_key_pem())


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _fails(out: Path, data: Path, capsys: pytest.CaptureFixture[str], expected: str) -> str:
    """verify (library and CLI) fails and names `expected` as the first bad record."""
    with pytest.raises(VerificationError) as caught:
        verify_export(FolderSource(out), pinned=_pin(data))
    assert expected in caught.value.first_bad, caught.value
    capsys.readouterr()
    assert _cli("verify", str(out), "--fingerprint", _pin(data)) == 1
    printed = capsys.readouterr().out
    assert f"first bad record: {caught.value.first_bad}" in printed
    return caught.value.reason


# --- records ---------------------------------------------------------------------------------


def test_record_is_ocsf_api_activity_and_metadata_only(tmp_path: Path) -> None:
    async def body() -> dict[str, Any]:
        log = await _log(tmp_path)
        try:
            return await log.append(classify_event("t1", 1))
        finally:
            await log.engine.dispose()

    record = run(body())
    assert (record["class_uid"], record["category_uid"], record["type_uid"]) == (6003, 6, 600301)
    assert record["time"] == int((T0 + timedelta(seconds=1)).timestamp() * 1000)
    assert record["metadata"]["tenant_uid"] == "t1"
    assert record["actor"]["user"]["uid"] == "key1"
    assert record["api"]["operation"] == "classify"
    assert record["http_response"]["code"] == 200
    assert record["src_endpoint"]["ip"] == "192.0.2.10"
    assert record["unmapped"]["taxonomy"] == "subjects@3"
    assert record["duration"] == 12 and isinstance(record["duration"], int)  # OCSF long, ms
    assert record["chain"]["seq"] == 1 and record["chain"]["prev"] == GENESIS
    assert record["chain"]["hash"] == record_hash(record)


def test_no_canary_reaches_a_record_the_database_or_an_export(tmp_path: Path) -> None:
    """Free text in any field is replaced by REDACTED; no field can carry a document."""
    sneaky = AuditEvent(
        operation=CANARY,
        status=200,
        request_id=CANARY,
        tenant_id="t1",
        key_id=CANARY,
        model_id=CANARY,
        taxonomy=CANARY,
        mode=CANARY,
        source_ip=CANARY,
        setting=CANARY,
    )

    async def body() -> dict[str, Any]:
        log = await _log(tmp_path / "data")
        try:
            record = await log.append(sneaky)
            signer = Ed25519Signer.load_or_create(tmp_path / "data")
            dest = FolderDestination(tmp_path / "out")
            await export(log, signer, dest, T0, T0 + timedelta(hours=1), tenant="t1")
            return record
        finally:
            await log.engine.dispose()

    record = run(body())
    assert record["api"]["operation"] == REDACTED
    assert AuditEvent(operation="x", status=200, tenant_id="../../etc").chain_id == "invalid"
    assert record["src_endpoint"]["ip"] == REDACTED
    for path in [*(tmp_path / "data").rglob("*"), *(tmp_path / "out").rglob("*")]:
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path
    assert CANARY not in json.dumps(record)


def test_append_is_committed_before_it_returns_and_chains(tmp_path: Path) -> None:
    async def body() -> None:
        log = await _log(tmp_path)
        first = await log.append(classify_event("t1", 1))
        second = await log.append(classify_event("t1", 2))
        other = await log.append(classify_event("t2", 1))
        await log.engine.dispose()
        assert second["chain"] == {**second["chain"], "seq": 2, "prev": first["chain"]["hash"]}
        assert other["chain"]["seq"] == 1  # one chain per tenant
        reader = await _log(tmp_path)  # a fresh engine: only committed rows are visible
        try:
            rows = await reader.records("t1", T0, T0 + timedelta(hours=1))
        finally:
            await reader.engine.dispose()
        assert [r["chain"]["hash"] for r in rows] == [
            first["chain"]["hash"],
            second["chain"]["hash"],
        ]

    run(body())


def test_append_fails_closed_when_the_store_cannot_write(tmp_path: Path) -> None:
    async def body() -> None:
        log = await _log(tmp_path)
        try:
            async with log.engine.begin() as connection:
                await connection.execute(text("DROP TABLE audit_records"))
            with pytest.raises(AuditWriteError):
                await log.append(classify_event("t1", 1))
        finally:
            await log.engine.dispose()

    run(body())


def test_records_are_append_only_and_the_models_match_the_migration(tmp_path: Path) -> None:
    async def body() -> None:
        log = await _log(tmp_path)
        try:
            await log.append(classify_event("t1", 1))
            with pytest.raises(Exception, match="append-only"):
                async with log.engine.begin() as connection:
                    await connection.execute(text("UPDATE audit_records SET seq = 5"))
            async with log.engine.connect() as connection:
                columns = await connection.run_sync(
                    lambda c: {
                        t: {x["name"] for x in inspect(c).get_columns(t)}
                        for t in inspect(c).get_table_names()
                    }
                )
        finally:
            await log.engine.dispose()
        for table in AuditBase.metadata.sorted_tables:
            assert columns[table.name] == {c.name for c in table.columns}, table.name

    run(body())


def test_concurrent_writers_on_one_database_never_fork_a_chain(tmp_path: Path) -> None:
    async def body() -> None:
        logs = [await _log(tmp_path), await _log(tmp_path)]  # two engines: two "gateways"
        try:
            await asyncio.gather(*(logs[i % 2].append(classify_event("t1", i)) for i in range(30)))
            rows = await logs[0].records("t1", T0, T0 + timedelta(days=1))
        finally:
            for log in logs:
                await log.engine.dispose()
        assert [r["chain"]["seq"] for r in rows] == list(range(1, 31))
        for before, after in itertools.pairwise(rows):
            assert after["chain"]["prev"] == before["chain"]["hash"]

    run(body())


def test_checkpoints_are_signed_heads(tmp_path: Path) -> None:
    async def body() -> None:
        log = await _log(tmp_path)
        try:
            signer = Ed25519Signer.load_or_create(tmp_path)
            assert await log.checkpoint("t1", signer) is None
            last = (await log.append(classify_event("t1", 1)))["chain"]["hash"]
            point = await log.checkpoint("t1", signer)
        finally:
            await log.engine.dispose()
        assert point is not None and (point.seq, point.hash) == (1, last)
        assert point.verify(signer.public_key_pem())
        other = Ed25519Signer.load_or_create(tmp_path / "other")
        assert not point.verify(other.public_key_pem())

    run(body())


def test_local_key_is_private_and_stable(tmp_path: Path) -> None:
    signer = Ed25519Signer.load_or_create(tmp_path)
    mode = stat.S_IMODE((tmp_path / LOCAL_KEY_FILE).stat().st_mode)
    assert mode == 0o600
    again = Ed25519Signer.load_or_create(tmp_path)
    assert again.public_key_pem() == signer.public_key_pem()
    assert verify_signature(signer.public_key_pem(), b"x", again.sign(b"x"))
    assert not verify_signature(signer.public_key_pem(), b"y", again.sign(b"x"))


# --- exports ---------------------------------------------------------------------------------


def test_untouched_export_verifies(
    exported: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = exported
    report = verify_export(FolderSource(out), pinned=_pin(data))
    assert report.records == 21
    assert report.chains == {"t1": (1, 10), "t2": (1, 10), "system": (1, 1)}
    assert report.files == 7  # 3 + 3 + 1 at 4 records per file
    manifest = (out / "manifest.json").read_bytes()
    assert report.manifest_sha256 == hashlib.sha256(manifest).hexdigest()
    assert _cli("verify", str(out), "--fingerprint", _pin(data)) == 0
    assert "result: verified" in capsys.readouterr().out
    assert _cli("verify", str(out), "--data-dir", str(data)) == 0  # dev: the local key
    garbage = out.parent / "not-a-key.pem"
    garbage.write_text("not a key")
    assert _cli("verify", str(out), "--public-key", str(garbage)) == 2
    assert _cli("verify", str(out), "--data-dir", str(out.parent / "nowhere")) == 1  # unpinned


def test_manifests_chain_to_their_predecessor(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run(_populate(data, Clock(), n=2))
    run(_export(data, tmp_path / "a", T0, T0 + timedelta(hours=1)))
    run(_export(data, tmp_path / "b", T0, T0 + timedelta(hours=1), tenant="t1"))
    first = (tmp_path / "a" / "manifest.json").read_bytes()
    second = json.loads((tmp_path / "b" / "manifest.json").read_bytes())
    assert json.loads(first)["previous_manifest_sha256"] is None
    assert second["previous_manifest_sha256"] == hashlib.sha256(first).hexdigest()
    assert [f["chain"] for f in second["files"]] == ["t1"]


def test_changed_field_names_the_record(
    exported: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = exported
    path = out / "records" / "t1-00001.jsonl"
    lines = _lines(path)
    record = json.loads(lines[1])
    record["http_response"]["code"] = 500
    lines[1] = canonical(record) + b"\n"
    path.write_bytes(b"".join(lines))
    reason = _fails(out, data, capsys, "chain t1 seq 2 (records/t1-00001.jsonl line 2)")
    assert "hash" in reason


def test_deleted_record_names_the_gap(
    exported: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = exported
    path = out / "records" / "t1-00001.jsonl"
    lines = _lines(path)
    del lines[2]
    path.write_bytes(b"".join(lines))
    reason = _fails(out, data, capsys, "chain t1 seq 4 (records/t1-00001.jsonl line 3)")
    assert "3 was due" in reason


def test_inserted_record_is_named(
    exported: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = exported
    path = out / "records" / "t1-00002.jsonl"
    lines = _lines(path)
    lines.insert(1, lines[0])  # a copy of a genuine record
    path.write_bytes(b"".join(lines))
    _fails(out, data, capsys, "chain t1 seq 5 (records/t1-00002.jsonl line 2)")


def test_inserted_resealed_record_is_caught_at_the_next_one(
    exported: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A forger who recomputes the hash still cannot join the next genuine record."""
    data, out = exported
    path = out / "records" / "t1-00001.jsonl"
    lines = _lines(path)
    before = json.loads(lines[1])
    body = {k: v for k, v in before.items() if k != "chain"}
    forged = seal(body, 3, before["chain"]["hash"])
    lines.insert(2, canonical(forged) + b"\n")
    path.write_bytes(b"".join(lines))
    _fails(out, data, capsys, "chain t1 seq 3 (records/t1-00001.jsonl line 4)")


def test_record_appended_after_the_tail_is_named(
    exported: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A forged record that continues the chain past the manifest's last one."""
    data, out = exported
    path = out / "records" / "t1-00003.jsonl"  # seq 9 and 10
    last = json.loads(_lines(path)[-1])
    body = {k: v for k, v in last.items() if k != "chain"}
    path.write_bytes(path.read_bytes() + canonical(seal(body, 11, last["chain"]["hash"])) + b"\n")
    reason = _fails(out, data, capsys, "chain t1 seq 11 (records/t1-00003.jsonl line 3)")
    assert "beyond" in reason


def test_swapped_records_are_named(
    exported: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = exported
    path = out / "records" / "t2-00001.jsonl"
    lines = _lines(path)
    lines[1], lines[2] = lines[2], lines[1]
    path.write_bytes(b"".join(lines))
    _fails(out, data, capsys, "chain t2 seq 3 (records/t2-00001.jsonl line 2)")


def test_truncated_tail_names_the_missing_record(
    exported: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = exported
    path = out / "records" / "t1-00003.jsonl"  # seq 9 and 10
    path.write_bytes(b"".join(_lines(path)[:1]))
    reason = _fails(out, data, capsys, "chain t1 seq 10 (records/t1-00003.jsonl line 2)")
    assert "ends before" in reason


def test_deleted_last_file_names_its_first_record(
    exported: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = exported
    (out / "records" / "t1-00003.jsonl").unlink()
    _fails(out, data, capsys, "chain t1 seq 9 (records/t1-00003.jsonl line 1)")


def test_file_from_another_export_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    run(_populate(data, Clock(), n=10))
    # Records are 1 s apart (t1, t2 interleaved): the second range starts at t1 seq 6.
    run(_export(data, tmp_path / "a", T0, T0 + timedelta(hours=1), tenant="t1"))
    run(
        _export(
            data, tmp_path / "b", T0 + timedelta(seconds=11), T0 + timedelta(hours=1), tenant="t1"
        )
    )
    victim = tmp_path / "a" / "records" / "t1-00001.jsonl"
    shutil.copyfile(tmp_path / "b" / "records" / "t1-00001.jsonl", victim)
    _fails(tmp_path / "a", data, capsys, "records/t1-00001.jsonl line 1")


def test_edited_manifest_fails_on_the_manifest(
    exported: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = exported
    path = out / "manifest.json"
    manifest = json.loads(path.read_bytes())
    manifest["files"][2]["records"] = 1
    manifest["records"] -= 1
    path.write_bytes(canonical(manifest))
    reason = _fails(out, data, capsys, "manifest.json")
    assert "signature" in reason


def test_resigned_with_another_key_fails(
    exported: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data, out = exported
    intruder = Ed25519Signer.load_or_create(tmp_path / "intruder")
    path = out / "manifest.json"
    manifest = json.loads(path.read_bytes())
    manifest["files"] = manifest["files"][:-1]  # drop the system chain's file, then re-sign
    manifest["records"] -= 1
    body = canonical(manifest)
    path.write_bytes(body)
    (out / "manifest.sig").write_bytes(base64.b64encode(intruder.sign(signed_statement(body))))
    # With the original public key left in place the signature fails...
    assert "signature" in _fails(out, data, capsys, "manifest.json")
    # ...and with the intruder's key put in its place the pinned fingerprint fails.
    (out / "signer.pub.pem").write_bytes(intruder.public_key_pem())
    assert "another key" in _fails(out, data, capsys, "manifest.json")
    public = tmp_path / "trusted.pem"
    public.write_bytes(Ed25519Signer.load(data / LOCAL_KEY_FILE).public_key_pem())
    assert _cli("verify", str(out), "--public-key", str(public)) == 1


def test_cli_export_writes_a_verifiable_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    run(_populate(data, Clock(), n=3))
    out = tmp_path / "cli-export"
    code = _cli(
        "export",
        "--from",
        "2026-03-01T00:00:00Z",
        "--to",
        "2026-03-02T00:00:00Z",
        "--tenant",
        "t2",
        "--out",
        str(out),
        "--data-dir",
        str(data),
    )
    assert code == 0
    assert "exported 3 records in 1 files" in capsys.readouterr().out
    assert verify_export(FolderSource(out), pinned=_pin(data)).chains == {"t2": (1, 3)}
    # A folder is never overwritten.
    again = _cli(
        "export",
        "--from",
        "2026-03-01T00:00:00Z",
        "--to",
        "2026-03-02T00:00:00Z",
        "--out",
        str(out),
        "--data-dir",
        str(data),
    )
    assert again == 1
    bad_tenant = _cli(
        "export",
        "--from",
        "2026-03-01T00:00:00Z",
        "--to",
        "2026-03-02T00:00:00Z",
        "--tenant",
        "../up",
        "--out",
        str(tmp_path / "x"),
        "--data-dir",
        str(data),
    )
    assert bad_tenant == 1
