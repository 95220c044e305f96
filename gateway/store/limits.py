"""Shared per-tenant limit counters on PostgreSQL (issue 25): the database half of
`gateway._shared_limiter`, which has the model and the overshoot argument.

Two tables (migration 0004): `limit_windows` holds units leased from a tenant's per-minute
windows, each row counted until `until_ms`; `limit_slots` holds each gateway process's requests
in flight for a tenant, valid until `expires_ms`. All times are the database's clock
(`clock_timestamp()`, milliseconds since the epoch), so gateways never compare their own clocks.

Every admission is one short transaction that first takes a transaction-level advisory lock on
the tenant, so check-and-count is atomic across every gateway; other tenants are not blocked
(except by a hash collision of their lock keys, which only serialises them).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["LOCK_CLASS", "LimitCounters", "Returned", "SlotAsk", "SlotRow", "Verdict", "WindowAsk"]

LOCK_CLASS = 0x7ACE_0025  # first key of pg_advisory_xact_lock(int, int): "tacet tenant limits"

_LOCK_AND_NOW = text(
    "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint "
    "FROM (SELECT pg_advisory_xact_lock(:cls, :key)) AS locked"
)
_NOW = text("SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint")
_USED = text(
    "SELECT kind, sum(units) FROM limit_windows "
    "WHERE tenant_id = :tenant AND until_ms > :now GROUP BY kind"
)
_WINDOW_ROWS = text(
    "SELECT until_ms, units FROM limit_windows "
    "WHERE tenant_id = :tenant AND kind = :kind AND until_ms > :now ORDER BY until_ms"
)
_ADD_UNITS = text(
    "INSERT INTO limit_windows (tenant_id, kind, until_ms, units) "
    "VALUES (:tenant, :kind, :until, :units) "
    "ON CONFLICT (tenant_id, kind, until_ms) "
    "DO UPDATE SET units = limit_windows.units + excluded.units"
)
_RETURN_UNITS = text(
    "UPDATE limit_windows SET units = greatest(units - :units, 0) "
    "WHERE tenant_id = :tenant AND kind = :kind AND until_ms = :until"
)
_OTHER_SLOTS = text(
    "SELECT slots, oldest_ms, mean_ms, expires_ms FROM limit_slots "
    "WHERE tenant_id = :tenant AND gateway_id <> :gateway AND expires_ms > :now AND slots > 0"
)
_PUT_SLOTS = text(
    "INSERT INTO limit_slots (tenant_id, gateway_id, slots, oldest_ms, mean_ms, expires_ms) "
    "VALUES (:tenant, :gateway, :slots, :oldest, :mean, :expires) "
    "ON CONFLICT (tenant_id, gateway_id) DO UPDATE SET slots = excluded.slots, "
    "oldest_ms = excluded.oldest_ms, mean_ms = excluded.mean_ms, expires_ms = excluded.expires_ms"
)
_PUT_SLOTS_NOW = text(
    "INSERT INTO limit_slots (tenant_id, gateway_id, slots, oldest_ms, mean_ms, expires_ms) "
    "VALUES (:tenant, :gateway, :slots, :oldest, :mean, "
    "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint + CAST(:lease AS bigint)) "
    "ON CONFLICT (tenant_id, gateway_id) DO UPDATE SET slots = excluded.slots, "
    "oldest_ms = excluded.oldest_ms, mean_ms = excluded.mean_ms, expires_ms = excluded.expires_ms"
)
_DROP_SLOTS = text("DELETE FROM limit_slots WHERE tenant_id = :tenant AND gateway_id = :gateway")
_RENEW = text(
    "UPDATE limit_slots SET expires_ms = :expires WHERE gateway_id = :gateway "
    "RETURNING tenant_id"
)
_DROP_GATEWAY = text("DELETE FROM limit_slots WHERE gateway_id = :gateway")
_PRUNE_WINDOWS = text("DELETE FROM limit_windows WHERE until_ms <= :now")
_PRUNE_SLOTS = text("DELETE FROM limit_slots WHERE expires_ms <= :now")


@dataclass(frozen=True)
class WindowAsk:
    """Units wanted from one per-minute window: `need` or refuse, up to `want` if there is room."""

    kind: str  # "requests" | "documents"
    limit: int
    need: int
    want: int


@dataclass(frozen=True)
class SlotRow:
    """This gateway's requests in flight for one tenant (written whole, never incremented)."""

    slots: int
    oldest_ms: int
    mean_ms: int


