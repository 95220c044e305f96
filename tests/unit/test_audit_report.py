"""`tacet audit report` on real exports (real SQLite trail, real signed folder export).

The page's numbers are checked against the export's own JSONL files, a tampered or untrusted
export renders a failing verdict naming the same first bad record as `verify_export`, values are
read back through the allowlist and escaped, and buckets merge without losing a record.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from compliance.audit import (
    Activity,
    AuditEvent,
    Ed25519Signer,
    FolderSource,
    VerificationError,
    fingerprint,
    verify_export,
)
from compliance.audit._report_tally import MAX_BUCKETS, Tally, status_class
from compliance.audit.chain import canonical, seal
from compliance.audit.record import FIELD_NOTES, ocsf_body, record_fields
from compliance.audit.report import zdr_fields
from compliance.zdr import ALLOWED_FIELDS, REDACTED
from gateway import _cli_audit
from gateway.store import create_engine, database_url
from gateway.store.audit_models import AuditRecordRow
from tests.fixtures.audit_trail import Trail, write_export, write_trail
from tests.fixtures.report_page import read_page

T0 = datetime(2026, 7, 1, tzinfo=UTC)
CLASSES = ["2xx", "4xx", "429", "5xx", "503", "other"]


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    _cli_audit.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *argv])
    return int(args.func(args))


def _pin(data: Path) -> str:
    return fingerprint(Ed25519Signer.load_or_create(data).public_key_pem())


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Trail]:
    root = tmp_path_factory.mktemp("report")
    trail = asyncio.run(write_trail(root / "data", 3000, T0, timedelta(days=3)))
    asyncio.run(write_export(root / "data", root / "export", T0, T0 + timedelta(days=4), 700))
    return root / "data", root / "export", trail


def _export_records(export: Path) -> list[tuple[str, dict[str, Any]]]:
    manifest = json.loads((export / "manifest.json").read_text())
    out = []
    for entry in manifest["files"]:
        for line in (export / entry["name"]).read_text().splitlines():
            out.append((entry["chain"], json.loads(line)))
    return out


def _numbers(row: list[str]) -> list[int]:
    return [int(cell.replace(",", "")) for cell in row]


def test_page_counts_are_the_exports_own(exported: tuple[Path, Path, Trail], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    data, export, trail = exported
    out = tmp_path / "report.html"
    assert _cli("report", str(export), "--out", str(out), "--fingerprint", _pin(data)) == 0
    assert "result: verified" in capsys.readouterr().out
    page = read_page(out.read_text(encoding="utf-8"))
    records = _export_records(export)
    assert "Verified" in page.texts["verdict"] and "NOT" not in page.texts["verdict"]
    assert page.texts["total-records"] == f"{len(records):,}" == f"{trail.records:,}"
    # per tenant (chain) and status class, from the JSONL itself
    expected: dict[str, Counter[str]] = {}
    for chain, record in records:
        expected.setdefault(chain, Counter())[status_class(record["http_response"]["code"])] += 1
    header, *rows = page.tables["tenants"]
    assert header[2:8] == CLASSES
    shown = {row[0]: _numbers(row[1:8]) for row in rows}
    assert shown == {
        chain: [sum(c.values()), *(c[k] for k in CLASSES)] for chain, c in expected.items()
    }
    totals = page.tables["status-totals"][1][1:]
    assert _numbers(totals) == [sum(c[k] for c in expected.values()) for k in CLASSES]
    operations = Counter(r["api"]["operation"] for _, r in records)
    assert {row[0]: _numbers(row[1:2])[0] for row in page.tables["operations"][1:]} == operations
    # unsafe flags and starts with their gateway, admin acts with their key ids
    unsafe = page.tables["unsafe"][1:]
    assert len(unsafe) == trail.unsafe and all(r[1:3] == ["tls.unsafe_tls12", "gw-1:8443"]
                                               for r in unsafe)
    assert len(page.tables["starts"][1:]) == trail.starts
    acts = page.tables["admin-acts"][1:]
    assert sorted(r[3] for r in acts if r[2] == "keys.rotate") == sorted(trail.rotations)
    chains = {r[0]: r[1:] for r in page.tables["chains"][1:]}
    assert chains["t-alpha"] == ["1", str(expected["t-alpha"].total()),
                                 f"{expected['t-alpha'].total():,}"]
    assert [r[0] for r in page.tables["zdr-fields"][1:]] == [n for n, _ in zdr_fields()]
    assert page.texts["zdr-unexpected"] == "0"


def test_tampered_export_fails_naming_the_first_bad_record(
    exported: tuple[Path, Path, Trail], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, export, _ = exported
    copy = tmp_path / "export"
    import shutil

    shutil.copytree(export, copy)
    target = sorted((copy / "records").glob("t-beta-*.jsonl"))[1]
    lines = target.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[4])
    record["http_response"]["code"] = 200 if record["http_response"]["code"] != 200 else 201
    lines[4] = canonical(record) + b"\n"
    target.write_bytes(b"".join(lines))
    with pytest.raises(VerificationError) as caught:
        verify_export(FolderSource(copy), pinned=_pin(data))
    out = tmp_path / "report.html"
    capsys.readouterr()
    assert _cli("report", str(copy), "--out", str(out), "--fingerprint", _pin(data)) == 1
    assert f"first bad record: {caught.value.first_bad}" in capsys.readouterr().out
    html = out.read_text(encoding="utf-8")
    page = read_page(html)
    assert "NOT VERIFIED" in page.texts["verdict"]
    assert caught.value.first_bad in page.texts["verdict"]
    assert "t-beta-00002.jsonl line 5" in caught.value.first_bad
    assert caught.value.reason in page.texts["verdict"]
    assert "tenants" not in page.tables and "admin-acts" not in page.tables  # nothing shown


def test_another_key_or_no_key_fails_and_bad_input_writes_nothing(
    exported: tuple[Path, Path, Trail], tmp_path: Path
) -> None:
    _, export, _ = exported
    other = _pin(tmp_path / "other")
    out = tmp_path / "report.html"
    assert _cli("report", str(export), "--out", str(out), "--fingerprint", other) == 1
    assert "signed by another key" in read_page(out.read_text()).texts["verdict"]
    assert _cli("report", str(export), "--out", str(out), "--data-dir",
                str(tmp_path / "empty")) == 1
    assert "no trusted key" in read_page(out.read_text()).texts["verdict"]
    garbage = tmp_path / "not-a-key.pem"
    garbage.write_text("not a key")
    fresh = tmp_path / "fresh.html"
    assert _cli("report", str(export), "--out", str(fresh), "--public-key", str(garbage)) == 2
    assert list(tmp_path.glob("*fresh*")) == []  # neither the page nor a partial file


async def _hostile_trail(data_dir: Path) -> None:
    """Records that are validly chained but were not written by Tacet's code: values of the
    wrong shape and a field the code never writes (a hand-made, re-sealed trail)."""
    engine = create_engine(database_url(data_dir, {}))
    try:
        await _write_hostile(engine)
    finally:
        await engine.dispose()


async def _write_hostile(engine: Any) -> None:
    from gateway.store import async_upgrade_to_head

    await async_upgrade_to_head(engine)
    body = ocsf_body(AuditEvent("classify", 200, tenant_id="t1", key_id="k1"), 1_780_000_000_000)
    body["api"]["operation"] = "<script>alert('x')</script>"
    body["unmapped"] = {"text": "ZDR-CANARY-hostile document text"}
    body["actor"]["user"]["uid"] = "<img src=x onerror=alert(1)>"
    first = seal(body, 1, "0" * 64)
    second = seal(ocsf_body(AuditEvent("keys.rotate", 200, activity=Activity.UPDATE,
                                       tenant_id="t1", key_id="k\"><b>x"), 1_780_000_001_000),
                  2, first["chain"]["hash"])
    rows = [{"chain": "t1", "seq": r["chain"]["seq"],
             "time": datetime.fromtimestamp(r["time"] / 1000, UTC),
             "hash": r["chain"]["hash"], "record": canonical(r).decode()} for r in (first, second)]
    async with engine.begin() as connection:
        await connection.execute(insert(AuditRecordRow), rows)


def test_values_are_read_through_the_allowlist_and_escaped(tmp_path: Path) -> None:
    data, export = tmp_path / "data", tmp_path / "export"
    asyncio.run(_hostile_trail(data))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    asyncio.run(write_export(data, export, start, start + timedelta(days=3650)))
    out = tmp_path / "report.html"
    assert _cli("report", str(export), "--out", str(out), "--fingerprint", _pin(data)) == 0
    html = out.read_text(encoding="utf-8")
    assert "ZDR-CANARY" not in html
    assert "<script" not in html and "<img" not in html and "<b>" not in html
    assert "alert" not in html  # not even escaped: the value's shape fails the allowlist
    page = read_page(html)
    assert page.texts["zdr-unexpected"] == "1"  # `unmapped.text` is no field Tacet writes
    assert [r[0] for r in page.tables["operations"][1:]] == [REDACTED, "keys.rotate"]
    [act] = page.tables["admin-acts"][1:]
    assert act[3] == REDACTED


def test_buckets_merge_without_losing_records() -> None:
    tally = Tally()
    year = 365 * 86_400_000
    times = [1_780_000_000_000 + (i * 7919 * 3_600_000) % year for i in range(2000)]
    for i, moment in enumerate(times):
        record = ocsf_body(AuditEvent("classify", (200, 404, 429, 500, 503)[i % 5], tenant_id="t"),
                           moment)
        tally.add(record, "t")
    assert tally.lo is not None and tally.hi is not None
    assert tally.hi - tally.lo + 1 <= MAX_BUCKETS
    assert tally.width_ms == 10080 * 60_000  # a year in weeks
    per_class = [sum(c[i] for (g, _, _), c in tally.buckets.items() if g == "all")
                 for i in range(6)]
    assert per_class == [400, 400, 400, 400, 400, 0]
    assert min(times) // tally.width_ms == tally.lo and max(times) // tally.width_ms == tally.hi


def test_field_notes_are_the_audit_events_fields_on_the_allowlist() -> None:
    names = {f.name for f in fields(AuditEvent)} - {"activity"}
    assert set(FIELD_NOTES) == names
    assert names <= set(ALLOWED_FIELDS)
    event = AuditEvent("config.start", 200, "r1", "t1", "k1", Activity.CREATE, "demo", "s@1",
                       "diffusion", 2, 30, 9, 12.0, "192.0.2.1", "tls.disabled", "gw-1", 8443)
    assert record_fields(ocsf_body(event, 0)) == event.fields()


def test_one_tenants_export_says_starts_and_flags_are_not_in_it(
    exported: tuple[Path, Path, Trail], tmp_path: Path
) -> None:
    data, _, trail = exported
    export = tmp_path / "export"
    asyncio.run(write_export(data, export, T0, T0 + timedelta(days=4), tenant="t-beta"))
    out = tmp_path / "report.html"
    assert _cli("report", str(export), "--out", str(out), "--fingerprint", _pin(data)) == 0
    page = read_page(out.read_text(encoding="utf-8"))
    assert "not included" in page.texts["unsafe"]  # not "no unsafe setting": it is not known
    assert "Not included" in page.texts["starts"]
    assert [r[0] for r in page.tables["tenants"][1:]] == ["t-beta"]
    assert page.texts["total-records"] == f"{trail.tenants['t-beta']:,}"
