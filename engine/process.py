"""The engine process: isolates itself, loads one model, serves `engine/protocol.py` on a socket.

    python -m engine.process --socket PATH --model DIR [--device cpu]

Start-up order: isolation (`engine/_isolation.py`: network namespace, then non-dumpable and
RLIMIT_CORE 0), then the model, then the socket (parent directory 0700, socket file 0600).
Only a peer whose SO_PEERCRED uid equals ours is served, one connection at a time.

`EngineLoop` is the transport-free heart: it takes messages, runs the blocking
`EngineCore.step()` in a worker thread between them, and emits DocumentDone / CallDone. The
gateway's in-process twin drives the same class, so both paths share one set of semantics.

ZDR: stderr carries only constant event names and counts (see `_event`); document text, labels
and exception messages are never printed. The process writes no files (Python is started with
-B by the gateway; the socket itself is the only filesystem object, removed at exit).

Self-test (tests only): with TACET_ENGINE_SELFTEST_TCP_PORT=<port> the engine, once isolated,
tries a TCP connect to 127.0.0.1:<port> and prints `engine.selftest.loopback_tcp <outcome>`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from engine import _isolation
from engine.protocol import (
    PROTOCOL_VERSION,
    Abort,
    CallDone,
    Classify,
    DecodeOut,
    DocumentDone,
    Error,
    ErrorKind,
    Health,
    HealthReport,
    Hello,
    Isolation,
    LabelOut,
    Message,
    ProtocolError,
    Shutdown,
    Welcome,
    decode_body,
    encode_frame,
    frame_length,
)

__all__ = ["EngineLoop", "main", "prepare_socket", "read_message", "welcome_for"]

SELFTEST_ENV = "TACET_ENGINE_SELFTEST_TCP_PORT"
_REEXEC_ENV = "TACET_ENGINE_REEXEC"
_PR_SET_PDEATHSIG = 1
Send = Callable[[Message], Awaitable[None]]


def _event(name: str, **counts: int) -> None:
    """One constant event line on stderr; values are counts only, never content."""
    fields = "".join(f" {key}={int(value)}" for key, value in counts.items())
    print(f"{name}{fields}", file=sys.stderr, flush=True)


def _quiet_excepthook(kind: type[BaseException], value: BaseException, tb: object) -> None:
    # A traceback could carry document text in an exception message; print the type only.
    _event(f"engine.crashed.{kind.__name__.lower()}")


class EngineLoop:
    """Runs EngineCore steps between messages; one instance per connection."""

    def __init__(self, core, send: Send) -> None:  # core: engine.core.EngineCore
        self.core = core
        self.send = send
        self.inbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self.remaining: dict[str, int] = {}  # call_id -> documents still to deliver
        self.steps = 0
        self.shutdown_requested = False

    @property
    def queued_documents(self) -> int:
        return sum(self.remaining.values())

    def health(self) -> HealthReport:
        return HealthReport(ready=True, queued_documents=self.queued_documents, steps=self.steps)

    def put(self, message: Message | None) -> None:
        """Queue a message from the peer; None means the peer is gone."""
        self.inbox.put_nowait(message)

    async def run(self) -> None:
        """Serve until Shutdown or the peer is gone; drops what is left in the core then."""
        try:
            while True:
                if self.core.has_work and self.inbox.empty():
                    await self.step()
                    continue
                message = await self.inbox.get()
                if message is None or isinstance(message, Shutdown):
                    self.shutdown_requested = isinstance(message, Shutdown)
                    return
                await self.handle(message)
        finally:
            for call_id in list(self.remaining):
                self.core.abort(call_id)
            self.remaining.clear()

    async def handle(self, message: Message) -> None:
        if isinstance(message, Classify):
            await self.classify(message)
        elif isinstance(message, Abort):
            if self.remaining.pop(message.call_id, None) is not None:
                self.core.abort(message.call_id)
            await self.send(CallDone(message.call_id, aborted=True))
        elif isinstance(message, Health):
            await self.send(self.health())
        else:  # a message only the engine sends, or a second Hello
            raise ProtocolError("unexpected message")

    async def classify(self, message: Classify) -> None:
        call_id = message.call_id
        if call_id in self.remaining:
            await self.send(Error(ErrorKind.BAD_REQUEST, call_id))
            return
        try:
            from engine.decoding import Mode

            mode = Mode(message.mode)
            compiled = self.core.compile(message.taxonomy)
        except Exception:  # any taxonomy the engine cannot compile is the caller's error
            _event("engine.classify_rejected")
            await self.send(Error(ErrorKind.BAD_REQUEST, call_id))
            return
        if not message.texts:
            await self.send(CallDone(call_id))
            return
        try:
            self.core.add_request(call_id, compiled, message.texts, mode, message.threshold)
        except Exception:
            self.core.abort(call_id)
            _event("engine.classify_failed")
            await self.send(Error(ErrorKind.INTERNAL, call_id))
            return
        self.remaining[call_id] = len(message.texts)

    async def step(self) -> None:
        try:
            finished = await asyncio.to_thread(self.core.step)
        except Exception:
            _event("engine.step_failed", calls=len(self.remaining))
            for call_id in list(self.remaining):
                self.core.abort(call_id)
                await self.send(Error(ErrorKind.INTERNAL, call_id))
            self.remaining.clear()
            return
        self.steps += 1
        for result in finished:
            left = self.remaining.get(result.request_id)
            if left is None:  # aborted while the step ran
                continue
            await self.send(document_done(result))
            if left == 1:
                del self.remaining[result.request_id]
                await self.send(CallDone(result.request_id))
            else:
                self.remaining[result.request_id] = left - 1


def document_done(result) -> DocumentDone:  # result: engine.core.DocumentResult
    return DocumentDone(
        call_id=result.request_id,
        index=result.index,
        labels=[LabelOut(s.facet, s.label, s.probability) for s in result.labels],
        label_mass=dict(result.label_mass),
        decode=DecodeOut(
            mode=result.decode.mode,
            forward_passes=result.decode.forward_passes,
            exact=result.decode.exact,
            truncated=result.decode.truncated,
            tokens=result.decode.tokens,
        ),
    )


def model_id_for(model_dir: Path) -> str:
    """The model directory's name, reduced to the identifier shape logs accept."""
    cleaned = re.sub(r"[^A-Za-z0-9_.:-]", "-", model_dir.resolve().name)[:64]
    return cleaned if cleaned[:1].isalpha() else f"m{cleaned}"[:64]


