"""`POST /v1/classify/stream`: NDJSON documents in, NDJSON results out as they complete.

Request body (`Content-Type: application/x-ndjson`), one JSON object per line:

    {"taxonomy": "subjects@3", "task": "archive_retag", "mode": "diffusion"}   line 1: header
    {"id": "doc-1", "text": "..."}                                             then documents
    {"id": "doc-2", "text": "..."}

The header is validated (taxonomy, task, scope, engine readiness) before the response starts, so
those failures are ordinary problem responses with a status code. After that the response is
`200 application/x-ndjson`, one line per document in completion order:

    {"id": "doc-2", "labels": [...], "needs_review": false, "decode": {...}}    same shape as a
                                                                                 /v1/classify result
    {"line": 7, "id": "doc-5", "error": {"type": ".../too-large", "title": ..., "status": 413}}
    {"summary": {"request_id": ..., "model": ..., "taxonomy": {...}, "documents": 2, "errors": 1}}

A bad line becomes an error line (its 1-based line number, the problem type, and the id only if
the line had a valid one; never its content) and the stream goes on. The `summary` line comes
last and only when every line was answered: a stream without it was cut short.

Bounds (`StreamSettings`): at most `max_in_flight` lines of one stream are queued in the engine or
waiting to be written; while that many are outstanding the route stops reading the request
body, so TCP flow control holds the client back (backpressure). A line longer than
`max_line_bytes` is skipped unread (error line `too-large`), and each text is held to the same
`max_document_bytes` as `/v1/classify`. The app-wide `max_body_bytes` does not apply: the body is
never buffered, so memory per stream is bounded by `max_in_flight x max_line_bytes` whatever the
body's length.

Disconnect: when the client goes away (`http.disconnect`, or a failed send), every engine call of
the stream is cancelled, which sends the engine an `Abort`; the engine drops the remaining
documents before its next step, so no further forward passes run for them.

ZDR: no line, id, text or label is logged; error lines are built from problem constants.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import structlog
from litestar import Request, post
from litestar.response import Stream
from litestar.response.streaming import ASGIStreamingResponse

from gateway import problems
from gateway.app import (
    DocumentIn,
    Mode,
    TaxonomyRef,
    _audit_note,
    _Gateway,
    _require_any,
    _result,
)
from gateway.auth import Principal
from gateway.engine_client import EngineBusy, EngineClientError
from gateway.ratelimit import RateLimited, admit
from gateway.settings import SettingsError
from gateway.taxonomies import parse_reference

if TYPE_CHECKING:
    from engine.protocol import DocumentDone
    from gateway.policies import TaskPolicy

__all__ = ["NDJSON", "StreamHeader", "StreamSettings", "classify_stream"]

NDJSON = "application/x-ndjson"
_ACCEPTED_MEDIA = frozenset({NDJSON, "application/jsonl", "application/x-jsonlines"})
_log = structlog.get_logger("tacet.gateway")


@dataclass(frozen=True)
class StreamSettings:
    """Bounds of one `/v1/classify/stream` request (env `TACET_STREAM_*`)."""

    max_in_flight: int = 64  # lines of one stream in the engine or waiting to be written
    max_line_bytes: int = 1024 * 1024  # one raw NDJSON line (JSON escapes can grow a text 6x)
    batch_documents: int = 32  # documents per engine call at most
    busy_wait_s: float = 30.0  # wait this long for room in a full engine queue, then `busy`
    # Unparsed body read ahead of the documents in flight. The route reads up to this much
    # eagerly so that it sees a client's disconnect at once (granian reports one only after the
    # body it has buffered is read, and its send() does not fail): a request body that fits
    # here is cancelled the moment its client goes. `tacet classify` keeps its requests under it.
    lookahead_bytes: int = 8 * 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StreamSettings:
        env = os.environ if env is None else env

        def number(name: str, default: int) -> int:
            raw = env.get(name)
            try:
                return default if not raw else int(raw)
            except ValueError:
                raise SettingsError(f"{name} must be an integer") from None

        settings = cls(
            max_in_flight=number("TACET_STREAM_MAX_IN_FLIGHT", cls.max_in_flight),
            max_line_bytes=number("TACET_STREAM_MAX_LINE_BYTES", cls.max_line_bytes),
            batch_documents=number("TACET_STREAM_BATCH_DOCUMENTS", cls.batch_documents),
            lookahead_bytes=number("TACET_STREAM_LOOKAHEAD_BYTES", cls.lookahead_bytes),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        for name, value in (
            ("TACET_STREAM_MAX_IN_FLIGHT", self.max_in_flight),
            ("TACET_STREAM_MAX_LINE_BYTES", self.max_line_bytes),
            ("TACET_STREAM_BATCH_DOCUMENTS", self.batch_documents),
            ("TACET_STREAM_LOOKAHEAD_BYTES", self.lookahead_bytes),
        ):
            if value < 1:
                raise SettingsError(f"{name} must be a positive integer")


# ---- lines in and out -----------------------------------------------------------------------


class StreamHeader(msgspec.Struct, forbid_unknown_fields=True):
    """The first line of the request body."""

    taxonomy: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]  # name or name@version
    task: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    mode: Mode | None = None


class _IdOnly(msgspec.Struct):
    """Used only to tell whether a rejected line still had a valid id worth echoing."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class _LineProblem(msgspec.Struct):
    type: str
    title: str
    status: int


