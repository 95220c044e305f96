"""Two real `tacet serve` processes sharing one PostgreSQL: a key revoked through one gateway's
admin endpoint is refused by the other within 60 s (issue 5); tenant limits hold across both,
and a SIGKILLed gateway's concurrency slot comes back within its lease (issue 25).

Both run as in production, not `--dev`: their own ports and data dirs, real TLS 1.3 with a
certificate given by flag, the pepper from `TACET_KEY_PEPPER`, the database from
`TACET_DATABASE_URL` (the conftest's throwaway server), a tiny random model. The key is used on
both first (so the other gateway holds it in its verifier cache), revoked with
`DELETE /v1/admin/keys/{id}` on gateway A, then gateway B is polled until it answers 401; the
delay is printed and recorded as the `revocation_delay_s` property.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.apikeys import Peppers
from gateway.store import TenantLimits, open_store
from gateway.taxonomy_io import parse_csv
from tests.integration._postgres import reset_schema

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 60.0


@dataclass
class Gateway:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(
    name: str, tmp: Path, env: dict[str, str], cert: Path, key: Path, model: Path
) -> Gateway:
    port = _free_port()
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port),
             "--data-dir", str(tmp / name), "--model", str(model),
             "--tls-cert", str(cert), "--tls-key", str(key)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: granian's worker, the engine
        )
    return Gateway(name, process, port, log)


def _wait_healthy(gateway: Gateway, ca: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            raise AssertionError(f"gateway {gateway.name} exited: {gateway.log.read_text()}")
        try:
            with httpx.Client(verify=_context(ca), base_url=gateway.url, timeout=5) as client:
                if client.get("/healthz").status_code == 200:
                    return
        except (OSError, httpx.TransportError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"gateway {gateway.name} did not answer /healthz in {timeout} s")


def _context(ca: Path) -> Any:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def _stop(gateway: Gateway) -> str:
    if gateway.process.poll() is None:
        gateway.process.send_signal(signal.SIGTERM)
    try:
        gateway.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        gateway.process.kill()
        gateway.process.wait()
    with contextlib.suppress(ProcessLookupError):  # anything of its group left behind
        os.killpg(gateway.process.pid, signal.SIGKILL)
    return gateway.log.read_text(errors="replace")


@dataclass
class Shared:
    admin: str  # token with `admin` and `classify`
    victim: str  # token with `classify`, to be revoked


async def _seed(url: Any, pepper: str) -> tuple[str, str]:
    store = await open_store(url)  # migrates the schema once, before either gateway starts
    try:
        tenant = await store.create_tenant("two-gateways")
        peppers = Peppers([pepper.encode("utf-8")])
        admin = await store.create_key(tenant.id, peppers, scopes={"admin", "classify"})
        victim = await store.create_key(tenant.id, peppers, scopes={"classify"})
        return admin.token, victim.token
    finally:
        await store.engine.dispose()


def _environment(postgres_url: Any, pepper: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TACET_")}
    env["TACET_DATABASE_URL"] = postgres_url.render_as_string(hide_password=False)
    env["TACET_KEY_PEPPER"] = pepper
    env.update(extra)
    return env


def _pair(tmp_path: Path, env: dict[str, str]) -> tuple[Gateway, Gateway, Path]:
    """Gateways A and B started and healthy (stop them with _stop)."""
    from engine.testing import write_tiny_checkpoint
    from gateway.tls import ensure_dev_tls

    tls = ensure_dev_tls(tmp_path / "pki")
    assert tls.ca is not None
    model = write_tiny_checkpoint("llada", tmp_path / "model")
    a = _start("a", tmp_path, env, tls.cert, tls.key, model)
    b = _start("b", tmp_path, env, tls.cert, tls.key, model)
    try:
        _wait_healthy(a, tls.ca)
        _wait_healthy(b, tls.ca)
    except BaseException:
        _stop(a), _stop(b)
        raise
    return a, b, tls.ca


@pytest.fixture
def gateways(
    postgres_url: Any, tmp_path: Path
) -> Iterator[tuple[Gateway, Gateway, Shared, Path]]:
    asyncio.run(reset_schema(postgres_url))
    pepper = secrets.token_urlsafe(48)
    admin, victim = asyncio.run(_seed(postgres_url, pepper))
    a, b, ca = _pair(tmp_path, _environment(postgres_url, pepper))
    shared = Shared(admin, victim)
    try:
        yield a, b, shared, ca
    finally:
        logs = _stop(a) + _stop(b)
        for secret in (admin, victim, pepper):
            assert secret not in logs


def _get(client: httpx.Client, token: str) -> int:
    return client.get("/v1/taxonomies", headers={"Authorization": f"Bearer {token}"}).status_code


def test_a_key_revoked_through_one_gateway_is_refused_by_the_other(
    gateways: tuple[Gateway, Gateway, Shared, Path], record_property: Any
) -> None:
    a, b, shared, ca = gateways
    with httpx.Client(verify=_context(ca), base_url=a.url, timeout=10) as on_a, httpx.Client(
        verify=_context(ca), base_url=b.url, timeout=10
    ) as on_b:
        # The key works on both; B now holds it in its verification cache.
        assert _get(on_a, shared.victim) == 200
        assert _get(on_b, shared.victim) == 200
        assert _get(on_b, shared.victim) == 200
        key_id = shared.victim.split("_")[2]
        revoked = on_a.delete(
            f"/v1/admin/keys/{key_id}", headers={"Authorization": f"Bearer {shared.admin}"}
        )
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["state"] == "revoked"
        revoked_at = time.monotonic()
        polls = 0
        while True:
            polls += 1
            status = _get(on_b, shared.victim)
            delay = time.monotonic() - revoked_at
            if status == 401:
                break
            assert status == 200, status
            assert delay < DEADLINE_S, f"gateway B still accepts the key after {delay:.1f} s"
            time.sleep(0.05)
        record_property("revocation_delay_s", round(delay, 3))
        print(f"\nrevocation seen by gateway B after {delay:.3f} s ({polls} polls)")
        assert _get(on_a, shared.victim) == 401
        # The admin key is untouched, on both.
        assert _get(on_a, shared.admin) == 200
        assert _get(on_b, shared.admin) == 200
        # B lists the key as revoked too: one database.
        listed = on_b.get(
            "/v1/admin/keys", headers={"Authorization": f"Bearer {shared.admin}"}
        ).json()["keys"]
        assert {k["key_id"]: k["state"] for k in listed}[key_id] == "revoked"


# ---- tenant limits across both gateways (issue 25) ----------------------------------------

LEASE_S = 2.0  # TACET_LIMIT_LEASE_SECONDS for this test (default 30)
TOPICS = "facet,id,name,description,parent\ntopic,one,One,,\ntopic,two,Two,,\n"


@dataclass
class Limited:
    rate: str  # token of a tenant at 30 requests a minute
    conc: str  # token of a tenant at 2 requests in flight
    url: Any = None  # the shared database


async def _leases_left_ms(url: Any) -> list[int]:
    """How long each live slot lease still runs, by the database's clock."""
    from sqlalchemy import text

    from gateway.store import create_engine

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            now = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
            rows = await conn.execute(text(f"SELECT expires_ms - {now} FROM limit_slots"))
            return [int(left) for (left,) in rows.all() if left > 0]
    finally:
        await engine.dispose()


