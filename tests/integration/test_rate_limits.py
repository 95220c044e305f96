"""Per-tenant rate and concurrency limits through the real app and a real SQLite control plane.

The limits are set on the tenant rows (as `tacet tenants limits` does); the app's limiter is
swapped for one on an injected clock where a test checks exact Retry-After values. The engine is
an in-process fake that can hold a request open.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from engine.protocol import DecodeOut, DocumentDone, Isolation, LabelOut, Welcome
from gateway.apikeys import Peppers
from gateway.app import create_app
from gateway.auth import StoreKeyStore
from gateway.cli import main
from gateway.problems import PROBLEM_BASE
from gateway.ratelimit import STATE_KEY, TenantLimiter, limits_from_keys
from gateway.store import TenantLimits, database_url, open_store
from gateway.taxonomies import DatabaseTaxonomyStore
from gateway.taxonomy_io import parse_csv

pytestmark = pytest.mark.integration

PEPPERS = Peppers([b"rate-limit-test-pepper-0123456789abcdef"])
CANARY = f"ZDR-CANARY-{uuid.uuid4().hex}"
TAXONOMY = "facet,id,name,description,parent\ntopic,one,One,,\ntopic,two,Two,,\n"
HOLD = "hold this request open"


class FakeEngine:
    """Labels every document; a document whose text is HOLD waits until `gate` is set."""

    def __init__(self) -> None:
        self.ready = True
        self.gate = threading.Event()
        self.holding = threading.Event()
        isolation = Isolation(True, True, False, "-")
        self.welcome = Welcome(1, 1, "fake-model", "llada", "torch", isolation)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def classify(
        self, taxonomy: dict[str, Any], texts: list[str], *, mode: str = "diffusion",
        threshold: float | None = None,
    ) -> list[DocumentDone]:
        if HOLD in texts:
            self.holding.set()
            while not self.gate.is_set():
                await asyncio.sleep(0.01)
        facet = taxonomy["facets"][0]
        decode = DecodeOut(mode, 1, True, False, 3)
        label = LabelOut(facet["name"], facet["labels"][0]["id"], 0.5)
        return [DocumentDone("c", i, [label], {}, decode) for i in range(len(texts))]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    url: Any
    data_dir: Path
    tenant_ids: dict[str, str]
    keys: dict[str, str]


async def _seed(url: Any) -> World:
    store = await open_store(url)
    world = World(url, Path(), {}, {})
    try:
        for label in ("a", "b"):
            tenant = await store.create_tenant(f"tenant-{label}")
            world.tenant_ids[label] = tenant.id
            issued = await store.create_key(
                tenant.id, PEPPERS, scopes={"classify", "admin", "jobs"}, env="test"
            )
            world.keys[label] = issued.token
            await store.put_taxonomy(tenant.id, parse_csv(TAXONOMY, name="topics"))
    finally:
        await store.engine.dispose()
    return world


@pytest.fixture
def world(tmp_path: Path) -> World:
    world = asyncio.run(_seed(database_url(tmp_path, {})))
    world.data_dir = tmp_path
    return world


def _set_limits(world: World, label: str, limits: TenantLimits) -> None:
    async def run() -> None:
        store = await open_store(world.url)
        try:
            await store.set_tenant_limits(world.tenant_ids[label], limits)
        finally:
            await store.engine.dispose()

    asyncio.run(run())


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _client(world: World, engine: FakeEngine, clock: Clock | None) -> TestClient[Any]:
    keys = StoreKeyStore(world.url, PEPPERS)
    taxonomies = DatabaseTaxonomyStore(keys.store, b"r" * 32)
    app = create_app(engine=engine, keys=keys, taxonomies=taxonomies)
    app.on_shutdown.append(keys.close)
    if clock is not None:
        app.state[STATE_KEY] = TenantLimiter(limits_from_keys(keys), clock=clock)
    return TestClient(app)


def _classify(
    client: TestClient[Any], world: World, label: str, texts: list[str], taxonomy: str = "topics"
) -> Any:
    documents = [{"id": f"{CANARY}-{i}", "text": text} for i, text in enumerate(texts)]
    return client.post(
        "/v1/classify",
        json={"taxonomy": taxonomy, "documents": documents},
        headers={"Authorization": f"Bearer {world.keys[label]}"},
    )


def _assert_rate_limited(response: Any, retry_after: int | None = None) -> int:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == PROBLEM_BASE + "rate-limited"
    seconds = int(response.headers["retry-after"])
    assert body["retry_after"] == seconds
    assert 1 <= seconds <= 60
    if retry_after is not None:
        assert seconds == retry_after
    assert CANARY not in response.text
    body.pop("request_id")
    body.pop("retry_after")
    assert body == {
        "type": PROBLEM_BASE + "rate-limited",
        "title": "Rate limit exceeded",
        "status": 429,
        "detail": (
            "This tenant's request, document or concurrency limit is reached; retry after the "
            "delay in Retry-After."
        ),
    }
    return seconds


def test_the_request_after_the_limit_gets_429_with_retry_after_from_the_window(
    world: World, engine: FakeEngine, clock: Clock
) -> None:
    _set_limits(world, "a", TenantLimits(requests_per_minute=3))
    _set_limits(world, "b", TenantLimits(requests_per_minute=3))
    with _client(world, engine, clock) as client:
        for at in (0.0, 2.0, 3.0):
            clock.now = at
            assert _classify(client, world, "a", ["x"]).status_code == 200
        clock.now = 17.5
        _assert_rate_limited(_classify(client, world, "a", ["x"]), 43)  # t=0 leaves at t=60
        clock.now = 59.0
        _assert_rate_limited(_classify(client, world, "a", ["x"]), 1)
        # Tenant A's exhaustion leaves B's budget whole.
        for _ in range(3):
            assert _classify(client, world, "b", ["x"]).status_code == 200
        _assert_rate_limited(_classify(client, world, "b", ["x"]), 60)
        clock.now = 60.0
        assert _classify(client, world, "a", ["x"]).status_code == 200
        _assert_rate_limited(_classify(client, world, "a", ["x"]), 2)  # t=2's leaves at t=62


def test_job_submission_counts_against_the_request_limit(
    world: World, engine: FakeEngine, clock: Clock
) -> None:
    _set_limits(world, "a", TenantLimits(requests_per_minute=1))
    job = {
        "input": "s3://member-in/docs.jsonl", "output": "s3://member-out/run/",
        "taxonomy": "topics",
    }
    with _client(world, engine, clock) as client:
        assert _classify(client, world, "a", ["x"]).status_code == 200
        clock.now = 30.0
        refused = client.post(
            "/v1/jobs", json=job, headers={"Authorization": f"Bearer {world.keys['a']}"}
        )
        _assert_rate_limited(refused, 30)  # refused before any S3 or queue work


def test_documents_per_minute(world: World, engine: FakeEngine, clock: Clock) -> None:
    _set_limits(world, "a", TenantLimits(documents_per_minute=5))
    with _client(world, engine, clock) as client:
        assert _classify(client, world, "a", ["x", "y", "z"]).status_code == 200
        clock.now = 30.0
        _assert_rate_limited(_classify(client, world, "a", ["x", "y", "z"]), 30)
        assert _classify(client, world, "a", ["x", "y"]).status_code == 200  # 5 in the minute
        too_many = _classify(client, world, "a", ["d"] * 6)
        assert too_many.status_code == 413  # can never fit in a minute: not a 429
        assert "retry-after" not in too_many.headers
        assert _classify(client, world, "b", ["d"] * 6).status_code == 200


def test_concurrency_over_the_limit_gets_429_and_the_slot_comes_back(
    world: World, engine: FakeEngine
) -> None:
    _set_limits(world, "a", TenantLimits(max_concurrency=1))
    _set_limits(world, "b", TenantLimits(max_concurrency=1))
    with _client(world, engine, None) as client:
        held: list[Any] = []
        worker = threading.Thread(target=lambda: held.append(_classify(client, world, "a", [HOLD])))
        worker.start()
        try:
            assert engine.holding.wait(30), "the held request never reached the engine"
            _assert_rate_limited(_classify(client, world, "a", ["x"]))
            # B has its own slot.
            assert _classify(client, world, "b", ["x"]).status_code == 200
        finally:
            engine.gate.set()
            worker.join(30)
        assert held and held[0].status_code == 200
        assert _classify(client, world, "a", ["x"]).status_code == 200  # the slot was released


def test_a_failed_request_gives_its_slot_back(world: World, engine: FakeEngine) -> None:
    _set_limits(world, "a", TenantLimits(max_concurrency=1))
    with _client(world, engine, None) as client:
        for _ in range(5):
            assert _classify(client, world, "a", ["x"], taxonomy="no-such").status_code == 422
        assert _classify(client, world, "a", ["x"]).status_code == 200


def test_real_clock_wiring_and_no_limits_by_default(world: World, engine: FakeEngine) -> None:
    _set_limits(world, "a", TenantLimits(requests_per_minute=2))
    with _client(world, engine, None) as client:
        assert _classify(client, world, "a", ["x"]).status_code == 200
        assert _classify(client, world, "a", ["x"]).status_code == 200
        _assert_rate_limited(_classify(client, world, "a", ["x"]))
        for _ in range(20):  # tenant B has NULL limits: unlimited
            assert _classify(client, world, "b", ["x"]).status_code == 200
        # /metrics counts the decisions by outcome, never by tenant (SQLite: this process).
        metrics = client.get("/metrics").text
        for outcome in ("admitted", "refused_requests"):
            line = f'tacet_limiter_decisions_total{{limiter="local",outcome="{outcome}"}}'
            assert line in metrics
        assert all(tenant not in metrics for tenant in world.tenant_ids.values())


def test_cli_sets_limits_and_the_gateway_reads_them(
    world: World, engine: FakeEngine, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("TACET_DATABASE_URL", "TACET_DATABASE_URL_FILE"):
        monkeypatch.delenv(name, raising=False)
    d = str(world.data_dir)
    assert main(["tenants", "limits", "tenant-a", "--rpm", "2", "--concurrency", "4",
                 "--data-dir", d]) == 0
    out = capsys.readouterr().out
    assert out.split("\t")[1:] == [
        "requests_per_minute=2", "documents_per_minute=unlimited", "max_concurrency=4\n"
    ]
    assert main(["tenants", "limits", "tenant-a", "--dpm", "100", "--data-dir", d]) == 0
    assert "requests_per_minute=2\tdocuments_per_minute=100" in capsys.readouterr().out
    with _client(world, engine, None) as client:
        admin = {"Authorization": f"Bearer {world.keys['a']}"}
        limits = client.get("/v1/admin/limits", headers=admin).json()
        assert limits == {
            "requests_per_minute": 2, "documents_per_minute": 100, "max_concurrency": 4
        }
        assert _classify(client, world, "a", ["x"]).status_code == 200
        assert _classify(client, world, "a", ["x"]).status_code == 200
        _assert_rate_limited(_classify(client, world, "a", ["x"]))
    assert main(["tenants", "limits", "tenant-a", "--rpm", "none", "--data-dir", d]) == 0
    assert "requests_per_minute=unlimited" in capsys.readouterr().out
    with _client(world, engine, None) as client:
        for _ in range(5):
            assert _classify(client, world, "a", ["x"]).status_code == 200
    with pytest.raises(SystemExit) as refused:
        main(["tenants", "limits", "tenant-a", "--rpm", "0", "--data-dir", d])
    assert refused.value.code == 2
    assert main(["tenants", "limits", "nobody", "--data-dir", d]) == 1
    capsys.readouterr()


def test_the_limiter_is_per_process_on_sqlite(world: World, engine: FakeEngine) -> None:
    """Two apps (two gateway processes) on one SQLite file each count on their own (the
    single-host path; on PostgreSQL they share: test_shared_limits.py)."""
    _set_limits(world, "a", TenantLimits(requests_per_minute=1))
    with _client(world, engine, None) as one, _client(world, engine, None) as two:
        assert _classify(one, world, "a", ["x"]).status_code == 200
        assert _classify(two, world, "a", ["x"]).status_code == 200
        _assert_rate_limited(_classify(one, world, "a", ["x"]))
        _assert_rate_limited(_classify(two, world, "a", ["x"]))
