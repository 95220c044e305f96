"""The append-only audit log: `append` returns only after the record's transaction committed.

Appends to one chain are serialised in-process by a lock and across processes by the
(chain, seq) unique constraint: a writer that loses the race re-reads the head and retries. Any
failure raises AuditWriteError, and the request that caused the event must then fail closed
(DESIGN.md: the write is durable before the response leaves).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from compliance.audit.chain import GENESIS, canonical, seal
from compliance.audit.errors import AuditWriteError
from compliance.audit.record import AuditEvent, ocsf_body
from compliance.audit.signer import Signer, fingerprint, verify_signature
from gateway.store.audit_models import AuditCheckpoint, AuditExport, AuditRecordRow

__all__ = ["AuditLog", "Checkpoint"]

_RETRIES = 8


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Checkpoint:
    chain: str
    seq: int
    hash: str
    time: datetime
    key_fingerprint: str
    signature: bytes

    def statement(self) -> bytes:
        """The signed bytes: canonical JSON of what the checkpoint asserts."""
        return canonical(
            {
                "chain": self.chain,
                "seq": self.seq,
                "hash": self.hash,
                "time": self.time.isoformat(timespec="milliseconds"),
                "key": self.key_fingerprint,
            }
        )

    def verify(self, public_pem: bytes) -> bool:
        return fingerprint(public_pem) == self.key_fingerprint and verify_signature(
            public_pem, self.statement(), self.signature
        )


async def _lock_writers(session: AsyncSession, dialect: str, chain: str) -> None:
    """Serialise writers of a chain before reading its head, across processes.

    PostgreSQL: a transaction-level advisory lock per chain. SQLite: a write statement that
    matches no row still takes the database's write lock, so a second writer waits (busy
    timeout) instead of reading a head that is about to change and failing at commit.
    """
    if dialect == "postgresql":
        key = int.from_bytes(hashlib.sha256(chain.encode()).digest()[:8], "big", signed=True)
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    else:
        await session.execute(text("DELETE FROM audit_exports WHERE id < 0"))


class AuditLog:
    def __init__(self, engine: AsyncEngine, *, now: Callable[[], datetime] = _utcnow) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._lock = asyncio.Lock()
        self._now = now

    async def append(self, event: AuditEvent) -> dict[str, Any]:
        """Chain, write and commit one record; return it. Raises AuditWriteError otherwise."""
        async with self._lock:
            for _ in range(_RETRIES):
                try:
                    return await self._append_once(event)
                except IntegrityError:
                    continue  # another process took this seq: read the new head and retry
                except (SQLAlchemyError, OSError, ValueError) as exc:
                    raise AuditWriteError(f"audit write failed ({type(exc).__name__})") from None
        raise AuditWriteError("audit write lost the chain head race too many times")

    async def _append_once(self, event: AuditEvent) -> dict[str, Any]:
        now = self._now()
        chain = event.chain_id
        async with self._sessions.begin() as session:
            await _lock_writers(session, self.engine.dialect.name, chain)
            head = (
                await session.execute(
                    select(AuditRecordRow.seq, AuditRecordRow.hash)
                    .where(AuditRecordRow.chain == chain)
                    .order_by(AuditRecordRow.seq.desc())
                    .limit(1)
                )
            ).first()
            seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
            record = seal(ocsf_body(event, int(now.timestamp() * 1000)), seq, prev)
            session.add(
                AuditRecordRow(
                    chain=chain,
                    seq=seq,
                    time=now,
                    hash=record["chain"]["hash"],
                    record=canonical(record).decode(),
                )
            )
        return record

    async def records(self, chain: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Every record of `chain` from the first at or after `start` to the last before `end`,
        by seq (a seq range, so the run is contiguous even if the clock stepped back)."""
        return [record async for record in self.iter_records(chain, start, end)]

    async def iter_records(
        self, chain: str, start: datetime, end: datetime, *, batch: int = 1000
    ) -> AsyncIterator[dict[str, Any]]:
        """The same run as `records`, read `batch` rows at a time (bounded memory)."""
        async with self._sessions() as session:
            bounds = (
                await session.execute(
                    select(func.min(AuditRecordRow.seq), func.max(AuditRecordRow.seq)).where(
                        AuditRecordRow.chain == chain,
                        AuditRecordRow.time >= start,
                        AuditRecordRow.time < end,
                    )
                )
            ).first()
        if bounds is None or bounds[0] is None:
            return
        low, last = bounds
        while low <= last:
            async with self._sessions() as session:
                rows = list(
                    await session.scalars(
                        select(AuditRecordRow.record)
                        .where(
                            AuditRecordRow.chain == chain,
                            AuditRecordRow.seq >= low,
                            AuditRecordRow.seq <= min(last, low + batch - 1),
                        )
                        .order_by(AuditRecordRow.seq)
                    )
                )
            for row in rows:
                yield json.loads(row)
            low += batch

    async def chains(self) -> list[str]:
        async with self._sessions() as session:
            rows = await session.scalars(select(AuditRecordRow.chain).distinct())
            return sorted(rows)

    async def checkpoint(self, chain: str, signer: Signer) -> Checkpoint | None:
        """Sign and store the chain's head; None for an empty chain."""
        async with self._sessions.begin() as session:
            head = (
                await session.execute(
                    select(AuditRecordRow.seq, AuditRecordRow.hash)
                    .where(AuditRecordRow.chain == chain)
                    .order_by(AuditRecordRow.seq.desc())
                    .limit(1)
                )
            ).first()
            if head is None:
                return None
            unsigned = Checkpoint(
                chain, head[0], head[1], self._now(), fingerprint(signer.public_key_pem()), b""
            )
            signed = replace(unsigned, signature=signer.sign(unsigned.statement()))
            session.add(
                AuditCheckpoint(
                    chain=chain,
                    seq=signed.seq,
                    hash=signed.hash,
                    time=signed.time,
                    key_fingerprint=signed.key_fingerprint,
                    signature=base64.b64encode(signed.signature).decode(),
                )
            )
        return signed

    async def last_manifest_hash(self) -> str | None:
        async with self._sessions() as session:
            return await session.scalar(
                select(AuditExport.manifest_sha256).order_by(AuditExport.id.desc()).limit(1)
            )

    async def record_export(self, manifest_sha256: str) -> None:
        async with self._sessions.begin() as session:
            session.add(AuditExport(manifest_sha256=manifest_sha256, created_at=self._now()))