class _ErrorLine(msgspec.Struct, omit_defaults=True):
    line: int
    error: _LineProblem
    id: str | None = None  # only when the line carried a valid id


class _Summary(msgspec.Struct):
    request_id: str
    model: str
    taxonomy: TaxonomyRef
    documents: int  # result lines
    errors: int  # error lines


class _SummaryLine(msgspec.Struct):
    summary: _Summary


_encoder = msgspec.json.Encoder()
_document_decoder = msgspec.json.Decoder(DocumentIn)
_id_decoder = msgspec.json.Decoder(_IdOnly)
_header_decoder = msgspec.json.Decoder(StreamHeader)


def _error_line(number: int, problem: type[problems.Problem], doc_id: str | None = None) -> bytes:
    kind = _LineProblem(problems.PROBLEM_BASE + problem.slug, problem.title, problem.status)
    return _encoder.encode(_ErrorLine(number, kind, doc_id)) + b"\n"


class _Disconnected(Exception):
    """The client went away (http.disconnect or a failed send)."""


class _Lines:
    """The request body as numbered lines, read from ASGI `receive` only when asked.

    A line longer than `max_line_bytes` is dropped as it arrives (never buffered whole) and
    comes out as `(number, None)`.
    """

    def __init__(self, receive: Callable[[], Awaitable[Any]], max_line_bytes: int) -> None:
        self.receive = receive  # the ASGI callable, or a `_Pump` once the response has started
        self._max = max_line_bytes
        self._partial = bytearray()
        self._skipping = False
        self._ready: list[tuple[int, bytes | None]] = []
        self._number = 0
        self.ended = False

    @property
    def buffered(self) -> bool:
        """True when the next `next()` returns without reading from the client."""
        return bool(self._ready) or self.ended

    async def next(self) -> tuple[int, bytes | None] | None:
        """The next line, or None at the end of the body."""
        while not self._ready:
            if self.ended:
                return None
            await self._read()
        return self._ready.pop(0)

    async def _read(self) -> None:
        message = await self.receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected()
        if message["type"] != "http.request":
            return
        pieces = message.get("body", b"").split(b"\n")
        for piece in pieces[:-1]:
            self._complete(piece)
        self._extend(pieces[-1])
        if not message.get("more_body", False):
            self.ended = True
            if self._partial or self._skipping:
                self._complete(b"")

    def _extend(self, piece: bytes) -> None:
        if self._skipping:
            return
        self._partial += piece
        if len(self._partial) > self._max:
            self._skipping = True
            self._partial.clear()

    def _complete(self, piece: bytes) -> None:
        self._extend(piece)
        self._number += 1
        self._ready.append((self._number, None if self._skipping else bytes(self._partial)))
        self._partial.clear()
        self._skipping = False


