"""Taxonomy import (JSON, CSV), validation that reports every bad row at once, and diff.

Errors name rows by position (`row 7` of a CSV, `facets[0].labels[3]` of JSON) and a stable
code, never by echoing the submitted values: the same error object can become a problem+json
body without carrying request content (DESIGN.md, HTTP API).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CSV_COLUMNS",
    "Facet",
    "Label",
    "Problem",
    "Taxonomy",
    "TaxonomyDiff",
    "TaxonomyInvalid",
    "diff",
    "parse_csv",
    "parse_json",
    "parse_reference",
]

CSV_COLUMNS = ("facet", "id", "name", "description", "parent")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # same shape as the ZDR allowlist's taxonomy
VERSION_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_LABEL_ID_RE = re.compile(r"^[^\s\x00-\x1f\x7f]{1,128}$")


class TaxonomyError(ValueError):
    """Base of taxonomy import errors."""


@dataclass(frozen=True)
class Problem:
    """One bad row: where (`location`), what (`code`, stable) and a constant explanation."""

    location: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"location": self.location, "code": self.code, "message": self.message}


class TaxonomyInvalid(TaxonomyError):
    """Every problem found in one import, in document order."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__(f"taxonomy has {len(self.problems)} problem(s)")


@dataclass(frozen=True)
class Label:
    id: str
    name: str
    description: str = ""
    parent: str | None = None


@dataclass(frozen=True)
class Facet:
    name: str
    labels: tuple[Label, ...]
    multi: bool = False


@dataclass(frozen=True)
class Taxonomy:
    name: str
    version: str | None
    facets: tuple[Facet, ...]

    def to_document(self) -> dict[str, Any]:
        """The DESIGN.md JSON shape (empty descriptions and absent parents left out)."""
        facets = []
        for facet in self.facets:
            labels = []
            for label in facet.labels:
                item: dict[str, Any] = {"id": label.id, "name": label.name}
                if label.description:
                    item["description"] = label.description
                if label.parent is not None:
                    item["parent"] = label.parent
                labels.append(item)
            facets.append({"name": facet.name, "multi": facet.multi, "labels": labels})
        doc: dict[str, Any] = {"name": self.name, "facets": facets}
        if self.version is not None:
            doc["version"] = self.version
        return doc

    def with_version(self, version: str | None) -> Taxonomy:
        return Taxonomy(name=self.name, version=version, facets=self.facets)


def parse_reference(reference: str) -> tuple[str, str | None]:
    """`name` -> (name, None); `name@version` -> (name, version); TaxonomyError otherwise."""
    name, sep, version = reference.partition("@")
    if not NAME_RE.fullmatch(name) or (sep and not VERSION_RE.fullmatch(version)):
        raise TaxonomyError("a taxonomy reference is `name` or `name@version`")
    return name, (version if sep else None)


# --- validation ----------------------------------------------------------------------------


@dataclass
class _Row:
    """A label with where it came from, before validation."""

    location: str
    facet: str
    id: str
    name: str
    description: str
    parent: str | None


@dataclass
class _Draft:
    name: Any
    version: Any
    facets: list[tuple[str, str, bool]] = field(default_factory=list)  # (location, name, multi)
    rows: list[_Row] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def problem(self, location: str, code: str, message: str) -> None:
        self.problems.append(Problem(location, code, message))


def _check_header(draft: _Draft) -> None:
    if not isinstance(draft.name, str) or not NAME_RE.fullmatch(draft.name):
        draft.problem("name", "invalid_name", "taxonomy name must match [A-Za-z0-9_.-]{1,64}")
    if draft.version is not None and (
        not isinstance(draft.version, str) or not VERSION_RE.fullmatch(draft.version)
    ):
        draft.problem("version", "invalid_version", "version must match [A-Za-z0-9_.-]{1,32}")
    if not draft.facets:
        draft.problem("facets", "no_facets", "a taxonomy needs at least one facet")


