"""The gateway behind a real granian server process: real TLS handshakes on a loopback port.

The server runs `gateway._cli_serve.prepare` + `serve` exactly as `tacet serve --dev` does, but
with an in-memory fake engine (the engine process has its own tests), so these stay fast.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CANARY = f"ZDR-CANARY-{uuid.uuid4()}"

FAKE_SERVER = textwrap.dedent(
    '''
    """A granian server around the real app with a fake engine (test helper)."""
    import asyncio
    import functools
    import sys
    from pathlib import Path

    from engine.protocol import DecodeOut, DocumentDone, Isolation, LabelOut, Welcome
    from gateway.app import create_app
    from gateway.auth import DevKeyStore
    from gateway.taxonomies import StaticTaxonomyStore, bundled_taxonomy_dir


    class FakeEngine:
        ready = True
        welcome = Welcome(1, 1, "fake-model", "llada", "torch", Isolation(True, True, False, "-"))

        def __init__(self, marker):
            self.marker = marker

        async def start(self):
            pass

        async def stop(self):
            Path(self.marker).write_text("stopped")

        async def classify(self, taxonomy, texts, *, mode="diffusion", threshold=None):
            if texts == ["slow"]:
                await asyncio.sleep(1.5)
            facet = taxonomy["facets"][0]
            decode = DecodeOut(mode, 1, True, False, 3)
            out = LabelOut(facet["name"], facet["labels"][0]["id"], 0.5)
            return [DocumentDone("c", i, [out], {}, decode) for i in range(len(texts))]


    def load_app(data_dir, marker):
        return create_app(
            engine=FakeEngine(marker),
            keys=DevKeyStore(Path(data_dir) / "dev-api-key"),
            taxonomies=StaticTaxonomyStore.from_dirs([bundled_taxonomy_dir()]),
        )


    if __name__ == "__main__":
        import fake_gateway
        from gateway._cli_serve import prepare, serve
        from gateway.settings import EngineSettings, ServeSettings, ServerSettings, TLSSettings

        data_dir, port, tls12, client_ca, marker = sys.argv[1:6]
        settings = ServeSettings(
            data_dir=Path(data_dir),
            dev=True,
            server=ServerSettings(port=int(port)),
            tls=TLSSettings(
                unsafe_tls12=tls12 == "1", client_ca=Path(client_ca) if client_ca else None
            ),
            engine=EngineSettings(model_dir=Path(data_dir) / "fake-model"),
        )
        settings, key_file, ca = prepare(settings)
        print("ready-to-serve", flush=True)
        serve(settings, functools.partial(fake_gateway.load_app, str(settings.data_dir), marker))
    '''
)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    marker: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    @property
    def key(self) -> str:
        return (self.data_dir / "dev-api-key").read_text().strip()

    def context(self, **kwargs: object) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        for name, value in kwargs.items():
            setattr(ctx, name, value)
        return ctx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(tmp: Path, *, tls12: bool = False, client_ca: Path | None = None) -> Server:
    (tmp / "fake_gateway.py").write_text(FAKE_SERVER)
    data_dir = tmp / "data"
    (data_dir / "fake-model").mkdir(parents=True)
    (data_dir / "fake-model" / "config.json").write_text("{}")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp), str(REPO)])}
    marker = tmp / "engine-stopped"
    process = subprocess.Popen(
        [sys.executable, str(tmp / "fake_gateway.py"), str(data_dir), str(port),
         "1" if tls12 else "0", str(client_ca or ""), str(marker)],
        cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    server = Server(process, port, data_dir, marker)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out, _ = process.communicate()
            raise AssertionError(f"server exited early: {out.decode(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.1)
    _stop(server)
    raise AssertionError("server did not listen within 30 s")


def _stop(server: Server) -> str:
    """SIGTERM (graceful), then the whole output; SIGKILL only if it does not exit in 15 s."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        out, _ = server.process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        out, _ = server.process.communicate()
    return out.decode(errors="replace")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = _start(tmp_path_factory.mktemp("gateway"))
    yield running
    output = _stop(running)
    assert CANARY not in output