@dataclass(frozen=True)
class SlotAsk:
    """A concurrency slot: admitted when the other gateways' live slots plus `mine.slots`
    (this gateway's count with the new request) stay within `limit`."""

    limit: int
    mine: SlotRow


@dataclass(frozen=True)
class Returned:
    """Leased units never spent, given back to the window row they were counted in."""

    kind: str
    until_ms: int
    units: int


@dataclass
class Verdict:
    now_ms: int  # the database clock during the transaction
    granted: dict[str, tuple[int, int]] = field(default_factory=dict)  # kind -> units, until_ms
    refused: dict[str, float] = field(default_factory=dict)  # reason -> seconds until room


def _lock_key(tenant_id: str) -> int:
    """The tenant's advisory-lock key: a stable signed 32-bit hash (same in every process)."""
    return zlib.crc32(tenant_id.encode("utf-8")) - 2**31


class LimitCounters:
    """The shared counters of one database; see the module doc. PostgreSQL only."""

    def __init__(
        self, engine: AsyncEngine, *, period_s: float = 60.0, slice_s: float = 1.0,
        lease_s: float = 30.0, resolution_ms: int = 250,
    ) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("shared limit counters need PostgreSQL")
        self.engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._period_ms = round(period_s * 1000)
        self._slice_ms = math.ceil(slice_s * 1000)
        self._lease_ms = round(lease_s * 1000)
        self._resolution_ms = resolution_ms

    def _until(self, now_ms: int) -> int:
        """When units leased now leave the window: after the last moment they may be spent
        (now + slice), rounded up to the resolution so that leases share rows, plus the period."""
        end = now_ms + self._slice_ms
        return -(-end // self._resolution_ms) * self._resolution_ms + self._period_ms

    async def admit(
        self,
        tenant_id: str,
        gateway_id: str,
        windows: Sequence[WindowAsk],
        slot: SlotAsk | None,
        returns: Sequence[Returned] = (),
    ) -> Verdict:
        """One atomic decision for the tenant: every window has room for its `need` and the
        slot fits, then the grants are counted (and the slot row written); else nothing is."""
        async with self.engine.begin() as conn:
            now = int(await conn.scalar(
                _LOCK_AND_NOW, {"cls": LOCK_CLASS, "key": _lock_key(tenant_id)}
            ))
            await self._give_back(conn, tenant_id, returns)
            verdict = Verdict(now)
            used: dict[str, int] = {}
            if windows:
                rows = await conn.execute(_USED, {"tenant": tenant_id, "now": now})
                used = {kind: int(units) for kind, units in rows.all()}
            for ask in windows:
                if ask.need > ask.limit - used.get(ask.kind, 0):
                    verdict.refused[ask.kind] = await self._window_wait(
                        conn, tenant_id, ask, used.get(ask.kind, 0), now
                    )
            if slot is not None:
                wait = await self._slot_wait(conn, tenant_id, gateway_id, slot, now)
                if wait is not None:
                    verdict.refused["concurrency"] = wait
            if verdict.refused:
                return verdict
            until = self._until(now)
            verdict.granted = {
                ask.kind: (min(ask.want, ask.limit - used.get(ask.kind, 0)), until)
                for ask in windows
            }
            if verdict.granted:
                await conn.execute(_ADD_UNITS, [
                    {"tenant": tenant_id, "kind": kind, "until": until, "units": units}
                    for kind, (units, _) in verdict.granted.items()
                ])
            if slot is not None:
                params = self._slot_params(tenant_id, gateway_id, slot.mine, now)
                await conn.execute(_PUT_SLOTS, params)
            return verdict

    async def _window_wait(
        self, conn: AsyncConnection, tenant_id: str, ask: WindowAsk, used: int, now: int
    ) -> float:
        """Seconds until enough counted units leave the window for `need` to fit."""
        if ask.need > ask.limit:
            return math.inf
        excess = used + ask.need - ask.limit
        rows = await conn.execute(_WINDOW_ROWS, {"tenant": tenant_id, "kind": ask.kind, "now": now})
        for until, units in rows.all():
            excess -= int(units)
            if excess <= 0:
                return (int(until) - now) / 1000
        return self._period_ms / 1000  # rows changed under a lowered limit: a full period

    async def _slot_wait(
        self, conn: AsyncConnection, tenant_id: str, gateway_id: str, slot: SlotAsk, now: int
    ) -> float | None:
        """None when the slot fits; else seconds until one is expected to free: per gateway,
        its mean request time less the age of its oldest request, but no later than its lease
        ends (a dead gateway's slots come back then)."""
        params = {"tenant": tenant_id, "gateway": gateway_id, "now": now}
        rows = (await conn.execute(_OTHER_SLOTS, params)).all()
        if sum(int(r[0]) for r in rows) + slot.mine.slots <= slot.limit:
            return None
        mine = slot.mine
        waits = [mine.mean_ms - (now - mine.oldest_ms)] if mine.slots > 1 else []
        for _, oldest, mean, expires in rows:
            waits.append(min(int(mean) - (now - int(oldest)), int(expires) - now))
        return max(0, min(waits, default=0)) / 1000

    def _slot_params(
        self, tenant_id: str, gateway_id: str, row: SlotRow, now: int
    ) -> dict[str, Any]:
        return {
            "tenant": tenant_id, "gateway": gateway_id, "slots": row.slots,
            "oldest": row.oldest_ms, "mean": row.mean_ms, "expires": now + self._lease_ms,
        }

    @staticmethod
    async def _give_back(
        conn: AsyncConnection, tenant_id: str, returns: Sequence[Returned]
    ) -> None:
        if returns:
            await conn.execute(_RETURN_UNITS, [
                {"tenant": tenant_id, "kind": r.kind, "until": r.until_ms, "units": r.units}
                for r in returns
            ])

    async def put_slots(self, tenant_id: str, gateway_id: str, row: SlotRow) -> None:
        """Write this gateway's count for the tenant (its row goes at zero): one statement in
        autocommit, a single round trip (only this gateway writes its row outside admissions,
        and a lower count can only make the others stricter)."""
        async with self._autocommit.connect() as conn:
            if row.slots <= 0:
                await conn.execute(_DROP_SLOTS, {"tenant": tenant_id, "gateway": gateway_id})
            else:
                await conn.execute(_PUT_SLOTS_NOW, {
                    "tenant": tenant_id, "gateway": gateway_id, "slots": row.slots,
                    "oldest": row.oldest_ms, "mean": row.mean_ms, "lease": self._lease_ms,
                })

    async def heartbeat(
        self, gateway_id: str, returns: dict[str, list[Returned]]
    ) -> tuple[int, set[str]]:
        """Renew this gateway's slot leases (counts untouched: only admissions and releases
        write them, under the tenant's lock), give back expired units, and delete every row
        that no longer counts (any gateway's). Returns the db clock and the tenants renewed."""
        async with self.engine.begin() as conn:
            now = int(await conn.scalar(_NOW))
            renewed = await conn.execute(
                _RENEW, {"expires": now + self._lease_ms, "gateway": gateway_id}
            )
            tenants = {str(row[0]) for row in renewed.all()}
            for tenant_id, given in returns.items():
                await self._give_back(conn, tenant_id, given)
            await conn.execute(_PRUNE_WINDOWS, {"now": now})
            await conn.execute(_PRUNE_SLOTS, {"now": now})
            return now, tenants

    async def drop_gateway(self, gateway_id: str, returns: dict[str, list[Returned]]) -> None:
        """At shutdown: this gateway's slots go at once, unspent units go back."""
        async with self.engine.begin() as conn:
            await conn.execute(_DROP_GATEWAY, {"gateway": gateway_id})
            for tenant_id, given in returns.items():
                await self._give_back(conn, tenant_id, given)
