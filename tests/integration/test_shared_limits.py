"""Shared tenant limits on a real PostgreSQL: two `SharedLimiter`s (two gateways) in one process,
real clocks, the real schema (issue 25). The two-process version with SIGKILL is
test_two_gateways.py; this file checks the counting rules quickly and by number.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from gateway import problems
from gateway._shared_limiter import SharedLimiter
from gateway.ratelimit import Admission, RateLimited
from gateway.settings import TenantLimitSettings
from gateway.store import Store, TenantLimits, create_engine, database_url, open_store
from tests.integration._postgres import reset_schema

pytestmark = pytest.mark.integration


class Fleet:
    """Two limiters on one store, as two gateways would be; `decisions` what they recorded."""

    def __init__(self, store: Store, settings: TenantLimitSettings) -> None:
        self.store = store
        self.decisions: list[tuple[str, str]] = []

        async def lookup(tenant_id: str) -> TenantLimits | None:
            tenant = await store.get_tenant(tenant_id)
            return None if tenant is None else tenant.limits

        async def opener() -> Store:
            return store

        self.a = SharedLimiter(lookup, opener, settings)
        self.b = SharedLimiter(lookup, opener, settings)
        for limiter in (self.a, self.b):
            limiter.recorder = lambda outcome, name: self.decisions.append((outcome, name))

    async def tenant(self, name: str, limits: TenantLimits) -> str:
        return (await self.store.create_tenant(name, limits)).id

    async def close(self) -> None:
        await self.a.close()
        await self.b.close()


async def _refused(call: Awaitable[Admission]) -> RateLimited:
    with pytest.raises(RateLimited) as refused:
        await call
    return refused.value


def run(url: URL, body: Callable[[Fleet], Awaitable[None]], **settings: Any) -> None:
    async def main() -> None:
        store = await open_store(url)
        fleet = Fleet(store, TenantLimitSettings(**settings))
        try:
            await body(fleet)
            # Counted in the database every time: a failing query would fall back silently.
            assert {name for _, name in fleet.decisions} <= {"shared"}, fleet.decisions
        finally:
            await fleet.close()
            await store.engine.dispose()

    asyncio.run(main())


@pytest.fixture
def pg(postgres_url: URL) -> URL:
    asyncio.run(reset_schema(postgres_url))
    return postgres_url


async def _rows(store: Store, table: str) -> list[Any]:
    async with store.engine.connect() as conn:
        return list((await conn.execute(text(f"SELECT * FROM {table}"))).all())


def test_thirty_a_minute_across_two_gateways_then_retry_after_from_the_window(pg: URL) -> None:
    async def body(fleet: Fleet) -> None:
        tenant = await fleet.tenant("rate", TenantLimits(requests_per_minute=30))
        other = await fleet.tenant("other", TenantLimits(requests_per_minute=30))
        admitted = 0
        refusals: list[RateLimited] = []
        for i in range(45):
            limiter = fleet.a if i % 2 else fleet.b
            try:
                await (await limiter.acquire(tenant)).finish()
                admitted += 1
            except RateLimited as exc:
                refusals.append(exc)
        assert admitted == 30  # the limit, exactly: slices are one unit below 60 a slice
        assert len(refusals) == 15
        # The first units leave 60 s + slice (+ rounding) after they were counted.
        assert all(exc.reason == "requests" and 58 <= exc.seconds <= 62 for exc in refusals)
        assert ("refused_requests", "shared") in fleet.decisions
        assert fleet.decisions.count(("admitted", "shared")) == 30
        # Another tenant's budget is whole, on both gateways.
        for limiter in (fleet.a, fleet.b):
            await (await limiter.acquire(other)).finish()

    run(pg, body)


def test_busy_tenants_lease_slices_and_never_get_more_than_the_limit(pg: URL) -> None:
    async def body(fleet: Fleet) -> None:
        tenant = await fleet.tenant("busy", TenantLimits(requests_per_minute=600))
        admitted = 0
        for i in range(800):
            limiter = fleet.a if i % 3 else fleet.b  # uneven, as a balancer may be
            try:
                await (await limiter.acquire(tenant)).finish()
                admitted += 1
            except RateLimited:
                pass
        # 600 a minute, slice 10 (1 s of the rate): at most the limit, less at most one
        # unspent slice per gateway.
        assert 600 - 2 * 10 <= admitted <= 600
        leased = sum(row.units for row in await _rows(fleet.store, "limit_windows"))
        assert leased <= 600

    run(pg, body)


def test_documents_per_minute_are_shared_and_too_many_is_413(pg: URL) -> None:
    async def body(fleet: Fleet) -> None:
        tenant = await fleet.tenant("docs", TenantLimits(documents_per_minute=50))
        await (await fleet.a.acquire(tenant, documents=30)).finish()
        refused = await _refused(fleet.b.acquire(tenant, documents=30))
        assert refused.reason == "documents" and 58 <= refused.seconds <= 62
        held = await fleet.b.acquire(tenant, documents=20)  # 50 in the minute
        with pytest.raises(RateLimited):
            await held.add_documents(1)  # a stream's next chunk is counted too
        await held.finish()
        with pytest.raises(problems.TooLarge):
            await fleet.a.acquire(tenant, documents=51)
        assert ("too_large", "shared") in fleet.decisions

    run(pg, body)


def test_concurrency_two_across_gateways_and_a_dead_ones_slots_come_back(pg: URL) -> None:
    async def body(fleet: Fleet) -> None:
        tenant = await fleet.tenant("conc", TenantLimits(max_concurrency=2))
        on_a = await fleet.a.acquire(tenant)
        on_b = await fleet.b.acquire(tenant)
        for limiter in (fleet.a, fleet.b):
            refused = await _refused(limiter.acquire(tenant))
            assert refused.reason == "concurrency" and 1 <= refused.seconds <= 2
        await on_b.finish()  # back at once, for either gateway
        again = await fleet.a.acquire(tenant)
        await again.finish()
        on_b = await fleet.b.acquire(tenant)
        # Gateway A dies holding its slot: no more heartbeats, no release.
        assert fleet.a._beat is not None
        fleet.a._beat.cancel()
        loop = asyncio.get_running_loop()
        died = loop.time()
        await _refused(fleet.b.acquire(tenant))
        while True:
            try:
                await (await fleet.b.acquire(tenant)).finish()
                break
            except RateLimited as exc:
                assert exc.reason == "concurrency"
                assert exc.seconds <= 2  # no later than the dead lease's end
            assert loop.time() - died < 1.5 + 1.0, "the dead gateway's slot never came back"
            await asyncio.sleep(0.05)
        back = loop.time() - died
        assert back >= 1.5 * 2 / 3 - 0.1  # the slot counted until its lease ran out
        await on_b.finish()
        del on_a  # never released: its process is gone

    run(pg, body, lease_seconds=1.5)


def test_a_slot_released_without_finish_is_written_by_the_next_heartbeat(pg: URL) -> None:
    async def body(fleet: Fleet) -> None:
        tenant = await fleet.tenant("beat", TenantLimits(max_concurrency=1))
        held = await fleet.a.acquire(tenant)
        held.release()  # free on A at once; the row still says one
        await _refused(fleet.b.acquire(tenant))
        await fleet.a.beat()
        await (await fleet.b.acquire(tenant)).finish()

    run(pg, body)


def test_a_stopped_gateway_gives_its_slots_and_units_back_at_once(pg: URL) -> None:
    async def body(fleet: Fleet) -> None:
        limits = TenantLimits(max_concurrency=1, requests_per_minute=6000)
        tenant = await fleet.tenant("stop", limits)
        held = await fleet.a.acquire(tenant)  # leases a slice of 64 requests too
        assert sum(r.units for r in await _rows(fleet.store, "limit_windows")) == 64
        await _refused(fleet.b.acquire(tenant))
        await fleet.a.close()  # graceful shutdown (SIGTERM), the slot still held
        await (await fleet.b.acquire(tenant)).finish()
        # A's 63 unspent units went back; B's own slice is counted.
        assert sum(r.units for r in await _rows(fleet.store, "limit_windows")) == 1 + 64
        del held

    run(pg, body)


def test_the_database_down_falls_back_to_counting_in_the_process(
    pg: URL, tmp_path: Path
) -> None:
    async def body(fleet: Fleet) -> None:
        tenant = await fleet.tenant("down", TenantLimits(requests_per_minute=2))
        store = fleet.store

        async def lookup(tenant_id: str) -> TenantLimits | None:
            return (await store.get_tenant(tenant_id)).limits  # type: ignore[union-attr]

        nowhere = URL.create(
            "postgresql+asyncpg", username="x", database="x",
            query={"host": str(tmp_path / "no-server-here")},
        )
        gone = Store(create_engine(nowhere))  # a PostgreSQL that does not answer

        async def opener() -> Store:
            return gone

        cut_off = SharedLimiter(lookup, opener, TenantLimitSettings())
        decisions: list[tuple[str, str]] = []
        cut_off.recorder = lambda outcome, name: decisions.append((outcome, name))
        try:
            for _ in range(2):
                await (await cut_off.acquire(tenant)).finish()
            refused = await _refused(cut_off.acquire(tenant))  # the limit, per process
            assert refused.reason == "requests"
            assert decisions == [("admitted", "fallback")] * 2 + [("refused_requests", "fallback")]
        finally:
            await cut_off.close()
            await gone.engine.dispose()

    run(pg, body)


def test_on_sqlite_the_shared_limiter_is_the_per_process_one(tmp_path: Path) -> None:
    async def main() -> None:
        store = await open_store(database_url(tmp_path, {}))
        try:
            fleet = Fleet(store, TenantLimitSettings())
            tenant = await fleet.tenant("solo", TenantLimits(requests_per_minute=1))
            await (await fleet.a.acquire(tenant)).finish()
            await (await fleet.b.acquire(tenant)).finish()  # its own count: one host
            await _refused(fleet.a.acquire(tenant))
            assert fleet.decisions[0] == ("admitted", "local")
            assert await _rows(store, "limit_windows") == []
            await fleet.close()
        finally:
            await store.engine.dispose()

    asyncio.run(main())
