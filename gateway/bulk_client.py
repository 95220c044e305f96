"""The bulk client behind `tacet classify`: a JSONL file through `/v1/classify/stream`.

    IN.jsonl[.gz]  one {"id", "text"} per line (other fields are ignored)
    OUT.jsonl      one line per id: the /v1/classify result object, or {"id", "error"} for a
                   document the server refused for good (too large, invalid)

Resumable: ids already in OUT are skipped, so running the same command again after a crash or
Ctrl-C finishes the job. OUT is only ever appended to, one `os.write` per line on an O_APPEND
descriptor, and a run starts by cutting a torn last line (a crash mid-write) back to the last
newline, so a resumed OUT holds exactly one line per id.

Requests: the input is sent as a series of stream requests of at most `batch_documents`
documents and `batch_bytes` bytes (kept under the server's `lookahead_bytes`, so a cancelled run
stops its server-side work at once), `concurrency` of them at a time. A 429 or 503 (whole
request, or a document's error line) is retried with exponential backoff and full jitter, never
sooner than the server's `Retry-After`; other refusals of the whole request (401, 403, 422
unknown taxonomy...) stop the run.

ZDR: the API key comes from the environment (`TACET_API_KEY`), never from a flag, and is never
printed; texts, ids and labels are never printed either: messages carry counts, line numbers
and problem types only.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import os
import random
import ssl
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "API_KEY_ENV",
    "BulkError",
    "ClientSettings",
    "RunStats",
    "api_key_from_env",
    "completed_ids",
    "read_documents",
    "run",
]

API_KEY_ENV = "TACET_API_KEY"
_RETRY_STATUSES = frozenset({429, 503})
_NDJSON = "application/x-ndjson"


class BulkError(Exception):
    """The run cannot go on (bad key, unknown taxonomy, retries exhausted); message is constant
    wording plus status codes and problem types, never content."""


@dataclass(frozen=True)
class ClientSettings:
    taxonomy: str  # name or name@version
    server: str = "https://127.0.0.1:8443"
    task: str | None = None
    mode: str | None = None
    ca: Path | None = None  # a CA bundle (the dev CA: <data-dir>/tls/ca.pem); None: system store
    concurrency: int = 2  # stream requests in flight
    batch_documents: int = 512  # documents per request at most
    batch_bytes: int = 4 * 1024 * 1024  # request body bytes at most (server lookahead: 8 MiB)
    max_attempts: int = 10  # per batch, for 429/503/connection failures
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    timeout_s: float = 300.0  # per read; a stream may run much longer in total


@dataclass
class RunStats:
    total: int = 0  # input lines with a valid document
    skipped: int = 0  # already in OUT
    written: int = 0  # lines appended this run (results and permanent errors)
    errors: int = 0  # of those, permanent per-document errors
    duplicates: int = 0  # input lines whose id came earlier in the input
    invalid_lines: list[int] = field(default_factory=list)  # input line numbers, not content
    retries: Counter[int] = field(default_factory=Counter)  # by HTTP status (0: connection)


@dataclass(frozen=True)
class _Document:
    id: str
    line: bytes  # the request line, {"id","text"} as JSON


# ---- files ------------------------------------------------------------------------------------


def _open_input(path: Path) -> io.BufferedReader | gzip.GzipFile:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":  # gzip, whatever the name says
        return gzip.open(path, "rb")
    return path.open("rb")


def read_documents(path: Path, stats: RunStats) -> Iterator[_Document]:
    """Valid documents of IN in order, first occurrence of each id; bad lines go to `stats`."""
    seen: set[str] = set()
    with _open_input(path) as stream:
        for number, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                doc_id, text = record["id"], record["text"]
            except (ValueError, TypeError, KeyError):
                stats.invalid_lines.append(number)
                continue
            if not (isinstance(doc_id, str) and doc_id and isinstance(text, str) and text):
                stats.invalid_lines.append(number)
                continue
            if doc_id in seen:
                stats.duplicates += 1
                continue
            seen.add(doc_id)
            stats.total += 1
            line = json.dumps({"id": doc_id, "text": text}, ensure_ascii=False).encode()
            yield _Document(doc_id, line)


def completed_ids(path: Path) -> set[str]:
    """Ids with a line in OUT, after cutting a torn last line (no trailing newline) away."""
    if not path.exists():
        return set()
    with path.open("rb+") as out:
        data = out.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            out.truncate(end)
    done: set[str] = set()
    for raw in data[:end].splitlines():
        with contextlib.suppress(ValueError, TypeError, KeyError):
            record = json.loads(raw)
            if isinstance(record.get("id"), str):
                done.add(record["id"])
    return done


class _Output:
    """OUT, appended one whole line per write()."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def append(self, line: bytes) -> None:
        payload = line.rstrip(b"\n") + b"\n"
        written = os.write(self._fd, payload)
        if written != len(payload):  # a short write (disk full): cut it off, then fail loudly
            os.ftruncate(self._fd, os.lseek(self._fd, 0, os.SEEK_END) - written)
            raise OSError("short write to the output file")

    def close(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)


