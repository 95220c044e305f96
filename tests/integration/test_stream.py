"""`POST /v1/classify/stream` for real: granian over TLS, the real app, a real engine process.

The server is `tacet serve --dev` (`prepare` + `serve`, tiny random LLaDA checkpoint) with one
test-only route added, `/test/engine-health`, which returns the engine's own counters
(`HealthReport`: steps, document passes, aborted documents). A disconnect is a real one: the
client closes its TLS connection after reading a few result lines.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from engine.testing import write_tiny_checkpoint

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CANARY = f"ZDR-CANARY-{uuid.uuid4()}"
TAXONOMY = "topics"  # small, so that a canvas is short and the tiny model fast on CPU
SLOW_TAXONOMY = "debian-sections"  # bundled, imported into the dev tenant by `--dev`
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
MAX_LINE_BYTES = 4096
MAX_DOCUMENT_BYTES = 1000
MAX_IN_FLIGHT = 4
MAX_BODY_BYTES = 8192  # the /v1/classify body cap; streams are longer than this
NDJSON = {"Content-Type": "application/x-ndjson"}

SERVER = textwrap.dedent(
    '''
    """`tacet serve --dev` plus a test-only route with the engine's counters (test helper)."""
    import functools
    import sys
    from pathlib import Path

    from litestar import Request, get


    @get("/test/engine-health", opt={"exclude_from_auth": True})
    async def engine_health(request: Request) -> dict:
        report = await request.app.state.gateway.engine.health()
        return {
            "steps": report.steps,
            "document_passes": report.document_passes,
            "aborted_documents": report.aborted_documents,
            "queued_documents": report.queued_documents,
        }


    def load_app(settings):
        from gateway.app import app_from_settings

        app = app_from_settings(settings)
        app.register(engine_health)
        return app


    if __name__ == "__main__":
        import stream_server
        from gateway._cli_serve import prepare, serve
        from gateway.settings import ServeSettings

        settings, _, _ = prepare(ServeSettings.from_env())
        print("ready-to-serve", flush=True)
        serve(settings, functools.partial(stream_server.load_app, settings))
    '''
)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.data_dir / "tls" / "ca.pem"))

    def client(self) -> httpx.Client:
        key = (self.data_dir / "dev-api-key").read_text().strip()
        return httpx.Client(
            base_url=self.url,
            verify=self.tls(),
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        )

    def health(self) -> dict[str, int]:
        with self.client() as client:
            response = client.get("/test/engine-health")
        assert response.status_code == 200
        return response.json()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("stream")
    (tmp / "stream_server.py").write_text(SERVER)
    (tmp / "taxonomies").mkdir()
    (tmp / "taxonomies" / "topics.json").write_text(json.dumps(TOPICS))
    # The tiny random checkpoint, not the bundled demo model: its labels are uncertain, so the
    # policy spends several passes per document and the engine still holds queued documents of
    # a stream when its client goes (the confident demo model often finishes them first).
    write_tiny_checkpoint("llada", tmp / "model")
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp), str(REPO)]),
        "TACET_DATA_DIR": str(tmp / "data"),
        "TACET_DEV": "1",
        "TACET_MODEL": str(tmp / "model"),
        "TACET_TAXONOMY_DIRS": str(tmp / "taxonomies"),  # imported into the dev tenant
        "TACET_PORT": str(port),
        # Small bounds, so that a stream is many engine calls and a disconnect lands mid-way.
        "TACET_STREAM_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
        "TACET_STREAM_BATCH_DOCUMENTS": "2",
        "TACET_STREAM_MAX_LINE_BYTES": str(MAX_LINE_BYTES),
        "TACET_MAX_DOCUMENT_BYTES": str(MAX_DOCUMENT_BYTES),
        "TACET_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    }
    process = subprocess.Popen(
        [sys.executable, str(tmp / "stream_server.py")],
        cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    running = Server(process, port, tmp / "data")
    try:
        _wait_ready(running)
        yield running
    finally:
        output = _stop(running)
        assert CANARY not in output  # no text or member id in any log line


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError("server exited early:\n" + _stop(server))
        try:
            response = httpx.get(
                server.url + "/readyz", verify=server.tls(), timeout=2
            )
            if response.status_code == 200:
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.25)
    raise AssertionError("engine not ready within 180 s:\n" + _stop(server))


def _stop(server: Server) -> str:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        out, _ = server.process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        out, _ = server.process.communicate()
    return out.decode(errors="replace")


def _body(header: dict[str, object], lines: list[str]) -> bytes:
    return ("\n".join([json.dumps(header), *lines]) + "\n").encode()


def _documents(n: int, prefix: str = "doc") -> list[dict[str, str]]:
    words = ["kernel module", "python library", "perl script", "web server", "game engine"]
    return [
        {"id": f"{prefix}-{i}", "text": f"{words[i % len(words)]} number {i} {CANARY}"}
        for i in range(n)
    ]


# -- results and per-line errors ----------------------------------------------------------------


def test_results_stream_one_per_document_with_problem_lines(server: Server) -> None:
    documents = _documents(8)
    bad = {
        3: "{not json " + CANARY,  # unparseable: no id may be echoed
        5: json.dumps({"id": "no-text", "title": CANARY}),  # valid id, invalid document
        7: json.dumps({"id": "too-big", "text": "x" * (MAX_DOCUMENT_BYTES + 1)}),
        9: json.dumps({"id": "line-too-long", "text": CANARY * 400}),  # over the line limit
        11: "   ",  # blank: skipped, but counted as a line
    }
    lines: list[str] = []
    pending = iter(documents)
    for number in range(2, 2 + len(documents) + len(bad)):  # line 1 is the header
        lines.append(bad[number] if number in bad else json.dumps(next(pending)))
    body = _body({"taxonomy": TAXONOMY}, lines)
    assert len(body) > MAX_BODY_BYTES  # the non-stream cap does not apply to a stream
    with server.client() as client, client.stream(
        "POST", "/v1/classify/stream", content=body, headers=NDJSON
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        out = [json.loads(line) for line in response.iter_lines() if line]

    assert CANARY not in json.dumps(out)
    summary = out[-1]["summary"]
    results = [line for line in out if "labels" in line]
    errors = {line["line"]: line for line in out if "error" in line}
    assert len(out) == len(results) + len(errors) + 1
    assert sorted(r["id"] for r in results) == sorted(d["id"] for d in documents)  # once each
    assert summary["documents"] == len(documents) and summary["errors"] == 4
    assert summary["taxonomy"] == {"name": TAXONOMY, "version": "1"}
    assert set(errors) == {3, 5, 7, 9}
    assert errors[3]["error"]["type"].endswith("/invalid-request") and "id" not in errors[3]
    assert errors[5]["error"]["type"].endswith("/invalid-request") and errors[5]["id"] == "no-text"
    assert errors[7]["error"]["type"].endswith("/too-large") and errors[7]["id"] == "too-big"
    assert errors[9]["error"]["status"] == 413 and "id" not in errors[9]  # never read whole

    # The same documents through /v1/classify give the same labels.
    with server.client() as client:
        batch = client.post("/v1/classify", json={"taxonomy": TAXONOMY, "documents": documents})
    assert batch.status_code == 200
    expected = {r["id"]: r for r in batch.json()["results"]}
    for result in results:
        reference = expected[result["id"]]
        assert [(x["facet"], x["label"]) for x in result["labels"]] == [
            (x["facet"], x["label"]) for x in reference["labels"]
        ]
        for got, want in zip(result["labels"], reference["labels"], strict=True):
            assert got["probability"] == pytest.approx(want["probability"], abs=1e-4)
        assert result["decode"] == reference["decode"]
        assert result["needs_review"] == reference["needs_review"]


def test_header_problems_are_whole_request_errors(server: Server) -> None:
    with server.client() as client:
        unknown = client.post(
            "/v1/classify/stream", content=_body({"taxonomy": "nope-" + CANARY}, []),
            headers=NDJSON,
        )
        assert unknown.status_code == 422
        assert unknown.json()["type"].endswith("/unknown-taxonomy")
        not_ndjson = client.post("/v1/classify/stream", json={"taxonomy": TAXONOMY})
        assert not_ndjson.status_code == 415
        headerless = client.post(
            "/v1/classify/stream", content=json.dumps(_documents(1)[0]) + "\n", headers=NDJSON
        )
        assert headerless.status_code == 422
        for response in (unknown, not_ndjson, headerless):
            assert CANARY not in response.text
    anonymous = httpx.post(
        server.url + "/v1/classify/stream", content=_body({"taxonomy": TAXONOMY}, []),
        headers=NDJSON, verify=server.tls(),
    )
    assert anonymous.status_code == 401


def _settled(server: Server) -> dict[str, int]:
    """The engine's counters once it is idle: nothing queued and no pass for half a second.

    Without disconnect handling the stream would keep it busy until all its documents were
    done, which the caller's pass count then shows.
    """
    deadline = time.monotonic() + 120
    last = server.health()
    while True:
        time.sleep(0.5)
        now = server.health()
        if now["queued_documents"] == 0 and now["document_passes"] == last["document_passes"]:
            return now
        assert time.monotonic() < deadline, f"the engine did not go idle: {now}"
        last = now


# -- disconnect -----------------------------------------------------------------------------------


def test_disconnect_mid_stream_stops_forward_passes(server: Server) -> None:
    total = 1000
    before = server.health()
    # The bundled 58-label taxonomy: long canvases and several passes per document, so the
    # engine still holds queued documents of the stream when the client goes.
    header = {"taxonomy": SLOW_TAXONOMY}
    body = _body(header, [json.dumps(d) for d in _documents(total, "gone")])
    received = 0
    with server.client() as client, client.stream(
        "POST", "/v1/classify/stream", content=body, headers=NDJSON
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line:
                assert "labels" in json.loads(line)
                received += 1
                # Bounded in flight: never more of the stream in the engine than the setting.
                assert server.health()["queued_documents"] <= MAX_IN_FLIGHT
            if received == 2:
                break  # leaving both blocks closes the connection with the body unread
    settled = _settled(server)

    # The engine dropped the stream's queued documents (Abort) and ran far fewer passes for
    # the stream than its documents needed.
    assert settled["aborted_documents"] > before["aborted_documents"]
    assert settled["document_passes"] - before["document_passes"] < total

    # From now on every pass the engine makes belongs to a control request: its documents'
    # own pass counts add up to exactly the engine's counter increase.
    control = _documents(6, "control")
    with server.client() as client:
        answer = client.post("/v1/classify", json={"taxonomy": TAXONOMY, "documents": control})
    assert answer.status_code == 200
    control_passes = sum(r["decode"]["forward_passes"] for r in answer.json()["results"])
    after = server.health()
    assert after["document_passes"] - settled["document_passes"] == control_passes
    assert after["aborted_documents"] == settled["aborted_documents"]