def _check_facets(draft: _Draft) -> None:
    seen: dict[str, str] = {}
    counts = {name: 0 for _, name, _ in draft.facets}
    for row in draft.rows:
        counts[row.facet] = counts.get(row.facet, 0) + 1
    for location, name, _ in draft.facets:
        if not name:
            draft.problem(location, "missing_facet", "facet name is empty")
            continue
        if not NAME_RE.fullmatch(name):
            draft.problem(location, "invalid_facet", "facet name must match [A-Za-z0-9_.-]{1,64}")
        if name in seen:
            draft.problem(location, "duplicate_facet", f"facet repeats {seen[name]}")
        else:
            seen[name] = location
        if counts.get(name, 0) == 0:
            draft.problem(location, "empty_facet", "facet has no labels")


def _check_rows(draft: _Draft) -> dict[tuple[str, str], _Row]:
    first: dict[tuple[str, str], _Row] = {}
    for row in draft.rows:
        if not row.facet:
            draft.problem(row.location, "missing_facet", "row has no facet")
        if not row.id:
            draft.problem(row.location, "missing_id", "label has no id")
        elif not _LABEL_ID_RE.fullmatch(row.id):
            draft.problem(row.location, "invalid_id", "label id has spaces or control characters")
        if not row.name.strip():
            draft.problem(row.location, "missing_name", "label has no name")
        if not row.id:
            continue
        key = (row.facet, row.id)
        if key in first:
            draft.problem(row.location, "duplicate_id", f"label id repeats {first[key].location}")
        else:
            first[key] = row
    return first


def _check_parents(draft: _Draft, labels: Mapping[tuple[str, str], _Row]) -> None:
    for row in draft.rows:
        if row.parent is None or not row.id:
            continue
        if row.parent == row.id:
            draft.problem(row.location, "cycle", "label is its own parent")
        elif (row.facet, row.parent) not in labels:
            draft.problem(row.location, "unknown_parent", "parent is not a label of this facet")
    # Cycles longer than one: walk parent chains once each (done = known to reach a root or a
    # reported loop), so the check stays linear in the number of labels.
    on_cycle: set[tuple[str, str]] = set()
    done: set[tuple[str, str]] = set()
    for start in labels:
        path: dict[tuple[str, str], int] = {}  # node -> position on the current walk
        node: tuple[str, str] | None = start
        while node is not None and node in labels and node not in done and node not in path:
            path[node] = len(path)
            parent = labels[node].parent
            node = (node[0], parent) if parent is not None else None
        if node is not None and node in path:
            loop = list(path)[path[node] :]
            if len(loop) > 1:
                on_cycle.update(loop)
        done.update(path)
    order = {id(row): i for i, row in enumerate(draft.rows)}
    for key in sorted(on_cycle, key=lambda k: order[id(labels[k])]):
        draft.problem(labels[key].location, "cycle", "label is on a parent cycle")


def _build(draft: _Draft) -> Taxonomy:
    _check_header(draft)
    _check_facets(draft)
    labels = _check_rows(draft)
    _check_parents(draft, labels)
    if draft.problems:
        raise TaxonomyInvalid(draft.problems)
    facets = []
    for _, facet_name, multi in draft.facets:
        members = tuple(
            Label(id=r.id, name=r.name.strip(), description=r.description, parent=r.parent)
            for r in draft.rows
            if r.facet == facet_name
        )
        facets.append(Facet(name=facet_name, labels=members, multi=multi))
    return Taxonomy(name=draft.name, version=draft.version, facets=tuple(facets))