class _Pump:
    """Reads ASGI messages ahead of the line reader, up to `limit` bytes, and notices a
    disconnect as soon as the server reports one (see `StreamSettings.lookahead_bytes`)."""

    def __init__(self, receive: Callable[[], Awaitable[Any]], limit: int, ended: bool) -> None:
        self._receive, self._limit, self._ended = receive, limit, ended
        self._messages: list[dict[str, Any]] = []
        self._size = 0
        self._changed = asyncio.Event()
        self.gone = asyncio.Event()

    async def run(self) -> None:
        while True:
            while self._size >= self._limit and not self._ended:
                self._changed.clear()
                await self._changed.wait()
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.gone.set()
                return
            if message["type"] != "http.request" or self._ended:
                await asyncio.sleep(0.05)  # only a disconnect can follow the body: do not spin
                continue
            self._ended = not message.get("more_body", False)
            self._messages.append(message)
            self._size += len(message.get("body", b""))
            self._changed.set()

    async def gone_raises(self) -> None:
        await self.gone.wait()
        raise _Disconnected()

    async def __call__(self) -> dict[str, Any]:
        """The next body message, in order (what `_Lines` reads instead of `receive`)."""
        while not self._messages:
            self._changed.clear()
            await self._changed.wait()
        message = self._messages.pop(0)
        self._size -= len(message.get("body", b""))
        self._changed.set()
        return message


# ---- the route --------------------------------------------------------------------------------


@post(
    "/v1/classify/stream",
    operation_id="classifyStream",
    summary="Classify an NDJSON stream of documents; results stream back as they complete",
    description=(
        "Body: application/x-ndjson. Line 1 is a header {taxonomy, task?, mode?}; every further "
        "line is {id, text}. Response: one line per document (the /v1/classify result shape) or "
        "an error line {line, id?, error: {type, title, status}}, then a final {summary} line."
    ),
    security=[{"bearer": []}],
    tags=["classify"],
    status_code=200,
    media_type=NDJSON,
)
async def classify_stream(request: Request[Principal, str, Any]) -> Stream:
    gateway: _Gateway = request.app.state.gateway
    settings: StreamSettings = request.app.state.get("stream_settings") or StreamSettings()
    tenant = request.user.tenant_id
    _require_any(request.user, "classify")
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media not in _ACCEPTED_MEDIA:
        raise problems.UnsupportedMediaType()
    lines = _Lines(request.receive, settings.max_line_bytes)
    header = await _read_header(lines)
    taxonomy = await gateway.taxonomies.resolve(tenant, header.taxonomy)
    if taxonomy is None:
        raise problems.UnknownTaxonomy()
    _audit_note(request, taxonomy=f"{taxonomy['name']}@{taxonomy['version']}")
    policy = None
    if header.task is not None:
        policy = await gateway.taxonomies.task_policy(tenant, header.task)
        if policy is None:
            raise problems.UnknownTask()
    mode = header.mode or (policy.mode if policy is not None else "diffusion")
    welcome = gateway.engine.welcome
    _audit_note(request, mode=mode, model_id=welcome.model_id if welcome is not None else None)
    if not gateway.engine.ready:
        raise problems.EngineDown()
    # Tenant limits: the request (and its concurrency slot) before the response starts, so a
    # refusal is an ordinary 429; documents are admitted per engine call as they are read.
    await admit(request)
    name, _ = parse_reference(header.taxonomy)
    session = _Session(
        request=request,
        gateway=gateway,
        settings=settings,
        lines=lines,
        taxonomy=dict(taxonomy),
        mode=mode,
        policy=policy,
        review_key=gateway.taxonomies.review_key(tenant),
        summary=_Summary(
            request_id=problems.request_id(request),
            model=welcome.model_id if welcome is not None else "unknown",
            taxonomy=TaxonomyRef(name=name, version=str(taxonomy["version"])),
            documents=0,
            errors=0,
        ),
    )
    return _DuplexStream(session, headers={"X-Request-Id": session.summary.request_id})


async def _read_header(lines: _Lines) -> StreamHeader:
    """The first non-blank line; its failures are whole-request problems (413 / 422)."""
    try:
        while (line := await lines.next()) is not None:
            _, raw = line
            if raw is None:
                raise problems.TooLarge()
            if raw.strip():
                try:
                    return _header_decoder.decode(raw)
                except msgspec.DecodeError:  # its message may quote the line: dropped whole
                    raise problems.Invalid() from None
    except _Disconnected:
        raise problems.Invalid() from None
    raise problems.Invalid()


# ---- one stream -------------------------------------------------------------------------------


