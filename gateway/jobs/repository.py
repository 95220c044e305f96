"""Jobs and shards in the control-plane database: progress survives any worker's death.

Every tenant-facing read takes the tenant id first (from the caller's key record); another
tenant's job answers exactly like a missing one (None). A shard's counts are added to its job
once, in the same transaction that moves the shard to `done` and only if it was not done yet,
so a shard processed twice (at-least-once delivery) is counted once.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from gateway.jobs.s3io import ShardPlan
from gateway.store.models import Job, JobShard

__all__ = ["JobRecord", "JobSpec", "JobStore", "ShardCounts", "ShardRecord"]

RUNNING, DONE, CANCELLED, FAILED = "running", "done", "cancelled", "failed"
PENDING = "pending"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    return "job_" + base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()


@dataclass(frozen=True)
class JobSpec:
    input_uri: str
    output_uri: str
    compression: str
    taxonomy: str
    taxonomy_version: str
    labelled_with: str | None
    task: str | None
    mode: str
    shard_size: int


@dataclass(frozen=True)
class ShardCounts:
    documents: int = 0  # results written (scored + passed through)
    errors: int = 0  # records that could not be classified (one error line each)
    passed_through: int = 0
    rescored: int = 0  # delta jobs: documents sent to the engine


@dataclass(frozen=True)
class JobRecord:
    id: str
    tenant_id: str
    spec: JobSpec
    state: str
    shards_total: int
    shards_done: int
    counts: ShardCounts
    model_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    def documents_per_second(self, now: datetime) -> float:
        if self.started_at is None:
            return 0.0
        seconds = ((self.finished_at or now) - self.started_at).total_seconds()
        return self.counts.documents / seconds if seconds > 0 else 0.0


@dataclass(frozen=True)
class ShardRecord:
    job_id: str
    plan: ShardPlan
    state: str
    attempts: int
    counts: ShardCounts
    model_id: str | None
    started_at: datetime | None  # of the latest attempt
    finished_at: datetime | None


def _job_record(row: Job) -> JobRecord:
    spec = JobSpec(**{f.name: getattr(row, f.name) for f in fields(JobSpec)})
    counts = ShardCounts(row.documents, row.errors, row.passed_through, row.rescored)
    return JobRecord(
        row.id, row.tenant_id, spec, row.state, row.shards_total, row.shards_done, counts,
        row.model_id, row.created_at, row.started_at, row.finished_at,
    )


def _shard_record(row: JobShard) -> ShardRecord:
    plan = ShardPlan(row.idx, row.line_start, row.line_end, row.byte_start, row.byte_end)
    counts = ShardCounts(row.documents, row.errors, row.passed_through, row.rescored)
    return ShardRecord(
        row.job_id, plan, row.state, row.attempts, counts, row.model_id, row.started_at,
        row.finished_at,
    )


class JobStore:
    def __init__(self, engine: AsyncEngine, *, now: Callable[[], datetime] = _utcnow) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._now = now

    async def create(self, tenant_id: str, spec: JobSpec, plans: list[ShardPlan]) -> JobRecord:
        now = self._now()
        row = Job(
            id=new_job_id(), tenant_id=tenant_id, **{f.name: getattr(spec, f.name)
                                                       for f in fields(JobSpec)},
            state=RUNNING, shards_total=len(plans), shards_done=0, documents=0, errors=0,
            passed_through=0, rescored=0, model_id=None, created_at=now, started_at=None,
            finished_at=None,
        )
        async with self._sessions() as session, session.begin():
            session.add(row)
            await session.flush()
            session.add_all(
                JobShard(
                    job_id=row.id, idx=p.idx, line_start=p.line_start, line_end=p.line_end,
                    byte_start=p.byte_start, byte_end=p.byte_end, state=PENDING, attempts=0,
                    documents=0, errors=0, passed_through=0, rescored=0, model_id=None,
                )
                for p in plans
            )
        return _job_record(row)

    async def get(self, tenant_id: str, job_id: str) -> JobRecord | None:
        async with self._sessions() as session:
            row = await session.get(Job, job_id)
            return _job_record(row) if row is not None and row.tenant_id == tenant_id else None

    async def get_any(self, job_id: str) -> JobRecord | None:
        """For the worker, which serves every tenant's shards (the message names the job)."""
        async with self._sessions() as session:
            row = await session.get(Job, job_id)
            return _job_record(row) if row is not None else None

    async def shard(self, job_id: str, idx: int) -> ShardRecord | None:
        async with self._sessions() as session:
            row = await session.get(JobShard, (job_id, idx))
            return _shard_record(row) if row is not None else None

    async def shards(self, job_id: str) -> list[ShardRecord]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(JobShard).where(JobShard.job_id == job_id).order_by(JobShard.idx)
            )
            return [_shard_record(r) for r in rows]

    async def cancel(self, tenant_id: str, job_id: str) -> JobRecord | None:
        """Stop a running job: its pending shards will be dropped by the workers."""
        now = self._now()
        async with self._sessions() as session, session.begin():
            row = await session.get(Job, job_id)
            if row is None or row.tenant_id != tenant_id:
                return None
            await session.execute(
                update(Job)
                .where((Job.id == job_id) & (Job.state == RUNNING))
                .values(state=CANCELLED, finished_at=now)
            )
            await session.execute(
                update(JobShard)
                .where((JobShard.job_id == job_id) & (JobShard.state != DONE))
                .values(state=CANCELLED)
            )
        return await self.get(tenant_id, job_id)

    async def start_shard(self, job_id: str, idx: int) -> bool:
        """Count an attempt; False when the shard is done or cancelled (nothing to do)."""
        now = self._now()
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(JobShard)
                .where(
                    (JobShard.job_id == job_id)
                    & (JobShard.idx == idx)
                    & JobShard.state.in_((PENDING, RUNNING))
                )
                .values(state=RUNNING, attempts=JobShard.attempts + 1, started_at=now)
            )
            if getattr(result, "rowcount", 0) != 1:
                return False
            await session.execute(
                update(Job)
                .where((Job.id == job_id) & Job.started_at.is_(None))
                .values(started_at=now)
            )
        return True

    async def complete_shard(
        self, job_id: str, idx: int, counts: ShardCounts, model_id: str | None
    ) -> JobRecord | None:
        """Mark done and add its counts to the job, once; returns the job as it now stands."""
        now = self._now()
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(JobShard)
                .where(
                    (JobShard.job_id == job_id)
                    & (JobShard.idx == idx)
                    & JobShard.state.in_((PENDING, RUNNING))
                )
                .values(state=DONE, finished_at=now, model_id=model_id, **_counts(counts))
            )
            if getattr(result, "rowcount", 0) == 1:
                await session.execute(
                    update(Job)
                    .where(Job.id == job_id)
                    .values(
                        shards_done=Job.shards_done + 1,
                        documents=Job.documents + counts.documents,
                        errors=Job.errors + counts.errors,
                        passed_through=Job.passed_through + counts.passed_through,
                        rescored=Job.rescored + counts.rescored,
                        model_id=model_id,
                    )
                )
        return await self.get_any(job_id)

    async def finish(self, job_id: str) -> bool:
        """running -> done once every shard is done; True for the one caller that moved it."""
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(Job)
                .where(
                    (Job.id == job_id)
                    & (Job.state == RUNNING)
                    & (Job.shards_done == Job.shards_total)
                )
                .values(state=DONE, finished_at=self._now())
            )
            return getattr(result, "rowcount", 0) == 1

    async def fail(self, job_id: str) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(Job)
                .where((Job.id == job_id) & (Job.state == RUNNING))
                .values(state=FAILED, finished_at=self._now())
            )


def _counts(counts: ShardCounts) -> dict[str, Any]:
    return {
        "documents": counts.documents,
        "errors": counts.errors,
        "passed_through": counts.passed_through,
        "rescored": counts.rescored,
    }
