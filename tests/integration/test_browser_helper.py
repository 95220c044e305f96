"""The browser helper itself: it must see console errors, uncaught exceptions and any request
that leaves the page, or the report tests that rely on it could pass on a broken page."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration._browser import chromium_executable, render

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(chromium_executable() is None, reason="Debian's chromium is not installed"),
]


def test_render_reports_errors_external_requests_and_text(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text(
        "<!doctype html><html><head><title>T</title></head><body><h1>Visible</h1>"
        '<img src="https://example.invalid/x.png">'
        "<script>console.error('logged'); throw new Error('thrown');</script></body></html>",
        encoding="utf-8",
    )
    shot = tmp_path / "shot.png"
    seen = render(page, shot)
    assert seen.title == "T"
    assert "Visible" in seen.text
    assert any("logged" in e for e in seen.console_errors)
    assert any("thrown" in e for e in seen.page_errors)
    assert seen.external_requests == ["https://example.invalid/x.png"]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_render_of_a_clean_page_reports_nothing(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text("<!doctype html><body><p>ok</p><svg width='4' height='4'></svg></body>")
    seen = render(page, tmp_path / "shot.png")
    assert (seen.console_errors, seen.page_errors, seen.external_requests) == ([], [], [])
