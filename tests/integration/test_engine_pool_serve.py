"""Two real engine processes behind one real `tacet serve` (TACET_ENGINE_SOCKETS), on CPU.

The engines run as `tacet engine --socket ...`, the way their `tacet-engine@N` units start them;
`tacet serve --dev` connects to both and spreads calls over them (gateway.engine_pool). Under a
steady load both receive work within 20% of each other; when one is SIGKILLed, its calls in
flight are answered 503 with Retry-After, the other keeps answering with no gap longer than a
second, `/readyz` stays 200; once it is back (systemd's Restart=always), both serve again.
Each engine's own counters (a Health call on its socket) say how much work it received.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from engine.testing import write_tiny_checkpoint
from gateway.engine_client import ConnectedEngine

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOPICS = {
    "name": "topics",
    "version": "1",
    "facets": [
        {
            "name": "topic",
            "multi": False,
            "labels": [
                {"id": "systems", "name": "Systems"},
                {"id": "languages", "name": "Languages"},
                {"id": "games", "name": "Games"},
            ],
        }
    ],
}
START_TIMEOUT = 180.0
CLIENTS = 8  # requests in flight at once
DOCUMENTS = 16  # per request: enough engine work that the engines, not the gateway, are busy


class Engine:
    """`tacet engine` on its own socket, started as its systemd unit would start it."""

    def __init__(self, model_dir: Path, root: Path, index: int) -> None:
        self.socket = root / f"e{index}" / "engine.sock"
        self.model_dir = model_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        command = [sys.executable, "-m", "gateway.cli", "engine", "--socket", str(self.socket)]
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                   PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(REPO))
        self.process = subprocess.Popen(
            [*command, "--model", str(self.model_dir)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
        )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()

    async def document_passes(self) -> int:
        return await document_passes(self.socket)


async def document_passes(path: Path) -> int:
    """An engine's own count of documents it ran (a second client on its socket)."""
    client = ConnectedEngine(socket_path=path)
    await client.start()
    try:
        assert await client.wait_ready(START_TIMEOUT)
        return (await client.health()).document_passes
    finally:
        await client.stop()


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    engines: list[Engine] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.data_dir / "tls" / "ca.pem"))

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {(self.data_dir / 'dev-api-key').read_text().strip()}"}

    def get(self, path: str) -> httpx.Response | None:
        try:
            return httpx.get(self.url + path, verify=self.context(), timeout=5)
        except (httpx.HTTPError, OSError):
            return None

    def engines_ready(self) -> tuple[int, int]:
        """(ready, configured) from /metrics."""
        response = self.get("/metrics")
        assert response is not None and response.status_code == 200
        text = response.text
        ready = re.search(r"^tacet_engines_ready (\S+)$", text, flags=re.M)
        configured = re.search(r"^tacet_engines_configured (\S+)$", text, flags=re.M)
        assert ready and configured, text
        return int(float(ready.group(1))), int(float(configured.group(1)))

    def wait_engines_ready(self, count: int, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while self.engines_ready()[0] != count:
            assert time.monotonic() < deadline, f"{self.engines_ready()} engines ready"
            time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out.decode(errors="replace")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("pool")
    model_dir = write_tiny_checkpoint("llada", root / "tiny-llada")
    (root / "taxonomies").mkdir()
    (root / "taxonomies" / "topics.json").write_text(json.dumps(TOPICS))
    sockets = Path(tempfile.mkdtemp(prefix="tacet-"))  # short: a Unix socket path
    engines = [Engine(model_dir, sockets, i) for i in range(2)]
    port = _free_port()
    env = {
        **os.environ, "PYTHONPATH": str(REPO),
        "TACET_ENGINE_SOCKETS": ",".join(str(e.socket) for e in engines),
    }
    env.pop("TACET_ENGINE_SOCKET", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--dev", "--data-dir", str(root / "data"),
         "--port", str(port), "--taxonomy-dir", str(root / "taxonomies")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    running = Served(process, port, root / "data", engines)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while (ready := running.get("/readyz")) is None or ready.status_code != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("tacet serve did not become ready:\n" + _stop(process))
            time.sleep(0.25)
        running.wait_engines_ready(2)
        yield running
    finally:
        _stop(process)
        for engine in engines:
            engine.close()
        shutil.rmtree(sockets, ignore_errors=True)


@dataclass
class Answer:
    at: float  # monotonic time the answer arrived
    status: int
    retry_after: str | None


async def _load(served: Served, seconds: float, *, during: object = None) -> list[Answer]:
    """CLIENTS concurrent callers for `seconds`; `during` (a coroutine) runs alongside."""
    answers: list[Answer] = []
    end = time.monotonic() + seconds
    words = ["kernel driver for disks", "python module", "a puzzle game", "mail server daemon"]
    texts = [" ".join([w] * 12) for w in words]
    body = {"taxonomy": "topics", "documents": [
        {"id": f"d{i}", "text": texts[i % len(texts)]} for i in range(DOCUMENTS)
    ]}
    async with httpx.AsyncClient(
        base_url=served.url, verify=served.context(), headers=served.headers(), timeout=30
    ) as client:

        async def caller() -> None:
            while time.monotonic() < end:
                response = await client.post("/v1/classify", json=body)
                retry_after = response.headers.get("retry-after")
                answers.append(Answer(time.monotonic(), response.status_code, retry_after))

        tasks = [caller() for _ in range(CLIENTS)]
        if during is not None:
            tasks.append(during)  # type: ignore[arg-type]
        await asyncio.gather(*tasks)
    return answers


def _passes(served: Served) -> list[int]:
    async def both() -> list[int]:
        return [await engine.document_passes() for engine in served.engines]

    return asyncio.run(both())


def test_steady_load_reaches_both_engines_evenly(served: Served) -> None:
    before = _passes(served)
    answers = asyncio.run(_load(served, 6.0))
    after = _passes(served)
    assert answers and all(a.status == 200 for a in answers), {a.status for a in answers}
    work = [b - a for a, b in zip(before, after, strict=True)]
    assert sum(work) == len(answers) * DOCUMENTS
    assert min(work) > 0
    assert max(work) - min(work) <= 0.2 * max(work), work


def test_a_killed_engine_fails_only_its_calls_and_serves_again_after_restart(
    served: Served,
) -> None:
    victim, survivor = served.engines
    timeline: dict[str, float] = {}

    async def kill_then_restart() -> None:
        await asyncio.sleep(1.5)
        timeline["kill"] = time.monotonic()
        victim.kill()
        await asyncio.sleep(3.0)
        assert (ready := served.get("/readyz")) is not None and ready.status_code == 200
        assert served.engines_ready() == (1, 2)
        victim.start()  # systemd's Restart=always
        timeline["restart"] = time.monotonic()

    answers = asyncio.run(_load(served, 8.0, during=kill_then_restart()))
    assert {a.status for a in answers} <= {200, 503}, {a.status for a in answers}
    failed = [a for a in answers if a.status == 503]
    assert all(a.retry_after for a in failed)
    assert all(a.at >= timeline["kill"] for a in failed)  # only the victim's calls
    assert len(failed) <= CLIENTS  # at most the calls in flight when it died
    after_kill = [a for a in answers if a.at > timeline["kill"] and a.status == 200]
    assert len(after_kill) > 10  # the survivor kept serving
    times = sorted(a.at for a in answers)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) <= 1.0, f"a {max(gaps):.2f} s gap in the answers"
    # Back: both engines ready, and both take work again.
    served.wait_engines_ready(2)
    before = _passes(served)
    answers = asyncio.run(_load(served, 3.0))
    after = _passes(served)
    assert all(a.status == 200 for a in answers)
    assert all(b > a for a, b in zip(before, after, strict=True)), (before, after)
    assert survivor.process is not None and survivor.process.poll() is None


def test_serve_spawns_and_supervises_several_engines(tmp_path: Path) -> None:
    """`tacet serve --engines 2` (no sockets): two supervised engine processes, both used,
    their socket directories gone after a graceful stop."""
    model_dir = write_tiny_checkpoint("llada", tmp_path / "tiny-llada")
    (tmp_path / "taxonomies").mkdir()
    (tmp_path / "taxonomies" / "topics.json").write_text(json.dumps(TOPICS))
    scratch = Path(tempfile.mkdtemp(prefix="tacet-"))  # TMPDIR: the engines' socket folders
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(scratch)}
    for name in ("TACET_ENGINE_SOCKET", "TACET_ENGINE_SOCKETS", "TACET_ENGINES"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--dev", "--engines", "2",
         "--model", str(model_dir), "--data-dir", str(tmp_path / "data"), "--port", str(port),
         "--taxonomy-dir", str(tmp_path / "taxonomies")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    served = Served(process, port, tmp_path / "data")
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while (ready := served.get("/readyz")) is None or ready.status_code != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("tacet serve did not become ready:\n" + _stop(process))
            time.sleep(0.25)
        served.wait_engines_ready(2)
        assert served.engines_ready() == (2, 2)
        sockets = sorted(p.relative_to(scratch) for p in scratch.glob("tacet-engine-*/e*/*.sock"))
        assert [p.parts[1:] for p in sockets] == [("e0", "engine.sock"), ("e1", "engine.sock")]
        answers = asyncio.run(_load(served, 3.0))
        assert answers and all(a.status == 200 for a in answers)
        for path in sockets:
            assert asyncio.run(document_passes(scratch / path)) > 0, path
    finally:
        output = _stop(process)
    assert process.returncode == 0, output
    assert list(scratch.glob("tacet-engine-*")) == []
    shutil.rmtree(scratch, ignore_errors=True)
