"""Initial control-plane schema: tenants, API keys, taxonomy versions, task policies, key epoch.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gateway.store.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_IMMUTABLE_SQLITE = """
CREATE TRIGGER taxonomy_versions_immutable BEFORE UPDATE ON taxonomy_versions
BEGIN SELECT RAISE(ABORT, 'taxonomy versions are immutable'); END
"""
_IMMUTABLE_PG_FUNCTION = """
CREATE FUNCTION taxonomy_versions_immutable() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'taxonomy versions are immutable'; END $$ LANGUAGE plpgsql
"""
_IMMUTABLE_PG_TRIGGER = """
CREATE TRIGGER taxonomy_versions_immutable BEFORE UPDATE ON taxonomy_versions
FOR EACH ROW EXECUTE FUNCTION taxonomy_versions_immutable()
"""


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("disabled_at", UTCDateTime(), nullable=True),
        sa.Column("requests_per_minute", sa.Integer, nullable=True),
        sa.Column("documents_per_minute", sa.Integer, nullable=True),
        sa.Column("max_concurrency", sa.Integer, nullable=True),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(32), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("env", sa.String(8), nullable=False),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("pepper_id", sa.String(16), nullable=False),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("rotated_from", sa.String(32), nullable=True),
    )
    op.create_index("ix_api_keys_tenant_id", "api_keys", ["tenant_id"])
    op.create_table(
        "taxonomy_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(32), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("tenant_id", "name", "version"),
        sa.UniqueConstraint("tenant_id", "name", "seq"),
    )
    op.create_index("ix_taxonomy_versions_tenant_id", "taxonomy_versions", ["tenant_id"])
    op.create_table(
        "task_policies",
        sa.Column("tenant_id", sa.String(32), sa.ForeignKey("tenants.id"), primary_key=True),
        sa.Column("task", sa.String(64), primary_key=True),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    epoch = op.create_table(
        "key_epoch",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("epoch", sa.Integer, nullable=False),
    )
    op.bulk_insert(epoch, [{"id": 1, "epoch": 0}])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_IMMUTABLE_PG_FUNCTION)
        op.execute(_IMMUTABLE_PG_TRIGGER)
    else:
        op.execute(_IMMUTABLE_SQLITE)


def downgrade() -> None:
    raise NotImplementedError("the control-plane schema is not downgraded; restore a backup")
