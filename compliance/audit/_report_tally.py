"""The report's aggregation: one pass over records, counts into time buckets, bounded memory.

`Tally.add(record, chain)` reads a record only through `record_fields` (the ZDR allowlist again),
so the report can show nothing a record could not hold. Memory does not grow with the number of
records: activity is counted per (group, key, time bucket, status class) with at most
MAX_BUCKETS buckets (the bucket width grows, merging buckets, when the records span more time),
and the listed rows (starts, unsafe flags, admin acts) stop at MAX_ROWS each, with a count of the
rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from compliance.audit.record import Activity, AuditEvent, ocsf_body, record_fields
from compliance.zdr import REDACTED

__all__ = [
    "MAX_BUCKETS",
    "MAX_ROWS",
    "STATUS_CLASSES",
    "AdminRow",
    "ConfigRow",
    "Tally",
    "status_class",
]

STATUS_CLASSES = ("2xx", "4xx", "429", "5xx", "503", "other")  # 429 and 503 apart from 4xx/5xx
MAX_BUCKETS = 60  # a day in hours, a month in days, a year in weeks
MAX_ROWS = 5000
_MINUTE = 60_000
# Bucket widths, each a whole multiple of the one before (so buckets merge exactly).
LADDER_MS = tuple(
    _MINUTE * m for m in (1, 5, 15, 60, 180, 360, 720, 1440, 10080, 40320, 524160)
)
_ADMIN_AREAS = ("tenants.", "keys.", "taxonomy.", "taxonomies.", "policy.", "admin.", "operator.")
_REQUEST_AREAS = ("admin.", "operator.", "taxonomies.")  # the HTTP call, not the act itself
_CHANGES = (int(Activity.CREATE), int(Activity.UPDATE), int(Activity.DELETE))


def status_class(status: Any) -> str:
    if not isinstance(status, int) or isinstance(status, bool):
        return "other"
    if status in (429, 503):
        return str(status)
    if 200 <= status < 300:
        return "2xx"
    if 400 <= status < 500:
        return "4xx"
    if 500 <= status < 600:
        return "5xx"
    return "other"


def _paths(value: Any, prefix: str = "") -> set[str]:
    if not isinstance(value, dict):
        return {prefix}
    out: set[str] = set()
    for key, item in value.items():
        out |= _paths(item, f"{prefix}.{key}" if prefix else str(key))
    return out


def _known_paths() -> frozenset[str]:
    """Every field path a record written by this code can have: ocsf_body of an event with every
    field given, plus the chain link and the dropped-fields count."""
    probe = AuditEvent(
        "probe", 200, "r", "t", "k", Activity.CREATE, "m", "x@1", "diffusion", 1, 1, 1, 1.0,
        "192.0.2.1", "s", "h", 1,
    )
    body = ocsf_body(probe, 0)
    body["unmapped"]["dropped_fields"] = 1
    return frozenset(_paths({**body, "chain": {"seq": 1, "prev": "", "hash": ""}}))


_KNOWN = _known_paths()


@dataclass
class ConfigRow:
    time: int | None
    chain: str
    seq: Any
    operation: str
    setting: str | None
    gateway: str


@dataclass
class AdminRow:
    time: int | None
    tenant: str
    act: str
    key_id: str | None = None  # the key acted on (created, rotated to, revoked)
    by_key: str | None = None  # the caller's key, for acts made over the API
    taxonomy: str | None = None
    via: str = "CLI"
    status: Any = None
    request_id: str | None = None


@dataclass
class _Counts:
    total: list[int] = field(default_factory=lambda: [0] * len(STATUS_CLASSES))
    first: int | None = None
    last: int | None = None

    def add(self, cls: int, time: int | None) -> None:
        self.total[cls] += 1
        if time is not None:
            self.first = time if self.first is None else min(self.first, time)
            self.last = time if self.last is None else max(self.last, time)


class Tally:
    def __init__(self) -> None:
        self.records = 0
        self.untimed = 0
        self.width_ms = LADDER_MS[0]
        self.lo: int | None = None  # bucket index range seen
        self.hi: int | None = None
        self.buckets: dict[tuple[str, str, int], list[int]] = {}  # (group, key, idx) -> counts
        self.groups: dict[tuple[str, str], _Counts] = {}  # ("tenant"|"operation"|"all", key)
        self.chains: dict[str, int] = {}  # chain -> records
        self.first_seq: dict[str, int] = {}
        self.last_seq: dict[str, int] = {}
        self.starts: list[ConfigRow] = []
        self.unsafe: list[ConfigRow] = []
        self.admin: list[AdminRow] = []
        self.more = {"starts": 0, "unsafe": 0, "admin": 0}
        self.redacted = 0  # records with a value the allowlist replaced
        self.dropped = 0  # records that say fields were dropped on write
        self.unexpected = 0  # records with a field path this code never writes
        self._pending: dict[str, AdminRow] = {}

    # ---- time buckets ------------------------------------------------------------------------

    def _bucket(self, time: int) -> int:
        while True:
            index = time // self.width_ms
            lo = index if self.lo is None else min(self.lo, index)
            hi = index if self.hi is None else max(self.hi, index)
            if hi - lo + 1 <= MAX_BUCKETS or self.width_ms == LADDER_MS[-1]:
                self.lo, self.hi = lo, hi
                return index
            wider = LADDER_MS[LADDER_MS.index(self.width_ms) + 1]
            self._merge(wider // self.width_ms)
            self.width_ms = wider

    def _merge(self, factor: int) -> None:
        merged: dict[tuple[str, str, int], list[int]] = {}
        for (group, key, index), counts in self.buckets.items():
            into = merged.setdefault((group, key, index // factor), [0] * len(STATUS_CLASSES))
            for i, n in enumerate(counts):
                into[i] += n
        self.buckets = merged
        if self.lo is not None and self.hi is not None:
            self.lo, self.hi = self.lo // factor, self.hi // factor

    def _count(self, group: str, key: str, index: int | None, cls: int, time: int | None) -> None:
        self.groups.setdefault((group, key), _Counts()).add(cls, time)
        if index is not None:
            self.buckets.setdefault((group, key, index), [0] * len(STATUS_CLASSES))[cls] += 1

    # ---- one record --------------------------------------------------------------------------

    def add(self, record: Any, chain: str) -> None:
        f = record_fields(record)
        raw_time = record.get("time") if isinstance(record, dict) else None
        time = raw_time if isinstance(raw_time, int) and not isinstance(raw_time, bool) else None
        cls = STATUS_CLASSES.index(status_class(f.get("status")))
        operation = str(f.get("operation", REDACTED))
        index = self._bucket(time) if time is not None else None
        self.records += 1
        self.untimed += time is None
        self.chains[chain] = self.chains.get(chain, 0) + 1
        for group, key in (("all", ""), ("tenant", chain), ("operation", operation)):
            self._count(group, key, index, cls, time)
        self.redacted += REDACTED in f.values()
        self.dropped += bool(isinstance(record, dict) and record_dropped(record))
        self.unexpected += not _paths(record) <= _KNOWN
        link = record.get("chain") if isinstance(record, dict) else None
        seq = link.get("seq") if isinstance(link, dict) else None
        if isinstance(seq, int):
            self.first_seq.setdefault(chain, seq)
            self.last_seq[chain] = seq
        if operation in ("config.start", "config.unsafe_flag"):
            self._config(f, time, chain, seq)
        elif operation.startswith(_ADMIN_AREAS) and record.get("activity_id") in _CHANGES:
            self._admin(f, time, chain)

    def _config(self, f: dict[str, Any], time: int | None, chain: str, seq: Any) -> None:
        host, port = f.get("hostname"), f.get("port")
        gateway = f"{host}:{port}" if host and port is not None else str(host or "not recorded")
        row = ConfigRow(time, chain, seq, str(f["operation"]), f.get("setting"), gateway)
        rows, name = (self.starts, "starts") if row.operation == "config.start" else (
            self.unsafe, "unsafe")
        if len(rows) < MAX_ROWS:
            rows.append(row)
        else:
            self.more[name] += 1

    def _admin(self, f: dict[str, Any], time: int | None, chain: str) -> None:
        """One row per act: the act's own record (key acted on) and its HTTP call's record
        (caller's key, final status) share a request id and are merged."""
        operation, request_id = str(f["operation"]), f.get("request_id")
        request_id = request_id if isinstance(request_id, str) else None
        row = self._pending.get(request_id) if request_id else None
        if row is None:
            if len(self.admin) >= MAX_ROWS:
                self.more["admin"] += 1
                return
            row = AdminRow(time, chain, operation, request_id=request_id)
            self.admin.append(row)
            if request_id:
                self._pending[request_id] = row
        if operation.startswith(_REQUEST_AREAS):
            row.via, row.by_key, row.status = "API", f.get("key_id"), f.get("status")
            row.taxonomy = row.taxonomy or f.get("taxonomy")
        else:
            row.act, row.key_id, row.time = operation, f.get("key_id"), time
            row.tenant = str(f.get("tenant_id") or chain)
            row.taxonomy = f.get("taxonomy") or row.taxonomy
            row.status = f.get("status") if row.status is None else row.status


def record_dropped(record: dict[str, Any]) -> bool:
    unmapped = record.get("unmapped")
    return isinstance(unmapped, dict) and bool(unmapped.get("dropped_fields"))
