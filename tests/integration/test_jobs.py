"""Bulk jobs end to end: boto3 over HTTP against moto's S3/SQS server, real engine processes.

- 10,000 documents through SQS, the worker a real `python -m gateway.cli worker` subprocess
  SIGKILLed twice while a shard is in progress; the output ends with exactly one result per
  input id and the manifest's counts agree with the parts and the job's row.
- The local queue backend (a table in the control-plane DB) on a gzip input, killed once.
- Both queue backends keep the same lease / redelivery / dead-letter contract.
- Delta: a diff touching 10% of the labels passes >= 85% of documents through unchanged.
- Tenant isolation (another tenant's job is 404 to GET and DELETE) and cancel.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import moto.server as moto_server
import pytest
from litestar.testing import TestClient
from sqlalchemy import MetaData, select
from sqlalchemy.engine import URL

from gateway.apikeys import Peppers
from gateway.app import create_app
from gateway.auth import StoreKeyStore
from gateway.engine_client import InProcessEngine
from gateway.jobs import (
    MANIFEST_NAME,
    JobStore,
    LocalQueue,
    QueueError,
    SqsQueue,
    Worker,
    WorkerSettings,
    touched_labels,
)
from gateway.store import Store, create_engine, database_url, open_store
from gateway.taxonomies import DatabaseTaxonomyStore
from gateway.taxonomy_io import parse_json
from tests.integration._postgres import reset_schema

pytestmark = pytest.mark.integration

REGION = "us-east-1"
PEPPERS = Peppers([b"jobs-test-pepper-0123456789abcdef0123"])
REPO = Path(__file__).resolve().parents[2]
CANARY = f"ZDRCANARY{uuid.uuid4().hex[:12]}"
WORDS = ("heart", "brain", "tumour", "cell", "vessel", "nerve", "scan", "dose", "gene", "trial",
         "patient", "review")


# ---- servers and worlds ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.testing import write_tiny_checkpoint

    return write_tiny_checkpoint("llada", tmp_path_factory.mktemp("model") / "tiny-llada")


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


@pytest.fixture
def aws(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A fresh bucket; this process's boto3 (and the workers') point at the local server."""
    for name, value in {**AWS_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("TACET_JOBS_QUEUE_URL", raising=False)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION)
    bucket = f"jobs-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    return {"s3": s3, "sqs": sqs, "bucket": bucket, "endpoint": endpoint}


def _label(group: int, child: int | None = None) -> dict[str, Any]:
    if child is None:
        return {"id": f"g{group}", "name": f"Group {group}"}
    return {"id": f"g{group}c{child}", "name": f"Topic {group}.{child}", "parent": f"g{group}"}


def _taxonomy_v1() -> dict[str, Any]:
    """One facet of 20 labels: four groups, each a parent with four children."""
    labels = [x for g in range(4) for x in (_label(g), *(_label(g, c) for c in range(4)))]
    return {"name": "topics", "version": "1",
            "facets": [{"name": "topic", "multi": False, "labels": labels}]}


def _taxonomy_v2() -> dict[str, Any]:
    """v1 with a diff that touches exactly TOUCHED_V1_V2: 2 of v1's 20 labels (10%)."""
    labels = [dict(x) for x in _taxonomy_v1()["facets"][0]["labels"]]
    by_id = {x["id"]: x for x in labels}
    by_id["g3c1"]["parent"] = "g1"  # moved
    labels.remove(by_id["g2c0"])  # removed
    return {"name": "topics", "version": "2",
            "facets": [{"name": "topic", "multi": False, "labels": labels}]}


# Written out by hand, not computed by the code under test (the other diff kinds, and the rule
# for added labels, are covered in tests/unit/test_jobs_delta.py).
TOUCHED_V1_V2 = {"g3c1", "g2c0"}

# The volume tests use a small flat taxonomy: the canvas (and so the CPU time per document)
# grows with the number of labels.
KINDS = {"name": "kinds", "version": "1", "facets": [{"name": "kind", "multi": False, "labels": [
    {"id": "article", "name": "Article"}, {"id": "review", "name": "Review"},
    {"id": "letter", "name": "Letter"}, {"id": "trial", "name": "Trial"}]}]}


@dataclass
class World:
    url: URL
    data_dir: Path
    tenants: dict[str, str]  # label -> tenant id
    keys: dict[str, str]  # label -> token with scope `jobs`


