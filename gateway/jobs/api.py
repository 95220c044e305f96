"""`POST /v1/jobs`, `GET /v1/jobs/{id}`, `DELETE /v1/jobs/{id}` (scope `jobs`).

The tenant is the caller's key record's; another tenant's job answers 404 exactly like an
unknown id. Bodies and errors carry Tacet ids, the job's URIs and counts, never content; an
S3 or queue failure becomes a constant problem (its error code goes to the log, not the body).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import structlog
from litestar import Controller, Request, delete, get, post
from litestar.params import FromPath, JSONBody

from gateway import problems
from gateway.jobs.errors import InputUnreadable, JobInvalid, QueueError
from gateway.jobs.queue import QueueSettings, open_queue
from gateway.jobs.repository import JobStore
from gateway.jobs.s3io import s3_client
from gateway.jobs.service import JobRequest, job_view, submit_job
from gateway.ratelimit import admit

__all__ = ["JobIn", "JobsController"]

_STATE_KEY = "tacet_jobs_backend"
_log = structlog.get_logger("tacet.gateway")


class InvalidJob(problems.Problem):
    status, slug, title = 422, "invalid-job", "Invalid job"
    detail = "The job cannot run: check the S3 URIs, shard size, mode and labelled_with."


class InputUnreadableProblem(problems.Problem):
    status, slug, title = 422, "input-unreadable", "Input unreadable"
    detail = "The input object could not be read from S3 as JSONL or gzip-compressed JSONL."


class JobsUnavailable(problems.Problem):
    status, slug, title = 503, "jobs-unavailable", "Jobs unavailable"
    detail = "Bulk jobs need the control-plane database and a reachable queue."
    retry_after = 30


class JobIn(msgspec.Struct, forbid_unknown_fields=True):
    input: Annotated[str, msgspec.Meta(min_length=6, max_length=1024)]
    output: Annotated[str, msgspec.Meta(min_length=6, max_length=1024)]
    taxonomy: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    task: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    mode: Annotated[str, msgspec.Meta(min_length=1, max_length=24)] | None = None
    shard_size: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1000
    labelled_with: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] | None = None


class _Backend:
    """The store, job table, queue and S3 client, opened once per app on first use."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.jobs = JobStore(store.engine)
        self.queue = open_queue(QueueSettings.from_env(), store.engine)
        self.s3 = s3_client()


async def _backend(request: Request[Any, Any, Any]) -> _Backend:
    state = request.app.state
    backend = state.get(_STATE_KEY)
    if backend is None:
        keys = state["gateway"].keys
        opener = getattr(keys, "store", None)
        if opener is None:  # a key store without a database (tests, demo): no jobs
            raise JobsUnavailable()
        try:
            backend = _Backend(await opener())
        except Exception as exc:
            _log.error("jobs_backend_failed", error_type=type(exc).__name__)
            raise JobsUnavailable() from None
        state[_STATE_KEY] = backend
    return backend  # type: ignore[no-any-return]


def _require_jobs(request: Request[Any, Any, Any]) -> None:
    if "jobs" not in request.user.scopes:
        raise problems.Forbidden()


class JobsController(Controller):
    path = "/v1/jobs"
    tags = ["jobs"]  # noqa: RUF012 - Litestar reads this class attribute
    security = [{"bearer": []}]  # noqa: RUF012

    @post("/", operation_id="submitJob", status_code=201, summary="Start an S3-to-S3 job")
    async def submit(self, request: Request[Any, Any, Any], data: JSONBody[JobIn]) -> Any:
        _require_jobs(request)
        await admit(request)  # a submission is one request against the tenant's limits
        backend = await _backend(request)
        job_request = JobRequest(**{f: getattr(data, f) for f in data.__struct_fields__})
        try:
            job = await submit_job(
                backend.store, backend.jobs, backend.queue, request.user.tenant_id,
                job_request, backend.s3,
            )
        except JobInvalid as exc:
            if exc.code == "unknown_taxonomy":
                raise problems.UnknownTaxonomy() from None
            if exc.code == "unknown_task":
                raise problems.UnknownTask() from None
            raise InvalidJob() from None
        except InputUnreadable:
            raise InputUnreadableProblem() from None
        except QueueError as exc:
            _log.error("jobs_queue_failed", error_type=type(exc).__name__)
            raise JobsUnavailable() from None
        return job_view(job)

    @get("/{job_id:str}", operation_id="getJob", summary="Progress and counts of a job")
    async def status(self, request: Request[Any, Any, Any], job_id: FromPath[str]) -> Any:
        _require_jobs(request)
        backend = await _backend(request)
        job = await backend.jobs.get(request.user.tenant_id, job_id)
        if job is None:
            raise problems.NotFound()
        return job_view(job)

    @delete(
        "/{job_id:str}", operation_id="cancelJob", status_code=200,
        summary="Cancel: no further shard starts",
    )
    async def cancel(self, request: Request[Any, Any, Any], job_id: FromPath[str]) -> Any:
        _require_jobs(request)
        backend = await _backend(request)
        job = await backend.jobs.cancel(request.user.tenant_id, job_id)
        if job is None:
            raise problems.NotFound()
        return job_view(job)
