"""Submit, inspect and cancel jobs: the one implementation behind HTTP and `tacet jobs`.

`submit` resolves (and pins) the taxonomy version, checks `labelled_with` and the task, streams
the input object once to cut it into shards (nothing is stored locally), records the job and its
shards, then queues one message per shard.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.jobs.errors import JobError, JobInvalid
from gateway.jobs.queue import JobQueue
from gateway.jobs.repository import JobRecord, JobSpec, JobStore
from gateway.jobs.s3io import S3Uri, compression_of, plan_shards
from gateway.taxonomy_io import TaxonomyError, parse_reference

__all__ = ["MAX_SHARD_SIZE", "MODES", "JobRequest", "job_view", "submit_job"]

MODES = ("diffusion", "autoregressive", "self_speculative")
MAX_SHARD_SIZE = 1_000_000


@dataclass(frozen=True)
class JobRequest:
    input: str  # s3://bucket/key.jsonl[.gz]: records {id, text[, label]}
    output: str  # s3://bucket/prefix: part-<shard>.jsonl files and manifest.json go here
    taxonomy: str  # name (latest, pinned now) or name@version
    task: str | None = None
    mode: str | None = None  # default: the task's mode, else diffusion
    shard_size: int = 1000
    labelled_with: str | None = None  # delta: the version the input's labels come from


async def submit_job(
    store: Any, jobs: JobStore, queue: JobQueue, tenant_id: str, request: JobRequest, s3: Any
) -> JobRecord:
    """Validate, shard, record and enqueue; JobError (JobInvalid, InputUnreadable...) if not."""
    if not 1 <= request.shard_size <= MAX_SHARD_SIZE:
        raise JobInvalid("invalid_shard_size")
    source = S3Uri.parse(request.input)
    output = S3Uri.parse(request.output, prefix=True)
    try:
        name, _ = parse_reference(request.taxonomy)
    except TaxonomyError:
        raise JobInvalid("unknown_taxonomy") from None
    target = await store.resolve_taxonomy(tenant_id, request.taxonomy)
    if target is None:
        raise JobInvalid("unknown_taxonomy")
    if request.labelled_with is not None:
        try:
            parse_reference(f"{name}@{request.labelled_with}")
        except TaxonomyError:
            raise JobInvalid("unknown_labelled_with") from None
        if await store.resolve_taxonomy(tenant_id, f"{name}@{request.labelled_with}") is None:
            raise JobInvalid("unknown_labelled_with")
    mode = request.mode
    if request.task is not None:
        policy = await store.get_task_policy(tenant_id, request.task)
        if policy is None:
            raise JobInvalid("unknown_task")
        mode = mode or policy.mode
    mode = mode or "diffusion"
    if mode not in MODES:
        raise JobInvalid("invalid_mode")
    compression = compression_of(source)
    plans = await asyncio.to_thread(plan_shards, s3, source, compression, request.shard_size)
    if not plans:
        raise JobInvalid("empty_input")
    spec = JobSpec(
        input_uri=str(source), output_uri=str(output), compression=compression,
        taxonomy=target.name, taxonomy_version=target.version,
        labelled_with=request.labelled_with, task=request.task, mode=mode,
        shard_size=request.shard_size,
    )
    job = await jobs.create(tenant_id, spec, plans)
    try:
        await queue.send_many([{"job": job.id, "shard": p.idx} for p in plans])
    except JobError:
        await jobs.fail(job.id)
        raise
    return job


def job_view(job: JobRecord, now: datetime | None = None) -> dict[str, Any]:
    """What `GET /v1/jobs/{id}` and `tacet jobs status` show: metadata and counts only."""
    now = now or datetime.now(UTC)
    return {
        "id": job.id,
        "state": job.state,
        "input": job.spec.input_uri,
        "output": job.spec.output_uri,
        "taxonomy": {"name": job.spec.taxonomy, "version": job.spec.taxonomy_version},
        "labelled_with": job.spec.labelled_with,
        "task": job.spec.task,
        "mode": job.spec.mode,
        "shard_size": job.spec.shard_size,
        "shards": {"done": job.shards_done, "total": job.shards_total},
        "documents": job.counts.documents,
        "errors": job.counts.errors,
        "passed_through": job.counts.passed_through,
        "rescored": job.counts.rescored,
        "documents_per_second": round(job.documents_per_second(now), 3),
        "model": job.model_id,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
