"""The engine process for real: isolation, socket, handshake, classify, supervision, the queue.

Every engine here is a real `python -m engine.process` on a tiny random checkpoint. The loopback
probe is the engine's own self-test (TACET_ENGINE_SELFTEST_TCP_PORT): once isolated, the engine
itself tries a TCP connect to a listener this test opened on 127.0.0.1 and prints the outcome.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import ctypes
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import _isolation, load_model, load_tokenizer
from engine.core import EngineCore
from engine.process import SELFTEST_ENV
from engine.protocol import (
    PROTOCOL_VERSION,
    CallDone,
    Classify,
    DocumentDone,
    Error,
    ErrorKind,
    Hello,
    Welcome,
    decode_body,
    encode_frame,
    frame_length,
)
from engine.testing import write_tiny_checkpoint
from gateway.engine_client import (
    EngineBusy,
    EngineRejected,
    EngineUnavailable,
    InProcessEngine,
    SupervisedEngine,
)

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
        },
        {
            "name": "kind",
            "multi": True,
            "labels": [{"id": "trial", "name": "Trial"}, {"id": "review", "name": "Review"}],
        },
    ],
}
TEXTS = ["heart vessel drug trial", "brain nerve scan", "tumour cell gene dose", "patient"]
START_TIMEOUT = 90.0


def short_dir() -> Path:
    """A runtime dir short enough for a Unix socket path (pytest's tmp paths can be long)."""
    return Path(tempfile.mkdtemp(prefix="tacet-"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint("llada", tmp_path_factory.mktemp("model") / "tiny-llada")


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop:
        yield loop


@pytest.fixture(scope="module")
def engine(model_dir: Path, runner: asyncio.Runner) -> Iterator[SupervisedEngine]:
    runtime = short_dir()
    client = SupervisedEngine(model_dir=model_dir, runtime_dir=runtime / "run")

    async def up() -> bool:
        await client.start()
        return await client.wait_ready(START_TIMEOUT)

    assert runner.run(up()), "engine did not become ready"
    yield client
    runner.run(client.stop())
    shutil.rmtree(runtime, ignore_errors=True)


# -- handshake and isolation -------------------------------------------------------------------


def test_welcome_reports_model_and_isolation(engine: SupervisedEngine, model_dir: Path) -> None:
    welcome = engine.welcome
    assert isinstance(welcome, Welcome)
    assert welcome.version == PROTOCOL_VERSION
    assert welcome.pid == engine.pid
    assert (welcome.model_id, welcome.family) == ("tiny-llada", "llada")
    assert welcome.slot_ops in {"torch-chunked", "triton"}
    isolation = welcome.isolation
    assert isolation.non_dumpable and isolation.core_limit_zero
    if isolation.network_namespace:
        assert isolation.network_detail == _isolation.DETAIL_ENTERED
    else:  # reported, not hidden
        assert isolation.network_detail and isolation.network_detail != _isolation.DETAIL_ENTERED


def test_engine_process_is_non_dumpable(engine: SupervisedEngine) -> None:
    status = Path(f"/proc/{engine.pid}/status").read_text()
    dumpable = [line.split()[1] for line in status.splitlines() if line.startswith("Dumpable:")]
    if dumpable:  # kernels since 4.x print it
        assert dumpable == ["0"]
    else:  # without the line, the /proc files of a non-dumpable process belong to root
        assert Path(f"/proc/{engine.pid}").stat().st_uid == 0
    limits = Path(f"/proc/{engine.pid}/limits").read_text()
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"]


def test_engine_network_namespace_differs_when_reported(engine: SupervisedEngine) -> None:
    assert engine.welcome is not None
    ours = os.readlink("/proc/self/ns/net")
    theirs = os.readlink(f"/proc/{engine.pid}/ns/net")
    assert (theirs != ours) == engine.welcome.isolation.network_namespace


def test_socket_directory_and_file_modes(engine: SupervisedEngine) -> None:
    assert stat.S_IMODE(engine.socket_path.parent.stat().st_mode) == 0o700
    info = engine.socket_path.stat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.geteuid()


# -- classify ------------------------------------------------------------------------------------


def test_classify_matches_engine_core_in_process(
    engine: SupervisedEngine, model_dir: Path, runner: asyncio.Runner
) -> None:
    remote = runner.run(engine.classify(TAXONOMY, TEXTS))
    core = EngineCore(load_model(model_dir), load_tokenizer(model_dir))
    local = core.classify(TAXONOMY, TEXTS)
    assert [d.index for d in remote] == list(range(len(TEXTS)))
    assert len({d.call_id for d in remote}) == 1
    for got, want in zip(remote, local, strict=True):
        assert [(lab.facet, lab.label) for lab in got.labels] == [
            (s.facet, s.label) for s in want.labels
        ]
        for lab, s in zip(got.labels, want.labels, strict=True):
            assert lab.probability == pytest.approx(s.probability, abs=1e-5)
        assert got.decode.forward_passes == want.decode.forward_passes
        assert got.decode.tokens == want.decode.tokens


def test_concurrent_calls_are_multiplexed(engine: SupervisedEngine, runner: asyncio.Runner) -> None:
    async def many() -> list:
        return await asyncio.gather(*(engine.classify(TAXONOMY, TEXTS[i:]) for i in range(4)))

    results = runner.run(many())
    assert [len(r) for r in results] == [4, 3, 2, 1]
    assert len({r[0].call_id for r in results}) == 4
    assert engine.queued_documents == 0


def test_bad_taxonomy_is_rejected_and_the_engine_keeps_serving(
    engine: SupervisedEngine, runner: asyncio.Runner
) -> None:
    with pytest.raises(EngineRejected):
        runner.run(engine.classify({"name": "x", "facets": []}, ["text"]))
    with pytest.raises(EngineRejected):
        runner.run(engine.classify(TAXONOMY, ["text"], mode="guess"))
    assert len(runner.run(engine.classify(TAXONOMY, ["text"]))) == 1


def test_empty_call_completes(engine: SupervisedEngine, runner: asyncio.Runner) -> None:
    assert runner.run(engine.classify(TAXONOMY, [])) == []


def test_queue_full_is_busy_at_once(engine: SupervisedEngine, runner: asyncio.Runner) -> None:
    limit = engine._calls.max_queued_documents

    async def scenario() -> None:
        with pytest.raises(EngineBusy):
            await engine.classify(TAXONOMY, ["x"] * (limit + 1))
        first = asyncio.ensure_future(engine.classify(TAXONOMY, ["heart"] * (limit - 1)))
        await asyncio.sleep(0)  # the first call is now queued
        started = time.monotonic()
        with pytest.raises(EngineBusy):
            await engine.classify(TAXONOMY, ["brain", "nerve"])
        assert time.monotonic() - started < 0.1
        assert len(await first) == limit - 1

    runner.run(scenario())
    assert engine.queued_documents == 0


def test_cancelled_call_is_aborted(engine: SupervisedEngine, runner: asyncio.Runner) -> None:
    async def scenario() -> list:
        call = asyncio.ensure_future(engine.classify(TAXONOMY, ["heart vessel"] * 64))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        return await engine.classify(TAXONOMY, ["brain"])

    assert len(runner.run(scenario())) == 1
    assert engine.queued_documents == 0
    assert engine.ready


def test_in_process_twin_gives_the_same_answers(
    engine: SupervisedEngine, model_dir: Path, runner: asyncio.Runner
) -> None:
    twin = InProcessEngine(model_dir=model_dir, max_queued_documents=4)

    async def scenario() -> tuple[list, list]:
        await twin.start()
        try:
            assert twin.ready and twin.restarts == 0
            with pytest.raises(EngineBusy):
                await twin.classify(TAXONOMY, [*TEXTS, "one more"])
            with pytest.raises(EngineRejected):
                await twin.classify({"facets": []}, ["text"])
            return await twin.classify(TAXONOMY, TEXTS), await engine.classify(TAXONOMY, TEXTS)
        finally:
            await twin.stop()

    local, remote = runner.run(scenario())
    flat = [[(x.facet, x.label, x.probability) for x in d.labels] for d in (*local, *remote)]
    half = len(flat) // 2
    assert [[t[:2] for t in doc] for doc in flat[:half]] == [
        [t[:2] for t in doc] for doc in flat[half:]
    ]
    assert [t[2] for doc in flat[:half] for t in doc] == pytest.approx(
        [t[2] for doc in flat[half:] for t in doc], abs=1e-5
    )
    assert not twin.ready


# -- a raw engine process: peer uid, version check, loopback self-test ---------------------------


class RawEngine:
    def __init__(self, model_dir: Path, probe_port: int) -> None:
        self.dir = short_dir()
        self.socket = self.dir / "run" / "engine.sock"
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", **{SELFTEST_ENV: str(probe_port)})
        command = [sys.executable, "-B", "-m", "engine.process", "--socket", str(self.socket)]
        command += ["--model", str(model_dir)]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            bufsize=0,  # unbuffered, so select() sees every line that is not yet read
        )
        self.events: list[str] = []

    def wait_for(self, prefix: str, timeout: float = START_TIMEOUT) -> str:
        assert self.process.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stderr], [], [], 0.5)
            if ready:
                line = self.process.stderr.readline().decode().strip()
                self.events.append(line)
                if line.startswith(prefix):
                    return line
        raise AssertionError(f"no {prefix!r} event; saw {self.events}")

    def wait_socket(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not self.socket.exists():
            assert time.monotonic() < deadline and self.process.poll() is None
            time.sleep(0.05)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        assert self.process.stderr is not None
        self.process.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def talk(path: Path, version: int) -> object:
    """Connect, say Hello(version), return the engine's reply (None when it just closed)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        sock.sendall(encode_frame(Hello(version)))
        header = sock.recv(4, socket.MSG_WAITALL)
        if not header:
            return None
        body = sock.recv(frame_length(header), socket.MSG_WAITALL)
        return decode_body(body)


@pytest.fixture(scope="module")
def loopback() -> Iterator[socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def raw_engine(model_dir: Path, loopback: socket.socket) -> Iterator[RawEngine]:
    raw = RawEngine(model_dir, loopback.getsockname()[1])
    raw.wait_socket()
    yield raw
    raw.close()


def test_loopback_tcp_fails_inside_the_isolated_engine(raw_engine: RawEngine) -> None:
    isolated = raw_engine.wait_for("engine.isolated")
    outcome = raw_engine.wait_for("engine.selftest.loopback_tcp").split()[-1]
    if "network_namespace=1" in isolated:
        assert outcome in {"unreachable", "refused", "failed"}
    else:  # without a namespace the probe reaches our listener: proof the probe can succeed
        assert outcome == "connected"


def test_version_mismatch_is_refused_then_the_right_version_is_served(
    raw_engine: RawEngine,
) -> None:
    assert talk(raw_engine.socket, PROTOCOL_VERSION + 1) == Error(ErrorKind.VERSION_MISMATCH)
    welcome = talk(raw_engine.socket, PROTOCOL_VERSION)
    assert isinstance(welcome, Welcome) and welcome.pid == raw_engine.process.pid


def test_engine_stderr_carries_no_content(raw_engine: RawEngine) -> None:
    canary = f"ZDR-CANARY-{os.getpid()}"
    bad = {"name": canary, "facets": [{"name": canary, "labels": []}]}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(raw_engine.socket))
        sock.sendall(encode_frame(Hello(PROTOCOL_VERSION)))
        sock.sendall(encode_frame(Classify("bad", bad, [canary])))
        sock.sendall(encode_frame(Classify("good", TAXONOMY, [canary, canary])))
        replies = []
        while not any(isinstance(r, CallDone) and r.call_id == "good" for r in replies):
            header = sock.recv(4, socket.MSG_WAITALL)
            replies.append(decode_body(sock.recv(frame_length(header), socket.MSG_WAITALL)))
    assert Error(ErrorKind.BAD_REQUEST, "bad") in replies
    assert sum(isinstance(r, DocumentDone) for r in replies) == 2
    assert raw_engine.wait_for("engine.classify_rejected", timeout=10)
    with contextlib.suppress(AssertionError):  # collect whatever else is there
        raw_engine.wait_for("never", timeout=0.5)
    assert raw_engine.events and not any(canary in line for line in raw_engine.events)
    assert not any("topic" in line or "cardio" in line for line in raw_engine.events)


def test_peer_check_compares_uids() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        assert _isolation.peer_uid(left) == os.geteuid()
        assert _isolation.peer_allowed(left)
        assert not _isolation.peer_allowed(left, uid=os.geteuid() + 1)


NOBODY = 65534
UNPRIVILEGED = 54321  # not the overflow uid (65534), so a missing uid map would show


def in_child(step) -> str:
    """Run `step()` in a forked child (namespaces and uids change there, not here); its repr."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # fork() with threads warns on 3.12+; the child runs only `step` and _exits.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write_end, repr(step()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        out = pipe.read().decode()
    os.waitpid(pid, 0)
    return out


def test_namespace_is_not_entered_with_other_threads() -> None:
    def step() -> tuple:
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        try:
            return _isolation.enter_network_namespace()
        finally:
            stop.set()
            thread.join()

    entered, detail = ast.literal_eval(in_child(step))
    assert not entered
    assert "thread" in detail


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming an unprivileged uid needs root")
def test_unprivileged_isolation_keeps_the_uid() -> None:
    def step() -> tuple:
        os.setgroups([])
        os.setgid(UNPRIVILEGED)
        os.setuid(UNPRIVILEGED)
        ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # dumpable again, as an ordinary process starts
        isolation = _isolation.isolate()
        return isolation.network_namespace, isolation.network_detail, os.geteuid()

    network, detail, uid = ast.literal_eval(in_child(step))
    assert uid == UNPRIVILEGED  # mapped: an unmapped uid would read as the overflow uid
    if network:
        assert detail == _isolation.DETAIL_ENTERED
    else:  # user namespaces are off on this kernel: reported with a reason
        assert detail and detail != _isolation.DETAIL_ENTERED


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another uid needs root")
def test_peer_with_another_uid_is_refused(raw_engine: RawEngine) -> None:
    # The 0700 directory alone keeps other uids out; open it up (test only) to reach the
    # engine's own SO_PEERCRED check behind it.
    os.chmod(raw_engine.dir, 0o711)
    os.chmod(raw_engine.socket.parent, 0o711)
    os.chmod(raw_engine.socket, 0o666)
    try:
        with warnings.catch_warnings():
            # fork() with threads warns on 3.12+; the child only connects and _exits.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 2
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                code = 0 if talk(raw_engine.socket, PROTOCOL_VERSION) is None else 1
            except ConnectionError:  # closed on us before or while we wrote: refused too
                code = 0
            except PermissionError:  # the filesystem stopped us before the engine could
                code = 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "exit 1: answered, 2: error, 3: no access"
        assert raw_engine.wait_for("engine.peer_refused", timeout=10)
    finally:
        os.chmod(raw_engine.socket.parent, 0o700)
        os.chmod(raw_engine.socket, 0o600)
    assert isinstance(talk(raw_engine.socket, PROTOCOL_VERSION), Welcome)


# -- supervision -----------------------------------------------------------------------------------


def test_sigkill_with_20_calls_in_flight(model_dir: Path) -> None:
    runtime = short_dir()
    client = SupervisedEngine(
        model_dir=model_dir, runtime_dir=runtime / "run", restart_backoff=(0.1, 1.0)
    )
    texts = [" ".join(["heart vessel drug trial patient"] * 20)] * 6

    async def scenario() -> None:
        await client.start()
        assert await client.wait_ready(START_TIMEOUT)
        first_pid = client.pid
        assert first_pid is not None
        calls = [asyncio.ensure_future(client.classify(TAXONOMY, texts)) for _ in range(20)]
        await asyncio.sleep(0.2)
        assert client.queued_documents > 0, "calls finished before the kill"
        os.kill(first_pid, signal.SIGKILL)
        killed = time.monotonic()
        outcomes = await asyncio.wait_for(
            asyncio.gather(*calls, return_exceptions=True), timeout=2.0
        )
        assert time.monotonic() - killed < 2.0
        assert all(isinstance(o, list | EngineUnavailable) for o in outcomes), outcomes
        assert any(isinstance(o, EngineUnavailable) for o in outcomes)
        assert not client.ready
        with pytest.raises(EngineUnavailable):
            await client.classify(TAXONOMY, ["heart"])
        assert await client.wait_ready(START_TIMEOUT)
        assert client.restarts == 1 and client.pid != first_pid
        assert len(await client.classify(TAXONOMY, TEXTS)) == len(TEXTS)
        await client.stop()
        assert not client.ready

    try:
        asyncio.run(scenario())
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def test_engine_dies_with_its_parent(model_dir: Path) -> None:
    runtime = short_dir()
    sock = runtime / "run" / "engine.sock"
    parent = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-B', '-m', 'engine.process', '--socket', "
        f"{str(sock)!r}, '--model', {str(model_dir)!r}], stdin=subprocess.DEVNULL, "
        "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    middle = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        assert middle.stdout is not None
        engine_pid = int(middle.stdout.readline())
        deadline = time.monotonic() + START_TIMEOUT
        while not sock.exists():
            assert time.monotonic() < deadline, "engine did not start"
            time.sleep(0.05)
        middle.kill()
        middle.wait()
        deadline = time.monotonic() + 10
        while _alive(engine_pid):
            assert time.monotonic() < deadline, "engine outlived its parent"
            time.sleep(0.05)
    finally:
        if "engine_pid" in locals() and _alive(engine_pid):
            os.kill(engine_pid, signal.SIGKILL)
        middle.kill()
        middle.wait()
        assert middle.stdout is not None
        middle.stdout.close()
        shutil.rmtree(runtime, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status