async def _seed(url: URL, data_dir: Path) -> World:
    store = await open_store(url)
    world = World(url, data_dir, {}, {})
    try:
        for label in ("a", "b"):
            tenant = await store.create_tenant(f"tenant-{label}")
            world.tenants[label] = tenant.id
            issued = await store.create_key(
                tenant.id, PEPPERS, scopes={"classify", "jobs"}, env="test"
            )
            world.keys[label] = issued.token
            await store.put_taxonomy(tenant.id, parse_json(_taxonomy_v1()))
            await store.put_taxonomy(tenant.id, parse_json(_taxonomy_v2()))
            await store.put_taxonomy(tenant.id, parse_json(KINDS))
        narrow = await store.create_key(world.tenants["a"], PEPPERS, scopes={"classify"})
        world.keys["a-narrow"] = narrow.token
    finally:
        await store.engine.dispose()
    return world


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> World:
    if request.param == "sqlite":
        url = database_url(tmp_path, {})
    else:
        url = request.getfixturevalue("postgres_url")
        asyncio.run(reset_schema(url))
    return asyncio.run(_seed(url, tmp_path))


@pytest.fixture
def sqlite_db(tmp_path: Path) -> World:
    return asyncio.run(_seed(database_url(tmp_path, {}), tmp_path))


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """In-process engines here: one torch thread on the shared 2-core machine, then restored."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _app(world: World, model_dir: Path) -> Any:
    keys = StoreKeyStore(world.url, PEPPERS)
    app = create_app(
        engine=InProcessEngine(model_dir=model_dir),
        keys=keys,
        taxonomies=DatabaseTaxonomyStore(keys.store, b"jobs-test-review-secret-0123456789ab"),
    )
    app.on_shutdown.append(keys.close)
    return app


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---- inputs and outputs ---------------------------------------------------------------------


def _texts(rng: random.Random, count: int) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) for _ in range(count)]


def _put_input(aws: dict[str, Any], key: str, records: list[Any], *, gz: bool = False) -> str:
    body = b"".join(
        (r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records
    )
    aws["s3"].put_object(Bucket=aws["bucket"], Key=key, Body=gzip.compress(body) if gz else body)
    return f"s3://{aws['bucket']}/{key}"


def _outputs(aws: dict[str, Any], prefix: str) -> tuple[dict[str, list[dict[str, Any]]], Any]:
    listing = aws["s3"].list_objects_v2(Bucket=aws["bucket"], Prefix=prefix + "/")
    parts: dict[str, list[dict[str, Any]]] = {}
    manifest = None
    for item in listing.get("Contents", []):
        name = item["Key"][len(prefix) + 1 :]
        body = aws["s3"].get_object(Bucket=aws["bucket"], Key=item["Key"])["Body"].read()
        if name == MANIFEST_NAME:
            manifest = json.loads(body)
        else:
            parts[name] = [json.loads(line) for line in body.splitlines()]
    return parts, manifest


async def _with_store(url: URL, body: Any) -> Any:
    store = Store(create_engine(url))
    try:
        return await body(store)
    finally:
        await store.engine.dispose()


def _job_row(world: World, job_id: str) -> Any:
    async def body(store: Store) -> Any:
        return await JobStore(store.engine).get_any(job_id), await JobStore(store.engine).shards(
            job_id
        )

    return asyncio.run(_with_store(world.url, body))


# ---- the worker as a real process -----------------------------------------------------------


def _worker_env(world: World, aws: dict[str, Any], queue_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TACET_"))}
    env.update(AWS_ENV)
    env["AWS_ENDPOINT_URL"] = aws["endpoint"]
    env["TACET_DATABASE_URL"] = world.url.render_as_string(hide_password=False)
    env["TACET_JOBS_VISIBILITY_TIMEOUT"] = "6"  # a killed worker's shard comes back soon
    env["OMP_NUM_THREADS"] = "1"  # the test machine's cores are shared: no oversubscription
    env["PYTHONUNBUFFERED"] = "1"  # every log line reaches the file before a SIGKILL
    if queue_url:
        env["TACET_JOBS_QUEUE_URL"] = queue_url
    return env


class WorkerProcess:
    def __init__(self, env: dict[str, str], model_dir: Path, log: Path) -> None:
        # A short private TMPDIR: the engine's socket lives there (sun_path is short), and a
        # SIGKILLed worker cannot clean up after itself, so stop() removes it.
        self.tmp = tempfile.mkdtemp(prefix="tacet-jobs-test-")
        self.env, self.model_dir, self.log = {**env, "TMPDIR": self.tmp}, model_dir, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at: datetime | None = None

    def start(self) -> None:
        self.started_at = datetime.now(UTC)
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "worker", "--model", str(self.model_dir),
             "--wait", "1", "--batch", "50"],
            cwd=REPO, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
        )
        handle.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)


async def _running_shard(
    url: URL, job_id: str, since: datetime, deadline: float
) -> tuple[int, datetime] | None:
    """Poll until an attempt started after `since` is in progress: (shard index, its start).

    A shard a killed worker left behind stays `running` until redone, so only an attempt
    younger than the live worker counts.
    """
    engine = create_engine(url)
    jobs = JobStore(engine)
    try:
        while time.monotonic() < deadline:
            for shard in await jobs.shards(job_id):
                started = shard.started_at
                if shard.state == "running" and started is not None and started > since:
                    return shard.plan.idx, started
            await asyncio.sleep(0.05)
    finally:
        await engine.dispose()
    return None


async def _wait_state(url: URL, job_id: str, states: set[str], deadline: float) -> str:
    engine = create_engine(url)
    jobs = JobStore(engine)
    try:
        while time.monotonic() < deadline:
            job = await jobs.get_any(job_id)
            assert job is not None
            if job.state in states:
                return job.state
            await asyncio.sleep(0.25)
    finally:
        await engine.dispose()
    raise AssertionError("the job did not finish in the safety deadline")


def _kill_mid_shard(world: World, worker: WorkerProcess, job_id: str, rng: random.Random) -> int:
    """SIGKILL the worker while a shard is in progress; returns that shard's index."""
    for _ in range(5):
        assert worker.started_at is not None
        found = asyncio.run(
            _running_shard(world.url, job_id, worker.started_at, time.monotonic() + 300)
        )
        assert found is not None, "no shard was ever in progress"
        idx, started = found
        time.sleep(rng.uniform(0.1, 0.6))
        worker.kill()
        # Dead now, so nothing can finish the shard any more: if the same attempt is still
        # `running` in the database, the kill came mid-shard.
        _, shards = _job_row(world, job_id)
        if shards[idx].state == "running" and shards[idx].started_at == started:
            return idx
        worker.start()  # it finished in between: try again on the next shard
    raise AssertionError("could not catch a shard in progress")


