"""RFC 9457 problem+json: the one place where failures become HTTP responses.

Exception tree (everything the gateway raises on purpose)::

    Problem                       status  type (under PROBLEM_BASE)
    ├── Unauthorized                401   unauthorized
    ├── Forbidden                   403   forbidden
    ├── NotFound                    404   not-found
    ├── MethodNotAllowed            405   method-not-allowed
    ├── TooLarge                    413   too-large
    ├── UnsupportedMediaType        415   unsupported-media-type
    ├── Invalid                     422   invalid-request
    ├── UnknownTaxonomy             422   unknown-taxonomy
    ├── UnknownTask                 422   unknown-task
    ├── TaxonomyRejected            422   invalid-taxonomy (with `errors`: location + code)
    ├── Conflict                    409   conflict
    ├── EngineRejectedProblem       422   engine-rejected
    ├── Busy                        429   busy            (Retry-After)
    ├── EngineDown                  503   engine-unavailable (Retry-After)
    ├── AuditUnavailable            503   audit-unavailable  (Retry-After; the audit trail
    │                                     could not be written, so the result is withheld)
    └── InternalError               500   internal-error

Route modules add their own subclasses beside their routes: `gateway.ratelimit.RateLimited`
(429 rate-limited, Retry-After), `gateway._admin_routes.KeyConflict` (409) and `PolicyRejected`
(422), `gateway.jobs.api.InvalidJob` and `InputUnreadableProblem` (422) and `JobsUnavailable`
(503). The same rule holds for them: constant bodies.

ZDR: every body is built from class constants plus Tacet's request id. A body never contains a
value, field name, header or message that came from the request (validation errors from Litestar
or msgspec are dropped whole, because msgspec names unknown fields in its messages), so
submitted text cannot leak through an error (vllm-project/vllm #49239, litestar PR #3843).
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException

from gateway.engine_client import EngineBusy, EngineRejected, EngineUnavailable

__all__ = [
    "PROBLEM_BASE",
    "PROBLEM_MEDIA_TYPE",
    "AuditUnavailable",
    "Busy",
    "Conflict",
    "EngineDown",
    "EngineRejectedProblem",
    "Forbidden",
    "InternalError",
    "Invalid",
    "MethodNotAllowed",
    "NotFound",
    "Problem",
    "ProblemBody",
    "TaxonomyRejected",
    "TooLarge",
    "Unauthorized",
    "UnknownTask",
    "UnknownTaxonomy",
    "UnsupportedMediaType",
    "exception_handlers",
    "problem_body",
    "request_id",
]

PROBLEM_BASE = "https://tacet.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"
RETRY_AFTER_SECONDS = 1


class ProblemBody(msgspec.Struct, omit_defaults=True):
    """The JSON body of every error; `detail` is a class constant, never request data."""

    type: str
    title: str
    status: int
    detail: str
    request_id: str
    retry_after: int | None = None
    # Import validation only: each entry is a position, a stable code and a constant message
    # (gateway.taxonomy_io.Problem), never a submitted value.
    errors: list[dict[str, str]] | None = None


class Problem(Exception):
    """Base of the gateway's HTTP failures; subclasses set only constants."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"
    detail: ClassVar[str] = "The request failed; quote the request id to the operator."
    retry_after: ClassVar[int | None] = None

    def __init__(self) -> None:
        # No message argument: a message is a place where content could slip in.
        super().__init__(self.slug)


class Unauthorized(Problem):
    status, slug, title = 401, "unauthorized", "Unauthorized"
    detail = "Send a valid API key as 'Authorization: Bearer <key>'."


class Forbidden(Problem):
    status, slug, title = 403, "forbidden", "Forbidden"
    detail = "This API key lacks the scope this operation needs."


class NotFound(Problem):
    status, slug, title = 404, "not-found", "Not found"
    detail = "No such resource."


class MethodNotAllowed(Problem):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"
    detail = "This route does not accept that method."


class TooLarge(Problem):
    status, slug, title = 413, "too-large", "Request too large"
    detail = "The body, a document or the number of documents exceeds this server's limits."


class UnsupportedMediaType(Problem):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"
    detail = "Send the body as JSON."


class Invalid(Problem):
    status, slug, title = 422, "invalid-request", "Invalid request"
    detail = (
        "The body is not valid JSON for this route: check field names, types, and that every "
        "document has a non-empty id and text. See /schema."
    )


class UnknownTaxonomy(Problem):
    status, slug, title = 422, "unknown-taxonomy", "Unknown taxonomy"
    detail = "No taxonomy with that name (or name@version) is loaded."


