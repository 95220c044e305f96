"""Bring a database to the newest schema at start, from the scripts shipped in this package.

Alembic is driven programmatically on a connection we open; PostgreSQL takes a transaction-level
advisory lock first so two gateways starting together do not race each other's DDL.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.engine import create_engine

__all__ = ["async_upgrade_to_head", "current_revision", "head_revision", "upgrade_to_head"]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_LOCK_ID = 0x7A_CE_70_01  # arbitrary constant naming "tacet schema migration"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
    config = _config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def async_upgrade_to_head(engine: AsyncEngine) -> str:
    """Upgrade inside one transaction; return the revision now current."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)
    return await current_revision(engine) or ""


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(_revision)


def upgrade_to_head(url: URL | str) -> str:
    """Synchronous entry for the CLI and for start-up before the event loop runs."""

    async def run() -> str:
        engine = create_engine(url)
        try:
            return await async_upgrade_to_head(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())
