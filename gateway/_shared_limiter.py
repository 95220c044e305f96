"""Tenant limits that hold across every gateway sharing one PostgreSQL (issue 25).

The database half is `gateway.store.limits` (tables `limit_windows`, `limit_slots`); this is the
process half: what a gateway holds locally, when it asks the database, what it does when the
database does not answer. On SQLite it is `gateway.ratelimit.TenantLimiter` alone.

Requests and documents per minute: each admission that the process cannot cover from its own
allowance takes, in one transaction under the tenant's advisory lock, at least the units it
needs and at most a small slice (the units a tenant at its full rate would use in
`slice_seconds`, 1 s by default, capped by `max_slice`) from the tenant's shared window. The
units leased at database time t are counted until t + slice + 60 s (rounded up to 0.25 s) and
may be spent locally only until the process's own clock says `slice_seconds` have passed since
it sent the request. Units left when that time is up go back to their row.

Worst-case overshoot of a per-minute limit: none. Every unit is spent no later than slice
seconds after the database counted it, and stays counted 60 s after that, so for any 60 s of
spending, the last lease among those spent in it saw every other one still counted and found
room for all of them: at most `limit` units (the argument assumes the gateway's clock and the
database's run at the same rate, over one slice). The price is strictness: a window counts a
unit up to slice + 0.25 s longer, and units leased by a gateway but not yet spent or given back
(at most one slice per gateway and limit, for at most about one slice plus a heartbeat) are
unavailable to the others. Under 120 a minute per second of slice the slice is one unit, so
every request asks the database, and only the slice + 0.25 s of strictness remains.

Concurrency: each gateway writes its own count of a tenant's requests in flight as one row
(`slots`), under the same lock when admitting, and leases it: a heartbeat renews every row of
the process each lease/3 seconds (`lease_seconds`, 30 s by default). A gateway that dies
(SIGKILL, lost host) stops renewing, and its slots stop counting at most `lease_seconds` after
its last renewal. Overshoot: none while gateways renew; a gateway that cannot reach the database
for longer than the lease has its slots dropped by the others while its requests may still run,
so the tenant can get up to that gateway's slots more until it is back.

Retry-After comes from the shared rows: the time until enough counted units leave the window,
or, for concurrency, per gateway its recent mean request time less the age of its oldest
request, no later than its lease's end; at least 1 s. A refusal is remembered for up to one
slice, so a tenant flooding a gateway past its limit costs the database one query per slice.

Database unreachable or slow (over 2 s, or slower than one slice for a window lease): the
request is counted by this process's `TenantLimiter` instead (`limiter="fallback"` in
`tacet_limiter_decisions_total`, event `limiter.shared_unavailable`), so limits still hold per
gateway, not across them, until the database answers again.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import structlog

from gateway import problems
from gateway.ratelimit import (
    WINDOW_SECONDS,
    Admission,
    LimitsLookup,
    RateLimited,
    Recorder,
    TenantLimiter,
    decided,
    retry_seconds,
)
from gateway.settings import TenantLimitSettings
from gateway.store.limits import LimitCounters, Returned, SlotAsk, SlotRow, WindowAsk
from gateway.store.repository import TenantLimits

__all__ = ["SharedLimiter"]

_log = structlog.get_logger("tacet.gateway")
_DB_TIMEOUT_S = 2.0


class _Late(Exception):
    """A window lease answered after its units could still be spent: not used."""


@dataclass
class _Lease:
    units: int  # left to spend
    deadline: float  # the local clock's last moment to spend them
    until_ms: int  # their row in the window


@dataclass
class _Fleet:
    """One tenant as this process sees it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    leases: dict[str, deque[_Lease]] = field(default_factory=dict)  # kind -> by deadline
    returns: list[Returned] = field(default_factory=list)  # expired units to give back
    in_flight: dict[int, float] = field(default_factory=dict)  # admission id -> local start
    mean: float = 1.0  # seconds; EWMA of finished requests
    row: bool = False  # this gateway has a `limit_slots` row for the tenant
    dirty: bool = False  # that row's count may be wrong (a write failed): rewrite it
    # kind -> (retry at, recheck at, need) after a refusal: asked again only after `recheck`
    blocked: dict[str, tuple[float, float, int]] = field(default_factory=dict)

    def allowance(self, kind: str, now: float) -> int:
        return sum(lease.units for lease in self.leases.get(kind, ()) if lease.deadline >= now)

    def expire(self, now: float) -> None:
        for kind, leases in self.leases.items():
            while leases and leases[0].deadline < now:
                gone = leases.popleft()
                if gone.units:
                    self.returns.append(Returned(kind, gone.until_ms, gone.units))

    def reserve(self, kind: str, units: int, now: float) -> list[tuple[_Lease, int]]:
        """Take `units` from the live leases, soonest deadline first (the caller checked the
        allowance); what was taken from which, to put back if the admission fails."""
        taken: list[tuple[_Lease, int]] = []
        for lease in self.leases.get(kind, ()):
            if units <= 0:
                break
            if lease.deadline >= now and lease.units:
                part = min(units, lease.units)
                lease.units -= part
                units -= part
                taken.append((lease, part))
        return taken


