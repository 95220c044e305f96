"""The shard worker: queue -> S3 range -> local engine -> one part file per shard -> manifest.

For each message `{"job", "shard"}`: skip it (and delete it) when the job is gone, cancelled or
finished, or the shard is already done (a duplicate delivery); otherwise count an attempt,
stream the shard's lines from S3 (memory only), classify the records in fixed batches with the
local engine, write `<output>/part-<shard>.jsonl` as one PUT, mark the shard done in the
database (its counts are added to the job once), and only then delete the message. While it
works, a heartbeat extends the message's lease. A worker killed at any point leaves the message
to come back after the lease; the retry overwrites the part with the same records (same lines,
same batches, same model) or finds the shard done. The worker that completes the last shard
writes `<output>/manifest.json` (deterministic: no clock in it) before the job turns `done`.

Output lines hold the member's ids, labels, probabilities and decode stats, never text:
- scored: `{"id", "status": "scored", "labels": [{facet, label, probability}], "label_mass",
  "decode": {mode, forward_passes, exact, truncated}}` (`"rescored"` in a delta job);
- passed through (delta): `{"id", "status": "passed_through", "labels": [{facet, label}]}`;
- a record that cannot be classified: `{"line": n, "status": "error", "error": code}`, plus
  `"id"` when the record had a usable one. `line` is the 1-based line number in the input.
Logs name job ids and counts only (compliance.zdr allowlist).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.jobs.delta import DeltaPlan
from gateway.jobs.errors import JobError, QueueError
from gateway.jobs.queue import JobQueue, Received
from gateway.jobs.repository import CANCELLED, DONE, FAILED, JobRecord, JobStore, ShardCounts
from gateway.jobs.s3io import S3Uri, ShardPlan, put_object, read_shard

__all__ = ["MANIFEST_NAME", "Worker", "WorkerSettings", "part_name"]

MANIFEST_NAME = "manifest.json"
_log = structlog.get_logger("tacet.jobs")


def part_name(idx: int) -> str:
    return f"part-{idx:05d}.jsonl"


@dataclass(frozen=True)
class WorkerSettings:
    wait_s: float = 5.0  # long-poll per receive
    batch_documents: int = 64  # documents per engine call (a shard is several calls)
    max_document_bytes: int = 64 * 1024  # larger texts are an error line, like /v1/classify
    idle_exit_s: float | None = None  # exit after this long without a message (batch hosts)
    retry_delay_s: int = 10  # a failed shard comes back this soon (not a whole lease later)
    # The queue's dead-letter threshold (TACET_JOBS_MAX_RECEIVES; the SQS redrive policy's
    # maxReceiveCount): when the last delivery of a shard fails, its job is marked failed
    # instead of waiting forever for a shard that went to the dead-letter queue.
    max_receives: int = 5
    # Engine calls of one shard in flight at once: the engine count of an EnginePool (one GPU
    # each), so a shard keeps every engine busy. Results do not depend on it.
    parallel_calls: int = 1


class _Cancelled(Exception):
    """The job was cancelled while this shard was being worked on."""


def _dumps(item: dict[str, Any]) -> bytes:
    return json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


@dataclass
class _Record:
    line: int
    id: str | None
    text: str | None = None
    label: Any = None
    error: str | None = None


def _parse(line: int, raw: bytes, max_bytes: int) -> _Record:
    try:
        item = json.loads(raw)
    except ValueError:
        return _Record(line, None, error="invalid_json")
    if not isinstance(item, dict):
        return _Record(line, None, error="invalid_record")
    doc_id = item.get("id")
    if not isinstance(doc_id, str) or not 1 <= len(doc_id) <= 256:
        return _Record(line, None, error="invalid_id")
    text = item.get("text")
    if not isinstance(text, str) or not text.strip():
        return _Record(line, doc_id, error="invalid_text")
    if len(text.encode("utf-8")) > max_bytes:
        return _Record(line, doc_id, error="too_large")
    return _Record(line, doc_id, text, item.get("label"))


class Worker:
    def __init__(
        self,
        *,
        store: Any,  # gateway.store.Store: the tenants' taxonomy versions
        jobs: JobStore,
        queue: JobQueue,
        engine: Any,  # gateway.engine_client.EngineClient, started
        s3: Any,
        settings: WorkerSettings | None = None,
    ) -> None:
        self.store, self.jobs, self.queue, self.engine, self.s3 = store, jobs, queue, engine, s3
        self.settings = settings or WorkerSettings()
        self._taxonomies: dict[tuple[str, str], Any] = {}
        self.shards_done = 0

    async def run(self, stop: asyncio.Event) -> int:
        """Work until `stop` is set (or idle for `idle_exit_s`); returns shards completed."""
        idle_since = time.monotonic()
        while not stop.is_set():
            try:
                message = await self.queue.receive(self.settings.wait_s)
            except QueueError as exc:
                _log.warning("job_queue_receive_failed", error_type=type(exc).__name__)
                await asyncio.sleep(self.settings.wait_s)
                continue
            if message is None:
                idle = self.settings.idle_exit_s
                if idle is not None and time.monotonic() - idle_since >= idle:
                    break
                continue
            # A stop request abandons the shard in hand: its message is made visible again at
            # once, for another worker (the part is rewritten whole by whoever redoes it).
            work = asyncio.ensure_future(self.handle(message))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                with contextlib.suppress(JobError):
                    await self.queue.extend(message.receipt, 0)
            elif work.exception() is not None:  # the database or queue failed us: retry later
                error = work.exception()
                _log.warning("job_message_failed", error_type=type(error).__name__)
            idle_since = time.monotonic()
        return self.shards_done

    # -- one message ----------------------------------------------------------------------

    async def handle(self, message: Received) -> None:
        body = message.body
        job_id, idx = body.get("job"), body.get("shard")
        if not isinstance(job_id, str) or not isinstance(idx, int):
            _log.warning("job_message_invalid")
            await self.queue.delete(message.receipt)
            return
        job = await self.jobs.get_any(job_id)
        shard = await self.jobs.shard(job_id, idx) if job is not None else None
        if job is None or shard is None or job.state in (CANCELLED, FAILED):
            await self.queue.delete(message.receipt)
            return
        if shard.state == DONE or job.state == DONE or shard.state == CANCELLED:
            await self._finalize(job)  # a crash may have come between the last shard and this
            await self.queue.delete(message.receipt)
            return
        if not await self.jobs.start_shard(job_id, idx):
            await self.queue.delete(message.receipt)
            return
        heartbeat = asyncio.create_task(self._heartbeat(message.receipt))
        started = time.perf_counter()
        try:
            counts, data = await self._process(job, shard.plan)
            output = S3Uri.parse(job.spec.output_uri, prefix=True)
            await asyncio.to_thread(
                put_object, self.s3, output.child(part_name(idx)), data, "application/x-ndjson"
            )
            model_id = self.engine.welcome.model_id if self.engine.welcome else None
            job_now = await self.jobs.complete_shard(job_id, idx, counts, model_id)
            self.shards_done += 1
            _log.info(
                "job_shard_done", job_id=job_id, documents=counts.documents,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
            if job_now is not None:
                await self._finalize(job_now)
            await self.queue.delete(message.receipt)
        except _Cancelled:
            _log.info("job_shard_cancelled", job_id=job_id)
            await self.queue.delete(message.receipt)
        except Exception as exc:  # engine, S3 or database trouble: the message comes back
            _log.warning("job_shard_failed", job_id=job_id, error_type=type(exc).__name__)
            if message.receive_count >= self.settings.max_receives:
                # Its last delivery: the queue dead-letters it next, so the job cannot finish.
                await self.jobs.fail(job_id)
                _log.error("job_failed", job_id=job_id, error_type=type(exc).__name__)
            with contextlib.suppress(JobError):
                await self.queue.extend(message.receipt, self.settings.retry_delay_s)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _heartbeat(self, receipt: str) -> None:
        lease = self.queue.visibility_timeout
        while True:
            await asyncio.sleep(max(1.0, lease / 3))
            try:
                await self.queue.extend(receipt, lease)
            except JobError as exc:
                _log.warning("job_lease_extend_failed", error_type=type(exc).__name__)

    # -- the work -------------------------------------------------------------------------

    @staticmethod
    def _place(
        out: list[dict[str, Any] | None],
        records: list[_Record],
        batch: list[int],
        done: list[Any],
        status: str,
    ) -> None:
        """One engine call's results into their records' output positions."""
        by_index = {d.index: d for d in done}
        for offset, position in enumerate(batch):
            result = by_index[offset]
            out[position] = {
                "id": records[position].id,
                "status": status,
                "labels": [
                    {"facet": x.facet, "label": x.label, "probability": x.probability}
                    for x in result.labels
                ],
                "label_mass": result.label_mass,
                "decode": {
                    "mode": result.decode.mode,
                    "forward_passes": result.decode.forward_passes,
                    "exact": result.decode.exact,
                    "truncated": result.decode.truncated,
                },
            }

    async def _taxonomy(self, tenant_id: str, name: str, version: str) -> Any:
        key = (tenant_id, f"{name}@{version}")
        if key not in self._taxonomies:
            record = await self.store.resolve_taxonomy(tenant_id, key[1])
            if record is None:
                raise JobError("the job's taxonomy version is gone")
            self._taxonomies[key] = record.taxonomy
        return self._taxonomies[key]

    async def _process(self, job: JobRecord, plan: ShardPlan) -> tuple[ShardCounts, bytes]:
        spec = job.spec
        target = await self._taxonomy(job.tenant_id, spec.taxonomy, spec.taxonomy_version)
        delta = None
        if spec.labelled_with is not None:
            old = await self._taxonomy(job.tenant_id, spec.taxonomy, spec.labelled_with)
            delta = DeltaPlan.build(old, target)
        source = S3Uri.parse(spec.input_uri)
        lines = await asyncio.to_thread(
            lambda: list(read_shard(self.s3, source, spec.compression, plan))
        )
        records = [
            _parse(number + 1, raw, self.settings.max_document_bytes)
            for number, raw in lines
            if raw.strip()
        ]
        del lines
        out: list[dict[str, Any] | None] = [None] * len(records)
        to_score: list[int] = []
        passed = 0
        for position, record in enumerate(records):
            if record.error is not None:
                item: dict[str, Any] = {"line": record.line, "status": "error"}
                if record.id is not None:
                    item["id"] = record.id
                item["error"] = record.error
                out[position] = item
                continue
            carried = delta.carried(record.label) if delta is not None else None
            if carried is not None:
                out[position] = {
                    "id": record.id, "status": "passed_through",
                    "labels": [{"facet": f, "label": x} for f, x in carried],
                }
                passed += 1
            else:
                to_score.append(position)
        taxonomy_doc = target.to_document()
        status = "rescored" if delta is not None else "scored"
        size = self.settings.batch_documents
        batches = [to_score[start : start + size] for start in range(0, len(to_score), size)]
        parallel = max(1, self.settings.parallel_calls)
        for first in range(0, len(batches), parallel):
            if first and (await self.jobs.get_any(job.id) or job).state == CANCELLED:
                raise _Cancelled()
            window = batches[first : first + parallel]
            # A failed call cancels its siblings (an Abort each), and the shard fails whole.
            try:
                async with asyncio.TaskGroup() as group:
                    calls = [
                        group.create_task(self.engine.classify(
                            taxonomy_doc, [records[p].text or "" for p in batch], mode=spec.mode
                        ))
                        for batch in window
                    ]
            except ExceptionGroup as failed:
                raise failed.exceptions[0] from None
            for batch, call in zip(window, calls, strict=True):
                self._place(out, records, batch, call.result(), status)
        errors = sum(1 for r in records if r.error is not None)
        counts = ShardCounts(
            documents=len(records) - errors,
            errors=errors,
            passed_through=passed,
            rescored=len(to_score) if delta is not None else 0,
        )
        data = b"".join(_dumps(item) for item in out if item is not None)
        return counts, data

    async def _finalize(self, job: JobRecord) -> None:
        """Write the manifest and mark the job done, once every shard is done."""
        if job.state != "running" or job.shards_done != job.shards_total:
            return
        shards = await self.jobs.shards(job.id)
        if any(s.state != DONE for s in shards):
            return
        spec = job.spec
        models = sorted({s.model_id for s in shards if s.model_id})
        manifest = {
            "job": job.id,
            "state": DONE,
            "input": spec.input_uri,
            "taxonomy": {"name": spec.taxonomy, "version": spec.taxonomy_version},
            "labelled_with": spec.labelled_with,
            "task": spec.task,
            "mode": spec.mode,
            "model": models[0] if len(models) == 1 else models,
            "shard_size": spec.shard_size,
            "counts": {
                "documents": job.counts.documents,
                "errors": job.counts.errors,
                "passed_through": job.counts.passed_through,
                "rescored": job.counts.rescored,
            },
            "parts": [
                {
                    "name": part_name(s.plan.idx),
                    "shard": s.plan.idx,
                    "lines": [s.plan.line_start + 1, s.plan.line_end],
                    "documents": s.counts.documents,
                    "errors": s.counts.errors,
                    "passed_through": s.counts.passed_through,
                    "rescored": s.counts.rescored,
                }
                for s in shards
            ],
        }
        output = S3Uri.parse(spec.output_uri, prefix=True)
        data = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8") + b"\n"
        await asyncio.to_thread(
            put_object, self.s3, output.child(MANIFEST_NAME), data, "application/json"
        )
        if await self.jobs.finish(job.id):
            _log.info("job_done", job_id=job.id, documents=job.counts.documents)
