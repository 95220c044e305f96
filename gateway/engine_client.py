"""The gateway's side of the engine boundary: a supervised engine process and its in-process twin.

    EngineClientError
    ├── EngineUnavailable   engine dead, restarting or not yet ready      -> 503 + Retry-After
    ├── EngineBusy          the bounded document queue is full            -> 429 + Retry-After
    └── EngineRejected      the engine refused the request (BAD_REQUEST)  -> 422

`SupervisedEngine` spawns `python -m engine.process`, talks `engine/protocol.py` over its Unix
socket, multiplexes calls by a random call id, and restarts the process with exponential backoff
when it dies; every call in flight at that moment fails at once with EngineUnavailable.
`ConnectedEngine` talks to an engine that runs as its own service (`tacet engine`,
`TACET_ENGINE_SOCKET`) and reconnects when it restarts.
`InProcessEngine` drives the same `EngineLoop` in this process (steps in a worker thread), for
fast tests and the demo. Neither logs document text or labels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from engine.protocol import (
    PROTOCOL_VERSION,
    Abort,
    CallDone,
    Classify,
    DocumentDone,
    Error,
    ErrorKind,
    Health,
    HealthReport,
    Hello,
    Isolation,
    Message,
    ProtocolError,
    Shutdown,
    Welcome,
    decode_body,
    encode_frame,
    frame_length,
)

__all__ = [
    "ConnectedEngine",
    "EngineBusy",
    "EngineClient",
    "EngineClientError",
    "EngineRejected",
    "EngineUnavailable",
    "InProcessEngine",
    "SupervisedEngine",
]

_log = logging.getLogger("tacet.engine")
_SOCKET_NAME = "engine.sock"
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, with the terminating NUL
_ENGINE_LINE = re.compile(r"^(engine\.[a-z0-9_.]+)((?: [a-z_]+=\d+)*)$")
_UCRED = struct.Struct("3i")


class EngineClientError(Exception):
    """Root of the errors a classify() call raises on purpose."""


class EngineUnavailable(EngineClientError):
    """The engine is dead, restarting or not yet ready; retry later (503)."""


class EngineBusy(EngineClientError):
    """More documents are queued than the bound allows; retry later (429)."""


class EngineRejected(EngineClientError):
    """The engine refused the request, e.g. a taxonomy it cannot compile (422)."""


class EngineClient(Protocol):
    @property
    def ready(self) -> bool: ...

    @property
    def welcome(self) -> Welcome | None: ...

    @property
    def restarts(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def classify(
        self,
        taxonomy: dict[str, Any],
        texts: list[str],
        *,
        mode: str = "diffusion",
        threshold: float | None = None,
        on_document: Callable[[DocumentDone], None] | None = None,
    ) -> list[DocumentDone]: ...


@dataclass
class _Call:
    expected: int
    future: asyncio.Future[list[DocumentDone]]
    documents: dict[int, DocumentDone] = field(default_factory=dict)
    on_document: Callable[[DocumentDone], None] | None = None  # each result as it arrives


class _Calls:
    """Calls in flight by call id, and what each incoming message does to them."""

    def __init__(self, max_queued_documents: int) -> None:
        self.max_queued_documents = max_queued_documents
        self.calls: dict[str, _Call] = {}
        self.queued = 0
        self.health_waiters: deque[asyncio.Future[HealthReport]] = deque()  # answered in order

    def open(
        self, count: int, on_document: Callable[[DocumentDone], None] | None = None
    ) -> tuple[str, _Call]:
        if self.queued + count > self.max_queued_documents:
            raise EngineBusy("engine queue is full")
        call_id = uuid.uuid4().hex
        call = _Call(count, asyncio.get_running_loop().create_future(), on_document=on_document)
        self.calls[call_id] = call
        self.queued += count
        return call_id, call

    def close(self, call_id: str) -> None:
        call = self.calls.pop(call_id, None)
        if call is not None:
            self.queued -= call.expected

    def dispatch(self, message: Message) -> None:
        if isinstance(message, HealthReport):
            while self.health_waiters:
                waiter = self.health_waiters.popleft()
                if not waiter.done():
                    waiter.set_result(message)
                    break
            return
        call = self.calls.get(getattr(message, "call_id", None) or "")
        if call is None or call.future.done():
            return  # a call we gave up on (aborted, failed) or never made
        if isinstance(message, DocumentDone):
            call.documents[message.index] = message
            if call.on_document is not None and 0 <= message.index < call.expected:
                call.on_document(message)
        elif isinstance(message, CallDone):
            if message.aborted or len(call.documents) != call.expected:
                call.future.set_exception(EngineUnavailable("engine dropped the call"))
            else:
                call.future.set_result([call.documents[i] for i in range(call.expected)])
        elif isinstance(message, Error):
            error = EngineRejected if message.kind == ErrorKind.BAD_REQUEST else EngineUnavailable
            call.future.set_exception(error(f"engine error: {message.kind.value}"))

    def fail_all(self) -> None:
        for call in self.calls.values():
            if not call.future.done():
                call.future.set_exception(EngineUnavailable("engine is unavailable"))
        while self.health_waiters:
            waiter = self.health_waiters.popleft()
            if not waiter.done():
                waiter.set_exception(EngineUnavailable("engine is unavailable"))

    async def drained(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.calls and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


class _ClientBase:
    """classify() over an abstract `_send`; subclasses deliver engine messages to `_calls`."""

    def __init__(self, max_queued_documents: int) -> None:
        self._calls = _Calls(max_queued_documents)
        self._ready = False
        self._welcome: Welcome | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def welcome(self) -> Welcome | None:
        return self._welcome

    @property
    def queued_documents(self) -> int:
        return self._calls.queued

    async def _send(self, message: Message) -> None:
        raise NotImplementedError

    async def classify(
        self,
        taxonomy: dict[str, Any],
        texts: list[str],
        *,
        mode: str = "diffusion",
        threshold: float | None = None,
        on_document: Callable[[DocumentDone], None] | None = None,
    ) -> list[DocumentDone]:
        """Labels for each text, ordered by index; on cancellation the engine gets an Abort.

        `on_document` is called with each result as it arrives (completion order), before the
        call returns; the streaming route uses it to emit lines as documents finish.
        """
        if not self._ready:
            raise EngineUnavailable("engine is not ready")
        call_id, call = self._calls.open(len(texts), on_document)
        try:
            try:
                await self._send(Classify(call_id, taxonomy, list(texts), mode, threshold))
            except (ConnectionError, OSError):
                raise EngineUnavailable("engine connection lost") from None
            return await call.future
        except asyncio.CancelledError:
            if self._ready:
                self._abort_soon(call_id)
            raise
        finally:
            self._calls.close(call_id)

    async def health(self, timeout: float = 10.0) -> HealthReport:
        """The engine's counters (steps, document passes, aborted documents, queue)."""
        if not self._ready:
            raise EngineUnavailable("engine is not ready")
        waiter: asyncio.Future[HealthReport] = asyncio.get_running_loop().create_future()
        self._calls.health_waiters.append(waiter)
        try:
            await self._send(Health())
        except (ConnectionError, OSError):
            raise EngineUnavailable("engine connection lost") from None
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            raise EngineUnavailable("engine did not answer the health check") from None

    def _abort_soon(self, call_id: str) -> None:
        async def abort() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                await self._send(Abort(call_id))

        self._keep(asyncio.get_running_loop().create_task(abort()))

    def _keep(self, task: asyncio.Task[None]) -> None:
        """Hold a reference to a fire-and-forget task until it ends."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)


# -- the supervised process ---------------------------------------------------------------------


class SupervisedEngine(_ClientBase):
    """Spawns, connects to, and restarts the engine process; implements EngineClient."""

    def __init__(
        self,
        *,
        model_dir: Path,
        runtime_dir: Path,
        python: str = sys.executable,
        max_queued_documents: int = 256,
        restart_backoff: tuple[float, float] = (0.5, 10.0),
        device: str = "cpu",
        start_timeout: float = 600.0,
        drain_timeout: float = 30.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(max_queued_documents)
        self.model_dir = Path(model_dir)
        self.runtime_dir = Path(runtime_dir)
        self.socket_path = self.runtime_dir / _SOCKET_NAME
        if len(os.fsencode(self.socket_path)) > _MAX_SOCKET_PATH:
            raise ValueError("runtime_dir is too long for a Unix socket path; choose a shorter one")
        self.python = python
        self.device = device
        self.restart_backoff = restart_backoff
        self.start_timeout = start_timeout
        self.drain_timeout = drain_timeout
        self.extra_env = dict(extra_env or {})
        self._restarts = 0
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._write_lock = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._became_ready = asyncio.Event()

    @property
    def restarts(self) -> int:
        return self._restarts

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        """Start supervising; returns at once (see `wait_ready`), `ready` turns True on Welcome."""
        if self._supervisor is None:
            self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.runtime_dir, 0o700)
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def wait_ready(self, timeout: float) -> bool:
        """True once the engine has welcomed us (again), False after `timeout` seconds."""
        if self._ready:
            return True
        self._became_ready.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._became_ready.wait(), timeout)
        return self._ready

    async def stop(self) -> None:
        """Refuse new calls, let in-flight ones finish (bounded), then Shutdown the engine."""
        self._stopping = True
        await self._calls.drained(self.drain_timeout)
        self._ready = False
        connected = self._writer is not None
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            await self._send(Shutdown())
        await self._end_process(grace=5.0 if connected else 0.0)
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        self._calls.fail_all()

    async def _send(self, message: Message) -> None:
        writer = self._writer
        if writer is None:
            raise ConnectionError("no engine connection")
        async with self._write_lock:
            writer.write(encode_frame(message))
            await writer.drain()

    # -- supervision --------------------------------------------------------------------------

    async def _supervise(self) -> None:
        failures = 0
        first = True
        while not self._stopping:
            if not first:
                self._restarts += 1
                _log.warning("engine.restarting", extra={"restarts": self._restarts})
            first = False
            up_since = await self._run_once()
            if self._stopping:
                return
            healthy = up_since is not None and time.monotonic() - up_since > self.restart_backoff[1]
            failures = 1 if healthy else failures + 1
            base, cap = self.restart_backoff
            await asyncio.sleep(min(cap, base * 2 ** (failures - 1)))

    async def _run_once(self) -> float | None:
        """One engine lifetime; returns when it ended (monotonic time it became ready, if so)."""
        up_since = None
        try:
            await self._spawn()
            reader = await self._connect()
            up_since = time.monotonic()
            await self._read_until_lost(reader)
        except (OSError, ProtocolError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self._lost()
            if not self._stopping:
                await self._end_process(grace=0.0)
        return up_since

    def _lost(self) -> None:
        """Connection or process gone: not ready, and every call in flight fails now."""
        self._ready = False
        self._welcome = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._calls.fail_all()

    async def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
        env.update(self.extra_env)
        command = [
            self.python,
            "-B",
            "-m",
            "engine.process",
            "--socket",
            str(self.socket_path),
            "--model",
            str(self.model_dir),
            "--device",
            self.device,
        ]
        self._process = await asyncio.create_subprocess_exec(
            *command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C reaches the gateway, which stops it
        )
        assert self._process.stderr is not None
        self._keep(asyncio.get_running_loop().create_task(_forward_events(self._process.stderr)))

    async def _connect(self) -> asyncio.StreamReader:
        """Connect with retries while the engine loads, check its uid, then handshake."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not self._engine_alive():
                raise ConnectionError("engine exited during start")
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise TimeoutError("engine did not start in time") from None
                await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        if sock is None or _peer_uid(sock) != os.geteuid():
            writer.close()
            raise ConnectionError("engine socket peer has another uid")
        self._writer = writer
        await self._send(Hello(PROTOCOL_VERSION))
        welcome = await _read_message(reader)
        if not isinstance(welcome, Welcome):
            raise ProtocolError("engine refused the handshake")
        self._welcome = welcome
        self._ready = not self._stopping
        self._became_ready.set()
        _log.info("engine.ready", extra={"pid": welcome.pid, "model_id": welcome.model_id})
        return reader

    def _engine_alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def _read_until_lost(self, reader: asyncio.StreamReader) -> None:
        process = self._process
        assert process is not None
        exited = asyncio.get_running_loop().create_task(process.wait())
        try:
            while True:
                reading = asyncio.get_running_loop().create_task(_read_message(reader))
                done, _ = await asyncio.wait({reading, exited}, return_when=asyncio.FIRST_COMPLETED)
                if reading not in done:
                    reading.cancel()
                    return
                self._calls.dispatch(reading.result())
        finally:
            if not exited.done():
                exited.cancel()

    async def _end_process(self, grace: float) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        if grace > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), grace)
                return
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def _read_message(reader: asyncio.StreamReader) -> Message:
    length = frame_length(await reader.readexactly(4))
    return decode_body(await reader.readexactly(length))