# ---- the run ----------------------------------------------------------------------------------


def _batches(documents: Iterator[_Document], settings: ClientSettings) -> Iterator[list[_Document]]:
    batch: list[_Document] = []
    size = 0
    for document in documents:
        if batch and (
            len(batch) >= settings.batch_documents
            or size + len(document.line) + 1 > settings.batch_bytes
        ):
            yield batch
            batch, size = [], 0
        batch.append(document)
        size += len(document.line) + 1
    if batch:
        yield batch


def _backoff(settings: ClientSettings, attempt: int, retry_after: float | None) -> float:
    """Full jitter under an exponential cap, and never sooner than the server asked."""
    ceiling = min(settings.backoff_cap_s, settings.backoff_base_s * 2**attempt)
    return max(retry_after or 0.0, random.uniform(0, ceiling))


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None


class _Run:
    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: ClientSettings,
        output: _Output,
        stats: RunStats,
        advance: Callable[[int], None],
    ) -> None:
        self.client, self.settings, self.output = client, settings, output
        self.stats, self.advance = stats, advance
        header: dict[str, str] = {"taxonomy": settings.taxonomy}
        if settings.task is not None:
            header["task"] = settings.task
        if settings.mode is not None:
            header["mode"] = settings.mode
        self.header = json.dumps(header).encode()

    async def worker(self, queue: asyncio.Queue[list[_Document] | None]) -> None:
        while (batch := await queue.get()) is not None:
            await self.batch(batch)

    async def batch(self, batch: list[_Document]) -> None:
        """Send until every document has its line in OUT, retrying what is retryable."""
        pending = {document.id: document for document in batch}
        attempt = 0
        while pending:
            retry_after, status = await self.attempt(pending)
            if not pending:
                return
            attempt += 1
            if attempt >= self.settings.max_attempts:
                raise BulkError(
                    f"gave up after {attempt} attempts (last status {status or 'no response'})"
                )
            self.stats.retries[status] += 1
            await asyncio.sleep(_backoff(self.settings, attempt, retry_after))

    async def attempt(self, pending: dict[str, _Document]) -> tuple[float | None, int]:
        """One stream request for `pending` (entries leave it as their lines are written);
        returns what to wait before the next attempt and the status to count it under."""
        body = b"\n".join([self.header, *(d.line for d in pending.values())]) + b"\n"
        retry_after: float | None = None
        status = 0
        try:
            async with self.client.stream(
                "POST", "/v1/classify/stream", content=body, headers={"Content-Type": _NDJSON}
            ) as response:
                status = response.status_code
                if status != 200:
                    await response.aread()
                    if status in _RETRY_STATUSES:
                        return _retry_after(response), status
                    raise BulkError(f"the server refused the run: {status} {_problem(response)}")
                async for line in response.aiter_lines():
                    retry = self.line(line, pending)
                    if retry is not None:
                        status, retry_after = retry, max(retry_after or 0.0, 1.0)
        except httpx.TransportError:
            return None, 0  # connection refused, reset, cut mid-stream: retry what is left
        return retry_after, status

    def line(self, raw: str, pending: dict[str, _Document]) -> int | None:
        """Handle one response line; returns a status when the line asks for a retry."""
        if not raw.strip():
            return None
        try:
            record = json.loads(raw)
        except ValueError:
            raise BulkError("the server sent a line that is not JSON") from None
        doc_id = record.get("id")
        if "summary" in record or doc_id not in pending:
            return None
        error = record.get("error")
        if error is not None and error.get("status") in _RETRY_STATUSES:
            return int(error["status"])  # busy / engine unavailable: this document again later
        if error is not None:  # permanent for this document: record it, so it is not resent
            self.stats.errors += 1
            raw = json.dumps({"id": doc_id, "error": error}, ensure_ascii=False)
        self.output.append(raw.encode())
        del pending[doc_id]
        self.stats.written += 1
        self.advance(1)
        return None


