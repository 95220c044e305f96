"""The ZDR canary suite: content planted in every request channel must surface in no sink.

A real `tacet serve --dev` process (granian, TLS 1.3, the real engine process on a tiny random
checkpoint) runs at the most verbose setting it accepts (`TACET_LOG_LEVEL=debug` with
`--unsafe-log-debug`) and with OpenTelemetry export on (OTLP/HTTP to a receiver in this test
that keeps every request body). `ZDR-CANARY-<uuid4>` values go into document text,
member-supplied ids, taxonomy names, header names and values, query strings, paths and API
keys, through every path in `CASES`: success, each 4xx the app produces, 401, 403, 413, 429 (queue
full and tenant rate limit), engine crash mid-request, client timeout, client disconnect
mid-request and mid-stream. Then `test_no_canary_in_any_sink` stops the server and searches
the gateway's stdout and stderr, the engine processes' own stdout and stderr (teed by a
`sitecustomize` hook, because the gateway reads the engine's stderr and keeps only constant
event lines), the OTLP bodies, `/metrics`, every file under the data dir and TMPDIR, every
SQLite row, the HTTP audit export and report, a `tacet audit export` folder and its `tacet
audit report` page. Any hit fails.

To add a case: write `def case_x(s: Served) -> None` that drives the server and asserts the
statuses it expects, and append `Case("x", case_x)` to CASES (order matters: the engine crash
restarts the engine).
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import re
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.cli import main as tacet

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PREFIX = "ZDR-CANARY-"
CANARY = f"{PREFIX}{uuid.uuid4()}"  # one value; suffixes say which channel it went in by
TAXONOMY = "debian-sections"  # bundled, imported into the dev tenant by --dev
QUEUE_LIMIT = 8  # TACET_MAX_QUEUED_DOCUMENTS: one request with more documents is a 429
MAX_BODY = 256 * 1024  # TACET_MAX_BODY_BYTES

# Tees the engine process's stdout and stderr into files (the gateway pipes its stderr and
# drops what is not a constant event line, so the raw stream is otherwise invisible). A
# subprocess, not a thread: the engine enters its namespaces only while single-threaded.
SITECUSTOMIZE = textwrap.dedent(
    """
    import os, sys
    _capture = os.environ.get("CANARY_ENGINE_CAPTURE")
    if _capture and "engine.process" in getattr(sys, "orig_argv", ()):
        import subprocess
        _base = f"{_capture}/engine-{os.getpid()}"
        _out = os.open(_base + ".stdout", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(_out, 1)
        os.close(_out)
        _tee = subprocess.Popen(["tee", "-a", _base + ".stderr"], stdin=subprocess.PIPE,
                                stdout=2, stderr=subprocess.DEVNULL, close_fds=True)
        os.dup2(_tee.stdin.fileno(), 2)
    """
)


# ---- the OTLP receiver -------------------------------------------------------------------------


class _OTLPHandler(http.server.BaseHTTPRequestHandler):
    server: _OTLPServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.keep(self.path, body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _OTLPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: Path) -> None:
        super().__init__(("127.0.0.1", 0), _OTLPHandler)
        self.folder = folder
        self.count = 0
        self.lock = threading.Lock()

    def keep(self, path: str, body: bytes) -> None:
        kind = "traces" if path.endswith("/v1/traces") else "metrics"
        with self.lock:
            self.count += 1
            (self.folder / f"{kind}-{self.count:05d}.bin").write_bytes(body)


# ---- the server under test ---------------------------------------------------------------------


@dataclass
class Served:
    root: Path
    process: subprocess.Popen[bytes]
    port: int
    key: str
    otlp: _OTLPServer
    client: httpx.Client
    keys: dict[str, str] = field(default_factory=dict)  # other tenants' tokens
    metrics_text: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # audit exports fetched over HTTP

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def tmpdir(self) -> Path:
        return self.root / "tmp"

    @property
    def captures(self) -> Path:
        return self.root / "captures"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.data_dir / "tls" / "ca.pem"))

    def auth(self, key: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}", **extra}

    def canary_headers(self) -> dict[str, str]:
        return {
            "X-Canary": f"{CANARY}-header",
            f"X-{CANARY}": "name",
            "User-Agent": f"{CANARY}-agent",
            "X-Forwarded-For": "203.0.113.7",
            "Cookie": f"session={CANARY}-cookie",
            "traceparent": f"00-{'a' * 32}-{'b' * 16}-01",
            "tracestate": f"canary={CANARY[-8:]}",
        }

    def engine_pids(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            # The engine's socket is under this test's TMPDIR (the model may be elsewhere).
            if b"engine.process" in cmdline and str(self.root).encode() in cmdline:
                pids.append(int(entry.name))
        return pids

    def queued(self) -> float:
        text = self.client.get("/metrics").text
        match = re.search(r"^tacet_engine_queue_depth (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def wait_ready(self) -> None:
        self.wait(lambda: self.client.get("/readyz").status_code == 200, 120, "engine ready")

    def wait_idle(self) -> None:
        self.wait(lambda: self.queued() == 0, 120, "engine queue empty")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = tacet(list(argv))
    assert code == 0, argv
    return out.getvalue()


def _start(root: Path) -> Served:
    for folder in ("tmp", "captures", "otlp", "hook"):
        (root / folder).mkdir()
    (root / "hook" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    otlp = _OTLPServer(root / "otlp")
    threading.Thread(target=otlp.serve_forever, daemon=True).start()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TACET_", "OTEL_", "LITESTAR_"))
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(root / "hook"), str(REPO)]),
        TMPDIR=str(root / "tmp"),
        CANARY_ENGINE_CAPTURE=str(root / "captures"),
        TACET_LOG_LEVEL="debug",
        TACET_OTEL_EXPORTER="otlp",
        TACET_OTEL_ENDPOINT=f"http://127.0.0.1:{otlp.server_address[1]}",
        OTEL_EXPORTER_OTLP_COMPRESSION="none",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_METRIC_EXPORT_INTERVAL="500",
        TACET_MAX_QUEUED_DOCUMENTS=str(QUEUE_LIMIT),
        TACET_MAX_BODY_BYTES=str(MAX_BODY),
    )
    port = _free_port()
    with (root / "gateway.stdout").open("wb") as out, (root / "gateway.stderr").open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--dev", "--data-dir",
             str(root / "data"), "--port", str(port), "--unsafe-log-debug"],
            cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
        )
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise AssertionError((root / "gateway.stderr").read_text(errors="replace")[-3000:])
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            break
        if time.monotonic() > deadline:
            raise AssertionError("tacet serve did not listen within 120 s")
        time.sleep(0.1)
    data_dir = root / "data"
    context = ssl.create_default_context(cafile=str(data_dir / "tls" / "ca.pem"))
    client = httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context, timeout=60)
    served = Served(root, process, port, (data_dir / "dev-api-key").read_text().strip(), otlp,
                    client)
    served.wait_ready()
    base = ["--data-dir", str(data_dir)]
    for tenant, scopes in (("canary-narrow", "classify"), ("canary-limited", "classify")):
        _cli("tenants", "create", tenant, *base)
        served.keys[tenant] = _cli(
            "keys", "create", "--dev", "--tenant", tenant, "--scopes", scopes, "--env", "test",
            *base,
        ).strip()
    from gateway.taxonomies import bundled_taxonomy_dir

    bundled = bundled_taxonomy_dir()
    assert bundled is not None
    _cli("taxonomy", "import", str(bundled / f"{TAXONOMY}.json"), "--tenant", "canary-limited",
         *base)
    _cli("tenants", "limits", "canary-limited", "--rpm", "1", *base)
    return served


def _stop(served: Served) -> None:
    served.client.close()
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGTERM)
        try:
            served.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait()
    with contextlib.suppress(AssertionError):
        served.wait(lambda: not served.engine_pids(), 15, "engine exit")
    served.otlp.shutdown()
    served.otlp.server_close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    running = _start(tmp_path_factory.mktemp("canary"))
    try:
        yield running
    finally:
        _stop(running)


# ---- request helpers ---------------------------------------------------------------------------


def _doc(i: int = 0, size: int = 0) -> dict[str, str]:
    text = f"{CANARY}-text {i} " + (f"{CANARY} lorem ipsum " * (size // 40 + 1))[:size]
    return {"id": f"{CANARY}-id-{i}", "text": text}


def _classify(*documents: dict[str, str], taxonomy: str = TAXONOMY, **extra: Any) -> Any:
    return {"taxonomy": taxonomy, "documents": list(documents), **extra}


def _expect(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    if status >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert PREFIX.lower() not in response.text.lower()  # error bodies never echo content


def _raw_exchange(
    s: Served, path: str, body: bytes, length: int, send: int
) -> tuple[int, bytes]:
    """HTTP/1.1 by hand: headers announcing `length` bytes, the first `send` of `body`, then
    whatever the server answers before it closes (status, raw bytes)."""
    head = (
        f"POST {path}?{CANARY}=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Authorization: Bearer {s.key}\r\nContent-Type: application/json\r\n"
        f"X-Canary: {CANARY}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()
    answer = b""
    with socket.create_connection(("127.0.0.1", s.port), timeout=30) as raw, \
            s.context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(head + body[:send])
        with contextlib.suppress(ssl.SSLError, ConnectionError, TimeoutError):
            while chunk := tls.recv(65536):
                answer += chunk
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, answer


def _slow(n: int, size: int = 6000) -> Any:
    return _classify(*(_doc(i, size) for i in range(n)))


# ---- the cases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[Served], None]


def case_success(s: Served) -> None:
    headers = s.auth(**s.canary_headers())
    ok = s.client.post(f"/v1/classify?q={CANARY}-query", json=_classify(_doc(0), _doc(1)),
                       headers=headers)
    _expect(ok, 200)
    assert [r["id"] for r in ok.json()["results"]] == [f"{CANARY}-id-0", f"{CANARY}-id-1"]
    for mode in ("autoregressive", "self_speculative"):
        _expect(s.client.post("/v1/classify", json=_classify(_doc(2), mode=mode),
                              headers=headers), 200)
    _expect(s.client.get(f"/v1/taxonomies?{CANARY}=1", headers=headers), 200)


def case_4xx(s: Served) -> None:
    h = s.auth(**s.canary_headers())
    post = s.client.post
    # 404: paths and taxonomy names that do not exist
    _expect(s.client.get(f"/v1/{CANARY}-path?{CANARY}-q=1", headers=h), 404)
    _expect(s.client.get(f"/{CANARY}-root", headers=h), 404)
    _expect(s.client.get(f"/v1/taxonomies/{CANARY}-tax", headers=h), 404)
    _expect(s.client.get(f"/v1/taxonomies/{CANARY}-tax/versions", headers=h), 404)
    # 405
    _expect(s.client.delete(f"/v1/classify?{CANARY}=1", headers=h), 405)
    # 422 (400 parse errors are reported as 422): bad JSON, unknown field, wrong type, empty
    # documents, unknown taxonomy / task, invalid taxonomy upload
    _expect(post("/v1/classify", content=f'{{"taxonomy": "{CANARY}-broken', headers=h), 422)
    _expect(post("/v1/classify", json=_classify(_doc(), **{f"{CANARY}-field": CANARY}),
                 headers=h), 422)
    _expect(post("/v1/classify", json={"taxonomy": TAXONOMY, "documents": [
        {"id": f"{CANARY}-id", "text": 7}]}, headers=h), 422)
    _expect(post("/v1/classify", json={"taxonomy": f"{CANARY}-tax", "documents": []},
                 headers=h), 422)
    _expect(post("/v1/classify", json=_classify(_doc(), taxonomy=f"{CANARY}-tax"), headers=h),
            422)
    _expect(post("/v1/classify", json=_classify(_doc(), taxonomy=f"{TAXONOMY}@{CANARY}"),
                 headers=h), 422)
    _expect(post("/v1/classify", json=_classify(_doc(), task=f"{CANARY}-task"), headers=h), 422)
    _expect(post("/v1/classify", json=_classify(_doc(), mode=f"{CANARY}-mode"), headers=h), 422)
    bad_taxonomy = {"version": "1", "facets": [{"name": f"{CANARY}-facet", "labels": [
        {"id": f"{CANARY} label", "name": CANARY}]}]}
    _expect(s.client.put(f"/v1/taxonomies/{CANARY}-tax", json=bad_taxonomy, headers=h), 422)
    _expect(s.client.put("/v1/taxonomies/canary-put", content=f"{CANARY},x\n",
                         headers={**h, "Content-Type": "text/csv"}), 422)
    # 415
    _expect(s.client.put("/v1/taxonomies/canary-put", content=CANARY,
                         headers={**h, "Content-Type": "text/plain"}), 415)
    # 409: the same version again with other content (the canary one is refused, not stored)
    good = {"version": "1", "facets": [{"name": "topic", "labels": [
        {"id": "alpha", "name": "Alpha"}, {"id": "beta", "name": "Beta"}]}]}
    _expect(s.client.put("/v1/taxonomies/canary-put", json=good, headers=s.auth()), 201)
    clash = {"version": "1", "facets": [{"name": "topic", "labels": [
        {"id": "alpha", "name": "Alpha", "description": CANARY},
        {"id": "gamma", "name": f"{CANARY}-label"}]}]}
    _expect(s.client.put("/v1/taxonomies/canary-put", json=clash, headers=h), 409)


def case_401_403(s: Served) -> None:
    canary = s.canary_headers()
    body = _classify(_doc())
    _expect(s.client.post("/v1/classify", json=body, headers=s.auth(f"{CANARY}-key", **canary)),
            401)
    _expect(s.client.post("/v1/classify", json=body,
                          headers={**canary, "Authorization": f"Basic {CANARY}"}), 401)
    _expect(s.client.post(f"/v1/classify?{CANARY}", json=body, headers=canary), 401)
    _expect(s.client.post("/v1/classify", json=body,
                          headers=s.auth(f"tacet_live_{CANARY}_x_00000000")), 401)
    narrow = s.keys["canary-narrow"]
    _expect(s.client.get(f"/v1/audit/export?from={CANARY}", headers=s.auth(narrow, **canary)),
            403)
    _expect(s.client.put(f"/v1/taxonomies/{CANARY}-tax", json={"version": CANARY},
                         headers=s.auth(narrow, **canary)), 403)


def case_413(s: Served) -> None:
    h = s.auth(**s.canary_headers())
    # Over the body limit: refused from Content-Length alone, before the body is read; on a
    # connection of its own (the server closes it with the body unread).
    too_big = json.dumps(_classify(_doc(0, MAX_BODY + 1024))).encode()
    status, answer = _raw_exchange(s, "/v1/classify", too_big, len(too_big), 64 * 1024)
    assert status == 413
    assert PREFIX.lower().encode() not in answer.lower()
    one_large = _classify(_doc(0, 64 * 1024 + 10))  # over max_document_bytes, under the body
    _expect(s.client.post("/v1/classify", json=one_large, headers=h), 413)
    many = _classify(*(_doc(i) for i in range(257)))  # over max_documents
    _expect(s.client.post("/v1/classify", json=many, headers=h), 413)


def case_429(s: Served) -> None:
    h = s.auth(**s.canary_headers())
    busy = s.client.post("/v1/classify", json=_classify(*(_doc(i) for i in range(QUEUE_LIMIT + 1))),
                         headers=h)
    _expect(busy, 429)
    assert busy.headers["retry-after"]
    limited = s.auth(s.keys["canary-limited"], **s.canary_headers())
    _expect(s.client.post("/v1/classify", json=_classify(_doc()), headers=limited), 200)
    over = s.client.post(f"/v1/classify?{CANARY}", json=_classify(_doc()), headers=limited)
    _expect(over, 429)
    assert int(over.headers["retry-after"]) >= 1


def case_engine_crash(s: Served) -> None:
    [engine] = s.engine_pids()
    outcome: list[httpx.Response] = []
    request = threading.Thread(
        target=lambda: outcome.append(
            s.client.post("/v1/classify", json=_slow(QUEUE_LIMIT), headers=s.auth(
                **s.canary_headers()))
        )
    )
    request.start()
    s.wait(lambda: s.queued() > 0, 30, "the request to reach the engine")
    os.kill(engine, signal.SIGKILL)
    request.join(60)
    [response] = outcome
    _expect(response, 503)
    assert response.headers["retry-after"]
    s.wait_ready()
    assert s.engine_pids() and s.engine_pids() != [engine]


def case_client_timeout(s: Served) -> None:
    with pytest.raises(httpx.ReadTimeout):
        s.client.post("/v1/classify", json=_slow(QUEUE_LIMIT),
                      headers=s.auth(**s.canary_headers()), timeout=httpx.Timeout(60, read=0.05))
    s.wait_idle()


def case_disconnect_mid_request(s: Served) -> None:
    body = json.dumps(_slow(2)).encode()
    head = (
        f"POST /v1/classify?{CANARY}=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {s.key}\r\nContent-Type: application/json\r\n"
        f"X-Canary: {CANARY}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as raw, \
            s.context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(head + body[: len(body) // 2])
        time.sleep(0.3)
    # and once the whole body is in, before the answer
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as raw, \
            s.context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(head + body)
        s.wait(lambda: s.queued() > 0, 30, "the request to reach the engine")
    s.wait_idle()
    _expect(s.client.get("/readyz"), 200)


def case_disconnect_mid_stream(s: Served) -> None:
    lines = [json.dumps({"taxonomy": TAXONOMY})] + [
        json.dumps(_doc(i, 200 if i == 0 else 6000)) for i in range(6)
    ]
    body = ("\n".join(lines) + "\n").encode()
    headers = s.auth(**s.canary_headers(), **{"Content-Type": "application/x-ndjson"})
    with s.client.stream("POST", f"/v1/classify/stream?{CANARY}", content=body,
                         headers=headers) as response:
        assert response.status_code == 200
        first = next(response.iter_lines())
        assert json.loads(first)["id"].startswith(PREFIX)
    s.wait_idle()
    _expect(s.client.get("/readyz"), 200)


def case_audit_export(s: Served) -> None:
    now = datetime.now(UTC)
    window = {"from": (now - timedelta(hours=1)).isoformat(), "to": (now + timedelta(hours=1))
              .isoformat()}
    export = s.client.get("/v1/audit/export", params=window, headers=s.auth())
    _expect(export, 200)
    assert export.content.count(b"\n") >= 20  # the dev tenant's records of the cases above
    s.bodies.append(export.content)
    report = s.client.get("/v1/audit/report", params={**window, f"{CANARY}-q": CANARY},
                          headers=s.auth(**s.canary_headers()))
    _expect(report, 200)
    assert "Verified" in report.text and "NOT VERIFIED" not in report.text
    s.bodies.append(report.content)
    s.metrics_text.append(s.client.get("/metrics").text)


CASES: list[Case] = [
    Case("success", case_success),
    Case("4xx", case_4xx),
    Case("401_403", case_401_403),
    Case("413", case_413),
    Case("429", case_429),
    Case("engine_crash_mid_request", case_engine_crash),
    Case("client_timeout", case_client_timeout),
    Case("client_disconnect_mid_request", case_disconnect_mid_request),
    Case("client_disconnect_mid_stream", case_disconnect_mid_stream),
    Case("audit_export", case_audit_export),  # last: it also takes the /metrics snapshot
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(served: Served, case: Case) -> None:
    case.run(served)


# ---- the search --------------------------------------------------------------------------------


def _hits(where: str, blob: bytes, found: list[str]) -> None:
    at = blob.lower().find(PREFIX.lower().encode())
    if at >= 0:
        found.append(f"{where}: ...{blob[max(0, at - 120):at + 60]!r}")


def _files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path


def _database_rows(path: Path) -> Iterator[tuple[str, str]]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):
                yield table, repr(row)
    finally:
        connection.close()


def _span_names(folder: Path) -> set[str]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    names = set()
    for path in folder.glob("traces-*.bin"):
        request = ExportTraceServiceRequest.FromString(path.read_bytes())
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                names.update(span.name for span in scope_spans.spans)
    return names


def test_no_canary_in_any_sink(served: Served) -> None:
    s = served
    assert s.metrics_text, "the cases did not run"
    rows = list(_database_rows(s.data_dir / "tacet.db"))
    _stop(s)
    export_dir = s.root / "audit-export"
    now = datetime.now(UTC)
    _cli("audit", "export", "--from", (now - timedelta(hours=1)).isoformat(),
         "--to", (now + timedelta(hours=1)).isoformat(), "--out", str(export_dir),
         "--data-dir", str(s.data_dir))
    report = s.root / "audit-report.html"
    _cli("audit", "report", str(export_dir), "--out", str(report), "--data-dir", str(s.data_dir))

    found: list[str] = []
    gateway_out = (s.root / "gateway.stdout").read_bytes()
    gateway_err = (s.root / "gateway.stderr").read_bytes()
    _hits("gateway stdout", gateway_out, found)
    _hits("gateway stderr", gateway_err, found)
    engine_streams = list(_files(s.captures))
    for path in engine_streams:
        _hits(f"engine {path.name}", path.read_bytes(), found)
    for path in _files(s.root / "otlp"):
        _hits(f"OTLP {path.name}", path.read_bytes(), found)
    for text in s.metrics_text:
        _hits("/metrics", text.encode(), found)
    for folder in (s.data_dir, s.tmpdir, export_dir):
        for path in _files(folder):
            _hits(str(path.relative_to(s.root)), path.read_bytes(), found)
    for table, row in rows:
        _hits(f"database row in {table}", row.encode(), found)
    for body in s.bodies:
        _hits("HTTP audit export or report", body, found)
    _hits("tacet audit report", report.read_bytes(), found)
    assert not found, "canary found:\n" + "\n".join(found)

    # Each sink was really in use, so a clean search means something.
    assert b"--unsafe-log-debug" in gateway_out  # the most verbose setting was on
    events = [json.loads(line) for line in gateway_err.splitlines() if line.startswith(b"{")]
    assert {"engine.ready", "engine.restarting", "request_failed"} <= {e["event"] for e in events}
    assert len({p.name.split(".")[0] for p in engine_streams}) >= 2  # before and after the crash
    assert any(p.suffix == ".stderr" and p.stat().st_size > 0 for p in engine_streams)
    names = _span_names(s.root / "otlp")
    assert {"POST /v1/classify", "GET /v1/taxonomies/{name}", "POST /v1/classify/stream"} <= names
    assert any(p.name.startswith("metrics-") for p in _files(s.root / "otlp"))
    metrics = s.metrics_text[-1]
    assert re.search(r'^tacet_documents_total\{mode="diffusion",model_id="demo"\} [1-9]',
                     metrics, re.MULTILINE)
    assert re.search(r"^tacet_engine_restarts_total [1-9]", metrics, re.MULTILINE)
    statuses = {int(m) for m in re.findall(r'status="(\d+)"', metrics)}
    assert {200, 201, 401, 403, 404, 405, 409, 413, 415, 422, 429, 503} <= statuses
    assert len(rows) > 40 and any(table == "audit_records" for table, _ in rows)
    assert list(export_dir.rglob("*.jsonl"))
    assert "Verified" in report.read_text() and "config.unsafe_flag" in report.read_text()
