"""The per-tenant limiter's window maths and bookkeeping, on an injected clock."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from gateway import problems
from gateway.ratelimit import (
    LimiterMiddleware,
    RateLimited,
    SlidingWindow,
    TenantLimiter,
    refuse_if,
)
from gateway.settings import SettingsError, TenantLimitSettings
from gateway.store import TenantLimits


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ---- SlidingWindow --------------------------------------------------------------------------


def test_window_admits_limit_units_then_says_when_the_oldest_leaves() -> None:
    window = SlidingWindow(3, period=60.0, resolution=0.0)
    for at in (0.0, 10.0, 20.0):
        assert window.wait(at, 1) == 0.0
        window.add(at, 1)
    assert window.used(30.0) == 3
    assert window.wait(30.0, 1) == pytest.approx(30.0)  # the unit of t=0 leaves at t=60
    assert window.wait(30.0, 2) == pytest.approx(40.0)  # two must leave: t=10's at t=70
    assert window.wait(59.999, 1) == pytest.approx(0.001)
    assert window.wait(60.0, 1) == 0.0  # exactly one period later it has left
    assert window.used(60.0) == 2


def test_window_weights_and_never_fitting_units() -> None:
    window = SlidingWindow(10, period=60.0, resolution=0.0)
    window.add(0.0, 7)
    window.add(5.0, 2)
    assert window.wait(6.0, 1) == 0.0
    assert window.wait(6.0, 2) == pytest.approx(54.0)  # 7 + 2 + 2 > 10 until t=60
    assert window.wait(6.0, 11) == math.inf  # more than the limit: never
    assert window.wait(61.0, 8) == 0.0  # 2 left in the window


def test_window_merges_close_entries_under_the_later_time() -> None:
    window = SlidingWindow(100, period=60.0, resolution=0.25)
    for i in range(1000):
        window.add(i * 0.01, 0)  # zero units: nothing recorded
    assert window.used(5.0) == 0
    for i in range(50):
        window.add(i * 0.01, 1)  # 0.00 .. 0.49: two entries of 25 units
    assert len(window._entries) == 2
    assert window.used(1.0) == 50
    # Each entry counts until one period after its latest unit (0.24 s and 0.49 s).
    assert window.used(60.23) == 50
    assert window.used(60.24) == 25
    assert window.wait(60.3, 76) == pytest.approx(0.19)
    assert window.used(60.49) == 0


def test_a_steady_stream_below_the_limit_is_never_refused() -> None:
    window = SlidingWindow(100, period=60.0, resolution=0.25)
    for i in range(12_000):  # 10 minutes at 20 per minute, one every 3 s... and 0.05 s apart
        at = i * 0.05
        if i % 60 == 0:  # one unit per 3 s: 20 per minute
            assert window.wait(at, 1) == 0.0
            window.add(at, 1)
    assert window.used(600.0) <= 21


def test_window_memory_is_bounded_by_the_resolution() -> None:
    window = SlidingWindow(10**9, period=60.0, resolution=0.25)
    for i in range(100_000):
        window.add(i * 0.001, 1)  # 100 s of 1000 requests per second
    assert len(window._entries) <= int(60 / 0.25) + 1
    assert window.used(100.0) <= 60_000 + 250  # at most one period (plus one merged entry)


def test_window_refuses_bad_shapes() -> None:
    for args in ((0,), (1, 0.0), (1, 60.0, 60.0)):
        with pytest.raises(ValueError):
            SlidingWindow(*args)


# ---- TenantLimiter --------------------------------------------------------------------------


def _limiter(limits: dict[str, TenantLimits], clock: Clock, **kwargs: Any) -> TenantLimiter:
    reads: list[str] = []

    async def lookup(tenant_id: str) -> TenantLimits | None:
        reads.append(tenant_id)
        return limits.get(tenant_id)

    limiter = TenantLimiter(lookup, clock=clock, **kwargs)
    limiter.reads = reads  # type: ignore[attr-defined]
    return limiter


def _refused(coro: Any) -> int:
    with pytest.raises(RateLimited) as caught:
        asyncio.run(coro)
    return caught.value.seconds


def test_requests_per_minute_and_retry_after_from_the_window() -> None:
    clock = Clock(0.0)
    limiter = _limiter({"a": TenantLimits(requests_per_minute=3)}, clock)
    for at in (0.0, 1.0, 2.5):
        clock.now = at
        asyncio.run(limiter.acquire("a")).release()
    clock.now = 10.0
    assert _refused(limiter.acquire("a")) == 50  # the t=0 request leaves at t=60
    clock.now = 59.2
    assert _refused(limiter.acquire("a")) == 1  # 0.8 s, rounded up to whole seconds
    clock.now = 60.0
    asyncio.run(limiter.acquire("a")).release()  # admitted now
    assert _refused(limiter.acquire("a")) == 1  # t=1's leaves at t=61


def test_documents_per_minute_counts_documents_not_requests() -> None:
    clock = Clock(0.0)
    limiter = _limiter({"a": TenantLimits(documents_per_minute=10)}, clock)
    asyncio.run(limiter.acquire("a", documents=6)).release()
    clock.now = 20.0
    asyncio.run(limiter.acquire("a", documents=4)).release()
    clock.now = 30.0
    assert _refused(limiter.acquire("a", documents=1)) == 30
    assert _refused(limiter.acquire("a", documents=5)) == 30  # 6 leave at t=60: 5 fit then
    assert _refused(limiter.acquire("a", documents=7)) == 50  # needs t=20's 4 gone too
    with pytest.raises(problems.TooLarge):
        asyncio.run(limiter.acquire("a", documents=11))  # can never fit: not a 429


def test_refused_calls_are_not_counted() -> None:
    clock = Clock(0.0)
    limiter = _limiter({"a": TenantLimits(requests_per_minute=1)}, clock)
    asyncio.run(limiter.acquire("a")).release()
    for second in range(1, 59):
        clock.now = float(second)
        _refused(limiter.acquire("a"))
    clock.now = 60.0
    asyncio.run(limiter.acquire("a")).release()


def test_concurrency_slots_and_their_release() -> None:
    clock = Clock(0.0)
    limiter = _limiter({"a": TenantLimits(max_concurrency=2)}, clock)
    first = asyncio.run(limiter.acquire("a"))
    second = asyncio.run(limiter.acquire("a"))
    assert limiter.in_flight("a") == 2
    assert _refused(limiter.acquire("a")) == 1  # no history yet: a one-second estimate
    clock.now = 4.0
    first.release()
    first.release()  # idempotent
    assert limiter.in_flight("a") == 1
    third = asyncio.run(limiter.acquire("a"))
    # The mean duration moved towards 4 s (EWMA); the oldest in flight is 4 s old.
    clock.now = 4.5
    assert _refused(limiter.acquire("a")) == 1
    for slot in (second, third):
        slot.release()
    assert limiter.in_flight("a") == 0


def test_concurrency_retry_after_follows_request_durations() -> None:
    clock = Clock(0.0)
    limiter = _limiter({"a": TenantLimits(max_concurrency=1)}, clock)
    for _ in range(30):  # requests that take 20 s each
        slot = asyncio.run(limiter.acquire("a"))
        clock.now += 20.0
        slot.release()
    held = asyncio.run(limiter.acquire("a"))
    clock.now += 5.0
    assert _refused(limiter.acquire("a")) == 15  # about 20 s mean, 5 s already spent
    held.release()


def test_one_tenant_does_not_spend_anothers_budget() -> None:
    clock = Clock(0.0)
    limits = {
        "a": TenantLimits(requests_per_minute=2, max_concurrency=1),
        "b": TenantLimits(requests_per_minute=2, max_concurrency=1),
    }
    limiter = _limiter(limits, clock)
    held = asyncio.run(limiter.acquire("a"))
    _refused(limiter.acquire("a"))  # concurrency
    held.release()
    asyncio.run(limiter.acquire("a")).release()
    _refused(limiter.acquire("a"))  # rate
    asyncio.run(limiter.acquire("b")).release()
    asyncio.run(limiter.acquire("b")).release()
    _refused(limiter.acquire("b"))


def test_null_limits_are_unlimited_and_lookups_are_cached() -> None:
    clock = Clock(0.0)
    limits = {"a": TenantLimits()}
    limiter = _limiter(limits, clock, ttl=10.0)
    slots = [asyncio.run(limiter.acquire("a", documents=10_000)) for _ in range(500)]
    assert limiter.in_flight("a") == 500
    for slot in slots:
        slot.release()
    assert limiter.reads == ["a"]  # type: ignore[attr-defined]
    # A new limit is read after the ttl; unlimited tenants are not counted, so it starts now.
    limits["a"] = TenantLimits(requests_per_minute=100)
    asyncio.run(limiter.acquire("a")).release()  # still cached: unlimited
    clock.now = 10.0
    for _ in range(100):
        asyncio.run(limiter.acquire("a")).release()
    assert _refused(limiter.acquire("a")) == 60
    assert limiter.reads == ["a", "a"]  # type: ignore[attr-defined]
    # A lowered limit applies to the counts already made, as soon as it is read.
    limits["a"] = TenantLimits(requests_per_minute=50)
    limiter.forget("a")
    clock.now = 40.0
    assert _refused(limiter.acquire("a")) == 30
    assert limiter.reads == ["a", "a", "a"]  # type: ignore[attr-defined]


def test_unknown_tenant_and_no_lookup_mean_no_limits() -> None:
    limiter = TenantLimiter(None, clock=Clock())
    for _ in range(100):
        asyncio.run(limiter.acquire("anyone", documents=1000)).release()
    looked_up = _limiter({}, Clock())
    asyncio.run(looked_up.acquire("ghost")).release()


def test_a_failed_lookup_keeps_the_last_known_limits() -> None:
    clock = Clock(0.0)
    state = {"fail": False}

    async def lookup(tenant_id: str) -> TenantLimits | None:
        if state["fail"]:
            raise OSError("database down")
        return TenantLimits(requests_per_minute=1)

    limiter = TenantLimiter(lookup, clock=clock, ttl=1.0)
    asyncio.run(limiter.acquire("a")).release()
    state["fail"] = True
    clock.now = 5.0
    assert _refused(limiter.acquire("a")) == 55
    fresh = TenantLimiter(lookup, clock=clock)
    with pytest.raises(OSError):
        asyncio.run(fresh.acquire("a"))  # nothing known yet: the error surfaces (500)


def test_charge_adds_documents_to_an_admitted_request() -> None:
    clock = Clock(0.0)
    limiter = _limiter({"a": TenantLimits(requests_per_minute=1, documents_per_minute=5)}, clock)
    slot = asyncio.run(limiter.acquire("a", documents=2))
    asyncio.run(slot.add_documents(3))  # no new request counted, no new slot
    assert limiter.in_flight("a") == 1
    clock.now = 12.0
    assert _refused(slot.add_documents(1)) == 48
    slot.release()


# ---- reasons, settings, the releasing middleware (issue 25) --------------------------------


def test_a_refusal_names_the_limit_that_decided_its_retry_after() -> None:
    clock = Clock(0.0)
    limits = {"a": TenantLimits(requests_per_minute=1, max_concurrency=1)}
    limiter = _limiter(limits, clock)
    decisions: list[tuple[str, str]] = []
    limiter.recorder = lambda outcome, name: decisions.append((outcome, name))
    held = asyncio.run(limiter.acquire("a"))
    clock.now = 10.0
    with pytest.raises(RateLimited) as refused:
        asyncio.run(limiter.acquire("a"))
    assert refused.value.reason == "requests" and refused.value.seconds == 50  # the longer wait
    held.release()
    with pytest.raises(problems.TooLarge):
        asyncio.run(_limiter({"b": TenantLimits(documents_per_minute=2)}, clock).acquire(
            "b", documents=3
        ))
    assert decisions == [("admitted", "local"), ("refused_requests", "local")]
    with pytest.raises(RateLimited) as full:
        refuse_if({"concurrency": -3.0}, full=True)  # full, its estimate already passed
    assert full.value.reason == "concurrency" and full.value.seconds == 1


def test_tenant_limit_settings_from_the_environment_and_their_bounds() -> None:
    assert TenantLimitSettings.from_env({}) == TenantLimitSettings(30.0, 1.0, 64)
    env = {"TACET_LIMIT_LEASE_SECONDS": "2.5", "TACET_LIMIT_SLICE_SECONDS": "0.5",
           "TACET_LIMIT_MAX_SLICE": "8"}
    settings = TenantLimitSettings.from_env(env)
    assert settings == TenantLimitSettings(2.5, 0.5, 8)
    settings.validate()
    for name, value in (
        ("TACET_LIMIT_LEASE_SECONDS", "0.5"), ("TACET_LIMIT_SLICE_SECONDS", "0"),
        ("TACET_LIMIT_MAX_SLICE", "0"), ("TACET_LIMIT_LEASE_SECONDS", "soon"),
    ):
        with pytest.raises(SettingsError, match=name):
            TenantLimitSettings.from_env({name: value}).validate()


def test_the_slot_is_released_before_the_last_body_message_goes_out() -> None:
    limiter = _limiter({"a": TenantLimits(max_concurrency=1)}, Clock(0.0))
    seen: list[tuple[str, int]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["state"]["tacet_admission"] = await limiter.acquire("a")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        await send({"type": "http.response.body", "body": b"y"})

    async def send(message: Any) -> None:
        seen.append((message["type"], limiter.in_flight("a")))

    async def receive() -> Any:
        return {"type": "http.disconnect"}

    asyncio.run(LimiterMiddleware(app)({"type": "http"}, receive, send))
    assert seen == [
        ("http.response.start", 1), ("http.response.body", 1), ("http.response.body", 0)
    ]
