"""`GET /v1/audit/report` through the real Litestar app on a real SQLite control plane.

The caller's own chain only, scope `audit:read`, the same page as `tacet audit report` (counts
from the tenant's records, a verdict on its hash chain), headers that forbid loading anything,
and a failing verdict naming the record when a stored record was changed.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import text

from gateway.store import create_engine
from tests.fixtures.report_page import read_page
from tests.integration import test_audit_wiring as wiring
from tests.integration.test_audit_wiring import World, records

world, client = wiring.world, wiring.client  # the same fixtures: seeded SQLite and the app

pytestmark = pytest.mark.integration


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _window() -> dict[str, str]:
    now = datetime.now(UTC)
    return {"from": (now - timedelta(hours=1)).isoformat(),
            "to": (now + timedelta(hours=1)).isoformat()}


def _traffic(client: TestClient[Any], world: World) -> None:
    body = {"taxonomy": "topics", "documents": [{"id": "d1", "text": "hello"}]}
    for label in ("a", "b"):
        ok = client.post("/v1/classify", json=body, headers=_auth(world.full[label]))
        assert ok.status_code == 200
    bad = {"taxonomy": "topics", "documents": []}
    assert client.post("/v1/classify", json=bad, headers=_auth(world.full["a"])).status_code == 422


def test_report_is_the_callers_own_chain_as_html(client: TestClient[Any], world: World) -> None:
    _traffic(client, world)
    before = [r for r in records(world) if r["metadata"].get("tenant_uid") == world.tenant["a"]]
    response = client.get("/v1/audit/report", params=_window(), headers=_auth(world.full["a"]))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    page = read_page(response.text)
    assert "Verified" in page.texts["verdict"] and "live audit log" in page.texts["verdict"]
    assert page.texts["total-records"] == str(len(before))
    [(tenant, *counts)] = page.tables["tenants"][1:]
    assert tenant == world.tenant["a"]
    assert counts[0] == str(len(before))
    assert world.tenant["b"] not in response.text  # another tenant's chain is not read
    assert "not included" in page.texts["unsafe"]  # the system chain is not the tenant's
    operations = {row[0]: row[1] for row in page.tables["operations"][1:]}
    assert operations["classify"] == str(sum(r["api"]["operation"] == "classify" for r in before))
    # the report call itself is audited, like the export
    assert ("audit.report", 200) in [(r["api"]["operation"], r["http_response"]["code"])
                                     for r in records(world)]


def test_report_needs_scope_and_valid_times(client: TestClient[Any], world: World) -> None:
    narrow = client.get("/v1/audit/report", params=_window(), headers=_auth(world.narrow["a"]))
    assert narrow.status_code == 403
    key = _auth(world.full["a"])
    for query in ({"from": "yesterday", "to": "today"}, {"from": "2026-01-01T00:00:00"},
                  {"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, {}):
        bad = client.get("/v1/audit/report", params=query, headers=key)
        assert bad.status_code == 422, query
        assert bad.headers["content-type"].startswith("application/problem+json")
    assert client.get("/v1/audit/report", params=_window()).status_code == 401


async def _tamper(world: World, tenant: str) -> int:
    """Change one stored record's status behind the log's back (the trigger refuses UPDATE,
    so the row is deleted and re-inserted); returns its seq."""
    engine = create_engine(world.url)
    try:
        async with engine.begin() as connection:
            row = (await connection.execute(text(
                "SELECT id, chain, seq, time, hash, record FROM audit_records WHERE chain = :c "
                "ORDER BY seq LIMIT 1 OFFSET 1"), {"c": tenant})).one()
            record = json.loads(row.record)
            record["http_response"]["code"] = 299
            await connection.execute(text("DELETE FROM audit_records WHERE id = :i"), {"i": row.id})
            await connection.execute(text(
                "INSERT INTO audit_records (id, chain, seq, time, hash, record) "
                "VALUES (:i, :c, :s, :t, :h, :r)"),
                {"i": row.id, "c": row.chain, "s": row.seq, "t": row.time, "h": row.hash,
                 "r": json.dumps(record)})
            return int(row.seq)
    finally:
        await engine.dispose()


def test_changed_record_renders_a_failing_verdict(client: TestClient[Any], world: World) -> None:
    _traffic(client, world)
    seq = asyncio.run(_tamper(world, world.tenant["a"]))
    response = client.get("/v1/audit/report", params=_window(), headers=_auth(world.full["a"]))
    assert response.status_code == 200
    page = read_page(response.text)
    assert "NOT VERIFIED" in page.texts["verdict"]
    assert f"chain {world.tenant['a']} seq {seq}" in page.texts["verdict"]
    assert "hash does not match" in page.texts["verdict"]
    assert "tenants" not in page.tables
