"""The audit trail wired into the request path, the admin CLI and `tacet serve` start-up.

Through the real Litestar app (in-process fake engine) on a real SQLite control-plane database:
one record per /v1 call with its final status, no content in any record or file, fail closed
when the audit store cannot write, tenant-scoped export, and the CLI export/verify round trip.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select

from compliance.audit import AuditLog, AuditWriteError
from gateway._cli_serve import audit_start
from gateway.app import create_app, lazy_audit_log
from gateway.auth import StoreKeyStore
from gateway.cli import main as tacet
from gateway.settings import ServeSettings, TLSSettings
from gateway.store import create_engine, database_url, open_store
from gateway.store.audit_models import AuditRecordRow
from gateway.taxonomies import DatabaseTaxonomyStore
from gateway.taxonomy_io import parse_csv
from tests.integration.test_tenant_isolation import PEPPERS, REVIEW_SECRET, FakeEngine

pytestmark = pytest.mark.integration

CANARY = f"ZDR-CANARY-{uuid.uuid4().hex}"
CSV = "facet,id,name,description,parent\ntopic,alpha,Alpha,,\ntopic,beta,Beta,,\n"


@dataclass
class World:
    data_dir: Path
    url: Any
    tenant: dict[str, str]  # label -> tenant id
    full: dict[str, str]  # label -> token with every scope
    narrow: dict[str, str]  # label -> token with `classify` only


async def _seed(data_dir: Path) -> World:
    url = database_url(data_dir, {})
    store = await open_store(url)
    world = World(data_dir, url, {}, {}, {})
    try:
        for label in ("a", "b"):
            tenant = await store.create_tenant(f"tenant-{label}")
            world.tenant[label] = tenant.id
            full = await store.create_key(
                tenant.id, PEPPERS, scopes={"classify", "taxonomy:write", "audit:read"}, env="test"
            )
            world.full[label] = full.token
            narrow = await store.create_key(tenant.id, PEPPERS, scopes={"classify"}, env="test")
            world.narrow[label] = narrow.token
            await store.put_taxonomy(tenant.id, parse_csv(CSV, name="topics", version="1"))
    finally:
        await store.engine.dispose()
    return world


async def _records(url: Any) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(AuditRecordRow.record).order_by(AuditRecordRow.id)
            )
            return [json.loads(r[0]) for r in rows]
    finally:
        await engine.dispose()


def records(world: World) -> list[dict[str, Any]]:
    return asyncio.run(_records(world.url))


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.delenv("TACET_DATABASE_URL", raising=False)
    return asyncio.run(_seed(tmp_path))


@pytest.fixture
def client(world: World) -> Iterator[TestClient[Any]]:
    keys = StoreKeyStore(world.url, PEPPERS)
    app = create_app(
        engine=FakeEngine(),
        keys=keys,
        taxonomies=DatabaseTaxonomyStore(keys.store, REVIEW_SECRET),
        audit=lazy_audit_log(keys),
    )
    app.on_shutdown.append(keys.close)
    with TestClient(app) as test_client:
        yield test_client


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _classify(taxonomy: str = "topics", doc_id: str = "doc-1", text: str = "hello") -> Any:
    return {"taxonomy": taxonomy, "documents": [{"id": doc_id, "text": text}]}


def _new(world: World, before: int) -> list[dict[str, Any]]:
    return records(world)[before:]


def test_classify_401_422_each_leave_one_record(client: TestClient[Any], world: World) -> None:
    start = len(records(world))
    ok = client.post("/v1/classify", json=_classify(text="héllo"), headers=_auth(world.full["a"]))
    assert ok.status_code == 200, ok.text
    [record] = _new(world, start)
    assert record["api"]["operation"] == "classify"
    assert record["http_response"]["code"] == 200
    assert record["metadata"]["tenant_uid"] == world.tenant["a"]
    assert record["metadata"]["correlation_uid"] == ok.json()["request_id"]
    assert record["unmapped"]["taxonomy"] == "topics@1"
    assert record["unmapped"]["documents"] == 1
    assert record["unmapped"]["bytes"] == len("héllo".encode())
    assert record["unmapped"]["model_id"] == "fake-model"
    assert record["unmapped"]["mode"] == "diffusion"
    assert record["src_endpoint"]["ip"]
    assert "uid" in record["actor"]["user"]

    start = len(records(world))
    denied = client.post("/v1/classify", json=_classify(), headers=_auth("tacet_test_nope"))
    assert denied.status_code == 401
    [record] = _new(world, start)
    assert record["http_response"]["code"] == 401
    assert "tenant_uid" not in record["metadata"]

    start = len(records(world))
    bad = client.post(
        "/v1/classify", json={"taxonomy": "topics", "documents": []}, headers=_auth(world.full["a"])
    )
    assert bad.status_code == 422
    [record] = _new(world, start)
    assert record["http_response"]["code"] == 422
    assert record["metadata"]["tenant_uid"] == world.tenant["a"]

    start = len(records(world))
    assert client.get("/v1/nowhere", headers=_auth(world.full["a"])).status_code == 404
    [record] = _new(world, start)
    assert (record["api"]["operation"], record["http_response"]["code"]) == ("unknown", 404)
    assert client.get("/healthz").status_code == 200
    assert len(records(world)) == start + 1  # only /v1 calls are audited


def test_no_canary_in_records_or_files(client: TestClient[Any], world: World) -> None:
    key = _auth(world.full["a"])
    headers = {**key, "X-Canary": CANARY, "X-Forwarded-For": "203.0.113.9", "User-Agent": CANARY}
    calls = [
        client.post(
            f"/v1/classify?q={CANARY}", json=_classify(doc_id=CANARY, text=CANARY), headers=headers
        ),
        client.post("/v1/classify", json=_classify(taxonomy=CANARY), headers=headers),
        client.get(f"/v1/taxonomies/{CANARY}", headers=headers),
        client.post("/v1/classify", json=_classify(), headers=_auth(CANARY)),
    ]
    assert [c.status_code for c in calls] == [200, 422, 404, 401]
    found = records(world)
    assert len(found) >= 4
    assert all(CANARY not in json.dumps(r) for r in found)
    assert all(r.get("src_endpoint", {}).get("ip") != "203.0.113.9" for r in found)
    for path in world.data_dir.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path.name


def test_audit_failure_fails_closed(
    client: TestClient[Any], world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: AuditLog, event: Any) -> dict[str, Any]:
        raise AuditWriteError("disk full")

    monkeypatch.setattr(AuditLog, "append", broken)
    response = client.post(
        "/v1/classify", json=_classify(doc_id="secret-doc"), headers=_auth(world.full["a"])
    )
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert body["type"].endswith("/audit-unavailable")
    assert "results" not in body
    assert "secret-doc" not in response.text
    denied = client.post("/v1/classify", json=_classify(), headers=_auth("tacet_test_nope"))
    assert denied.status_code == 503


def test_export_is_tenant_scoped_and_needs_scope(client: TestClient[Any], world: World) -> None:
    for label in ("a", "b"):
        assert (
            client.post(
                "/v1/classify", json=_classify(), headers=_auth(world.full[label])
            ).status_code
            == 200
        )
    now = datetime.now(UTC)
    query = {
        "from": (now - timedelta(hours=1)).isoformat(),
        "to": (now + timedelta(hours=1)).isoformat(),
    }
    response = client.get("/v1/audit/export", params=query, headers=_auth(world.full["a"]))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines and all(r["metadata"]["tenant_uid"] == world.tenant["a"] for r in lines)
    assert any(r["api"]["operation"] == "classify" for r in lines)
    seqs = [r["chain"]["seq"] for r in lines]
    assert seqs == sorted(seqs)
    forbidden = client.get("/v1/audit/export", params=query, headers=_auth(world.narrow["a"]))
    assert forbidden.status_code == 403
    bad = client.get(
        "/v1/audit/export", params={"from": "yesterday"}, headers=_auth(world.full["a"])
    )
    assert bad.status_code == 422
    operations = [(r["api"]["operation"], r["http_response"]["code"]) for r in records(world)]
    assert ("audit.export", 200) in operations and ("audit.export", 403) in operations


def test_cli_export_and_verify_after_traffic(
    client: TestClient[Any], world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        client.post("/v1/classify", json=_classify(), headers=_auth(world.full["a"])).status_code
        == 200
    )
    client.post("/v1/classify", json=_classify(), headers=_auth("tacet_test_nope"))
    out = tmp_path / "export"
    now = datetime.now(UTC)
    span = [
        "--from",
        (now - timedelta(hours=1)).isoformat(),
        "--to",
        (now + timedelta(hours=1)).isoformat(),
    ]
    data = ["--data-dir", str(world.data_dir)]
    assert tacet(["audit", "export", *span, "--out", str(out), *data]) == 0
    assert tacet(["audit", "verify", str(out), *data]) == 0
    assert "result: verified" in capsys.readouterr().out
    (next((out / "records").glob("*.jsonl"))).write_bytes(b"{}\n")
    assert tacet(["audit", "verify", str(out), *data]) == 1


def test_admin_cli_and_serve_start_append_events(world: World) -> None:
    assert tacet(["tenants", "create", "tenant-c", "--data-dir", str(world.data_dir)]) == 0
    settings = replace(ServeSettings(), tls=TLSSettings(unsafe_tls12=True))
    asyncio.run(audit_start(world.data_dir, settings))
    asyncio.run(audit_start(world.data_dir, ServeSettings()))
    found = [(r["api"]["operation"], r.get("unmapped", {}).get("setting")) for r in records(world)]
    assert ("tenants.create", None) in found
    assert found.count(("config.start", None)) == 2
    assert found.count(("config.unsafe_flag", "tls.unsafe_tls12")) == 1
    import socket

    starts = [r for r in records(world) if r["api"]["operation"].startswith("config.")]
    assert {(r["dst_endpoint"]["hostname"], r["dst_endpoint"]["port"]) for r in starts} == {
        (socket.gethostname(), ServeSettings().server.port)
    }  # which gateway started (and with what), for the compliance report


def test_413_429_503_are_recorded(
    client: TestClient[Any], world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.engine_client import EngineBusy, EngineUnavailable

    key = _auth(world.full["a"])
    start = len(records(world))
    big = client.post("/v1/classify", json=_classify(text="x" * (64 * 1024 + 1)), headers=key)
    assert big.status_code == 413
    for error, status in ((EngineBusy, 429), (EngineUnavailable, 503)):

        async def failing(*args: Any, _error: type[Exception] = error, **kwargs: Any) -> Any:
            raise _error()

        monkeypatch.setattr(FakeEngine, "classify", failing)
        assert client.post("/v1/classify", json=_classify(), headers=key).status_code == status
    codes = [r["http_response"]["code"] for r in _new(world, start)]
    assert codes == [413, 429, 503]
