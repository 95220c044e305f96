"""`tacet serve` with an unsafe setting accepted: it really runs that way, warns, and audits it.

TLS off (`TACET_TLS=off` + `--unsafe-no-tls`) is the one unsafe setting that changes what the
listener does, so it is started for real: plain HTTP answers, and the start is audited.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unsafe_no_tls_serves_plain_http_and_is_audited(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TACET_", "OTEL_"))}
    env.update(TACET_TLS="off", TMPDIR=str(tmp_path), PYTHONPATH=str(REPO))
    data_dir, port = tmp_path / "data", _free_port()
    command = [sys.executable, "-m", "gateway.cli", "serve", "--dev", "--data-dir", str(data_dir),
               "--port", str(port)]
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "--unsafe-no-tls" in refused.stderr
    with (tmp_path / "out").open("wb") as out:
        process = subprocess.Popen([*command, "--unsafe-no-tls"], env=env, cwd=tmp_path,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "out").read_text(errors="replace")
            with contextlib.suppress(httpx.TransportError):
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            assert time.monotonic() < deadline, "no plain-HTTP answer within 120 s"
            time.sleep(0.2)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    output = (tmp_path / "out").read_text(errors="replace")
    assert f"Tacet gateway: http://127.0.0.1:{port}" in output
    assert "WARNING: --unsafe-no-tls" in output
    assert not (data_dir / "tls").exists()  # no certificate was made or needed
    connection = sqlite3.connect(data_dir / "tacet.db")
    try:
        records = [json.loads(r[0]) for r in connection.execute("SELECT record FROM audit_records")]
    finally:
        connection.close()
    unsafe = [r["unmapped"]["setting"] for r in records
              if r["api"]["operation"] == "config.unsafe_flag"]
    assert unsafe == ["tls.disabled"]