def _peer_uid(sock: socket.socket) -> int:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return _UCRED.unpack(raw)[1]


async def _forward_events(stream: asyncio.StreamReader) -> None:
    """Pass on the engine's constant event lines; drop anything else unread (ZDR)."""
    while line := await stream.readline():
        match = _ENGINE_LINE.match(line.decode("ascii", "replace").strip())
        if match:
            counts = dict(pair.split("=") for pair in match.group(2).split())
            _log.info(match.group(1), extra={k: int(v) for k, v in counts.items()})


# -- the in-process twin ------------------------------------------------------------------------


_IN_PROCESS = Isolation(
    non_dumpable=False,
    core_limit_zero=False,
    network_namespace=False,
    network_detail="in-process engine; no isolation",
)


class ConnectedEngine(SupervisedEngine):
    """Connects to an engine that runs on its own (`tacet engine`, a systemd unit) at
    `TACET_ENGINE_SOCKET`: the same protocol, uid check and call semantics as SupervisedEngine,
    and it reconnects with backoff when the engine restarts (`restarts` counts reconnections).
    It never starts or stops the engine: `stop()` drains its own calls and disconnects."""

    def __init__(
        self,
        *,
        socket_path: Path,
        max_queued_documents: int = 256,
        restart_backoff: tuple[float, float] = (0.5, 10.0),
        start_timeout: float = 600.0,
        drain_timeout: float = 30.0,
    ) -> None:
        socket_path = Path(socket_path)
        super().__init__(
            model_dir=Path(),
            runtime_dir=socket_path.parent,
            max_queued_documents=max_queued_documents,
            restart_backoff=restart_backoff,
            start_timeout=start_timeout,
            drain_timeout=drain_timeout,
        )
        self.socket_path = socket_path

    @property
    def pid(self) -> int | None:
        return self._welcome.pid if self._welcome else None

    async def start(self) -> None:
        if self._supervisor is None:  # the engine's unit owns its socket directory
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def stop(self) -> None:
        self._stopping = True
        await self._calls.drained(self.drain_timeout)
        self._ready = False
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        self._lost()

    async def _spawn(self) -> None:
        return None

    def _engine_alive(self) -> bool:
        return True

    async def _read_until_lost(self, reader: asyncio.StreamReader) -> None:
        while True:
            self._calls.dispatch(await _read_message(reader))

    async def _end_process(self, grace: float) -> None:
        return None


