"""A throwaway PostgreSQL server for the integration tests (fixture in conftest.py).

PostgreSQL: `TACET_TEST_POSTGRES_URL` when set, else a server started here from the Debian
binaries (`/usr/lib/postgresql/*/bin`, or `initdb` on PATH) in a temp dir with a Unix socket and
no TCP listener, as an unprivileged user when we are root. Skipped, with the reason, only when
those binaries are absent. Tests reset the `public` schema with `reset_schema`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from gateway.store import create_engine


def _pg_bindir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    found = candidates[0] if candidates else shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def _run_as(user: str | None) -> dict[str, Any]:
    return {"user": user, "group": pwd.getpwnam(user).pw_gid} if user else {}


def postgres_server() -> Iterator[URL]:
    """Yield a URL of a server that lives until the generator is closed."""
    given = os.environ.get("TACET_TEST_POSTGRES_URL")
    if given:
        yield make_url(given)
        return
    bindir = _pg_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are absent; apt-get install postgresql")
    user = "nobody" if os.geteuid() == 0 else None  # PostgreSQL refuses to run as root
    base = Path(tempfile.mkdtemp(prefix="tacet-pg-"))
    if user:
        entry = pwd.getpwnam(user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    data, log = base / "data", base / "server.log"
    quiet = {"check": True, "capture_output": True, "cwd": base, **_run_as(user)}
    try:
        subprocess.run(
            [bindir / "initdb", "-D", data, "-U", "tacet", "--auth=trust", "-E", "UTF8", "-N"],
            **quiet,
        )
        options = f"-k {base} -c listen_addresses='' -F"
        subprocess.run(
            [bindir / "pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start"],
            **quiet,
        )
        yield URL.create(
            "postgresql+asyncpg", username="tacet", database="postgres", query={"host": str(base)}
        )
    finally:
        if (data / "postmaster.pid").exists():
            stop = [bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"]
            subprocess.run(stop, **{**quiet, "check": False})
        shutil.rmtree(base, ignore_errors=True)


async def reset_schema(url: URL) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("DROP SCHEMA public CASCADE"))
            await connection.execute(text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()
