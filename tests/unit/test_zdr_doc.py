"""docs/zdr.md against the code: the allowlist, span attributes, metrics, unsafe settings, tables.

Each documented table must list exactly what the code allows or stores: a field the code allows
but the page omits fails, and so does a documented field the code does not allow.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from compliance.audit.record import AuditEvent
from compliance.zdr import ALLOWED_FIELDS
from gateway.settings import UNSAFE_SETTINGS
from gateway.telemetry import METRICS, SPAN_ATTRIBUTES

DOC = Path(__file__).resolve().parents[2] / "docs" / "zdr.md"
_CODE = re.compile(r"`([^`]+)`")


def _section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"docs/zdr.md has no section '{title}'"
    return match.group(1)


def _rows(title: str) -> list[list[str]]:
    """Table rows of a section (header and rule skipped), as lists of cell texts."""
    rows = []
    for line in _section(title).splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[1:]


def _first_code(cell: str) -> str:
    match = _CODE.search(cell)
    assert match, cell
    return match.group(1)


def test_allowlist_is_documented_exactly() -> None:
    documented = [_first_code(row[0]) for row in _rows("Allowlisted fields")]
    assert len(documented) == len(set(documented))
    assert set(documented) == set(ALLOWED_FIELDS)


def test_span_attributes_are_documented_exactly() -> None:
    documented = {_first_code(row[0]): _first_code(row[1]) for row in _rows("Span attributes")}
    assert documented == dict(SPAN_ATTRIBUTES)


def test_metrics_are_documented_exactly() -> None:
    documented = {}
    for prometheus, otel, kind, labels in _rows("Metrics"):
        documented[_first_code(prometheus)] = (
            _first_code(otel), kind, tuple(_CODE.findall(labels))
        )
    in_code = {
        m.prometheus: (m.name, "counter" if m.kind == "observable_counter" else m.kind, m.labels)
        for m in METRICS
    }
    assert documented == in_code
    for _, _, labels in documented.values():
        assert set(labels) <= set(ALLOWED_FIELDS)


def test_unsafe_settings_are_documented_exactly() -> None:
    documented = {_first_code(row[0]): _first_code(row[2]) for row in _rows("Unsafe settings")}
    assert documented == {u.name: u.flag for u in UNSAFE_SETTINGS}


def test_audit_fields_are_allowlisted_and_documented() -> None:
    section = _section("Audit records")
    event_fields = {f.name for f in fields(AuditEvent)} - {"activity"}
    assert event_fields <= set(ALLOWED_FIELDS)
    for name in event_fields:
        assert f"`{name}`" in section, name


def test_database_tables_and_columns_are_documented_exactly() -> None:
    from gateway.store.audit_models import AuditRecordRow
    from gateway.store.models import Base

    in_code: dict[str, set[str]] = {}
    for metadata in (Base.metadata, AuditRecordRow.metadata):
        for table in metadata.sorted_tables:
            in_code[table.name] = {column.name for column in table.columns}
    documented = {
        _first_code(row[0]): set(_CODE.findall(row[1])) for row in _rows("Database")
    }
    assert documented == in_code
