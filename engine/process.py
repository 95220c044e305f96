"""The engine process: isolates itself, loads one model, serves `engine/protocol.py` on a socket.

    python -m engine.process --socket PATH --model DIR [--device cpu] [--standalone]

The gateway spawns and supervises it (it dies with its parent); `--standalone` (what `tacet
engine` runs under its own systemd unit) lives on its own, and the gateway and the bulk worker
connect to its socket (`TACET_ENGINE_SOCKET`).

Start-up order: isolation (`engine/_isolation.py`: network namespace, then non-dumpable and
RLIMIT_CORE 0), then the model, then the socket (parent directory 0700, socket file 0600).
Only a peer whose SO_PEERCRED uid equals ours is served; every connected peer shares one
`EngineLoop`, so documents of all peers are batched together.

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
    """Runs EngineCore steps between messages for one peer or, in the socket server, for every
    connected peer at once (`many=True`; the gateway and the bulk worker of one host share the
    engine unit).

    Each peer is identified by its `send` callable. Call ids are the peer's own; inside the core
    they are prefixed with the peer's number, so two peers may use the same id. A peer that goes
    away (`put(None, send)`) has its calls aborted; with one peer that also ends `run()`.
    """

    def __init__(self, core, send: Send | None = None, *, many: bool = False) -> None:
        self.core = core  # engine.core.EngineCore
        self.send = send  # the one peer's sender when not `many`
        self.many = many
        self.inbox: asyncio.Queue[tuple[Send | None, Message | None]] = asyncio.Queue()
        self.remaining: dict[str, int] = {}  # core request id -> documents still to deliver
        self._owners: dict[str, tuple[Send, str]] = {}  # core request id -> (peer, call id)
        self._peers: dict[Send, int] = {}
        self.steps = 0
        self.aborted_documents = 0
        self.shutdown_requested = False

    @property
    def queued_documents(self) -> int:
        return sum(self.remaining.values())

    def health(self) -> HealthReport:
        return HealthReport(
            ready=True,
            queued_documents=self.queued_documents,
            steps=self.steps,
            document_passes=self.core.document_passes,
            aborted_documents=self.aborted_documents,
        )

    def put(self, message: Message | None, send: Send | None = None) -> None:
        """Queue a message from a peer (default: the one peer); None means the peer is gone."""
        self.inbox.put_nowait((send, message))

    def _request_id(self, send: Send, call_id: str) -> str:
        number = self._peers.setdefault(send, len(self._peers) + 1)
        return f"{number}/{call_id}"

    async def run(self) -> None:
        """Serve until Shutdown (or, with one peer, until it is gone); then drop what is left."""
        try:
            while True:
                if self.core.has_work and self.inbox.empty():
                    await self.step()
                    continue
                sender, message = await self.inbox.get()
                send = sender or self.send
                if send is None:
                    raise ProtocolError("a message without a peer")
                if message is None:
                    self._drop_peer(send)
                    if not self.many:
                        return
                    continue
                if isinstance(message, Shutdown):
                    self.shutdown_requested = True
                    return
                await self.handle(message, send)
        finally:
            for request_id in list(self.remaining):
                self.core.abort(request_id)
            self.remaining.clear()
            self._owners.clear()

    def _drop_peer(self, send: Send) -> None:
        for request_id, (owner, _) in list(self._owners.items()):
            if owner is send:
                self.core.abort(request_id)
                self.remaining.pop(request_id, None)
                del self._owners[request_id]
        self._peers.pop(send, None)

    async def handle(self, message: Message, send: Send | None = None) -> None:
        send = send or self.send
        assert send is not None
        if isinstance(message, Classify):
            await self.classify(message, send)
        elif isinstance(message, Abort):
            request_id = self._request_id(send, message.call_id)
            if self.remaining.pop(request_id, None) is not None:
                self._owners.pop(request_id, None)
                self.aborted_documents += self.core.abort(request_id)
            await send(CallDone(message.call_id, aborted=True))
        elif isinstance(message, Health):
            await send(self.health())
        else:  # a message only the engine sends, or a second Hello
            raise ProtocolError("unexpected message")

    async def classify(self, message: Classify, send: Send | None = None) -> None:
        send = send or self.send
        assert send is not None
        call_id = message.call_id
        request_id = self._request_id(send, call_id)
        if request_id in self.remaining:
            await send(Error(ErrorKind.BAD_REQUEST, call_id))
            return
        try:
            from engine.decoding import Mode

            mode = Mode(message.mode)
            compiled = self.core.compile(message.taxonomy)
        except Exception:  # any taxonomy the engine cannot compile is the caller's error
            _event("engine.classify_rejected")
            await send(Error(ErrorKind.BAD_REQUEST, call_id))
            return
        if not message.texts:
            await send(CallDone(call_id))
            return
        try:
            self.core.add_request(request_id, compiled, message.texts, mode, message.threshold)
        except Exception:
            self.core.abort(request_id)
            _event("engine.classify_failed")
            await send(Error(ErrorKind.INTERNAL, call_id))
            return
        self.remaining[request_id] = len(message.texts)
        self._owners[request_id] = (send, call_id)

    async def step(self) -> None:
        try:
            finished = await asyncio.to_thread(self.core.step)
        except Exception:
            _event("engine.step_failed", calls=len(self.remaining))
            for request_id, (send, call_id) in list(self._owners.items()):
                self.core.abort(request_id)
                await send(Error(ErrorKind.INTERNAL, call_id))
            self.remaining.clear()
            self._owners.clear()
            return
        self.steps += 1
        for result in finished:
            left = self.remaining.get(result.request_id)
            owner = self._owners.get(result.request_id)
            if left is None or owner is None:  # aborted while the step ran
                continue
            send, call_id = owner
            await send(document_done(result, call_id))
            if left == 1:
                del self.remaining[result.request_id]
                del self._owners[result.request_id]
                await send(CallDone(call_id))
            else:
                self.remaining[result.request_id] = left - 1


def document_done(result, call_id: str) -> DocumentDone:  # engine.core.DocumentResult
    return DocumentDone(
        call_id=call_id,
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


async def serve_connection(conn: socket.socket, loop: EngineLoop, welcome: Welcome) -> None:
    """Handshake, then feed one peer's messages to the shared loop until it goes away."""
    reader, writer = await asyncio.open_unix_connection(sock=conn)
    lock = asyncio.Lock()

    async def send(message: Message) -> None:
        if writer.is_closing():  # the peer is gone; its calls are being dropped
            return
        async with lock:
            with contextlib.suppress(ConnectionError, OSError):
                writer.write(encode_frame(message))
                await writer.drain()

    try:
        hello = await read_message(reader)
        if not isinstance(hello, Hello) or hello.version != PROTOCOL_VERSION:
            _event("engine.version_mismatch")
            await send(Error(ErrorKind.VERSION_MISMATCH))
            return
        await send(welcome)
        _event("engine.connected")
        await _pump(reader, loop, send)
    except (ProtocolError, asyncio.IncompleteReadError, ConnectionError):
        _event("engine.connection_lost")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _pump(reader: asyncio.StreamReader, loop: EngineLoop, send: Send) -> None:
    """Frames to the loop's inbox; Health is answered at once, even while a step runs."""
    try:
        while True:
            message = await read_message(reader)
            if isinstance(message, Health):
                await send(loop.health())
            elif isinstance(message, (Classify, Abort, Shutdown)):
                loop.put(message, send)
            else:
                raise ProtocolError("unexpected message")
    except (ProtocolError, asyncio.IncompleteReadError, ConnectionError):
        _event("engine.connection_lost")
    finally:
        loop.put(None, send)


