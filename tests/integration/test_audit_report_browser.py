"""The compliance report end to end: a real `tacet serve` (TLS, an unsafe setting accepted), real
traffic with 4xx and an admin key rotation, a signed export, `tacet audit report`, and the page
opened in Debian's headless Chromium, offline.

The page must load with no console or page error and request nothing outside itself, and show
the export's own numbers (records per tenant and status class, the unsafe flag with its gateway,
the rotation with its key ids). A changed record in a copy of the export makes the CLI exit 1
and the page show the failing verdict naming that record. The live page
(`GET /v1/audit/report`) opens as cleanly.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from compliance.audit import FolderSource, VerificationError, verify_export
from compliance.audit._report_tally import STATUS_CLASSES, status_class
from compliance.audit.chain import canonical
from gateway.cli import main as tacet
from tests.fixtures.report_page import read_page
from tests.integration._browser import chromium_executable, render

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(chromium_executable() is None, reason="Debian's chromium is not installed"),
]

REPO = Path(__file__).resolve().parents[2]
TAXONOMY = "debian-sections"  # bundled, imported into the dev tenant by --dev


@dataclass
class Served:
    root: Path
    port: int
    key: str
    client: httpx.Client
    rotated: tuple[str, str]  # (old key id, new key id)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        assert time.monotonic() < deadline, "tacet serve did not listen within 120 s"
        time.sleep(0.1)


def _traffic(client: httpx.Client, key: str) -> tuple[str, str]:
    """Successes, 4xx (404, 422, 401, 403 from the rotated-away key's missing scope...) and one
    admin key rotation over the admin API; returns (old key id, new key id)."""
    auth = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 120
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "engine not ready within 120 s"
        time.sleep(0.2)
    body = {"taxonomy": TAXONOMY, "documents": [{"id": "d1", "text": "a kernel module"}]}
    for _ in range(3):
        assert client.post("/v1/classify", json=body, headers=auth).status_code == 200
    assert client.get("/v1/taxonomies/no-such-taxonomy", headers=auth).status_code == 404
    assert client.post("/v1/classify", json={"taxonomy": TAXONOMY, "documents": []},
                       headers=auth).status_code == 422
    assert client.post("/v1/classify", json=body,
                       headers={"Authorization": "Bearer tacet_dev_nope"}).status_code == 401
    keys = client.get("/v1/admin/keys", headers=auth)
    assert keys.status_code == 200, keys.text
    old = keys.json()["keys"][0]["key_id"]
    rotated = client.post(f"/v1/admin/keys/{old}/rotate", json={"overlap_hours": 1},
                          headers=auth)
    assert rotated.status_code == 201, rotated.text
    return old, rotated.json()["key"]["key_id"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("report-e2e")
    (root / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TACET_", "OTEL_"))}
    env.update(TMPDIR=str(root / "tmp"), PYTHONPATH=str(REPO))
    port = _free_port()
    log = root / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--dev", "--data-dir",
             str(root / "data"), "--port", str(port), "--unsafe-tls12"],
            cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        _wait_listening(process, port, log)
        context = ssl.create_default_context(cafile=str(root / "data" / "tls" / "ca.pem"))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context,
                          timeout=60) as client:
            key = (root / "data" / "dev-api-key").read_text().strip()
            rotated = _traffic(client, key)
            yield Served(root, port, key, client, rotated)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _window() -> list[str]:
    now = datetime.now(UTC)
    return ["--from", (now - timedelta(hours=1)).isoformat(),
            "--to", (now + timedelta(hours=1)).isoformat()]


@pytest.fixture(scope="module")
def export(served: Served) -> Path:
    out = served.root / "export"
    assert tacet(["audit", "export", *_window(), "--out", str(out),
                  "--data-dir", str(served.data_dir)]) == 0
    return out


def _export_records(export: Path) -> list[tuple[str, dict[str, Any]]]:
    manifest = json.loads((export / "manifest.json").read_text())
    return [(entry["chain"], json.loads(line)) for entry in manifest["files"]
            for line in (export / entry["name"]).read_text().splitlines()]


def _open(page: Path) -> Any:
    shot = page.with_suffix(".png")
    seen = render(page, shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert seen.console_errors == [] and seen.page_errors == []
    assert seen.external_requests == []
    return seen


def test_report_of_a_served_export_in_a_browser(served: Served, export: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    page_file = served.root / "report.html"
    capsys.readouterr()
    assert tacet(["audit", "report", str(export), "--out", str(page_file),
                  "--data-dir", str(served.data_dir)]) == 0
    assert "result: verified" in capsys.readouterr().out
    seen = _open(page_file)
    assert seen.title == "Tacet audit report: verified"
    assert "✔ Verified" in seen.text and "NOT VERIFIED" not in seen.text

    records = _export_records(export)
    page = read_page(page_file.read_text(encoding="utf-8"))
    assert page.texts["total-records"] == f"{len(records):,}"
    assert f"{len(records):,}" in seen.text
    by_class = Counter(status_class(r["http_response"]["code"]) for _, r in records)
    assert by_class["4xx"] >= 3  # the 404, 422 and 401 above
    totals = [int(n.replace(",", "")) for n in page.tables["status-totals"][1][1:]]
    assert totals == [by_class[c] for c in STATUS_CLASSES]
    per_tenant = Counter(chain for chain, _ in records)
    assert {row[0]: int(row[1].replace(",", "")) for row in page.tables["tenants"][1:]} \
        == per_tenant
    # The unsafe setting accepted at start, with the gateway that started with it.
    unsafe = [r for _, r in records if r["api"]["operation"] == "config.unsafe_flag"]
    assert [r["unmapped"]["setting"] for r in unsafe] == ["tls.unsafe_tls12"]
    host = unsafe[0]["dst_endpoint"]["hostname"]
    assert page.tables["unsafe"][1][1:3] == ["tls.unsafe_tls12", f"{host}:{served.port}"]
    assert "tls.unsafe_tls12" in seen.text and f"{host}:{served.port}" in seen.text
    assert len(page.tables["starts"][1:]) == sum(
        r["api"]["operation"] == "config.start" for _, r in records)
    # The rotation: one act, the new key id acted on, the old (caller's) key id as "by".
    old, new = served.rotated
    acts = [row for row in page.tables["admin-acts"][1:] if row[2] == "keys.rotate"]
    assert len(acts) == 1
    [act] = acts
    assert (act[3], act[5], act[6], act[7]) == (new, "API", old, "201")
    assert new in seen.text
    assert served.key not in page_file.read_text()  # never a secret


def test_tampered_export_renders_the_failing_verdict(served: Served, export: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    copy = served.root / "tampered"
    shutil.copytree(export, copy)
    target = next(p for p in sorted((copy / "records").glob("*.jsonl"))
                  if not p.name.startswith("system-"))  # the dev tenant's chain
    lines = target.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[2])
    record["http_response"]["code"] = 500
    lines[2] = canonical(record) + b"\n"
    target.write_bytes(b"".join(lines))
    with pytest.raises(VerificationError) as caught:
        verify_export(FolderSource(copy), public_pem=(export / "signer.pub.pem").read_bytes())
    page_file = served.root / "tampered.html"
    capsys.readouterr()
    assert tacet(["audit", "report", str(copy), "--out", str(page_file),
                  "--data-dir", str(served.data_dir)]) == 1
    assert caught.value.first_bad in capsys.readouterr().out
    seen = _open(page_file)
    assert seen.title == "Tacet audit report: NOT VERIFIED"
    assert "NOT VERIFIED" in seen.text
    assert caught.value.first_bad in seen.text and caught.value.reason in seen.text
    assert "line 3" in caught.value.first_bad


def test_live_report_over_https_opens_cleanly(served: Served) -> None:
    now = datetime.now(UTC)
    window = {"from": (now - timedelta(hours=1)).isoformat(),
              "to": (now + timedelta(hours=1)).isoformat()}
    response = served.client.get("/v1/audit/report", params=window,
                                 headers={"Authorization": f"Bearer {served.key}"})
    assert response.status_code == 200
    page_file = served.root / "live.html"
    page_file.write_text(response.text, encoding="utf-8")
    seen = _open(page_file)
    assert "✔ Verified" in seen.text and "live audit log" in seen.text
    assert "keys.rotate" in seen.text