def _put_back(reserved: list[tuple[_Lease, int]]) -> None:
    for lease, part in reserved:
        lease.units += part  # unspent: spendable until its deadline, then given back


def _needs(limits: TenantLimits, documents: int, *, request: bool) -> dict[str, int]:
    """kind -> units this call needs from the tenant's windows (unlimited kinds are absent)."""
    needs: dict[str, int] = {}
    if request and (limits.requests_per_minute or 0) >= 1:
        needs["requests"] = 1
    if (limits.documents_per_minute or 0) >= 1 and documents > 0:
        if documents > (limits.documents_per_minute or 0):
            raise problems.TooLarge()  # more than the tenant may send in a minute at all
        needs["documents"] = documents
    return needs


class SharedLimiter:
    """`gateway.ratelimit.Limiter` across gateways on PostgreSQL, `TenantLimiter` on SQLite."""

    def __init__(
        self,
        lookup: LimitsLookup,
        opener: Callable[[], Awaitable[Any]],  # the opened `gateway.store.Store`
        settings: TenantLimitSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings or TenantLimitSettings()
        self._opener, self._clock = opener, clock
        self._local = TenantLimiter(lookup, clock=clock)  # SQLite; limits cache; fallback
        self._counters: LimitCounters | None = None
        self._resolved = False
        self._resolving = asyncio.Lock()
        self._tenants: dict[str, _Fleet] = {}
        self._ids = count(1)
        self.gateway_id = secrets.token_hex(16)  # this process's rows in `limit_slots`
        self._offset_ms = 0.0  # database clock minus the local clock, in ms
        self._beat: asyncio.Task[None] | None = None
        self._recorder: Recorder | None = None

    @property
    def recorder(self) -> Recorder | None:
        return self._recorder

    @recorder.setter
    def recorder(self, value: Recorder | None) -> None:
        self._recorder = self._local.recorder = value

    # ---- which backend -----------------------------------------------------------------------

    async def _shared(self) -> LimitCounters | None:
        if not self._resolved:
            async with self._resolving:
                if not self._resolved:
                    engine = (await self._opener()).engine
                    if engine.dialect.name == "postgresql":
                        s = self._settings
                        self._counters = LimitCounters(
                            engine, period_s=WINDOW_SECONDS, slice_s=s.slice_seconds,
                            lease_s=s.lease_seconds,
                        )
                        self._local.name = "fallback"
                        self._beat = asyncio.get_running_loop().create_task(self._heartbeat())
                    self._resolved = True
        return self._counters

    def _fleet(self, tenant_id: str) -> _Fleet:
        fleet = self._tenants.get(tenant_id)
        if fleet is None:
            fleet = self._tenants[tenant_id] = _Fleet()
        return fleet

    def _slice(self, limit: int) -> int:
        per_slice = math.floor(limit * self._settings.slice_seconds / WINDOW_SECONDS)
        return max(1, min(self._settings.max_slice, per_slice))

    def _row(self, fleet: _Fleet, now: float, extra: int) -> SlotRow:
        oldest = min(fleet.in_flight.values(), default=now)
        return SlotRow(
            slots=len(fleet.in_flight) + extra,
            oldest_ms=round(oldest * 1000 + self._offset_ms),
            mean_ms=round(fleet.mean * 1000),
        )

    # ---- admission ---------------------------------------------------------------------------

    async def acquire(self, tenant_id: str, *, documents: int = 0) -> Admission:
        counters = await self._shared()
        if counters is None:
            return await self._local.acquire(tenant_id, documents=documents)
        limits = await self._local.limits(tenant_id)
        fleet = self._fleet(tenant_id)
        needs = self._checked(limits, documents, request=True)
        concurrency = limits.max_concurrency if (limits.max_concurrency or 0) >= 1 else None
        async with fleet.lock:
            try:
                await self._take(counters, tenant_id, fleet, needs, concurrency)
            except RateLimited as exc:
                decided(self._recorder, "refused_" + exc.reason, "shared")
                raise
            except Exception as exc:  # the database: count here until it answers
                _log.warning("limiter.shared_unavailable", error_type=type(exc).__name__)
                return await self._local.acquire(tenant_id, documents=documents)
            ident = next(self._ids)
            fleet.in_flight[ident] = self._clock()
        decided(self._recorder, "admitted", "shared")
        return Admission(self, tenant_id, ident)

    async def charge(self, tenant_id: str, documents: int) -> None:
        """More documents for a request admitted here (a stream's next chunk)."""
        counters = await self._shared()
        if counters is None:
            await self._local.charge(tenant_id, documents)
            return
        limits = await self._local.limits(tenant_id)
        needs = self._checked(limits, documents, request=False)
        if not needs:
            return
        fleet = self._fleet(tenant_id)
        async with fleet.lock:
            try:
                await self._take(counters, tenant_id, fleet, needs, None)
            except RateLimited as exc:
                decided(self._recorder, "refused_" + exc.reason, "shared")
                raise
            except Exception as exc:
                _log.warning("limiter.shared_unavailable", error_type=type(exc).__name__)
                await self._local.charge(tenant_id, documents)
                return
        decided(self._recorder, "admitted", "shared")

    def _checked(self, limits: TenantLimits, documents: int, *, request: bool) -> dict[str, int]:
        try:
            return _needs(limits, documents, request=request)
        except problems.TooLarge:
            decided(self._recorder, "too_large", "shared")
            raise

    async def _take(
        self,
        counters: LimitCounters,
        tenant_id: str,
        fleet: _Fleet,
        needs: dict[str, int],
        concurrency: int | None,
    ) -> None:
        """Spend `needs` from the allowances and take a slot when `concurrency` is set, asking
        the database only for kinds the allowance cannot cover (the whole need, plus up to a
        slice); RateLimited, with nothing spent, if the fleet has no room."""
        now = self._clock()
        fleet.expire(now)
        reserved: list[tuple[_Lease, int]] = []
        short: dict[str, int] = {}
        for kind, units in needs.items():
            if fleet.allowance(kind, now) >= units:
                reserved += fleet.reserve(kind, units, now)
                continue
            short[kind] = units
            blocked = fleet.blocked.get(kind)
            if blocked is not None and now < blocked[1] and units >= blocked[2]:
                _put_back(reserved)
                raise RateLimited(retry_seconds(blocked[0] - now), kind)
        slot = None
        if concurrency is not None:
            if len(fleet.in_flight) >= concurrency:  # full here already: no need to ask
                _put_back(reserved)
                wait = fleet.mean - (now - min(fleet.in_flight.values()))
                raise RateLimited(retry_seconds(wait), "concurrency")
            slot = SlotAsk(concurrency, self._row(fleet, now, extra=1))
        if not short and slot is None:
            return
        try:
            await self._ask(counters, tenant_id, fleet, short, slot, needs)
        except RateLimited:
            _put_back(reserved)
            raise
        except BaseException:
            _put_back(reserved)
            if slot is not None:  # it may have been written: the next heartbeat rewrites it
                fleet.row = fleet.dirty = True
            raise

    async def _ask(
        self,
        counters: LimitCounters,
        tenant_id: str,
        fleet: _Fleet,
        short: dict[str, int],
        slot: SlotAsk | None,
        needs: dict[str, int],
    ) -> None:
        """The database round: lease `short` (and the slot); spend the leased needs."""
        limits = await self._local.limits(tenant_id)
        asks = [
            WindowAsk(kind, limit, units, max(units, self._slice(limit)))
            for kind, units in short.items()
            if (limit := _limit_of(limits, kind)) is not None
        ]
        # A failed call may have committed; giving these back twice would loosen the window,
        # keeping them is only stricter: they are handed over once, whatever happens.
        returns, fleet.returns = fleet.returns, []
        sent = self._clock()
        verdict = await asyncio.wait_for(
            counters.admit(tenant_id, self.gateway_id, asks, slot, returns), _DB_TIMEOUT_S
        )
        self._offset_ms = verdict.now_ms - sent * 1000
        if verdict.refused:
            reason, wait = max(verdict.refused.items(), key=lambda item: item[1])
            if reason != "concurrency":
                recheck = sent + min(wait, self._settings.slice_seconds)
                fleet.blocked[reason] = (sent + wait, recheck, needs[reason])
            raise RateLimited(retry_seconds(wait), reason)
        if slot is not None:
            fleet.row, fleet.dirty = True, False
        deadline = sent + self._settings.slice_seconds
        fresh: dict[str, _Lease] = {}
        for kind, (units, until_ms) in verdict.granted.items():
            fleet.blocked.pop(kind, None)
            fresh[kind] = _Lease(units, deadline, until_ms)
            fleet.leases.setdefault(kind, deque()).append(fresh[kind])
        if fresh and self._clock() > deadline:  # answered too late to spend them: back they go
            fleet.dirty = fleet.row
            fleet.expire(math.inf)
            raise _Late()
        for kind, lease in fresh.items():
            lease.units -= short[kind]

    def release(self, tenant_id: str, ident: int) -> None:
        """The slot is free here at once; the database row is rewritten by `flush` (the
        middleware awaits it before the response's last byte) or the next heartbeat."""
        fleet = self._tenants.get(tenant_id)
        if fleet is None:
            return
        started = fleet.in_flight.pop(ident, None)
        if started is None:
            return
        fleet.mean = 0.8 * fleet.mean + 0.2 * max(0.0, self._clock() - started)
        if fleet.row:
            fleet.dirty = True

    async def flush(self, tenant_id: str) -> None:
        fleet = self._tenants.get(tenant_id)
        if fleet is not None and fleet.row and fleet.dirty and self._counters is not None:
            await self._write_row(self._counters, tenant_id, fleet)

    async def _write_row(self, counters: LimitCounters, tenant_id: str, fleet: _Fleet) -> None:
        async with fleet.lock:
            row = self._row(fleet, self._clock(), extra=0)
            try:
                await asyncio.wait_for(
                    counters.put_slots(tenant_id, self.gateway_id, row), _DB_TIMEOUT_S
                )
            except Exception as exc:  # the next heartbeat writes it
                fleet.dirty = True
                _log.warning("limiter.shared_unavailable", error_type=type(exc).__name__)
                return
            fleet.row, fleet.dirty = row.slots > 0, False

    # ---- leases ------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._settings.lease_seconds / 3)
            try:
                await self.beat()
            except Exception as exc:
                _log.warning("limiter.heartbeat_failed", error_type=type(exc).__name__)

    async def beat(self) -> None:
        """Renew this process's slot leases, give back expired units, prune dead rows."""
        counters = self._counters
        if counters is None:
            return
        now = self._clock()
        returns: dict[str, list[Returned]] = {}
        for tenant_id, fleet in self._tenants.items():
            fleet.expire(now)
            if fleet.returns:
                returns[tenant_id], fleet.returns = fleet.returns, []
        _, renewed = await asyncio.wait_for(
            counters.heartbeat(self.gateway_id, returns), _DB_TIMEOUT_S
        )
        for tenant_id, fleet in list(self._tenants.items()):
            # A row pruned while this process could not renew it, or a failed write: rewrite.
            if fleet.row and (fleet.dirty or tenant_id not in renewed):
                await self._write_row(counters, tenant_id, fleet)

    async def close(self) -> None:
        """At shutdown: stop renewing, drop this process's slots, give back unspent units."""
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None
        counters = self._counters
        if counters is None:
            return
        returns: dict[str, list[Returned]] = {}
        for tenant_id, fleet in self._tenants.items():
            fleet.expire(math.inf)
            if fleet.returns:
                returns[tenant_id], fleet.returns = fleet.returns, []
        try:
            await asyncio.wait_for(counters.drop_gateway(self.gateway_id, returns), _DB_TIMEOUT_S)
        except Exception as exc:  # the lease ends on its own
            _log.warning("limiter.shared_unavailable", error_type=type(exc).__name__)

    def in_flight(self, tenant_id: str) -> int:
        fleet = self._tenants.get(tenant_id)
        return self._local.in_flight(tenant_id) + (0 if fleet is None else len(fleet.in_flight))


def _limit_of(limits: TenantLimits, kind: str) -> int | None:
    return limits.requests_per_minute if kind == "requests" else limits.documents_per_minute
