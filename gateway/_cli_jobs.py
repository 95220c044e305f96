"""`tacet jobs submit|status|cancel` (operator commands on the database) and `tacet worker`.

`tacet jobs` works like the admin commands: directly on the control-plane database
(`TACET_DATABASE_URL`, else `<--data-dir>/tacet.db`) for a tenant named with `--tenant`; members
use `POST /v1/jobs` instead. Submit and cancel append an audit event (metadata only).

`tacet worker` leases shards from the queue (`TACET_JOBS_QUEUE_URL` names an SQS queue; unset,
the local table in the database), classifies them with its own engine process (`--model`, or
`TACET_MODEL`; `--engines N` for N of them) or the host's engine units (`TACET_ENGINE_SOCKETS`,
one per GPU, one batch in flight per engine), and writes the parts and the manifest to S3
(endpoint and credentials from the AWS environment). SIGTERM/SIGINT stop it after the shard in
hand; a SIGKILL loses nothing but time: the shard's lease runs out and another worker (or this
one, restarted) redoes it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

__all__ = ["register"]


class _CliError(Exception):
    pass


def _data_dir(args: argparse.Namespace) -> Path:
    from gateway.settings import ServeSettings

    return (args.data_dir or ServeSettings.from_env(os.environ).data_dir).resolve()


async def _open(args: argparse.Namespace) -> Any:
    from gateway.store import database_url, open_store

    return await open_store(database_url(_data_dir(args), os.environ))


def _run(action: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> Callable[..., int]:
    def run(args: argparse.Namespace) -> int:
        from compliance.audit import AuditError
        from gateway.jobs import JobError
        from gateway.store import StoreError

        try:
            return asyncio.run(action(args))
        except JobError as exc:
            print(f"tacet {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        except (_CliError, StoreError, AuditError, ValueError) as exc:
            print(f"tacet {args.command}: {exc}", file=sys.stderr)
            return 1

    return run


async def _tenant(store: Any, name: str) -> str:
    tenant = await store.tenant_by_name(name)
    if tenant is None:
        raise _CliError("no such tenant")
    return str(tenant.id)


async def _audit(store: Any, operation: str, activity: str, tenant_id: str) -> None:
    from compliance.audit import Activity, AuditEvent, AuditLog

    await AuditLog(store.engine).append(
        AuditEvent(operation, 200, activity=Activity[activity], tenant_id=tenant_id)
    )


def _print(view: dict[str, Any]) -> None:
    print(json.dumps(view, indent=2))


# ---- jobs ---------------------------------------------------------------------------------


async def _submit(args: argparse.Namespace) -> int:
    from gateway.jobs import JobRequest, JobStore, QueueSettings, job_view, open_queue, submit_job
    from gateway.jobs.s3io import s3_client

    store = await _open(args)
    try:
        tenant_id = await _tenant(store, args.tenant)
        request = JobRequest(
            input=args.input, output=args.output, taxonomy=args.taxonomy, task=args.task,
            mode=args.mode, shard_size=args.shard_size, labelled_with=args.labelled_with,
        )
        queue = open_queue(QueueSettings.from_env(), store.engine)
        job = await submit_job(
            store, JobStore(store.engine), queue, tenant_id, request, s3_client()
        )
        await _audit(store, "jobs.submit", "CREATE", tenant_id)
        _print(job_view(job))
    finally:
        await store.engine.dispose()
    return 0


async def _status(args: argparse.Namespace) -> int:
    from gateway.jobs import JobStore, job_view

    store = await _open(args)
    try:
        job = await JobStore(store.engine).get(await _tenant(store, args.tenant), args.job_id)
        if job is None:
            raise _CliError("no such job for this tenant")
        _print(job_view(job))
    finally:
        await store.engine.dispose()
    return 0


async def _cancel(args: argparse.Namespace) -> int:
    from gateway.jobs import JobStore, job_view

    store = await _open(args)
    try:
        tenant_id = await _tenant(store, args.tenant)
        job = await JobStore(store.engine).cancel(tenant_id, args.job_id)
        if job is None:
            raise _CliError("no such job for this tenant")
        await _audit(store, "jobs.cancel", "UPDATE", tenant_id)
        _print(job_view(job))
    finally:
        await store.engine.dispose()
    return 0


# ---- worker -------------------------------------------------------------------------------


async def _worker(args: argparse.Namespace) -> int:
    from gateway.engine_client import InProcessEngine
    from gateway.engine_pool import build_engines
    from gateway.jobs import JobStore, QueueSettings, Worker, WorkerSettings, open_queue
    from gateway.jobs.s3io import s3_client
    from gateway.logging import configure_logging
    from gateway.settings import EngineSettings, LimitSettings, SettingsError

    configure_logging("info")
    engine_settings = EngineSettings.from_env(os.environ)
    if args.engines is not None:
        engine_settings = replace(engine_settings, engines=args.engines)
    model_dir = args.model or engine_settings.model_dir
    connect = engine_settings.socket_paths()  # the host's engine units (`tacet engine`)
    if connect and (args.model or args.in_process):
        raise _CliError("TACET_ENGINE_SOCKET(S) is set: the engines there have their model")
    if model_dir is None and not connect:
        raise _CliError("no model: pass --model PATH (or set TACET_MODEL or TACET_ENGINE_SOCKET)")
    engine_settings = replace(engine_settings, model_dir=None if connect else model_dir)
    try:
        engine_settings.validate(dev=False)
    except SettingsError as exc:
        raise _CliError(str(exc)) from None
    settings = WorkerSettings(
        wait_s=args.wait,
        batch_documents=args.batch,
        max_document_bytes=LimitSettings.from_env(os.environ).max_document_bytes,
        idle_exit_s=args.idle_exit,
        max_receives=QueueSettings.from_env().max_receives,
        # One engine call in flight per engine, so every engine (GPU) of the host has work.
        parallel_calls=len(connect) or engine_settings.engines,
    )
    store = await _open(args)
    runtime_dir = Path(tempfile.mkdtemp(prefix="tacet-worker-"))  # 0700 by construction
    engine: Any
    if args.in_process:
        engine = InProcessEngine(model_dir=model_dir, device=engine_settings.device)
    else:
        engine = build_engines(engine_settings, runtime_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await engine.start()
        if not args.in_process and not await engine.wait_ready(args.engine_timeout):
            raise _CliError("the engine did not become ready")
        worker = Worker(
            store=store,
            jobs=JobStore(store.engine),
            queue=open_queue(QueueSettings.from_env(), store.engine),
            engine=engine,
            s3=s3_client(),
            settings=settings,
        )
        await worker.run(stop)
    finally:
        await engine.stop()
        await store.engine.dispose()
        shutil.rmtree(runtime_dir, ignore_errors=True)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    jobs = sub.add_parser("jobs", help="bulk S3-to-S3 jobs (operator view of the database)")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=None)
    common.add_argument("--tenant", default="dev", help="tenant name (default: dev)")

    submit = jobs_sub.add_parser("submit", parents=[common], help="shard and queue a job")
    submit.add_argument("--input", required=True, help="s3://bucket/key.jsonl[.gz]")
    submit.add_argument("--output", required=True, help="s3://bucket/prefix for the parts")
    submit.add_argument("--taxonomy", required=True, help="name or name@version")
    submit.add_argument("--task", default=None)
    submit.add_argument("--mode", default=None)
    submit.add_argument("--shard-size", type=int, default=1000)
    submit.add_argument("--labelled-with", default=None, help="delta: the input labels' version")
    submit.set_defaults(func=_run(_submit))

    for name, action, text in (("status", _status, "progress"), ("cancel", _cancel, "cancel")):
        command = jobs_sub.add_parser(name, parents=[common], help=f"a job's {text}")
        command.add_argument("job_id")
        command.set_defaults(func=_run(action))

    worker = sub.add_parser("worker", help="process queued job shards with a local engine")
    worker.add_argument("--data-dir", type=Path, default=None)
    worker.add_argument("--model", type=Path, default=None, help="model directory")
    worker.add_argument("--in-process", action="store_true",
                        help="run the engine in this process (no isolation; tests and demos)")
    worker.add_argument("--batch", type=int, default=64, help="documents per engine call")
    worker.add_argument("--engines", type=int, default=None,
                        help="engine processes to spawn (default 1, env TACET_ENGINES); "
                        "with TACET_ENGINE_SOCKETS: the engines listed")
    worker.add_argument("--wait", type=float, default=5.0, help="queue long-poll seconds")
    worker.add_argument("--idle-exit", type=float, default=None,
                        help="exit after this many seconds without a message")
    worker.add_argument("--engine-timeout", type=float, default=600.0)
    worker.set_defaults(func=_run(_worker))
