"""Open a page in Debian's headless Chromium, as a person's browser would, and report what it did.

Playwright's Python package drives the browser through its bundled driver; no browser is
downloaded: the executable is Debian's `chromium` (installed by `.ci/run`). The page is loaded
offline: every request that is not the page itself is refused and recorded, so a test can assert
that a report is self-contained (no external scripts, fonts, images or network).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Rendered", "chromium_executable", "render"]

# The flags the workplace's probe uses: no sandbox as root, and no background connections to a
# network this machine does not have.
_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@dataclass(frozen=True)
class Rendered:
    """What the browser saw: console errors, uncaught exceptions, refused requests, visible text."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    text: str = ""
    title: str = ""


def chromium_executable() -> str | None:
    """Debian's Chromium, or None when it is not installed (the caller skips, naming it)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def render(page_file: Path, screenshot: Path, *, width: int = 1280, height: int = 900) -> Rendered:
    """Load `page_file` offline, take a full-page screenshot, return what happened."""
    from playwright.sync_api import sync_playwright

    executable = chromium_executable()
    if executable is None:
        raise RuntimeError("Debian's chromium is not installed")
    page_url = page_file.resolve().as_uri()
    console: list[str] = []
    errors: list[str] = []
    external: list[str] = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=list(_FLAGS))
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))

            def _route(route):  # type: ignore[no-untyped-def]
                if route.request.url == page_url:
                    route.continue_()
                else:
                    external.append(route.request.url)
                    route.abort()

            page.route("**/*", _route)
            page.goto(page_url, wait_until="load")
            page.screenshot(path=str(screenshot), full_page=True)
            text = page.inner_text("body")
            title = page.title()
        finally:
            browser.close()
    return Rendered(console, errors, external, text, title)
