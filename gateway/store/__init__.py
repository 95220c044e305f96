"""Control-plane storage: tenants, API-key digests, taxonomy versions, task policies.

Only metadata lives here (DESIGN.md, ZDR rules): no document text, no key secret. SQLite in the
data dir by default, PostgreSQL when `TACET_DATABASE_URL` names one; the schema is brought to
the newest alembic revision shipped in this package at start (`open_store` does both).
"""

from __future__ import annotations

from sqlalchemy.engine import URL

from gateway.store.bootstrap import ensure_dev_key
from gateway.store.engine import create_engine, database_url, redacted
from gateway.store.errors import Conflict, NotFound, StoreError, UnsupportedDatabase
from gateway.store.migrate import async_upgrade_to_head, head_revision, upgrade_to_head
from gateway.store.repository import Store, TaxonomyRecord, TenantLimits, TenantRecord

__all__ = [
    "Conflict",
    "NotFound",
    "Store",
    "StoreError",
    "TaxonomyRecord",
    "TenantLimits",
    "TenantRecord",
    "UnsupportedDatabase",
    "async_upgrade_to_head",
    "create_engine",
    "database_url",
    "ensure_dev_key",
    "head_revision",
    "open_store",
    "redacted",
    "upgrade_to_head",
]


async def open_store(url: URL | str) -> Store:
    """An engine for `url`, migrated to head, wrapped in a Store (dispose `store.engine`)."""
    engine = create_engine(url)
    try:
        await async_upgrade_to_head(engine)
    except BaseException:
        await engine.dispose()
        raise
    return Store(engine)