class _Session:
    """Reads lines, batches documents into engine calls, writes result lines; see the module doc.

    Every line waiting in the engine or in `_out` holds one of `max_in_flight` permits; the
    writer returns it once the line is sent, and the reader takes one before it reads on.
    """

    def __init__(
        self,
        *,
        request: Request[Principal, str, Any],
        gateway: _Gateway,
        settings: StreamSettings,
        lines: _Lines,
        taxonomy: dict[str, Any],
        mode: str,
        policy: TaskPolicy | None,
        review_key: bytes,
        summary: _Summary,
    ) -> None:
        self.request, self.gateway, self.settings, self.lines = request, gateway, settings, lines
        self.taxonomy, self.mode, self.policy, self.review_key = taxonomy, mode, policy, review_key
        self.summary = summary
        self.permits = asyncio.Semaphore(settings.max_in_flight)
        # (line, holds a permit); None ends the response
        self.out: asyncio.Queue[tuple[bytes, bool] | None] = asyncio.Queue()
        self.calls: set[asyncio.Task[None]] = set()
        self.pending: list[tuple[int, DocumentIn]] = []

    async def run(self, send: Callable[[Any], Awaitable[None]], receive: Any) -> None:
        pump = _Pump(receive, self.settings.lookahead_bytes, self.lines.ended)
        self.lines.receive = pump
        pumping = asyncio.ensure_future(pump.run())
        gone = asyncio.ensure_future(pump.gone_raises())
        reader = asyncio.ensure_future(self._read())
        writer = asyncio.ensure_future(self._write(send))
        try:
            pending: set[asyncio.Future[None]] = {reader, writer, gone}
            while writer in pending:  # until the last line is sent, or a failure, or goodbye
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
        except _Disconnected:
            _log.info("stream_disconnected", request_id=self.summary.request_id)
        except Exception as exc:  # after the status went out: end the stream without a summary
            _log.error(
                "stream_failed", request_id=self.summary.request_id, error_type=type(exc).__name__
            )
            await self._cancel(writer)
            with contextlib.suppress(Exception):  # close the body; no summary says "cut short"
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await self._cancel(reader, writer, gone, pumping, *self.calls)

    # -- reading --------------------------------------------------------------------------------

    async def _read(self) -> None:
        while (line := await self.lines.next()) is not None:
            number, raw = line
            if raw is not None and not raw.strip():
                continue  # blank lines are allowed and skipped
            await self._take_permit()
            document = self._parse(number, raw)
            if document is not None:
                self.pending.append((number, document))
                if len(self.pending) >= self.settings.batch_documents:
                    self._flush()
            if not self.lines.buffered:
                self._flush()  # nothing more without waiting on the client: start the work
        self._flush()
        while self.calls:
            await asyncio.wait(set(self.calls))
        self.out.put_nowait((_encoder.encode(_SummaryLine(self.summary)) + b"\n", False))
        self.out.put_nowait(None)

    async def _take_permit(self) -> None:
        if self.permits.locked():
            self._flush()  # pending documents hold permits: send them before waiting
        await self.permits.acquire()

    def _parse(self, number: int, raw: bytes | None) -> DocumentIn | None:
        """A document to classify, or None after queueing its error line (the permit with it)."""
        if raw is None:
            self._reject(number, problems.TooLarge)
            return None
        try:
            document = _document_decoder.decode(raw)
        except msgspec.DecodeError:
            try:
                doc_id: str | None = _id_decoder.decode(raw).id
            except msgspec.DecodeError:
                doc_id = None
            self._reject(number, problems.Invalid, doc_id)
            return None
        if len(document.text.encode("utf-8")) > self.gateway.limits.max_document_bytes:
            self._reject(number, problems.TooLarge, document.id)
            return None
        if not document.text.strip():
            self._reject(number, problems.Invalid, document.id)
            return None
        return document

    def _reject(
        self, number: int, problem: type[problems.Problem], doc_id: str | None = None
    ) -> None:
        self.summary.errors += 1
        self.out.put_nowait((_error_line(number, problem, doc_id), True))

    # -- engine calls ---------------------------------------------------------------------------

    def _flush(self) -> None:
        if self.pending:
            batch, self.pending = self.pending, []
            task = asyncio.ensure_future(self._call(batch))
            self.calls.add(task)
            task.add_done_callback(self.calls.discard)

    async def _call(self, batch: list[tuple[int, DocumentIn]]) -> None:
        delivered: set[int] = set()

        def on_document(done: DocumentDone) -> None:
            if done.index in delivered:
                return
            delivered.add(done.index)
            _, document = batch[done.index]
            self.summary.documents += 1
            line = _encoder.encode(_result(document, done, self.policy, self.review_key))
            self.out.put_nowait((line + b"\n", True))

        try:
            await self._classify(batch, on_document)
        except Exception as exc:  # engine errors become error lines for what did not finish
            problem = problems.classify_exception(exc)
            if not isinstance(exc, EngineClientError):
                _log.error(
                    "stream_call_failed",
                    request_id=self.summary.request_id,
                    error_type=type(exc).__name__,
                )
            for index, (number, document) in enumerate(batch):
                if index not in delivered:
                    delivered.add(index)
                    self.summary.errors += 1
                    self.out.put_nowait((_error_line(number, problem, document.id), True))

    async def _classify(
        self, batch: list[tuple[int, DocumentIn]], on_document: Callable[[DocumentDone], None]
    ) -> None:
        """One engine call; while the engine's queue is full, wait (bounded) for room.

        Over the tenant's document rate the stream waits out `Retry-After` instead (the lines
        hold their permits meanwhile, so reading stops): a stream slows to its tenant's limit.
        """
        while True:
            try:
                await admit(self.request, documents=len(batch))
                break
            except RateLimited as exc:
                await asyncio.sleep(min(max(exc.seconds, 1), 60))
        texts = [document.text for _, document in batch]
        deadline = asyncio.get_running_loop().time() + self.settings.busy_wait_s
        delay = 0.02
        while True:
            try:
                await self.gateway.engine.classify(
                    self.taxonomy, texts, mode=self.mode, on_document=on_document
                )
                return
            except EngineBusy:
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    # -- writing --------------------------------------------------------------------------------

    async def _write(self, send: Callable[[Any], Awaitable[None]]) -> None:
        while True:
            chunk = [await self.out.get()]
            while not self.out.empty() and len(chunk) < 256:
                chunk.append(self.out.get_nowait())
            finished = chunk[-1] is None
            items = [item for item in chunk if item is not None]
            body = b"".join(line for line, _ in items)
            try:
                await send({"type": "http.response.body", "body": body, "more_body": not finished})
            except Exception:  # the server could not deliver: the client is gone
                raise _Disconnected() from None
            for _, holds_permit in items:
                if holds_permit:
                    self.permits.release()
            if finished:
                return

    async def _cancel(self, *tasks: asyncio.Future[None]) -> None:
        """Cancel and wait: a cancelled engine call sends the engine an Abort."""
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


