"""Per-tenant limits: requests per minute, documents per minute, requests in flight.

The limits are the tenant row's `requests_per_minute`, `documents_per_minute` and
`max_concurrency` (set with `tacet tenants limits`); NULL means unlimited, which is the default
for a new tenant (the engine queue still answers 429 `busy` when the host is full). Each process
reads a tenant's row at most every `ttl` seconds (10 s), like the key verifier's cache, so a
change is honoured within that delay; a failed read keeps the last known limits.

Where the counts live: on PostgreSQL (the fleet's shared control plane) every gateway counts
against the database through `gateway._shared_limiter` (atomic per tenant, a limit holds across
all gateways behind the load balancer; its module doc has the model and the overshoot bound).
On SQLite (one host) each process counts on its own, in memory, here (`TenantLimiter`); the
counters are lost on restart. `limiter_for(keys)` picks: `tacet serve` installs it.

Window maths (`SlidingWindow`): at most `limit` units in any 60 s. Each admitted request adds an
entry (time, units); requests within `resolution` (0.25 s) of an entry's first one join it and
count until 60 s after the latest of them, which can only make the limiter stricter (by less
than the resolution), so memory stays bounded (<= 60 / resolution entries) whatever the limit.
A refused call is not counted. `Retry-After` is the time until enough old entries leave the
window for the refused units to fit, rounded up to whole seconds.
Concurrency has no window: its `Retry-After` is the tenant's mean request duration (an EWMA of
the recent ones) less the age of its oldest request in flight, at least one second.

How a route uses it (classify, classify/stream, jobs)::

    from gateway.ratelimit import admit

    await admit(request, documents=len(documents))   # after the scope check, before the work

It counts one request and the documents, takes one concurrency slot, and raises `RateLimited`
(429 problem with a computed `Retry-After`) or `problems.TooLarge` (more documents than the
tenant may send in a minute at all). The slot is released by `LimiterMiddleware` as the
response's last body message is sent (before the client can see the end of it, so its next
request finds the slot free), also on errors and client disconnects, so a streaming response
holds its slot while it streams. Every decision is counted in `tacet_limiter_decisions_total`
by outcome and limiter (never by tenant).

A route that learns its document count as it reads (the NDJSON stream) calls `admit(request)`
before it starts and `admit(request, documents=k)` for each chunk: later calls in the same
request only add documents. A refusal raised after the response has
started cannot become a 429; such a route must catch `RateLimited` and end its stream itself.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Protocol

import msgspec
from litestar import Request, Response

from gateway import problems
from gateway.store.repository import TenantLimits

__all__ = [
    "DECISIONS_METRIC",
    "REASONS",
    "WINDOW_SECONDS",
    "Admission",
    "Limiter",
    "LimiterMiddleware",
    "LimitsLookup",
    "RateLimited",
    "Recorder",
    "SlidingWindow",
    "TenantLimiter",
    "admit",
    "decided",
    "install",
    "limiter_for",
    "limits_from_keys",
    "refuse_if",
    "retry_seconds",
]

WINDOW_SECONDS = 60.0
STATE_KEY = "tacet_limiter"  # app.state: the Limiter
_ADMISSION = "tacet_admission"  # scope state: this request's Admission (or None)

LimitsLookup = Callable[[str], Awaitable[TenantLimits | None]]
Recorder = Callable[[str, str], None]  # (outcome, limiter) of one decision
DECISIONS_METRIC = "tacet.limiter.decisions"
REASONS = ("requests", "documents", "concurrency")  # what refused; outcome `refused_<reason>`


class RateLimited(problems.Problem):
    """429 with a Retry-After computed by the limiter (the body is constant otherwise)."""

    status, slug, title = 429, "rate-limited", "Rate limit exceeded"
    detail = (
        "This tenant's request, document or concurrency limit is reached; retry after the "
        "delay in Retry-After."
    )
    retry_after = int(WINDOW_SECONDS)  # only if the handler below is not installed

    def __init__(self, seconds: int, reason: str = "requests") -> None:
        super().__init__()
        self.seconds = max(1, seconds)
        self.reason = reason  # one of REASONS: for the metric only, never in the body


def retry_seconds(delay: float) -> int:
    return max(1, math.ceil(delay - 1e-9))


# ---- window maths ---------------------------------------------------------------------------


class SlidingWindow:
    """At most `limit` units in any `period` seconds (see the module doc)."""

    def __init__(self, limit: int, period: float = WINDOW_SECONDS, resolution: float = 0.25):
        if limit < 1 or period <= 0 or not 0 <= resolution < period:
            raise ValueError("a window needs limit >= 1, period > 0, 0 <= resolution < period")
        self.limit, self.period, self.resolution = limit, period, resolution
        # [first time, last time, units], oldest first; an entry spans < `resolution` seconds
        # and counts until `period` after its last time.
        self._entries: deque[list[float]] = deque()
        self._total = 0

    def _prune(self, now: float) -> None:
        while self._entries and self._entries[0][1] <= now - self.period:
            self._total -= int(self._entries.popleft()[2])

    def used(self, now: float) -> int:
        self._prune(now)
        return self._total

    def wait(self, now: float, units: int) -> float:
        """Seconds until `units` more would fit: 0 now, `inf` never (units > limit)."""
        if units > self.limit:
            return math.inf
        self._prune(now)
        excess = self._total + units - self.limit
        if excess <= 0:
            return 0.0
        for _, last, weight in self._entries:
            excess -= int(weight)
            if excess <= 0:
                return last + self.period - now
        raise AssertionError("unreachable: units <= limit")  # pragma: no cover

    def add(self, now: float, units: int) -> None:
        if units <= 0:
            return
        self._prune(now)
        last = self._entries[-1] if self._entries else None
        if last is not None and now - last[0] < self.resolution:
            last[1], last[2] = now, last[2] + units  # the later time: stricter, never looser
        else:
            self._entries.append([now, now, units])
        self._total += units


# ---- per-tenant state -----------------------------------------------------------------------


@dataclass
class _Tenant:
    limits: TenantLimits
    fetched_at: float
    requests: SlidingWindow | None = None
    documents: SlidingWindow | None = None
    in_flight: dict[int, float] = field(default_factory=dict)  # admission id -> start time
    mean_duration: float = 1.0  # seconds; EWMA of finished requests

    def apply(self, limits: TenantLimits, now: float, period: float) -> None:
        """A changed limit keeps the counts already made (a lowered one applies at once); a
        limit set where there was none starts counting now (unlimited tenants are not counted)."""
        self.limits, self.fetched_at = limits, now
        self.requests = _resize(self.requests, limits.requests_per_minute, period)
        self.documents = _resize(self.documents, limits.documents_per_minute, period)


def _resize(window: SlidingWindow | None, limit: int | None, period: float) -> SlidingWindow | None:
    if limit is None or limit < 1:
        return None
    if window is None:
        return SlidingWindow(limit, period)
    window.limit = limit
    return window


def refuse_if(waits: dict[str, float], *, full: bool) -> None:
    """Raise for the longest wait (reason -> seconds; `inf`: can never fit), or when `full`
    (concurrency at its limit, whatever its wait)."""
    reason, longest = max(waits.items(), key=lambda item: item[1], default=("requests", 0.0))
    if longest == math.inf:
        raise problems.TooLarge()  # more documents than the tenant may send in a minute at all
    if full and longest <= 0:
        reason = "concurrency"
    if longest > 0 or full:
        raise RateLimited(retry_seconds(longest), reason)


class Limiter(Protocol):
    """What `admit` and `Admission` need of a limiter (this module's, or the shared one)."""

    recorder: Recorder | None

    async def acquire(self, tenant_id: str, *, documents: int = 0) -> Admission: ...

    async def charge(self, tenant_id: str, documents: int) -> None: ...

    def release(self, tenant_id: str, ident: int) -> None: ...

    async def flush(self, tenant_id: str) -> None: ...

    async def close(self) -> None: ...


class Admission:
    """One request's hold on its tenant: documents charged so far and a concurrency slot."""

    def __init__(self, limiter: Limiter, tenant_id: str, ident: int) -> None:
        self._limiter, self.tenant_id, self._id = limiter, tenant_id, ident
        self.released = False

    async def add_documents(self, documents: int) -> None:
        await self._limiter.charge(self.tenant_id, documents)

    def release(self) -> None:
        """Give the slot back here (idempotent); a shared limiter's other gateways see it after
        `finish()` or this process's next heartbeat."""
        if not self.released:
            self.released = True
            self._limiter.release(self.tenant_id, self._id)

    async def finish(self) -> None:
        """Release, and wait until every gateway sees the slot free (what the middleware does)."""
        self.release()
        await self._limiter.flush(self.tenant_id)


def decided(recorder: Recorder | None, outcome: str, limiter: str) -> None:
    if recorder is not None:
        recorder(outcome, limiter)


class TenantLimiter:
    """The limits of every tenant in this process; all checks are synchronous after the
    (cached) limits lookup, so check-and-count is atomic on the event loop."""

    def __init__(
        self,
        lookup: LimitsLookup | None,
        *,
        ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        period: float = WINDOW_SECONDS,
        name: str = "local",  # the `limiter` label of its decisions
    ) -> None:
        self._lookup, self._ttl, self._clock, self._period = lookup, ttl, clock, period
        self._tenants: dict[str, _Tenant] = {}
        self._ids = count(1)
        self.name = name
        self.recorder: Recorder | None = None

    async def _state(self, tenant_id: str) -> _Tenant:
        now = self._clock()
        state = self._tenants.get(tenant_id)
        if state is not None and now - state.fetched_at < self._ttl:
            return state
        limits = TenantLimits()
        if self._lookup is not None:
            try:
                limits = await self._lookup(tenant_id) or TenantLimits()
            except Exception:
                if state is None:
                    raise
                limits = state.limits  # database unreachable: keep the last known limits
        state = self._tenants.get(tenant_id)  # another task may have made it meanwhile
        if state is None:
            state = self._tenants[tenant_id] = _Tenant(limits, now)
        state.apply(limits, now, self._period)
        return state

    async def limits(self, tenant_id: str) -> TenantLimits:
        """The tenant's limits, read at most every `ttl` seconds (the shared limiter's source)."""
        return (await self._state(tenant_id)).limits

    def forget(self, tenant_id: str | None = None) -> None:
        """Re-read limits on next use (after a local change); counts are kept."""
        for tid, state in self._tenants.items():
            if tenant_id is None or tid == tenant_id:
                state.fetched_at = -math.inf

    async def acquire(self, tenant_id: str, *, documents: int = 0) -> Admission:
        """Count one request and `documents`, take a slot; RateLimited / TooLarge if not."""
        state = await self._state(tenant_id)
        now = self._clock()
        waits: dict[str, float] = {}
        limit = state.limits.max_concurrency
        full = limit is not None and limit >= 1 and len(state.in_flight) >= limit
        if full:
            oldest = min(state.in_flight.values())
            waits["concurrency"] = state.mean_duration - (now - oldest)
        if state.requests is not None:
            waits["requests"] = state.requests.wait(now, 1)
        if state.documents is not None and documents > 0:
            waits["documents"] = state.documents.wait(now, documents)
        self._refuse_if(waits, full=full)
        if state.requests is not None:
            state.requests.add(now, 1)
        if state.documents is not None:
            state.documents.add(now, documents)
        ident = next(self._ids)
        state.in_flight[ident] = now
        decided(self.recorder, "admitted", self.name)
        return Admission(self, tenant_id, ident)

    def _refuse_if(self, waits: dict[str, float], *, full: bool) -> None:
        try:
            refuse_if(waits, full=full)
        except RateLimited as exc:
            decided(self.recorder, "refused_" + exc.reason, self.name)
            raise
        except problems.TooLarge:
            decided(self.recorder, "too_large", self.name)
            raise

    async def charge(self, tenant_id: str, documents: int) -> None:
        """More documents for a request already admitted (a stream's next chunk)."""
        state = await self._state(tenant_id)
        if state.documents is None or documents <= 0:
            return
        now = self._clock()
        self._refuse_if({"documents": state.documents.wait(now, documents)}, full=False)
        state.documents.add(now, documents)
        decided(self.recorder, "admitted", self.name)

    def release(self, tenant_id: str, ident: int) -> None:
        self._release(tenant_id, ident)

    async def flush(self, tenant_id: str) -> None:
        return None  # nothing outside this process

    async def close(self) -> None:
        return None

    def _release(self, tenant_id: str, ident: int) -> None:
        state = self._tenants.get(tenant_id)
        if state is None:
            return
        started = state.in_flight.pop(ident, None)
        if started is not None:
            took = max(0.0, self._clock() - started)
            state.mean_duration = 0.8 * state.mean_duration + 0.2 * took

    def in_flight(self, tenant_id: str) -> int:
        state = self._tenants.get(tenant_id)
        return 0 if state is None else len(state.in_flight)


# ---- wiring into the app --------------------------------------------------------------------


class LimiterMiddleware:
    """Holds a request's Admission for the ASGI call: released as the last body message goes
    out, or at the end of the call (errors, disconnects)."""

    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state[_ADMISSION] = None

        async def releasing_send(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                await _release(state)
            await send(message)

        try:
            await self._app(scope, receive, releasing_send)
        finally:
            await _release(state)


async def _release(state: dict[str, Any]) -> None:
    admission = state.get(_ADMISSION)
    if isinstance(admission, Admission):
        await admission.finish()  # idempotent: the second call writes nothing


async def admit(request: Request[Any, Any, Any], *, documents: int = 0) -> None:
    """The one call a working /v1 route makes (see the module doc for the contract)."""
    state = request.scope.setdefault("state", {})
    if _ADMISSION not in state:
        raise RuntimeError("admit() needs LimiterMiddleware (gateway.ratelimit.install)")
    admission = state[_ADMISSION]
    if isinstance(admission, Admission):
        await admission.add_documents(documents)
        return
    limiter: Limiter = request.app.state[STATE_KEY]
    state[_ADMISSION] = await limiter.acquire(request.user.tenant_id, documents=documents)


def _rate_limited_response(request: Request[Any, Any, Any], exc: RateLimited) -> Response[Any]:
    body = problems.ProblemBody(
        type=problems.PROBLEM_BASE + RateLimited.slug,
        title=RateLimited.title,
        status=RateLimited.status,
        detail=RateLimited.detail,
        request_id=problems.request_id(request),
        retry_after=exc.seconds,
    )
    return Response(
        content=msgspec.json.encode(body),
        status_code=RateLimited.status,
        media_type=problems.PROBLEM_MEDIA_TYPE,
        headers={"X-Request-Id": body.request_id, "Retry-After": str(exc.seconds)},
    )


def limits_from_keys(keys: Any) -> LimitsLookup | None:
    """Limits from the key store's database (`StoreKeyStore.store`); None (unlimited) for a
    key store without one (the dev/test stores)."""
    opener = getattr(keys, "store", None)
    if opener is None:
        return None

    async def lookup(tenant_id: str) -> TenantLimits | None:
        tenant = await (await opener()).get_tenant(tenant_id)
        return None if tenant is None else tenant.limits

    return lookup


def limiter_for(keys: Any, settings: Any = None) -> Limiter:
    """The limiter `tacet serve` installs: shared through the database when it is PostgreSQL,
    per process on SQLite (decided when the store first opens); this module's alone for a key
    store without a database. `settings`: a `TenantLimitSettings` (defaults when None)."""
    lookup = limits_from_keys(keys)
    if lookup is None:
        return TenantLimiter(None)
    from gateway._shared_limiter import SharedLimiter

    return SharedLimiter(lookup, keys.store, settings)


def install(app_config: Any, limiter: Limiter) -> None:
    """Wire the limiter into an AppConfig: state, the releasing middleware, the 429 handler,
    its decisions into the app's telemetry (at start), its shutdown."""

    def observe(app: Any) -> None:
        current = app.state.get(STATE_KEY)  # a test may have swapped it
        telemetry = app.state.get("telemetry")
        if telemetry is not None and current is not None:
            current.recorder = lambda outcome, name: telemetry.record(
                DECISIONS_METRIC, 1, outcome=outcome, limiter=name
            )

    async def close(app: Any) -> None:
        current = app.state.get(STATE_KEY)
        if current is not None:
            await current.close()

    app_config.state[STATE_KEY] = limiter
    app_config.middleware.append(LimiterMiddleware)
    app_config.exception_handlers[RateLimited] = _rate_limited_response
    app_config.on_startup.append(observe)
    app_config.on_shutdown.append(close)
