"""Admission cost per request: today's in-process limiter against the limits shared through
PostgreSQL (issue 25), in one run, on one throwaway PostgreSQL server.

Each variant admits and releases one request (`acquire` + `release`, what `admit()` and the
middleware do) for a tenant whose limits never refuse, in rounds that alternate the variants so
drift on a shared machine hits them alike. Variants:

- local: `TenantLimiter` (per process; the SQLite path), rpm + concurrency limits;
- shared, rpm 10^6: the window lease covers a slice of 64 requests, most admissions are local;
- shared, rpm 30: a slice of one unit, every admission is one database transaction;
- shared, concurrency 10^6: a slot row written at admission (a transaction) and at release
  (one autocommit statement).

PostgreSQL: `TACET_TEST_POSTGRES_URL`, else a server started from the Debian binaries.

    python bench/bench_limits.py [--requests 300 --rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from gateway._shared_limiter import SharedLimiter
from gateway.ratelimit import TenantLimiter
from gateway.store import Store, TenantLimits, open_store
from tests.integration._postgres import postgres_server, reset_schema

BIG = 10**6
# name -> (limits, database transactions per request, shared?)
VARIANTS: dict[str, tuple[TenantLimits, str, bool]] = {
    "local (in-process), rpm + concurrency": (TenantLimits(BIG, None, BIG), "none", False),
    "shared, rpm 10^6 (slices of 64)": (TenantLimits(requests_per_minute=BIG), "1 / 64", True),
    "shared, rpm 30 (slice of 1)": (TenantLimits(requests_per_minute=30), "1", True),
    "shared, concurrency 10^6": (TenantLimits(max_concurrency=BIG), "1 + 1 statement", True),
}


async def _per_request_us(acquire: Callable[[], Awaitable[Any]], requests: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        await (await acquire()).finish()
    return (time.perf_counter() - started) / requests * 1e6


async def _run(url: Any, requests: int, rounds: int) -> dict[str, list[float]]:
    await reset_schema(url)
    store = await open_store(url)

    async def lookup(tenant_id: str) -> TenantLimits | None:
        tenant = await store.get_tenant(tenant_id)
        return None if tenant is None else tenant.limits

    async def opener() -> Store:
        return store

    local, shared = TenantLimiter(lookup), SharedLimiter(lookup, opener)
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    try:
        for round_ in range(rounds + 1):  # round 0 warms connections and caches up
            for index, (name, (limits, _, is_shared)) in enumerate(VARIANTS.items()):
                # A fresh tenant each round: rpm 30 would refuse after 30 in the minute.
                tenant = (await store.create_tenant(f"t{round_}-{index}", limits)).id
                limiter: Any = shared if is_shared else local
                count = min(requests, 29) if limits.requests_per_minute == 30 else requests
                per = await _per_request_us(lambda: limiter.acquire(tenant), count)  # noqa: B023
                if round_:
                    samples[name].append(per)
        return samples
    finally:
        await shared.close()
        await store.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="admissions per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    server = postgres_server()
    url = next(server)
    try:
        samples = asyncio.run(_run(url, args.requests, args.rounds))
    finally:
        server.close()
    base = statistics.median(samples["local (in-process), rpm + concurrency"])
    table = Table(title="Admission cost per request (acquire + release), median of rounds")
    for column in ("variant", "db transactions / request", "us / request", "x local"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, values in samples.items():
        median = statistics.median(values)
        table.add_row(name, VARIANTS[name][1], f"{median:,.1f}", f"{median / base:,.1f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