# --- readers -------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse_json(source: str | bytes | Mapping[str, Any]) -> Taxonomy:
    """A taxonomy in the DESIGN.md JSON shape, or TaxonomyInvalid listing every problem."""
    if isinstance(source, str | bytes):
        try:
            source = json.loads(source)
        except (ValueError, UnicodeDecodeError):
            raise TaxonomyInvalid([Problem("$", "invalid_json", "not JSON")]) from None
    if not isinstance(source, Mapping):
        raise TaxonomyInvalid([Problem("$", "invalid_shape", "a taxonomy is a JSON object")])
    version = source.get("version")
    draft = _Draft(name=source.get("name"), version=str(version) if version is not None else None)
    facets = source.get("facets")
    if not isinstance(facets, list):
        facets = []
    for f_index, facet in enumerate(facets):
        location = f"facets[{f_index}]"
        if not isinstance(facet, Mapping):
            draft.problem(location, "invalid_shape", "a facet is an object")
            continue
        facet_name = _text(facet.get("name"))
        draft.facets.append((location, facet_name, facet.get("multi") is True))
        labels = facet.get("labels")
        for l_index, label in enumerate(labels if isinstance(labels, list) else []):
            l_location = f"{location}.labels[{l_index}]"
            if not isinstance(label, Mapping):
                draft.problem(l_location, "invalid_shape", "a label is an object")
                continue
            parent = label.get("parent")
            draft.rows.append(
                _Row(
                    location=l_location,
                    facet=facet_name,
                    id=_text(label.get("id")),
                    name=_text(label.get("name")),
                    description=_text(label.get("description")),
                    parent=parent if isinstance(parent, str) and parent else None,
                )
            )
    return _build(draft)


def parse_csv(source: str, *, name: str, version: str | None = None) -> Taxonomy:
    """CSV with a header `facet,id,name,description,parent` (any order); row numbers count
    the header as row 1, as a spreadsheet shows them. Facets keep their first-seen order."""
    source = source.removeprefix("\ufeff")  # spreadsheets often save a UTF-8 byte-order mark
    reader = csv.DictReader(io.StringIO(source, newline=""))
    header = tuple(reader.fieldnames or ())
    if sorted(header) != sorted(CSV_COLUMNS):
        raise TaxonomyInvalid(
            [Problem("row 1", "invalid_header", f"CSV columns must be {','.join(CSV_COLUMNS)}")]
        )
    draft = _Draft(name=name, version=version)
    seen_facets: set[str] = set()
    for index, record in enumerate(reader, start=2):
        location = f"row {index}"
        if None in record or any(v is None for v in record.values()):
            draft.problem(location, "invalid_row", "row has a different number of columns")
            continue
        facet = record["facet"].strip()
        if facet and facet not in seen_facets:
            seen_facets.add(facet)
            draft.facets.append((location, facet, False))
        parent = record["parent"].strip()
        draft.rows.append(
            _Row(
                location=location,
                facet=facet,
                id=record["id"].strip(),
                name=record["name"],
                description=record["description"].strip(),
                parent=parent or None,
            )
        )
    return _build(draft)


# --- diff ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaxonomyDiff:
    """Labels keyed by (facet, id). `renamed`: (facet, id, old name, new name);
    `moved`: (facet, id, old parent, new parent)."""

    added: tuple[tuple[str, str], ...]
    removed: tuple[tuple[str, str], ...]
    renamed: tuple[tuple[str, str, str, str], ...]
    moved: tuple[tuple[str, str, str | None, str | None], ...]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.renamed or self.moved)


def _index(taxonomy: Taxonomy) -> dict[tuple[str, str], Label]:
    return {(f.name, label.id): label for f in taxonomy.facets for label in f.labels}


def diff(a: Taxonomy, b: Taxonomy) -> TaxonomyDiff:
    """What changed from `a` to `b`, each list sorted by (facet, id)."""
    old, new = _index(a), _index(b)
    common = sorted(old.keys() & new.keys())
    return TaxonomyDiff(
        added=tuple(sorted(new.keys() - old.keys())),
        removed=tuple(sorted(old.keys() - new.keys())),
        renamed=tuple((*k, old[k].name, new[k].name) for k in common if old[k].name != new[k].name),
        moved=tuple(
            (*k, old[k].parent, new[k].parent) for k in common if old[k].parent != new[k].parent
        ),
    )
