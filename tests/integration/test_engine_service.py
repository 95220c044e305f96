"""`tacet engine` as a service of its own, and `ConnectedEngine` (TACET_ENGINE_SOCKET) on it.

A real `tacet engine --socket ... --model ...` process on a tiny random checkpoint; two
`ConnectedEngine` clients (the gateway and the bulk worker of one host) use it at the same time
with the same call ids and get their own results, equal to a supervised engine's. Killing the
engine fails the calls in flight; the clients reconnect when it is back; stopping a client
leaves the engine running.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.testing import write_tiny_checkpoint
from gateway.engine_client import ConnectedEngine, EngineUnavailable, SupervisedEngine
from gateway.settings import EngineSettings, SettingsError

pytestmark = pytest.mark.integration

TAXONOMY = {
    "name": "subjects",
    "version": "1",
    "facets": [
        {
            "name": "topic",
            "multi": False,
            "labels": [
                {"id": "cardio", "name": "Heart"},
                {"id": "neuro", "name": "Brain"},
                {"id": "onco", "name": "Tumour"},
            ],
        }
    ],
}
TEXTS = [f"document {i} about hearts, brains and cells" for i in range(24)]
START_TIMEOUT = 90.0


class EngineService:
    """`tacet engine` started the way its systemd unit starts it."""

    def __init__(self, model_dir: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tacet-"))  # short: a Unix socket path
        self.socket = self.dir / "run" / "engine.sock"
        self.model_dir = model_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        command = [sys.executable, "-m", "gateway.cli", "engine", "--socket", str(self.socket)]
        command += ["--model", str(self.model_dir)]
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env=env, start_new_session=True,
        )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint("llada", tmp_path_factory.mktemp("model") / "tiny-llada")


@pytest.fixture
def service(model_dir: Path) -> Iterator[EngineService]:
    running = EngineService(model_dir)
    yield running
    running.close()


def _labels(results: list) -> list[tuple[str, float]]:
    return [(r.labels[0].label, round(r.labels[0].probability, 4)) for r in results]


async def _supervised(model_dir: Path) -> list:
    runtime = Path(tempfile.mkdtemp(prefix="tacet-"))
    engine = SupervisedEngine(model_dir=model_dir, runtime_dir=runtime / "run")
    try:
        await engine.start()
        assert await engine.wait_ready(START_TIMEOUT)
        return await engine.classify(TAXONOMY, TEXTS)
    finally:
        await engine.stop()
        shutil.rmtree(runtime, ignore_errors=True)


def test_two_clients_share_one_engine_service(service: EngineService, model_dir: Path) -> None:
    async def scenario() -> None:
        gateway = ConnectedEngine(socket_path=service.socket)
        worker = ConnectedEngine(socket_path=service.socket)
        await gateway.start()
        await worker.start()
        try:
            assert await gateway.wait_ready(START_TIMEOUT)
            assert await worker.wait_ready(START_TIMEOUT)
            assert service.process is not None
            assert gateway.welcome is not None and gateway.welcome.pid == service.process.pid
            assert gateway.welcome.isolation.non_dumpable
            # Both at once, interleaved in the engine's batches; each gets its own documents.
            first, second = await asyncio.gather(
                gateway.classify(TAXONOMY, TEXTS), worker.classify(TAXONOMY, TEXTS[::-1])
            )
            assert len(first) == len(second) == len(TEXTS)
            assert _labels(first) == _labels(second[::-1])
            assert _labels(first) == _labels(await _supervised(model_dir))
            health = await worker.health()
            assert health.queued_documents == 0 and health.document_passes >= 2 * len(TEXTS)
        finally:
            await gateway.stop()
        # A client that stops leaves the engine serving the other one.
        assert service.process is not None and service.process.poll() is None
        try:
            assert len(await worker.classify(TAXONOMY, TEXTS[:3])) == 3
        finally:
            await worker.stop()
        assert service.process.poll() is None

    asyncio.run(scenario())


def test_client_reconnects_after_the_engine_restarts(service: EngineService) -> None:
    async def scenario() -> None:
        client = ConnectedEngine(socket_path=service.socket, restart_backoff=(0.1, 1.0))
        await client.start()
        try:
            assert await client.wait_ready(START_TIMEOUT)
            pending = asyncio.ensure_future(client.classify(TAXONOMY, TEXTS * 8))
            await asyncio.sleep(0.2)
            service.kill()
            with pytest.raises(EngineUnavailable):
                await pending
            deadline = time.monotonic() + 5
            while client.ready and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not client.ready
            service.start()  # systemd's Restart=always
            assert await client.wait_ready(START_TIMEOUT)
            assert client.restarts >= 1
            assert len(await client.classify(TAXONOMY, TEXTS[:2])) == 2
        finally:
            await client.stop()

    asyncio.run(scenario())


def test_engine_socket_setting(tmp_path: Path) -> None:
    settings = EngineSettings.from_env({"TACET_ENGINE_SOCKET": "/run/tacet-engine/engine.sock"})
    assert settings.socket == Path("/run/tacet-engine/engine.sock")
    settings.validate(dev=False)  # no --model needed: the engine at the socket has one
    with pytest.raises(SettingsError, match="already has its model"):
        EngineSettings.from_env(
            {"TACET_ENGINE_SOCKET": "/run/e.sock", "TACET_MODEL": str(tmp_path)}
        ).validate(dev=False)
    with pytest.raises(SettingsError, match="absolute"):
        EngineSettings.from_env({"TACET_ENGINE_SOCKET": "engine.sock"}).validate(dev=False)