async def serve(server: socket.socket, core, welcome: Welcome) -> None:
    """Serve every connected peer of our uid through one loop, until a peer sends Shutdown."""
    aio = asyncio.get_running_loop()
    # asyncio's default handler prints exception messages; ours prints a constant event only.
    aio.set_exception_handler(lambda _loop, _context: _event("engine.loop_error"))
    loop = EngineLoop(core, many=True)
    running = aio.create_task(loop.run())
    connections: set[asyncio.Task[None]] = set()
    try:
        while not running.done():
            accepting = aio.create_task(aio.sock_accept(server))
            await asyncio.wait({accepting, running}, return_when=asyncio.FIRST_COMPLETED)
            if not accepting.done():
                accepting.cancel()
                break
            conn, _ = accepting.result()
            if not _isolation.peer_allowed(conn):
                _event("engine.peer_refused")
                conn.close()
                continue
            task = aio.create_task(serve_connection(conn, loop, welcome))
            connections.add(task)
            task.add_done_callback(connections.discard)
        await running  # re-raises a failure of the loop itself
        _event("engine.shutdown")
    finally:
        for task in list(connections):
            task.cancel()
        running.cancel()


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
    parser.add_argument(
        "--standalone", action="store_true",
        help="run on its own (a service), not as the child of a gateway that supervises it",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    sys.excepthook = _quiet_excepthook
    args = _parse(argv)
    _single_threaded_or_reexec()
    isolation = _isolation.isolate()
    if not args.standalone:
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