class _DuplexResponse(ASGIStreamingResponse):
    """A streaming response that reads the request body while it writes.

    Litestar's own streaming response listens on `receive` for a disconnect while it writes,
    which would swallow request-body messages; this one hands `receive` to the session alone.
    """

    def __init__(self, session: _Session, **kwargs: Any) -> None:
        super().__init__(iterator=(), **kwargs)
        self.session = session

    async def send_body(self, send: Any, receive: Any) -> None:
        await self.session.run(send, receive)


class _DuplexStream(Stream):
    def __init__(self, session: _Session, *, headers: dict[str, str]) -> None:
        super().__init__((), media_type=NDJSON, headers=headers)
        self.session = session

    def to_asgi_response(  # type: ignore[override]
        self,
        app: Any,
        request: Request[Any, Any, Any],
        *,
        headers: dict[str, str] | None = None,
        cookies: Any = None,
        encoded_headers: Any = None,
        is_head_response: bool = False,
        **_: Any,
    ) -> _DuplexResponse:
        del app, request
        merged = {**headers, **self.headers} if headers is not None else self.headers
        return _DuplexResponse(
            self.session,
            background=self.background,
            content_length=0,
            cookies=self.cookies if cookies is None else [*self.cookies, *cookies],
            encoded_headers=encoded_headers,
            encoding=self.encoding,
            headers=merged,
            is_head_response=is_head_response,
            media_type=NDJSON,
            status_code=200,
        )
