"""Which database, and an async engine for it: SQLite in the data dir unless told otherwise.

`TACET_DATABASE_URL` may name PostgreSQL (`postgresql://`, `postgres://` or
`postgresql+asyncpg://`; driven by asyncpg) or an SQLite file. A URL can carry a password, so
it is only ever shown through `redacted`.
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

__all__ = ["DATABASE_FILE", "DATABASE_URL_ENV", "create_engine", "database_url", "redacted"]

DATABASE_URL_ENV = "TACET_DATABASE_URL"
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
    """`TACET_DATABASE_URL` when set, else `<data-dir>/tacet.db` through aiosqlite."""
    env = os.environ if env is None else env
    raw = env.get(DATABASE_URL_ENV)
    if raw:
        return _normalize(raw)
    path = (data_dir / DATABASE_FILE).resolve()
    return URL.create("sqlite+aiosqlite", database=str(path))


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