def welcome_for(core, model_dir: Path, isolation: Isolation) -> Welcome:
    from engine.loader import read_config
    from engine.models import family_for

    return Welcome(
        version=PROTOCOL_VERSION,
        pid=os.getpid(),
        model_id=model_id_for(model_dir),
        family=family_for(read_config(model_dir)).name,
        slot_ops=core.runner.ops.name,
        isolation=isolation,
    )


# -- transport ---------------------------------------------------------------------------------


async def read_message(reader: asyncio.StreamReader) -> Message:
    """One frame; IncompleteReadError at EOF, ProtocolError for anything unknown or too large."""
    length = frame_length(await reader.readexactly(4))
    return decode_body(await reader.readexactly(length))


def prepare_socket(path: Path) -> socket.socket:
    """Bind and listen at `path`: parent directory 0700 (ours), socket file 0600 from birth."""
    parent = path.parent
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = parent.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise PermissionError("socket directory is not a directory owned by the engine's uid")
    os.chmod(parent, 0o700)
    if path.is_socket():  # a stale socket of a previous engine
        path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        server.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    server.listen(8)
    server.setblocking(False)
    return server


async def serve_connection(conn: socket.socket, core, welcome: Welcome) -> bool:
    """Handshake, then serve one gateway connection; True when it asked for Shutdown."""
    reader, writer = await asyncio.open_unix_connection(sock=conn)
    lock = asyncio.Lock()

    async def send(message: Message) -> None:
        async with lock:
            writer.write(encode_frame(message))
            await writer.drain()

    loop = EngineLoop(core, send)
    try:
        hello = await read_message(reader)
        if not isinstance(hello, Hello) or hello.version != PROTOCOL_VERSION:
            _event("engine.version_mismatch")
            await send(Error(ErrorKind.VERSION_MISMATCH))
            return False
        await send(welcome)
        _event("engine.connected")
        reading = asyncio.create_task(_pump(reader, loop))
        try:
            await loop.run()
        finally:
            reading.cancel()
        return loop.shutdown_requested
    except (ProtocolError, asyncio.IncompleteReadError, ConnectionError):
        _event("engine.connection_lost")
        return False
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _pump(reader: asyncio.StreamReader, loop: EngineLoop) -> None:
    """Frames to the loop's inbox; Health is answered at once, even while a step runs."""
    try:
        while True:
            message = await read_message(reader)
            if isinstance(message, Health):
                await loop.send(loop.health())
            elif isinstance(message, (Classify, Abort, Shutdown)):
                loop.put(message)
            else:
                raise ProtocolError("unexpected message")
    except (ProtocolError, asyncio.IncompleteReadError, ConnectionError):
        loop.put(None)


