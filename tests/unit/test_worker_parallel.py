"""`tacet worker` with several engines: one batch of a shard per engine in flight
(`WorkerSettings.parallel_calls`), the part identical to one batch at a time.

The shard's lines come from a stub instead of S3 and the taxonomy from a stub store; the jobs
integration tests (tests/integration/test_jobs.py) run the whole worker against moto and a real
engine.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from engine.protocol import DecodeOut, DocumentDone, LabelOut
from gateway.jobs import worker as worker_module
from gateway.jobs.repository import JobRecord, JobSpec, ShardCounts
from gateway.jobs.s3io import ShardPlan
from gateway.jobs.worker import Worker, WorkerSettings

TAXONOMY = {"name": "topics", "version": "1", "facets": [{"name": "topic", "labels": []}]}
LINES = [json.dumps({"id": f"d{i}", "text": f"text {i}"}).encode() for i in range(50)]


class RecordingEngine:
    """Labels each text by its own content; records how many calls overlap."""

    welcome = None

    def __init__(self, fail_on: str | None = None) -> None:
        self.in_flight = 0
        self.most = 0
        self.fail_on = fail_on

    async def classify(self, taxonomy: dict[str, Any], texts: list[str], **_: Any) -> list[Any]:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.01 * (len(texts) % 3 + 1))  # calls finish out of order
            if self.fail_on in texts:
                raise RuntimeError("engine trouble")
            decode = DecodeOut("diffusion", 1, True, False, 2)
            return [
                DocumentDone("c", i, [LabelOut("topic", text.split()[-1], 0.5)], {}, decode)
                for i, text in enumerate(texts)
            ]
        finally:
            self.in_flight -= 1


class Jobs:
    async def get_any(self, job_id: str) -> None:
        return None  # not cancelled


class Store:
    async def resolve_taxonomy(self, tenant_id: str, reference: str) -> Any:
        return SimpleNamespace(taxonomy=SimpleNamespace(to_document=lambda: TAXONOMY))


def _job() -> JobRecord:
    spec = JobSpec("s3://in/x.jsonl", "s3://out/p", "none", "topics", "1", None, None,
                   "diffusion", 1000)
    return JobRecord("j", "t", spec, "running", 1, 0, ShardCounts(), None,
                     datetime.now(UTC), None, None)


def _process(monkeypatch: pytest.MonkeyPatch, engine: Any, parallel: int) -> bytes:
    monkeypatch.setattr(worker_module, "read_shard", lambda *a: list(enumerate(LINES)))
    worker = Worker(store=Store(), jobs=Jobs(), queue=None, engine=engine, s3=None,  # type: ignore[arg-type]
                    settings=WorkerSettings(batch_documents=7, parallel_calls=parallel))
    _, data = asyncio.run(worker._process(_job(), ShardPlan(0, 0, 50, None, None)))
    return data


def test_parallel_calls_keep_one_batch_per_engine_in_flight_and_the_same_part(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one, three = RecordingEngine(), RecordingEngine()
    sequential = _process(monkeypatch, one, 1)
    parallel = _process(monkeypatch, three, 3)
    assert one.most == 1 and three.most == 3
    assert parallel == sequential
    ids = [json.loads(line)["id"] for line in parallel.splitlines()]
    assert ids == [f"d{i}" for i in range(50)]
    labels = [json.loads(line)["labels"][0]["label"] for line in parallel.splitlines()]
    assert labels == [str(i) for i in range(50)]


def test_a_failing_call_fails_the_shard_with_its_own_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(RuntimeError, match="engine trouble"):
        _process(monkeypatch, RecordingEngine(fail_on="text 8"), 3)