def _problem(response: httpx.Response) -> str:
    """The problem `type` of an error response (a constant URL), if it has one."""
    with contextlib.suppress(ValueError, AttributeError):
        kind = response.json().get("type")
        if isinstance(kind, str):
            return kind.rsplit("/", 1)[-1]
    return ""


def _tls(settings: ClientSettings) -> ssl.SSLContext:
    if settings.ca is not None:
        return ssl.create_default_context(cafile=str(settings.ca))
    return ssl.create_default_context()


async def run(
    source: Path,
    destination: Path,
    settings: ClientSettings,
    api_key: str,
    *,
    on_start: Callable[[int], None] | None = None,
    advance: Callable[[int], None] | None = None,
) -> RunStats:
    """Classify every document of `source` not yet in `destination`; see the module doc.

    `on_start(remaining)` is called once the input has been counted, `advance(n)` as lines are
    written (the CLI's progress bar).
    """
    stats = RunStats()
    done = completed_ids(destination)
    remaining = sum(1 for d in read_documents(source, RunStats()) if d.id not in done)
    if on_start is not None:
        on_start(remaining)
    output = _Output(destination)
    limits = httpx.Limits(max_connections=settings.concurrency)
    timeout = httpx.Timeout(settings.timeout_s, connect=30.0)
    queue: asyncio.Queue[list[_Document] | None] = asyncio.Queue(maxsize=settings.concurrency)
    try:
        async with httpx.AsyncClient(
            base_url=settings.server,
            verify=_tls(settings),
            headers={"Authorization": f"Bearer {api_key}"},
            limits=limits,
            timeout=timeout,
        ) as client:
            job = _Run(client, settings, output, stats, advance or (lambda _: None))
            workers = [
                asyncio.ensure_future(job.worker(queue)) for _ in range(settings.concurrency)
            ]
            try:
                for batch in _batches(_unfinished(source, done, stats), settings):
                    await _put(queue, batch, workers)
                for _ in workers:
                    await _put(queue, None, workers)
                await asyncio.gather(*workers)
            finally:
                for worker in workers:
                    worker.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
    finally:
        output.close()
    return stats


def _unfinished(source: Path, done: set[str], stats: RunStats) -> Iterator[_Document]:
    for document in read_documents(source, stats):
        if document.id in done:
            stats.skipped += 1
        else:
            yield document


async def _put(
    queue: asyncio.Queue[list[_Document] | None],
    item: list[_Document] | None,
    workers: Sequence[asyncio.Future[None]],
) -> None:
    """Queue work, but surface a worker's failure instead of waiting on a dead pool."""
    put = asyncio.ensure_future(queue.put(item))
    while not put.done():
        await asyncio.wait({put, *workers}, return_when=asyncio.FIRST_COMPLETED)
        for worker in workers:
            if worker.done() and worker.exception() is not None:
                put.cancel()
                raise worker.exception()  # type: ignore[misc]


def api_key_from_env(env: Any = None) -> str | None:
    """The key from `TACET_API_KEY` (None when unset or blank)."""
    value = (os.environ if env is None else env).get(API_KEY_ENV, "").strip()
    return value or None