async def serve(server: socket.socket, core, welcome: Welcome) -> None:
    """Accept one connection at a time; refuse peers of another uid."""
    loop = asyncio.get_running_loop()
    # asyncio's default handler prints exception messages; ours prints a constant event only.
    loop.set_exception_handler(lambda _loop, _context: _event("engine.loop_error"))
    while True:
        conn, _ = await loop.sock_accept(server)
        if not _isolation.peer_allowed(conn):
            _event("engine.peer_refused")
            conn.close()
            continue
        if await serve_connection(conn, core, welcome):
            _event("engine.shutdown")
            return


# -- start-up ----------------------------------------------------------------------------------


def _single_threaded_or_reexec() -> None:
    """numpy's OpenBLAS starts a thread at import; unshare() needs one thread, so re-exec once
    with OPENBLAS_NUM_THREADS=1 (torch's own thread pools are created later, after isolation)."""
    if _isolation.thread_count() == 1 or os.environ.get(_REEXEC_ENV):
        return
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", **{_REEXEC_ENV: "1"})
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def _die_with_parent() -> None:
    """The gateway supervises us; if it dies, so do we (no orphan holding a model in memory)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() == 1:  # orphaned before prctl took effect (reparented to init)
            os.kill(os.getpid(), signal.SIGTERM)


def _selftest() -> None:
    port = os.environ.get(SELFTEST_ENV)
    if port and port.isdigit():
        print(
            f"engine.selftest.loopback_tcp {_isolation.loopback_probe(int(port))}",
            file=sys.stderr,
            flush=True,
        )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m engine.process")
    parser.add_argument("--socket", required=True, type=Path, help="Unix socket path to serve")
    parser.add_argument("--model", required=True, type=Path, help="model directory")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    sys.excepthook = _quiet_excepthook
    args = _parse(argv)
    _single_threaded_or_reexec()
    isolation = _isolation.isolate()
    _die_with_parent()
    _event(
        "engine.isolated",
        non_dumpable=isolation.non_dumpable,
        core_limit_zero=isolation.core_limit_zero,
        network_namespace=isolation.network_namespace,
    )
    _selftest()
    from engine import load_model, load_tokenizer
    from engine.core import EngineCore

    try:
        core = EngineCore(load_model(args.model, device=args.device), load_tokenizer(args.model))
        welcome = welcome_for(core, args.model, isolation)
    except Exception as exc:
        _event(f"engine.model_load_failed.{type(exc).__name__.lower()}")
        return 3
    _event("engine.model_loaded")
    server = prepare_socket(args.socket)
    try:
        asyncio.run(serve(server, core, welcome))
    finally:
        server.close()
        with contextlib.suppress(OSError):
            args.socket.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