def _check_output(
    aws: dict[str, Any], prefix: str, ids: list[str], bad_lines: int, shards: int
) -> dict[str, Any]:
    parts, manifest = _outputs(aws, prefix)
    assert sorted(parts) == [f"part-{i:05d}.jsonl" for i in range(shards)]
    lines = [line for part in parts.values() for line in part]
    results = [x for x in lines if x["status"] != "error"]
    seen = [x["id"] for x in results]
    assert len(seen) == len(set(seen)) == len(ids), "each input id must have exactly one result"
    assert set(seen) == set(ids)
    assert sum(1 for x in lines if x["status"] == "error") == bad_lines
    for result in results:
        assert "text" not in result
        assert result["labels"] and all(0.0 <= x["probability"] <= 1.0 for x in result["labels"])
        assert result["decode"]["forward_passes"] >= 1
    assert manifest is not None
    assert manifest["counts"]["documents"] == len(ids)
    assert manifest["counts"]["errors"] == bad_lines
    assert [p["name"] for p in manifest["parts"]] == sorted(parts)
    for part in manifest["parts"]:
        body = parts[part["name"]]
        assert part["documents"] == sum(1 for x in body if x["status"] != "error")
        assert part["errors"] == sum(1 for x in body if x["status"] == "error")
    return manifest


def _records(rng: random.Random, count: int, prefix: str) -> tuple[list[Any], list[str]]:
    ids = [f"{prefix}-{i:05d}-{CANARY}" for i in range(count)]
    texts = _texts(rng, count)
    records: list[Any] = [
        {"id": i, "text": f"{t} {CANARY}"} for i, t in zip(ids, texts, strict=True)
    ]
    return records, ids


# ---- the 10,000-document job over SQS, worker SIGKILLed twice mid-shard ---------------------


