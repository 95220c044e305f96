"""The compliance officer's report: one self-contained HTML page about an audit export.

`render_export` verifies first, with `verify_export` and the same trust rules as `tacet audit
verify`, counting each file's records into a `Tally` as that file verifies (one pass, one file in
memory at a time); then it writes the page incrementally from `report.html.j2` (jinja2,
autoescaped). A failed check renders a failing verdict naming the first bad record, and nothing
from the records. `live_page` does the same for the gateway's `GET /v1/audit/report`: the
caller's own chain read from the log in batches, its hash chain checked as it streams (the live
log is not signed; a signed export is the evidence).

Metadata only: every value shown comes through `record_fields` (the ZDR allowlist) or from the
manifest; the page holds no script, font, image or link to anything outside itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import partial
from importlib import resources
from typing import Any, TextIO

import jinja2

from compliance.audit._report_chart import Chart, bar_chart, format_time, width_label
from compliance.audit._report_tally import MAX_BUCKETS, STATUS_CLASSES, Tally
from compliance.audit.chain import GENESIS, Link, check_run, link_of
from compliance.audit.errors import VerificationError
from compliance.audit.export import MANIFEST
from compliance.audit.record import FIELD_NOTES, AuditEvent
from compliance.audit.storage import Source
from compliance.audit.verify import verify_export
from compliance.zdr import ALLOWED_FIELDS, REDACTED

__all__ = ["CONTENT_SECURITY_POLICY", "Verdict", "live_page", "render_export", "zdr_fields"]

# Also sent as a header by the gateway: the page may load nothing, run nothing.
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_TENANT_CHARTS = 12
_OPERATION_CHARTS = 16
_BATCH = 500


@dataclass(frozen=True)
class Verdict:
    verified: bool
    kind: str  # "signed export" or "live audit log"
    reason: str = ""
    first_bad: str = ""


@dataclass
class Facts:
    """What the page states about where the records came from (manifest or query)."""

    period: tuple[str, str] = ("", "")
    target: str = ""
    fingerprint: str | None = None
    algorithm: str | None = None
    created: str | None = None
    manifest_sha256: str | None = None
    previous_manifest: str | None = None
    files: int | None = None
    records: int | None = None
    chains: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    every_chain: bool = False  # the export holds every chain, `system` (starts, flags) too
    storage: dict[str, dict[str, Any]] = field(default_factory=dict)


def zdr_fields() -> list[tuple[str, str]]:
    """(field, what it holds) for every field an audit record can carry, from AuditEvent and the
    allowlist the code enforces; a field off the allowlist would not be listed (nor written)."""
    names = [f.name for f in fields(AuditEvent) if f.name != "activity"]
    rows = [(n, FIELD_NOTES[n]) for n in names if n in ALLOWED_FIELDS]
    return [
        ("time", "when the event was recorded (UTC, milliseconds)"),
        *rows,
        ("dropped_fields", "how many fields the allowlist dropped on write (a count, no names)"),
        ("chain.seq, chain.prev, chain.hash", "the record's place in its hash chain"),
    ]


# ---- a signed export ----------------------------------------------------------------------


def _manifest_facts(source: Source, report: Any, target: str) -> Facts:
    body = source.get(MANIFEST)
    if hashlib.sha256(body).hexdigest() != report.manifest_sha256:
        raise VerificationError("manifest.json changed while it was checked", MANIFEST)
    manifest = json.loads(body)
    return Facts(
        period=report.range,
        target=target,
        fingerprint=report.key,
        algorithm=str(manifest.get("signer", {}).get("algorithm", "")),
        created=str(manifest.get("created", "")),
        manifest_sha256=report.manifest_sha256,
        previous_manifest=report.previous_manifest,
        files=report.files,
        records=report.records,
        chains=dict(report.chains),
        storage=dict(report.storage),
        every_chain=manifest.get("tenant") is None,
    )


def render_export(
    source: Source,
    out: TextIO,
    *,
    public_pem: bytes | None = None,
    pinned: str | None = None,
    target: str = "",
) -> Verdict:
    """Verify the export, then write its page to `out`; the verdict says which page it was.
    AuditError other than VerificationError (unreadable trusted key, S3 errors) propagates."""
    tally = Tally()

    def observe(entry: dict[str, Any], records: list[Any]) -> None:
        for record in records:
            tally.add(record, str(entry["chain"]))

    try:
        report = verify_export(source, public_pem=public_pem, pinned=pinned, on_file=observe)
        facts = _manifest_facts(source, report, target)
        verdict = Verdict(True, "signed export")
    except VerificationError as exc:
        verdict = Verdict(False, "signed export", exc.reason, exc.first_bad)
        facts, tally = Facts(target=target), Tally()  # nothing from an export that fails
    for chunk in page_chunks(verdict, facts, tally):
        out.write(chunk)
    return verdict


# ---- the live log (GET /v1/audit/report) --------------------------------------------------


async def live_page(
    records: AsyncIterable[Any], *, chain: str, start: datetime, end: datetime
) -> Iterator[str]:
    """Read and chain-check `records` (one chain, by seq) in batches, then return the page."""
    tally, anchor, seen = Tally(), None, 0
    verdict = Verdict(True, "live audit log")
    batch: list[Any] = []

    def flush() -> Verdict | None:
        nonlocal anchor, seen
        first = link_of(batch[0])
        if anchor is None and first is not None and first.seq == 1:
            anchor = Link(0, "", GENESIS)  # a chain's first record follows the genesis hash
        broken = check_run(batch, anchor)
        if broken is not None:
            place = seen + broken.index + 1
            where = f"chain {chain} seq {broken.seq} (record {place} of the period)"
            return Verdict(False, "live audit log", broken.reason, where)
        for record in batch:
            tally.add(record, chain)
        anchor, seen = link_of(batch[-1]), seen + len(batch)
        batch.clear()
        return None

    async for record in records:
        batch.append(record)
        if len(batch) >= _BATCH and (failed := flush()) is not None:
            verdict = failed
            break
    if verdict.verified and batch and (failed := flush()) is not None:
        verdict = failed
    if not verdict.verified:
        tally = Tally()
    facts = Facts(period=(_iso(start), _iso(end)), records=tally.records,
                  chains={chain: _seq_span(tally, chain)} if tally.records else {})
    return page_chunks(verdict, facts, tally)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seq_span(tally: Tally, chain: str) -> tuple[Any, Any]:
    return (tally.first_seq.get(chain), tally.last_seq.get(chain))


# ---- the page -----------------------------------------------------------------------------


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        autoescape=True,  # every value is escaped; the template marks nothing safe
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = format_time
    env.filters["minute"] = partial(format_time, precise=False)
    return env


_TEMPLATE = _environment().from_string(
    resources.files("compliance.audit").joinpath("report.html.j2").read_text(encoding="utf-8")
)


def _group_rows(tally: Tally, group: str) -> list[dict[str, Any]]:
    rows = [
        {"key": key, "counts": counts.total, "total": sum(counts.total),
         "first": counts.first, "last": counts.last}
        for (g, key), counts in tally.groups.items() if g == group
    ]
    return sorted(rows, key=lambda r: (-r["total"], r["key"]))


def _charts(tally: Tally, group: str, rows: list[dict[str, Any]], limit: int) -> list[Chart]:
    return [bar_chart(tally, group, r["key"], r["key"], width=448, height=160)
            for r in rows[:limit]]


def page_chunks(verdict: Verdict, facts: Facts, tally: Tally) -> Iterator[str]:
    """The page, as the template generates it (written out chunk by chunk)."""
    tenants, operations = _group_rows(tally, "tenant"), _group_rows(tally, "operation")
    overall = tally.groups.get(("all", ""))
    context = {
        "verdict": verdict,
        "facts": facts,
        "generated": format_time(int(datetime.now(UTC).timestamp() * 1000)),
        "classes": STATUS_CLASSES,
        "tally": tally,
        "overall": overall.total if overall else [0] * len(STATUS_CLASSES),
        "span": (overall.first, overall.last) if overall else (None, None),
        "overall_chart": bar_chart(tally, "all", "", "All records", width=900, height=240),
        "bucket": width_label(tally.width_ms),
        "max_buckets": MAX_BUCKETS,
        "tenants": tenants,
        "tenant_charts": _charts(tally, "tenant", tenants, _TENANT_CHARTS),
        "operations": operations,
        "operation_charts": _charts(tally, "operation", operations, _OPERATION_CHARTS),
        "admin": sorted(tally.admin, key=lambda r: (r.time or 0, r.tenant)),
        "starts": sorted(tally.starts, key=lambda r: r.time or 0),
        "unsafe": sorted(tally.unsafe, key=lambda r: r.time or 0),
        "zdr_fields": zdr_fields(),
        "redacted": REDACTED,
        "csp": CONTENT_SECURITY_POLICY,
    }
    return _TEMPLATE.generate(**context)
