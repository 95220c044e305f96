"""Audit tables (compliance.audit): the append-only record chain and its signed checkpoints.

Kept apart from `models.py` (its own declarative base) so the control-plane models stay as they
are; migration 0002 creates these tables and a trigger that refuses UPDATE on records.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gateway.store.models import UTCDateTime

__all__ = ["AuditBase", "AuditCheckpoint", "AuditExport", "AuditRecordRow"]


class AuditBase(DeclarativeBase):
    pass


class AuditRecordRow(AuditBase):
    """One chained record; `record` is its canonical JSON, exactly as hashed and exported."""

    __tablename__ = "audit_records"
    __table_args__ = (
        UniqueConstraint("chain", "seq"),  # two writers cannot fork a chain
        Index("ix_audit_records_chain_time", "chain", "time"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chain: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    hash: Mapped[str] = mapped_column(String(64))
    record: Mapped[str] = mapped_column(Text)


class AuditCheckpoint(AuditBase):
    """A signed statement "chain C had seq S with hash H at time T"."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chain: Mapped[str] = mapped_column(String(64), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    key_fingerprint: Mapped[str] = mapped_column(String(80))
    signature: Mapped[str] = mapped_column(Text)  # base64


class AuditExport(AuditBase):
    """Each export's manifest hash, so the next manifest can name its predecessor."""

    __tablename__ = "audit_exports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