def test_sqs_job_survives_two_kills_with_one_result_per_id(
    sqlite_db: World, aws: dict[str, Any], model_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(8)
    records, ids = _records(rng, 10_000, "doc")
    bad = [b"{not json", json.dumps({"id": "no-text"}).encode(), json.dumps([1, 2]).encode()]
    for position, line in zip((17, 4_321, 9_990), bad, strict=True):
        records.insert(position, line)
    records.insert(500, b"")  # a blank line is not a record
    source = _put_input(aws, "in/archive.jsonl", records)
    queue = SqsQueue.create(aws["sqs"], f"tacet-jobs-{uuid.uuid4().hex[:8]}", max_receives=4,
                            visibility_timeout=6)
    monkeypatch.setenv("TACET_JOBS_QUEUE_URL", queue.queue_url)

    with TestClient(_app(sqlite_db, model_dir)) as client:
        answer = client.post(
            "/v1/jobs", headers=_auth(sqlite_db.keys["a"]),
            json={"input": source, "output": f"s3://{aws['bucket']}/out/run1",
                  "taxonomy": "kinds", "shard_size": 1000},
        )
        assert answer.status_code == 201, answer.text
        job = answer.json()
        assert job["shards"] == {"done": 0, "total": 11}  # 10,003 records / 1000
        assert job["taxonomy"] == {"name": "kinds", "version": "1"}  # pinned at submission

        log = tmp_path / "worker.log"
        worker = WorkerProcess(_worker_env(sqlite_db, aws, queue.queue_url), model_dir, log)
        worker.start()
        try:
            killed = [_kill_mid_shard(sqlite_db, worker, job["id"], rng)]
            worker.start()
            killed.append(_kill_mid_shard(sqlite_db, worker, job["id"], rng))
            worker.start()
            state = asyncio.run(
                _wait_state(sqlite_db.url, job["id"], {"done", "failed"}, time.monotonic() + 900)
            )
        finally:
            worker.stop()
        assert state == "done"

        status = client.get(f"/v1/jobs/{job['id']}", headers=_auth(sqlite_db.keys["a"])).json()
    assert status["state"] == "done"
    assert status["shards"] == {"done": 11, "total": 11}
    assert status["documents"] == 10_000 and status["errors"] == 3
    assert status["documents_per_second"] > 0

    manifest = _check_output(aws, "out/run1", ids, bad_lines=3, shards=11)
    assert manifest["counts"] == {"documents": 10_000, "errors": 3, "passed_through": 0,
                                  "rescored": 0}
    assert manifest["model"] and manifest["taxonomy"] == {"name": "kinds", "version": "1"}
    _, shards = _job_row(sqlite_db, job["id"])
    assert all(s.state == "done" for s in shards)
    for idx in killed:
        assert shards[idx].attempts >= 2, "a killed shard is redone"
    # The queue is empty and nothing went to the dead-letter queue.
    assert asyncio.run(queue.receive(0)) is None
    dlq = aws["sqs"].get_queue_url(QueueName=queue.queue_url.rsplit("/", 1)[1] + "-dlq")
    dead = aws["sqs"].receive_message(QueueUrl=dlq["QueueUrl"], WaitTimeSeconds=0)
    assert not dead.get("Messages")
    _assert_no_content_kept(sqlite_db, [log], [CANARY, "heart", ids[0]])


def _assert_no_content_kept(world: World, logs: list[Path], needles: list[str]) -> None:
    for path in logs:
        text = path.read_text(encoding="utf-8", errors="replace")
        assert "job_shard_done" in text  # the log was written, through the allowlist
        for needle in needles:
            assert needle not in text

    async def values(store: Store) -> list[Any]:
        found: list[Any] = []
        async with store.engine.connect() as connection:
            metadata = MetaData()
            await connection.run_sync(lambda c: metadata.reflect(c))
            for table in metadata.sorted_tables:
                for row in (await connection.execute(select(table))).all():
                    found.extend(row)
        return found

    for value in asyncio.run(_with_store(world.url, values)):
        for needle in needles:
            assert needle not in str(value)


# ---- the local queue backend (SQLite and PostgreSQL), gzip input, one kill ------------------


def test_local_queue_job_on_gzip_input(
    any_db: World, aws: dict[str, Any], model_dir: Path, tmp_path: Path
) -> None:
    rng = random.Random(3)
    records, ids = _records(rng, 1_200, "loc")
    source = _put_input(aws, "in/small.jsonl.gz", records, gz=True)
    with TestClient(_app(any_db, model_dir)) as client:
        answer = client.post(
            "/v1/jobs", headers=_auth(any_db.keys["b"]),
            json={"input": source, "output": f"s3://{aws['bucket']}/out/local/",
                  "taxonomy": "kinds@1", "shard_size": 300, "mode": "diffusion"},
        )
        assert answer.status_code == 201, answer.text
        job = answer.json()
        log, log2 = tmp_path / "worker.log", tmp_path / "worker2.log"
        worker = WorkerProcess(_worker_env(any_db, aws, None), model_dir, log)
        second = WorkerProcess(_worker_env(any_db, aws, None), model_dir, log2)
        worker.start()
        try:
            killed = _kill_mid_shard(any_db, worker, job["id"], rng)
            worker.start()
            second.start()  # two workers share the rest of the job
            state = asyncio.run(
                _wait_state(any_db.url, job["id"], {"done", "failed"}, time.monotonic() + 600)
            )
        finally:
            worker.stop()
            second.stop()
        assert state == "done"
        status = client.get(f"/v1/jobs/{job['id']}", headers=_auth(any_db.keys["b"])).json()
    assert status["shards"] == {"done": 4, "total": 4} and status["documents"] == 1_200
    manifest = _check_output(aws, "out/local", ids, bad_lines=0, shards=4)
    assert manifest["taxonomy"] == {"name": "kinds", "version": "1"}
    _, shards = _job_row(any_db, job["id"])
    assert shards[killed].attempts >= 2

    async def depth(store: Store) -> int:
        return await LocalQueue(store.engine).depth()

    assert asyncio.run(_with_store(any_db.url, depth)) == 0
    _assert_no_content_kept(any_db, [log], [CANARY, ids[0]])
    assert CANARY not in log2.read_text(encoding="utf-8", errors="replace")


# ---- one queue contract, two backends -------------------------------------------------------


@pytest.mark.parametrize("backend", ["local", "sqs"])
def test_queue_backends_share_lease_and_dead_letter_semantics(
    backend: str, sqlite_db: World, aws: dict[str, Any]
) -> None:
    async def body(store: Store) -> None:
        if backend == "local":
            queue: Any = LocalQueue(store.engine, visibility_timeout=1, max_receives=2,
                                    poll_interval=0.05)
        else:
            queue = SqsQueue.create(aws["sqs"], f"contract-{uuid.uuid4().hex[:8]}",
                                    max_receives=2, visibility_timeout=1)
        await queue.send({"job": "job_x", "shard": 0})
        first = await queue.receive(2)
        assert first is not None and first.body == {"job": "job_x", "shard": 0}
        assert first.receive_count == 1
        assert await queue.receive(0) is None, "a leased message is hidden"
        await queue.extend(first.receipt, 3)  # heartbeat: still hidden after the first lease
        await asyncio.sleep(1.5)
        assert await queue.receive(0) is None
        await asyncio.sleep(2.0)
        second = await queue.receive(2)  # the lease ran out: delivered again, new receipt
        assert second is not None and second.receive_count == 2
        assert second.receipt != first.receipt
        if backend == "local":  # a lost lease cannot be extended by its old holder
            with pytest.raises(QueueError):
                await queue.extend(first.receipt, 5)
        await asyncio.sleep(1.5)
        # Received twice (max_receives) without a delete: dead-lettered, never delivered again.
        assert await queue.receive(1.5) is None
        if backend == "local":
            assert await queue.dead_letters() == [{"job": "job_x", "shard": 0}]
        else:
            name = queue.queue_url.rsplit("/", 1)[1] + "-dlq"
            dlq = aws["sqs"].get_queue_url(QueueName=name)["QueueUrl"]
            dead = aws["sqs"].receive_message(QueueUrl=dlq, WaitTimeSeconds=1)
            assert [json.loads(m["Body"]) for m in dead["Messages"]] == [
                {"job": "job_x", "shard": 0}
            ]
        # Delete acknowledges: a deleted message never comes back.
        await queue.send({"job": "job_y", "shard": 1})
        third = await queue.receive(2)
        assert third is not None
        await queue.delete(third.receipt)
        await asyncio.sleep(1.5)
        assert await queue.receive(1) is None

    asyncio.run(_with_store(sqlite_db.url, body))


# ---- delta reclassification -----------------------------------------------------------------


class CountingEngine:
    """The real in-process engine, counting how many documents reach it."""

    def __init__(self, inner: InProcessEngine) -> None:
        self.inner, self.documents = inner, 0

    @property
    def welcome(self) -> Any:
        return self.inner.welcome

    async def classify(self, taxonomy: dict[str, Any], texts: list[str], **kw: Any) -> Any:
        self.documents += len(texts)
        return await self.inner.classify(taxonomy, texts, **kw)


async def _run_worker(store: Store, engine: Any, s3: Any) -> int:
    worker = Worker(
        store=store, jobs=JobStore(store.engine), queue=LocalQueue(store.engine),
        engine=engine, s3=s3, settings=WorkerSettings(wait_s=0.2, idle_exit_s=0.5),
    )
    return await worker.run(asyncio.Event())


def test_touched_labels_match_the_documented_rule() -> None:
    old, new = parse_json(_taxonomy_v1()), parse_json(_taxonomy_v2())
    assert touched_labels(old, new) == {("topic", x) for x in TOUCHED_V1_V2}
    assert len(TOUCHED_V1_V2) / 20 == 0.10


@pytest.mark.usefixtures("one_torch_thread")
def test_delta_job_passes_untouched_documents_through(
    sqlite_db: World, aws: dict[str, Any], model_dir: Path
) -> None:
    rng = random.Random(5)
    labels = [x["id"] for x in _taxonomy_v1()["facets"][0]["labels"]]
    count = 2_000
    texts = _texts(rng, count)
    current = [rng.choice(labels) for _ in range(count)]
    records = [
        {"id": f"d-{i}", "text": t, "label": lab}
        for i, (t, lab) in enumerate(zip(texts, current, strict=True))
    ]
    del records[7]["label"]  # no current label: must be re-scored
    records[8]["label"] = "no-such-label"  # unknown in v1: must be re-scored
    rescore = {i for i, lab in enumerate(current) if lab in TOUCHED_V1_V2} | {7, 8}
    source = _put_input(aws, "in/labelled.jsonl", records)
    expected_rescored = len(rescore)

    with TestClient(_app(sqlite_db, model_dir)) as client:
        answer = client.post(
            "/v1/jobs", headers=_auth(sqlite_db.keys["a"]),
            json={"input": source, "output": f"s3://{aws['bucket']}/out/delta",
                  "taxonomy": "topics@2", "labelled_with": "1", "shard_size": 500},
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["labelled_with"] == "1"

    async def body(store: Store) -> int:
        engine = InProcessEngine(model_dir=model_dir)
        await engine.start()
        counting = CountingEngine(engine)
        try:
            await _run_worker(store, counting, aws["s3"])
        finally:
            await engine.stop()
        return counting.documents

    engine_documents = asyncio.run(_with_store(sqlite_db.url, body))
    parts, manifest = _outputs(aws, "out/delta")
    counts = manifest["counts"]
    assert counts["documents"] == count
    assert counts["rescored"] == expected_rescored == engine_documents
    assert counts["passed_through"] == count - expected_rescored
    assert counts["passed_through"] / count >= 0.85
    v2_ids = {x["id"] for x in _taxonomy_v2()["facets"][0]["labels"]}
    by_id = {x["id"]: x for part in parts.values() for x in part}
    assert len(by_id) == count
    for i, record in enumerate(records):
        out = by_id[record["id"]]
        if i in rescore:
            assert out["status"] == "rescored"
            assert {x["label"] for x in out["labels"]} <= v2_ids
            assert out["decode"]["forward_passes"] >= 1
        else:
            assert out["status"] == "passed_through"
            assert out["labels"] == [{"facet": "topic", "label": record["label"]}]
            assert "decode" not in out


# ---- tenant isolation and cancel ------------------------------------------------------------


@pytest.mark.usefixtures("one_torch_thread")
def test_jobs_are_tenant_scoped_and_cancel_stops_further_shards(
    sqlite_db: World, aws: dict[str, Any], model_dir: Path
) -> None:
    rng = random.Random(11)
    records, _ = _records(rng, 600, "iso")
    source = _put_input(aws, "in/iso.jsonl", records)
    a, b = _auth(sqlite_db.keys["a"]), _auth(sqlite_db.keys["b"])
    spec = {"input": source, "output": f"s3://{aws['bucket']}/out/iso", "taxonomy": "kinds",
            "shard_size": 100}
    with TestClient(_app(sqlite_db, model_dir)) as client:
        assert client.post("/v1/jobs", headers=_auth(sqlite_db.keys["a-narrow"]),
                           json=spec).status_code == 403
        missing = client.post("/v1/jobs", headers=a, json={**spec, "input": spec["input"] + "x"})
        assert missing.status_code == 422
        assert missing.json()["type"].endswith("input-unreadable")
        assert CANARY not in missing.text
        unknown = client.post("/v1/jobs", headers=a, json={**spec, "taxonomy": "nope"})
        assert unknown.status_code == 422 and unknown.json()["type"].endswith("unknown-taxonomy")

        job = client.post("/v1/jobs", headers=a, json=spec).json()
        assert job["shards"]["total"] == 6
        nowhere = client.get("/v1/jobs/job_doesnotexist", headers=b)
        for method in ("get", "delete"):
            theirs = getattr(client, method)(f"/v1/jobs/{job['id']}", headers=b)
            assert theirs.status_code == 404
            assert {k: v for k, v in theirs.json().items() if k != "request_id"} == {
                k: v for k, v in nowhere.json().items() if k != "request_id"
            }
        assert client.get(f"/v1/jobs/{job['id']}", headers=a).json()["state"] == "running"

        async def one_shard_then_cancel(store: Store) -> None:
            engine = InProcessEngine(model_dir=model_dir)
            await engine.start()
            try:
                worker = Worker(store=store, jobs=JobStore(store.engine),
                                queue=LocalQueue(store.engine), engine=engine, s3=aws["s3"])
                message = await worker.queue.receive(1)
                assert message is not None
                await worker.handle(message)
                # A retry writes the same bytes: same lines, same batches, same model.
                key = "out/iso/part-00000.jsonl"
                written = aws["s3"].get_object(Bucket=aws["bucket"], Key=key)["Body"].read()
                record = await worker.jobs.get_any(job["id"])
                shard = await worker.jobs.shard(job["id"], 0)
                assert record is not None and shard is not None
                _, again = await worker._process(record, shard.plan)
                assert again == written and written.count(b"\n") == 100
                cancelled = client.delete(f"/v1/jobs/{job['id']}", headers=a)
                assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
                assert await _run_worker(store, engine, aws["s3"]) == 0
                assert await LocalQueue(store.engine).depth() == 0
            finally:
                await engine.stop()

        asyncio.run(_with_store(sqlite_db.url, one_shard_then_cancel))
        final = client.get(f"/v1/jobs/{job['id']}", headers=a).json()
    assert final["state"] == "cancelled"
    assert final["shards"] == {"done": 1, "total": 6} and final["documents"] == 100
    parts, manifest = _outputs(aws, "out/iso")
    assert sorted(parts) == ["part-00000.jsonl"] and manifest is None


@pytest.mark.usefixtures("one_torch_thread")
def test_a_shard_failing_on_its_last_delivery_fails_the_job(
    sqlite_db: World, aws: dict[str, Any], model_dir: Path
) -> None:
    rng = random.Random(12)
    records, _ = _records(rng, 40, "gone")
    source = _put_input(aws, "in/gone.jsonl", records)
    a = _auth(sqlite_db.keys["a"])
    spec = {"input": source, "output": f"s3://{aws['bucket']}/out/gone", "taxonomy": "kinds",
            "shard_size": 100}
    with TestClient(_app(sqlite_db, model_dir)) as client:
        job = client.post("/v1/jobs", headers=a, json=spec).json()
        aws["s3"].delete_object(Bucket=aws["bucket"], Key="in/gone.jsonl")  # unreadable now

        async def deliveries(store: Store) -> list[str]:
            engine = InProcessEngine(model_dir=model_dir)
            await engine.start()
            queue = LocalQueue(store.engine, max_receives=2)
            worker = Worker(
                store=store, jobs=JobStore(store.engine), queue=queue, engine=engine,
                s3=aws["s3"], settings=WorkerSettings(max_receives=2, retry_delay_s=0),
            )
            states = []
            try:
                for _ in range(2):
                    message = await queue.receive(1)
                    assert message is not None
                    await worker.handle(message)
                    record = await worker.jobs.get_any(job["id"])
                    assert record is not None
                    states.append(record.state)
                assert await queue.receive(0.2) is None  # dead-lettered, not delivered again
            finally:
                await engine.stop()
            return states

        states = asyncio.run(_with_store(sqlite_db.url, deliveries))
        final = client.get(f"/v1/jobs/{job['id']}", headers=a).json()
    assert states == ["running", "failed"]  # the first failure is retried, the last is final
    assert final["state"] == "failed" and final["shards"]["done"] == 0
    assert CANARY not in json.dumps(final)


# ---- sharding: ranged reads of plain JSONL, streamed gzip -----------------------------------


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_shards_cover_every_record_once(aws: dict[str, Any], compression: str) -> None:
    from gateway.jobs import S3Uri, plan_shards, read_shard

    lines = [f'{{"id": "r{i}", "text": "t{i} é"}}'.encode() for i in range(23)]
    lines[4] = lines[9] = b"   "  # blank: not records, but lines
    body = b"\n".join(lines)  # no newline after the last line
    if compression == "gzip":  # two concatenated gzip members, as `cat a.gz b.gz` makes
        cut = len(body) // 2
        data = gzip.compress(body[:cut]) + gzip.compress(body[cut:])
        key = "in/cover.jsonl.gz"
    else:
        data, key = body, "in/cover.jsonl"
    aws["s3"].put_object(Bucket=aws["bucket"], Key=key, Body=data)
    uri = S3Uri.parse(f"s3://{aws['bucket']}/{key}")
    plans = plan_shards(aws["s3"], uri, compression, 5)
    assert [p.idx for p in plans] == [0, 1, 2, 3, 4]  # 21 records: 5 + 5 + 5 + 5 + 1
    if compression == "none":
        assert all(p.byte_start is not None for p in plans)
    else:
        assert all(p.byte_start is None for p in plans)
    got: list[tuple[int, bytes]] = []
    for plan in plans:
        shard = list(read_shard(aws["s3"], uri, compression, plan))
        assert sum(1 for _, raw in shard if raw.strip()) == (5 if plan.idx < 4 else 1)
        got += shard
    assert [n for n, _ in got] == list(range(23))
    assert [raw.rstrip(b"\n") for _, raw in got] == lines


# ---- `tacet jobs submit|status|cancel` on the database ----------------------------------


def _cli(*argv: str) -> int:
    from gateway.cli import main

    return main(list(argv))


def test_jobs_cli_submits_shows_and_cancels_for_its_tenant_only(
    sqlite_db: World, aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TACET_DATABASE_URL", sqlite_db.url.render_as_string(hide_password=False))
    records, _ = _records(random.Random(2), 250, "cli")
    source = _put_input(aws, "in/cli.jsonl", records)
    assert _cli("jobs", "submit", "--tenant", "tenant-a", "--input", source, "--output",
                f"s3://{aws['bucket']}/out/cli", "--taxonomy", "kinds", "--shard-size", "100") == 0
    job = json.loads(capsys.readouterr().out)
    assert job["shards"] == {"done": 0, "total": 3} and job["state"] == "running"
    assert _cli("jobs", "status", job["id"], "--tenant", "tenant-b") == 1
    assert "no such job" in capsys.readouterr().err
    assert _cli("jobs", "cancel", job["id"], "--tenant", "tenant-b") == 1
    capsys.readouterr()
    assert _cli("jobs", "status", job["id"], "--tenant", "tenant-a") == 0
    assert json.loads(capsys.readouterr().out)["state"] == "running"
    assert _cli("jobs", "cancel", job["id"], "--tenant", "tenant-a") == 0
    assert json.loads(capsys.readouterr().out)["state"] == "cancelled"
    assert _cli("jobs", "submit", "--tenant", "tenant-a", "--input", source + ".missing",
                "--output", f"s3://{aws['bucket']}/out/cli", "--taxonomy", "kinds") == 1
    assert "InputUnreadable" in capsys.readouterr().err

    async def audited(store: Store) -> list[str]:
        from compliance.audit import AuditLog

        log = AuditLog(store.engine)
        start = datetime.now(UTC) - timedelta(hours=1)
        records = await log.records(sqlite_db.tenants["a"], start, start + timedelta(hours=2))
        return [r["api"]["operation"] for r in records]

    assert asyncio.run(_with_store(sqlite_db.url, audited)) == ["jobs.submit", "jobs.cancel"]
