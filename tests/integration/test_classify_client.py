"""`tacet classify` against a real `tacet serve --dev` (granian, TLS, engine process, SQLite).

The dev tenant is limited to one request in flight (`tacet tenants limits dev --concurrency 1`)
before its first request, so a client with more concurrency meets real 429s from the gateway's
rate limiter; killing the engine process makes the gateway answer real 503s until its
supervisor has restarted it.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.bulk_client import ClientSettings, completed_ids, run

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TAXONOMY = "topics"  # small, so that a canvas is short and the tiny model fast on CPU
TOPICS = {
    "name": TAXONOMY,
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
CANARY = f"ZDR-CANARY-{uuid.uuid4()}"


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    @property
    def key(self) -> str:
        return (self.data_dir / "dev-api-key").read_text().strip()

    def ready(self) -> int:
        """The /readyz status, 0 while the server is not answering yet."""
        try:
            context = ssl.create_default_context(cafile=str(self.ca))
            return httpx.get(self.url + "/readyz", verify=context, timeout=2).status_code
        except (httpx.HTTPError, OSError):
            return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tacet(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", *args]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("classify")
    data_dir = root / "data"
    (root / "taxonomies").mkdir()
    (root / "taxonomies" / "topics.json").write_text(json.dumps(TOPICS))
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        _tacet(
            "serve", "--dev", "--data-dir", str(data_dir), "--port", str(port),
            "--taxonomy-dir", str(root / "taxonomies"),
        ),
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    running = Server(process, port, data_dir)
    try:
        deadline = time.monotonic() + 180
        while running.ready() != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("tacet serve did not become ready:\n" + _stop(running))
            time.sleep(0.25)
        limited = subprocess.run(
            _tacet("tenants", "limits", "dev", "--concurrency", "1", "--data-dir", str(data_dir)),
            cwd=REPO, env=env, capture_output=True, check=False,
        )
        assert limited.returncode == 0, limited.stderr.decode(errors="replace")
        yield running
    finally:
        output = _stop(running)
        assert CANARY not in output
        key_file = data_dir / "dev-api-key"
        assert not key_file.exists() or running.key not in output


def _stop(server: Server) -> str:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        out, _ = server.process.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        server.process.kill()
        out, _ = server.process.communicate()
    return out.decode(errors="replace")


def _write_input(path: Path, ids: list[str], *, extra: tuple[str, ...] = ()) -> None:
    words = ["kernel driver", "python module", "perl tool", "mail server", "puzzle game"]
    lines = [
        json.dumps({"id": doc_id, "text": f"{words[i % 5]} {i} {CANARY}", "source": "x"})
        for i, doc_id in enumerate(ids)
    ]
    body = ("\n".join([*lines, *extra]) + "\n").encode()
    path.write_bytes(gzip.compress(body) if path.suffix == ".gz" else body)


def _output_ids(path: Path) -> list[str]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        assert ("labels" in record) != ("error" in record)
    return [record["id"] for record in records]


def _cli_env(server: Server) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TACET_API_KEY": server.key}


def _cli_args(server: Server, source: Path, out: Path, *more: str) -> list[str]:
    return _tacet(
        "classify", str(source), "-o", str(out), "--taxonomy", TAXONOMY,
        "--server", server.url, "--ca", str(server.ca), *more,
    )


def test_cli_classifies_a_gzip_file(server: Server, tmp_path: Path) -> None:
    ids = [f"gz-{i}" for i in range(40)]
    source, out = tmp_path / "in.jsonl.gz", tmp_path / "out.jsonl"
    _write_input(source, ids)
    done = subprocess.run(
        _cli_args(server, source, out, "--concurrency", "1", "--batch", "16"),
        cwd=tmp_path, env=_cli_env(server), capture_output=True, check=False, timeout=600,
    )
    printed = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, printed
    assert sorted(_output_ids(out)) == sorted(ids)
    assert "40 written" in printed
    assert server.key not in printed and CANARY not in printed and "gz-1" not in printed
    assert CANARY not in out.read_text()  # results never echo the text


def test_resume_after_kill_gives_one_line_per_id(server: Server, tmp_path: Path) -> None:
    ids = [f"r-{i}" for i in range(150)]
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_input(source, [*ids, "r-3"], extra=("{broken",))  # a duplicate id and a bad line
    args = _cli_args(server, source, out, "--concurrency", "1", "--batch", "10", "--no-progress")
    first = subprocess.Popen(args, cwd=tmp_path, env=_cli_env(server))
    deadline = time.monotonic() + 300
    while not out.exists() or len(out.read_bytes().splitlines()) < 15:
        assert first.poll() is None, "the first run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = len(_output_ids(out))
    assert 15 <= before < len(ids)
    with out.open("ab") as torn:  # a crash in the middle of a write
        torn.write(b'{"id": "r-14')

    second = subprocess.run(
        args, cwd=tmp_path, env=_cli_env(server), capture_output=True, check=False, timeout=600
    )
    printed = (second.stdout + second.stderr).decode(errors="replace")
    assert second.returncode == 1, printed  # the bad input line is reported...
    assert "invalid input lines (need id and text): 152" in printed  # ...by number only
    assert f"{before} already done" in printed
    written = _output_ids(out)
    assert sorted(written) == sorted(ids)  # exactly one line per id, none torn
    assert len(set(written)) == len(written)


def test_completed_ids_cuts_a_torn_last_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"id": "a", "labels": []}\n{"id": "b", "lab')
    assert completed_ids(out) == {"a"}
    assert out.read_bytes() == b'{"id": "a", "labels": []}\n'


def test_retries_429_from_the_tenant_limit(server: Server, tmp_path: Path) -> None:
    ids = [f"c-{i}" for i in range(36)]
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_input(source, ids)
    settings = ClientSettings(
        taxonomy=TAXONOMY, server=server.url, ca=server.ca, concurrency=3, batch_documents=6,
        max_attempts=60, backoff_cap_s=2.0,
    )
    stats = asyncio.run(run(source, out, settings, server.key))
    assert stats.retries[429] >= 1  # three requests at once against a limit of one
    assert sorted(_output_ids(out)) == sorted(ids)
    assert stats.written == len(ids) and stats.errors == 0


def test_retries_503_while_the_engine_restarts(server: Server, tmp_path: Path) -> None:
    ids = [f"e-{i}" for i in range(8)]
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_input(source, ids)
    engine = _engine_pid(server.process.pid)
    os.kill(engine, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while server.ready() != 503:  # the gateway has noticed; its supervisor restarts the engine
        assert time.monotonic() < deadline
        time.sleep(0.02)
    settings = ClientSettings(
        taxonomy=TAXONOMY, server=server.url, ca=server.ca, concurrency=1, max_attempts=60,
        backoff_cap_s=2.0,
    )
    stats = asyncio.run(run(source, out, settings, server.key))
    assert stats.retries[503] >= 1
    assert sorted(_output_ids(out)) == sorted(ids)
    assert _engine_pid(server.process.pid) != engine


def _engine_pid(root: int) -> int:
    """The `engine.process` descendant of the server process."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    stack = [root]
    while stack:
        pid = stack.pop()
        for child in children.get(pid, []):
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"engine.process" in command:
                return child
            stack.append(child)
    raise AssertionError("no engine process under the server")
