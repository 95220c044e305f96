"""Bulk jobs: jobs, their shards, and the local queue backend's messages (gateway.jobs).

Metadata only: S3 URIs, the taxonomy name@version, counts, states and times. No document text,
member-supplied id or label is ever stored here.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gateway.store.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _counters() -> list[sa.Column[int]]:
    return [
        sa.Column(name, sa.Integer, nullable=False)
        for name in ("documents", "errors", "passed_through", "rescored")
    ]


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(32), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("input_uri", sa.String(1024), nullable=False),
        sa.Column("output_uri", sa.String(1024), nullable=False),
        sa.Column("compression", sa.String(8), nullable=False),
        sa.Column("taxonomy", sa.String(64), nullable=False),
        sa.Column("taxonomy_version", sa.String(32), nullable=False),
        sa.Column("labelled_with", sa.String(32), nullable=True),
        sa.Column("task", sa.String(64), nullable=True),
        sa.Column("mode", sa.String(24), nullable=False),
        sa.Column("shard_size", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("shards_total", sa.Integer, nullable=False),
        sa.Column("shards_done", sa.Integer, nullable=False),
        *_counters(),
        sa.Column("model_id", sa.String(128), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_jobs_tenant_id", "jobs", ["tenant_id"])
    op.create_table(
        "job_shards",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("line_start", sa.BigInteger, nullable=False),
        sa.Column("line_end", sa.BigInteger, nullable=False),
        sa.Column("byte_start", sa.BigInteger, nullable=True),
        sa.Column("byte_end", sa.BigInteger, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        *_counters(),
        sa.Column("model_id", sa.String(128), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
    )
    op.create_table(
        "job_queue",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("body", sa.String(512), nullable=False),
        sa.Column("visible_at", UTCDateTime(), nullable=False),
        sa.Column("receive_count", sa.Integer, nullable=False),
        sa.Column("receipt", sa.String(64), nullable=True, unique=True),
        sa.Column("dead_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_job_queue_queue", "job_queue", ["queue"])


def downgrade() -> None:
    raise NotImplementedError("the jobs schema is not downgraded; restore a backup")