async def _seed_limited(url: Any, pepper: str) -> Limited:
    store = await open_store(url)
    try:
        peppers = Peppers([pepper.encode("utf-8")])
        tokens = []
        for name, limits in (
            ("rate", TenantLimits(requests_per_minute=30)),
            ("conc", TenantLimits(max_concurrency=2)),
        ):
            tenant = await store.create_tenant(name, limits)
            await store.put_taxonomy(tenant.id, parse_csv(TOPICS, name="topics"))
            tokens.append((await store.create_key(tenant.id, peppers, scopes={"classify"})).token)
        return Limited(*tokens)
    finally:
        await store.engine.dispose()


@pytest.fixture
def limited(postgres_url: Any, tmp_path: Path) -> Iterator[tuple[Gateway, Gateway, Limited, Path]]:
    asyncio.run(reset_schema(postgres_url))
    pepper = secrets.token_urlsafe(48)
    tokens = asyncio.run(_seed_limited(postgres_url, pepper))
    tokens.url = postgres_url
    env = _environment(postgres_url, pepper, TACET_LIMIT_LEASE_SECONDS=str(LEASE_S))
    a, b, ca = _pair(tmp_path, env)
    try:
        for gateway in (a, b):
            _wait_ready(gateway, ca)
        yield a, b, tokens, ca
    finally:
        _stop(a), _stop(b)