class UnknownTask(Problem):
    status, slug, title = 422, "unknown-task", "Unknown task"
    detail = "No task policy with that name is set for this tenant."


class Conflict(Problem):
    status, slug, title = 409, "conflict", "Conflict"
    detail = "This version exists with other content; versions are immutable."


class TaxonomyRejected(Problem):
    """A taxonomy import with problems: every bad row, by position and code, in `errors`."""

    status, slug, title = 422, "invalid-taxonomy", "Invalid taxonomy"
    detail = "The taxonomy has problems; each entry of `errors` names a position and a code."

    def __init__(self, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__()
        self.errors = list(errors or [])


class EngineRejectedProblem(Problem):
    status, slug, title = 422, "engine-rejected", "Rejected by the engine"
    detail = "The engine could not run this request (for example, the taxonomy or mode)."


class Busy(Problem):
    status, slug, title = 429, "busy", "Too many queued documents"
    detail = "The engine queue is full; retry after the delay in Retry-After."
    retry_after = RETRY_AFTER_SECONDS


class EngineDown(Problem):
    status, slug, title = 503, "engine-unavailable", "Engine unavailable"
    detail = "The engine is starting or restarting; retry after the delay in Retry-After."
    retry_after = RETRY_AFTER_SECONDS


class AuditUnavailable(Problem):
    status, slug, title = 503, "audit-unavailable", "Audit trail unavailable"
    detail = "The audit record could not be written, so no result is returned; retry later."
    retry_after = RETRY_AFTER_SECONDS


class InternalError(Problem):
    pass


def problem_body(problem: type[Problem], request_id: str) -> bytes:
    """The constant JSON body of `problem` (for paths below Litestar's response objects)."""
    return msgspec.json.encode(
        ProblemBody(
            type=PROBLEM_BASE + problem.slug,
            title=problem.title,
            status=problem.status,
            detail=problem.detail,
            request_id=request_id,
            retry_after=problem.retry_after,
        )
    )


def request_id(request: Request[Any, Any, Any]) -> str:
    """Tacet's id for this request, created on first use and kept in the ASGI scope state."""
    state = request.scope.setdefault("state", {})
    value = state.get("tacet_request_id")
    if value is None:
        value = state["tacet_request_id"] = uuid.uuid4().hex
    return str(value)


def problem_response(
    request: Request[Any, Any, Any],
    problem: type[Problem],
    errors: list[dict[str, str]] | None = None,
) -> Response[Any]:
    body = ProblemBody(
        errors=errors,
        type=PROBLEM_BASE + problem.slug,
        title=problem.title,
        status=problem.status,
        detail=problem.detail,
        request_id=request_id(request),
        retry_after=problem.retry_after,
    )
    headers = {"X-Request-Id": body.request_id}
    if problem.retry_after is not None:
        headers["Retry-After"] = str(problem.retry_after)
    return Response(
        content=msgspec.json.encode(body),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


# Litestar's own HTTP errors, by status, onto our constant problems. 400 (malformed JSON) is
# reported as 422 so clients see one "invalid" problem whatever the parser stage was.
_BY_STATUS: dict[int, type[Problem]] = {
    400: Invalid,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    413: TooLarge,
    415: UnsupportedMediaType,
    422: Invalid,
    429: Busy,
    503: EngineDown,
}

# The engine client's errors (its tree is drawn in gateway/engine_client.py).
_ENGINE_ERRORS: dict[type[Exception], type[Problem]] = {
    EngineUnavailable: EngineDown,
    EngineBusy: Busy,
    EngineRejected: EngineRejectedProblem,
}


def classify_exception(exc: BaseException) -> type[Problem]:
    """The problem type for any exception; unknown ones are a 500 with no detail."""
    if isinstance(exc, Problem):
        return type(exc)
    if isinstance(exc, HTTPException):
        return _BY_STATUS.get(exc.status_code, InternalError)
    for error, problem in _ENGINE_ERRORS.items():
        if isinstance(exc, error):
            return problem
    return InternalError


def _handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    problem = classify_exception(exc)
    if problem.status >= 500:
        # Type only: an exception's message or traceback can carry document text.
        structlog.get_logger("tacet.gateway").error(
            "request_failed",
            request_id=request_id(request),
            status=problem.status,
            error_type=type(exc).__name__,
        )
    errors = exc.errors if isinstance(exc, TaxonomyRejected) else None
    return problem_response(request, problem, errors)


def exception_handlers() -> dict[type[Exception] | int, Any]:
    """One handler for everything: Litestar routes every exception class through it."""
    return {Exception: _handle}
