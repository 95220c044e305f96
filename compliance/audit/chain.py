"""The hash chain: canonical JSON, record hashes, and the walk that checks a run of records.

Each chain (one per tenant, plus `system`) is a sequence 1, 2, 3...; a record's `chain.prev` is
the previous record's `chain.hash` (GENESIS for seq 1) and `chain.hash` is SHA-256 over the
canonical JSON of the record with `chain.hash` removed (sorted keys, no whitespace, UTF-8). A
per-tenant chain keeps a tenant's export contiguous, so it verifies without other tenants' data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["GENESIS", "ChainBreak", "Link", "canonical", "check_run", "record_hash", "seal"]

GENESIS = "0" * 64


def canonical(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 over the record with `chain.hash` left out."""
    chain = {k: v for k, v in record.get("chain", {}).items() if k != "hash"}
    return hashlib.sha256(canonical({**record, "chain": chain})).hexdigest()


def seal(body: dict[str, Any], seq: int, prev: str) -> dict[str, Any]:
    """The body with its chain link; `chain.hash` covers everything else."""
    record = {**body, "chain": {"seq": seq, "prev": prev}}
    record["chain"]["hash"] = record_hash(record)
    return record


@dataclass(frozen=True)
class Link:
    seq: int
    prev: str
    hash: str


@dataclass(frozen=True)
class ChainBreak:
    index: int  # position in the run
    seq: object  # the seq the record claims (may be missing or malformed)
    reason: str


def link_of(record: Any) -> Link | None:
    chain = record.get("chain") if isinstance(record, dict) else None
    if not isinstance(chain, dict):
        return None
    seq, prev, digest = chain.get("seq"), chain.get("prev"), chain.get("hash")
    if not isinstance(seq, int) or not isinstance(prev, str) or not isinstance(digest, str):
        return None
    return Link(seq, prev, digest)


def check_run(records: Iterable[Any], first: Link | None = None) -> ChainBreak | None:
    """The first record that breaks the chain, given the link expected before the run.

    `first` is (seq - 1, _, hash) of the record before the run, or None to accept the run's
    first record as an anchor (its own hash is still recomputed).
    """
    expected_seq = first.seq + 1 if first else None
    expected_prev = first.hash if first else None
    for index, record in enumerate(records):
        link = link_of(record)
        if link is None:
            return ChainBreak(index, None, "record has no valid chain field")
        if record_hash(record) != link.hash:
            return ChainBreak(index, link.seq, "hash does not match the record's content")
        if expected_seq is not None and link.seq != expected_seq:
            return ChainBreak(index, link.seq, f"seq {link.seq} where {expected_seq} was due")
        if expected_prev is not None and link.prev != expected_prev:
            return ChainBreak(index, link.seq, "prev does not match the previous record's hash")
        expected_seq, expected_prev = link.seq + 1, link.hash
    return None
