"""Control-plane tables. Metadata only: ids, digests, taxonomy documents, policies, limits.

The migration in `migrations/versions` is the schema's source of truth for the database; these
classes mirror it for queries (no autogenerate at runtime; a test checks they agree).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ApiKey",
    "Base",
    "Job",
    "JobQueueMessage",
    "JobShard",
    "KeyEpoch",
    "LimitSlot",
    "LimitWindow",
    "TaskPolicyRow",
    "TaxonomyVersion",
    "Tenant",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both backends (SQLite drops the zone; we put it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use UTC-aware datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Per-tenant limits; None means the gateway's default.
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    documents_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ApiKey(Base):
    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    env: Mapped[str] = mapped_column(String(8))
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    pepper_id: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[str] = mapped_column(String(200))  # space-separated, sorted
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    rotated_from: Mapped[str | None] = mapped_column(String(32), nullable=True)


class TaxonomyVersion(Base):
    """One immutable taxonomy version; an UPDATE is refused by a database trigger."""

    __tablename__ = "taxonomy_versions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", "version"),
        UniqueConstraint("tenant_id", "name", "seq"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(Integer)  # order of creation within (tenant, name)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TaskPolicyRow(Base):
    __tablename__ = "task_policies"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    task: Mapped[str] = mapped_column(String(64), primary_key=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class KeyEpoch(Base):
    """One row whose counter moves on every change that can withdraw a key (see apikeys)."""

    __tablename__ = "key_epoch"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer)


# ---- bulk jobs (gateway.jobs; migration 0003). Metadata only: URIs, counts, states, times. ---


class Job(Base):
    """One S3-to-S3 job; the counters are sums over its shards, added once per shard."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    input_uri: Mapped[str] = mapped_column(String(1024))
    output_uri: Mapped[str] = mapped_column(String(1024))
    compression: Mapped[str] = mapped_column(String(8))  # "none" or "gzip"
    taxonomy: Mapped[str] = mapped_column(String(64))  # the tenant's taxonomy name
    taxonomy_version: Mapped[str] = mapped_column(String(32))  # pinned at submission
    labelled_with: Mapped[str | None] = mapped_column(String(32), nullable=True)  # delta
    task: Mapped[str | None] = mapped_column(String(64), nullable=True)
    mode: Mapped[str] = mapped_column(String(24))
    shard_size: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # running | done | cancelled | failed
    shards_total: Mapped[int] = mapped_column(Integer)
    shards_done: Mapped[int] = mapped_column(Integer)
    documents: Mapped[int] = mapped_column(Integer)
    errors: Mapped[int] = mapped_column(Integer)
    passed_through: Mapped[int] = mapped_column(Integer)
    rescored: Mapped[int] = mapped_column(Integer)
    model_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class JobShard(Base):
    """A line range [line_start, line_end) of the input (and its byte range when plain)."""

    __tablename__ = "job_shards"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    line_start: Mapped[int] = mapped_column(BigInteger)
    line_end: Mapped[int] = mapped_column(BigInteger)
    byte_start: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    byte_end: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    state: Mapped[str] = mapped_column(String(16))  # pending | running | done | cancelled
    attempts: Mapped[int] = mapped_column(Integer)
    documents: Mapped[int] = mapped_column(Integer)
    errors: Mapped[int] = mapped_column(Integer)
    passed_through: Mapped[int] = mapped_column(Integer)
    rescored: Mapped[int] = mapped_column(Integer)
    model_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class JobQueueMessage(Base):
    """The local queue backend: a message is leased by `receipt` until `visible_at`."""

    __tablename__ = "job_queue"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    queue: Mapped[str] = mapped_column(String(64), index=True)
    body: Mapped[str] = mapped_column(String(512))  # {"job": id, "shard": n}: Tacet ids only
    visible_at: Mapped[datetime] = mapped_column(UTCDateTime())
    receive_count: Mapped[int] = mapped_column(Integer)
    receipt: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    dead_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# ---- shared tenant limits (gateway._shared_limiter; migration 0004). Counts and times only. ---


class LimitWindow(Base):
    """Units leased from a tenant's per-minute window, counted until `until_ms` (the database
    clock, milliseconds since the epoch); leases ending in the same instant share a row."""

    __tablename__ = "limit_windows"

    tenant_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # requests | documents
    until_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    units: Mapped[int] = mapped_column(Integer)


class LimitSlot(Base):
    """One gateway process's requests in flight for a tenant, a lease until `expires_ms`."""

    __tablename__ = "limit_slots"

    tenant_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    gateway_id: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)  # per process
    slots: Mapped[int] = mapped_column(Integer)
    oldest_ms: Mapped[int] = mapped_column(BigInteger)  # start of its oldest request in flight
    mean_ms: Mapped[int] = mapped_column(Integer)  # its recent mean request duration
    expires_ms: Mapped[int] = mapped_column(BigInteger)