def _handshake(server: Server, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def test_tls13_with_dev_ca_serves_health_and_readiness(server: Server) -> None:
    with _handshake(server, server.context()) as tls:
        assert tls.version() == "TLSv1.3"
    with httpx.Client(verify=server.context(), base_url=server.url) as client:
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        assert health.headers.get("server", "") == ""  # no banner
        assert client.get("/readyz").status_code == 200


def test_classify_with_dev_key_over_tls(server: Server) -> None:
    body = {"taxonomy": "debian-sections", "documents": [{"id": CANARY, "text": CANARY}]}
    with httpx.Client(verify=server.context(), base_url=server.url) as client:
        denied = client.post("/v1/classify", json=body, headers={"Authorization": "Bearer no"})
        assert denied.status_code == 401
        assert CANARY not in denied.text
        response = client.post(
            "/v1/classify", content=json.dumps(body),
            headers={"Authorization": f"Bearer {server.key}"},
        )
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert result["id"] == CANARY
    assert result["labels"][0]["facet"] == "section"


def test_tls12_client_is_refused_by_default(server: Server) -> None:
    ctx = server.context(maximum_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):
        _handshake(server, ctx).close()


def test_plain_http_gets_no_http_response(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert not received.startswith(b"HTTP/")
    assert b"200" not in received


@pytest.mark.parametrize(
    ("offer", "expected"), [(["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")]
)
def test_http2_and_http11_by_alpn(server: Server, offer: list[str], expected: str) -> None:
    ctx = server.context()
    ctx.set_alpn_protocols(offer)
    with _handshake(server, ctx) as tls:
        assert tls.selected_alpn_protocol() == expected


def test_dev_tls_material_modes(server: Server) -> None:
    tls_dir = server.data_dir / "tls"
    assert stat.S_IMODE((tls_dir / "server-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((server.data_dir / "dev-api-key").stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in (tls_dir / "ca.pem").read_text()
    assert not list(tls_dir.glob("ca-key*"))  # the CA key is never written


def test_unsafe_tls12_accepts_tls12_and_sigterm_drains(tmp_path: Path) -> None:
    running = _start(tmp_path, tls12=True)
    results: list[int] = []

    def slow_request() -> None:
        body = {"taxonomy": "debtags", "documents": [{"id": "a", "text": "slow"}]}
        with httpx.Client(verify=running.context(), base_url=running.url, timeout=10) as client:
            headers = {"Authorization": f"Bearer {running.key}"}
            results.append(client.post("/v1/classify", json=body, headers=headers).status_code)

    try:
        with _handshake(running, running.context(maximum_version=ssl.TLSVersion.TLSv1_2)) as tls:
            assert tls.version() == "TLSv1.2"
        with httpx.Client(verify=running.context(), base_url=running.url) as client:
            assert client.get("/healthz").status_code == 200
        in_flight = threading.Thread(target=slow_request)
        in_flight.start()
        time.sleep(0.7)  # the request is inside the (fake) engine now
        running.process.send_signal(signal.SIGTERM)
        in_flight.join(timeout=10)
    finally:
        output = _stop(running)
    assert results == [200], output  # the in-flight request was drained, not cut
    assert running.process.returncode == 0, output
    assert "--unsafe-tls12" in output  # loud
    assert running.marker.read_text() == "stopped"  # lifespan shutdown stopped the engine


def _client_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A client CA and one client certificate (clientAuth) signed by it, as PEM files."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test client CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "member-system")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "client-ca.pem", directory / "client.pem", directory / "client-key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_mtls_requires_a_client_certificate(tmp_path: Path) -> None:
    client_ca, client_cert, client_key = _client_pki(tmp_path)
    running = _start(tmp_path, client_ca=client_ca)
    try:
        # TLS 1.3: the server checks the client certificate after the client's handshake
        # finishes, so the refusal shows on the first read.
        with (
            pytest.raises((ssl.SSLError, ConnectionError, httpx.TransportError)),
            httpx.Client(verify=running.context(), base_url=running.url) as client,
        ):
            client.get("/healthz")
        with_cert = running.context()
        with_cert.load_cert_chain(client_cert, client_key)
        with httpx.Client(verify=with_cert, base_url=running.url) as client:
            assert client.get("/healthz").status_code == 200
    finally:
        _stop(running)


def test_sighup_reloads_the_certificate(tmp_path: Path) -> None:
    from gateway.tls import ensure_dev_tls

    running = _start(tmp_path)
    try:
        old_ca = running.ca.read_bytes()
        with _handshake(running, running.context()):
            pass
        (running.data_dir / "tls" / "server.pem").unlink()  # forces a new CA and certificate
        ensure_dev_tls(running.data_dir)
        assert running.ca.read_bytes() != old_ca
        with pytest.raises(ssl.SSLCertVerificationError):  # still the old certificate
            _handshake(running, running.context()).close()
        running.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while True:
            try:
                with _handshake(running, running.context()) as tls:
                    assert tls.version() == "TLSv1.3"
                break
            except ssl.SSLCertVerificationError:
                assert time.monotonic() < deadline, "SIGHUP did not load the new certificate"
                time.sleep(0.2)
        assert running.process.poll() is None
    finally:
        _stop(running)



def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        found.extend(int(child) for child in children)
    return found


def _engine_pid(server_pid: int) -> int:
    """The engine process under `tacet serve` (granian main -> worker -> engine)."""
    for worker in _children(server_pid):
        for child in _children(worker):
            if b"engine.process" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
    raise AssertionError("no engine process under the gateway")


def _wait_ready(server: Server, timeout: float) -> float:
    """Seconds until /readyz answers 200; fails after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        assert server.process.poll() is None, "the gateway exited"
        try:
            with httpx.Client(verify=server.context(), base_url=server.url) as client:
                if client.get("/readyz").status_code == 200:
                    return time.monotonic() - start
        except (OSError, httpx.TransportError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"/readyz was not 200 within {timeout} s")


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`tacet serve --dev` as a user runs it: real engine process, tiny random model."""
    tmp = tmp_path_factory.mktemp("dev")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TACET_")}
    env["TACET_MAX_QUEUED_DOCUMENTS"] = "4096"  # room for the kill test's 1280 documents
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--dev", "--data-dir", str(tmp / "data"),
         "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    running = Server(process, port, tmp / "data", tmp / "unused")
    try:
        _wait_ready(running, 90)
        yield running
    finally:
        output = _stop(running)
    assert process.returncode == 0, output
    assert running.key not in output
    assert CANARY not in output


def _classify(server: Server, texts: list[str], timeout: float = 60) -> httpx.Response:
    body = {
        "taxonomy": "debian-sections",
        "documents": [{"id": f"{CANARY}-{i}", "text": t} for i, t in enumerate(texts)],
    }
    with httpx.Client(verify=server.context(), base_url=server.url, timeout=timeout) as client:
        return client.post(
            "/v1/classify", json=body, headers={"Authorization": f"Bearer {server.key}"}
        )


def test_tacet_serve_dev_end_to_end(dev_server: Server) -> None:
    """The README's curl call, with the real supervised engine: labels come back."""
    response = _classify(dev_server, [f"A terminal text editor. {CANARY}"])
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["model"]
    assert payload["taxonomy"] == {"name": "debian-sections", "version": "1"}
    (result,) = payload["results"]
    assert result["id"] == f"{CANARY}-0"
    assert result["labels"] and result["labels"][0]["facet"] == "section"
    assert 0.0 <= result["labels"][0]["probability"] <= 1.0


def test_engine_sigkill_with_20_requests_in_flight(dev_server: Server) -> None:
    """Issue 4: every in-flight request is answered (200 or 503) within 2 s of the kill, the
    gateway stays up, /readyz returns to 200 after the restart and the next call succeeds."""
    engine = _engine_pid(dev_server.process.pid)
    answers: list[tuple[int, float]] = []
    killed_at: list[float] = []

    def one_request() -> None:
        response = _classify(dev_server, [f"{CANARY} document {i}" for i in range(64)], 30)
        answers.append((response.status_code, time.monotonic()))

    threads = [threading.Thread(target=one_request) for _ in range(20)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # 1280 documents keep the tiny engine busy for longer than this
    os.kill(engine, signal.SIGKILL)
    killed_at.append(time.monotonic())
    for thread in threads:
        thread.join(timeout=10)
    assert len(answers) == 20
    assert {status for status, _ in answers} <= {200, 503}
    assert any(status == 503 for status, _ in answers), "no request was in flight at the kill"
    assert max(at for _, at in answers) - killed_at[0] < 2.0
    assert dev_server.process.poll() is None
    _wait_ready(dev_server, 60)
    assert _engine_pid(dev_server.process.pid) != engine
    assert _classify(dev_server, ["after the restart"]).status_code == 200
