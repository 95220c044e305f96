"""Which database, and an async engine for it: SQLite in the data dir unless told otherwise.

`TACET_DATABASE_URL` may name PostgreSQL (`postgresql://`, `postgres://` or
`postgresql+asyncpg://`; driven by asyncpg) or an SQLite file; `TACET_DATABASE_URL_FILE` names a
file holding it instead (a systemd credential), so the password never sits in the environment.
A URL can carry a password, so it is only ever shown through `redacted`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.store.errors import UnsupportedDatabase

__all__ = [
    "DATABASE_FILE",
    "DATABASE_URL_ENV",
    "DATABASE_URL_FILE_ENV",
    "create_engine",
    "database_url",
    "redacted",
]

DATABASE_URL_ENV = "TACET_DATABASE_URL"
DATABASE_URL_FILE_ENV = "TACET_DATABASE_URL_FILE"
DATABASE_FILE = "tacet.db"


def _normalize(raw: str) -> URL:
    try:
        url = make_url(raw)
    except ArgumentError:
        raise UnsupportedDatabase(f"{DATABASE_URL_ENV} is not a database URL") from None
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+asyncpg")
    if backend == "sqlite" and url.database and url.database != ":memory:":
        return url.set(drivername="sqlite+aiosqlite")
    raise UnsupportedDatabase(
        f"{DATABASE_URL_ENV} must name PostgreSQL (postgresql://...) or an SQLite file "
        "(sqlite:///path)"
    )


def database_url(data_dir: Path, env: Mapping[str, str] | None = None) -> URL:
    """`TACET_DATABASE_URL` (or the file `TACET_DATABASE_URL_FILE` names), else the data dir's
    `tacet.db` through aiosqlite. Setting both is an error: which one wins would be a guess."""
    env = os.environ if env is None else env
    raw = env.get(DATABASE_URL_ENV)
    url_file = env.get(DATABASE_URL_FILE_ENV)
    if raw and url_file:
        raise UnsupportedDatabase(f"set {DATABASE_URL_ENV} or {DATABASE_URL_FILE_ENV}, not both")
    if url_file:
        raw = _read_url_file(Path(url_file))
    if raw:
        return _normalize(raw)
    path = (data_dir / DATABASE_FILE).resolve()
    return URL.create("sqlite+aiosqlite", database=str(path))


def _read_url_file(path: Path) -> str:
    try:
        raw = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UnsupportedDatabase(
            f"{DATABASE_URL_FILE_ENV}: cannot read the file ({type(exc).__name__})"
        ) from None
    if not raw:
        raise UnsupportedDatabase(f"{DATABASE_URL_FILE_ENV}: the file is empty")
    return raw


def redacted(url: URL | str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _prepare_sqlite_file(url: URL) -> None:
    """Create the file 0600 in a 0700 directory before SQLite creates it with the umask."""
    path = Path(url.database or "")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_engine(url: URL | str) -> AsyncEngine:
    """An async engine; SQLite gets foreign keys, WAL and a busy timeout on every connection."""
    url = _normalize(url.render_as_string(hide_password=False) if isinstance(url, URL) else url)
    if url.get_backend_name() == "sqlite":
        _prepare_sqlite_file(url)
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_pre_ping=True)
