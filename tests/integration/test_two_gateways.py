"""Two real `tacet serve` processes sharing one PostgreSQL: a key revoked through one gateway's
admin endpoint is refused by the other within 60 s (issue 5).

Both run as in production, not `--dev`: their own ports and data dirs, real TLS 1.3 with a
certificate given by flag, the pepper from `TACET_KEY_PEPPER`, the database from
`TACET_DATABASE_URL` (the conftest's throwaway server), a tiny random model. The key is used on
both first (so the other gateway holds it in its verifier cache), revoked with
`DELETE /v1/admin/keys/{id}` on gateway A, then gateway B is polled until it answers 401; the
delay is printed and recorded as the `revocation_delay_s` property.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
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
from gateway.store import open_store
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
    import ssl

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


@pytest.fixture
def gateways(
    postgres_url: Any, tmp_path: Path
) -> Iterator[tuple[Gateway, Gateway, Shared, Path]]:
    from engine.testing import write_tiny_checkpoint
    from gateway.tls import ensure_dev_tls

    asyncio.run(reset_schema(postgres_url))
    pepper = secrets.token_urlsafe(48)
    admin, victim = asyncio.run(_seed(postgres_url, pepper))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TACET_")}
    env["TACET_DATABASE_URL"] = postgres_url.render_as_string(hide_password=False)
    env["TACET_KEY_PEPPER"] = pepper
    tls = ensure_dev_tls(tmp_path / "pki")
    assert tls.ca is not None
    model = write_tiny_checkpoint("llada", tmp_path / "model")
    a = _start("a", tmp_path, env, tls.cert, tls.key, model)
    b = _start("b", tmp_path, env, tls.cert, tls.key, model)
    shared = Shared(admin, victim)
    try:
        _wait_healthy(a, tls.ca)
        _wait_healthy(b, tls.ca)
        yield a, b, shared, tls.ca
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
