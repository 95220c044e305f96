"""Shared tenant limits: leased window units and concurrency-slot leases (issue 25).

Counts, Tacet-generated ids and times (milliseconds of the database clock) only. Written by
`gateway._shared_limiter` on PostgreSQL; created on SQLite too, where they stay empty.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "limit_windows",
        sa.Column("tenant_id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("until_ms", sa.BigInteger, primary_key=True),
        sa.Column("units", sa.Integer, nullable=False),
    )
    op.create_table(
        "limit_slots",
        sa.Column("tenant_id", sa.String(32), primary_key=True),
        sa.Column("gateway_id", sa.String(32), primary_key=True),
        sa.Column("slots", sa.Integer, nullable=False),
        sa.Column("oldest_ms", sa.BigInteger, nullable=False),
        sa.Column("mean_ms", sa.Integer, nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_limit_slots_gateway_id", "limit_slots", ["gateway_id"])


def downgrade() -> None:
    op.drop_index("ix_limit_slots_gateway_id", "limit_slots")
    op.drop_table("limit_slots")
    op.drop_table("limit_windows")