def _wait_ready(gateway: Gateway, ca: Path, timeout: float = 120.0) -> None:
    """/readyz 200: the engine process has its model (classify answers 503 until then)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(verify=_context(ca), base_url=gateway.url, timeout=5) as client:
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, f"gateway {gateway.name} never became ready"
            time.sleep(0.2)


def _classify(client: httpx.Client, token: str) -> httpx.Response:
    return client.post(
        "/v1/classify",
        json={"taxonomy": "topics", "documents": [{"id": "d", "text": "a short text"}]},
        headers={"Authorization": f"Bearer {token}"},
    )


def _assert_429(response: httpx.Response, high: int) -> int:
    assert response.status_code == 429, response.text
    seconds = int(response.headers["retry-after"])
    assert response.json()["retry_after"] == seconds
    assert 1 <= seconds <= high
    return seconds


class HeldStream:
    """A `/v1/classify/stream` request whose body stays open: it holds a concurrency slot
    from its admission (response head received) until closed or its gateway dies. A 429
    arrives as a whole response instead."""

    def __init__(self, gateway: Gateway, ca: Path, token: str) -> None:
        raw = socket.create_connection(("127.0.0.1", gateway.port), timeout=20)
        self.sock = _context(ca).wrap_socket(raw, server_hostname="127.0.0.1")
        head = (
            "POST /v1/classify/stream HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/x-ndjson\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        )
        # The header and one document: the response starts with that document's result line.
        line = (
            json.dumps({"taxonomy": "topics"}) + "\n" + json.dumps({"id": "d", "text": "text"})
            + "\n"
        ).encode()
        self.sock.sendall(head.encode() + f"{len(line):x}\r\n".encode() + line + b"\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = self.sock.recv(4096)
            assert chunk, "the gateway closed the held stream"
            answer += chunk
        self.status = int(answer.split(b" ", 2)[1])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"0\r\n\r\n")
        self.sock.close()


def test_tenant_limits_hold_across_two_gateways_and_a_killed_ones_slot_comes_back(
    limited: tuple[Gateway, Gateway, Limited, Path], record_property: Any
) -> None:
    a, b, tokens, ca = limited
    with httpx.Client(verify=_context(ca), base_url=a.url, timeout=30) as on_a, httpx.Client(
        verify=_context(ca), base_url=b.url, timeout=30
    ) as on_b:
        # 30 a minute, spread over both: 30 pass (the documented overshoot is none), then 429.
        answers = [_classify(on_a if i % 2 else on_b, tokens.rate) for i in range(40)]
        ok = [r for r in answers if r.status_code == 200]
        assert len(ok) == 30, [r.status_code for r in answers]
        for refused in answers[30:]:
            _assert_429(refused, 62)  # the window's first units leave 60 s + slice later
        assert all(r.status_code == 200 for r in answers[:30])
        for client in (on_a, on_b):
            metrics = client.get("/metrics").text
            assert 'tacet_limiter_decisions_total{limiter="shared",outcome="admitted"}' in metrics
            assert "tn_" not in metrics  # no tenant label
        assert 'outcome="refused_requests"' in on_a.get("/metrics").text + on_b.get(
            "/metrics"
        ).text

        # Concurrency 2 across both: one stream held on each, a third request anywhere is 429.
        held_a = HeldStream(a, ca, tokens.conc)
        held_b = HeldStream(b, ca, tokens.conc)
        assert (held_a.status, held_b.status) == (200, 200)
        _assert_429(_classify(on_a, tokens.conc), 60)
        _assert_429(_classify(on_b, tokens.conc), 60)
        third = HeldStream(a, ca, tokens.conc)
        assert third.status == 429
        third.close()

        # B dies holding its slot (every process of it, as a lost host or an OOM-killed
        # container): the slot is still counted, then comes back within the lease.
        os.killpg(b.process.pid, signal.SIGKILL)
        b.process.wait(10)
        killed = time.monotonic()
        left = asyncio.run(_leases_left_ms(tokens.url))  # A's and dead B's
        assert len(left) == 2 and max(left) <= LEASE_S * 1000
        _assert_429(_classify(on_a, tokens.conc), int(LEASE_S) + 1)
        while True:
            response = _classify(on_a, tokens.conc)
            delay = time.monotonic() - killed
            if response.status_code == 200:
                break
            _assert_429(response, int(LEASE_S) + 1)
            assert delay < LEASE_S + 2.0, f"the dead gateway's slot still held after {delay:.1f} s"
            time.sleep(0.05)
        record_property("slot_back_after_kill_s", round(delay, 3))
        print(
            f"\nkilled gateway's slot back after {delay:.3f} s as seen by a client (lease"
            f" {LEASE_S} s; its lease had {min(left)}-{max(left)} ms left at the kill)"
        )
        assert _classify(on_a, tokens.conc).status_code == 200  # A's own stream holds the other
        held_a.close()
        held_b.close()
