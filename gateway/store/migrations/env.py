"""Alembic environment: runs only on the connection `gateway.store.migrate` hands it.

No autogenerate and no offline SQL: the schema changes only through the versioned scripts.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("run migrations through gateway.store.migrate.upgrade_to_head")

context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