class InProcessEngine(_ClientBase):
    """EngineCore in this process (steps in a worker thread), with SupervisedEngine's semantics."""

    def __init__(
        self, *, model_dir: Path, max_queued_documents: int = 256, device: str = "cpu"
    ) -> None:
        super().__init__(max_queued_documents)
        self.model_dir = Path(model_dir)
        self.device = device
        self._loop: Any = None  # engine.process.EngineLoop
        self._task: asyncio.Task[None] | None = None

    @property
    def restarts(self) -> int:
        return 0

    async def start(self) -> None:
        """Load the model (in a thread) and start the loop; ready when this returns."""
        from engine.process import EngineLoop, welcome_for

        core = await asyncio.to_thread(self._load)
        self._loop = EngineLoop(core, self._deliver)
        self._welcome = welcome_for(core, self.model_dir, _IN_PROCESS)
        self._task = asyncio.get_running_loop().create_task(self._loop.run())
        self._ready = True

    def _load(self) -> Any:
        from engine import load_model, load_tokenizer
        from engine.core import EngineCore

        model = load_model(self.model_dir, device=self.device)
        return EngineCore(model, load_tokenizer(self.model_dir))

    async def _deliver(self, message: Message) -> None:
        self._calls.dispatch(message)

    async def _send(self, message: Message) -> None:
        if self._loop is None:
            raise ConnectionError("engine is not running")
        if isinstance(message, Health):
            await self._deliver(self._loop.health())
        else:
            self._loop.put(message)

    async def stop(self) -> None:
        await self._calls.drained(30.0)
        self._ready = False
        if self._loop is not None and self._task is not None:
            self._loop.put(Shutdown())
            await self._task
        self._calls.fail_all()
