"""Taxonomy import from JSON and CSV, validation reporting every bad row, references, diff."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.taxonomy_io import (
    Label,
    Taxonomy,
    TaxonomyInvalid,
    diff,
    parse_csv,
    parse_json,
    parse_reference,
)

ROOT = Path(__file__).resolve().parents[2]
HEADER = "facet,id,name,description,parent\n"


def _codes(info: pytest.ExceptionInfo[TaxonomyInvalid]) -> list[tuple[str, str]]:
    return [(p.location, p.code) for p in info.value.problems]


@pytest.mark.parametrize("path", sorted((ROOT / "models" / "taxonomies").glob("*.json")))
def test_bundled_taxonomies_round_trip(path: Path) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    taxonomy = parse_json(path.read_text(encoding="utf-8"))
    assert taxonomy.name == document["name"] and taxonomy.version == document["version"]
    assert parse_json(taxonomy.to_document()) == taxonomy
    assert sum(len(f.labels) for f in taxonomy.facets) == sum(
        len(f["labels"]) for f in document["facets"]
    )


def test_csv_import_builds_the_design_shape() -> None:
    text = HEADER + (
        "subject,medicine,Medicine,,\n"
        'subject,cardiology,Cardiology,"Heart, and vessels",medicine\n'
        "audience,clinician,Clinician,People who treat,\n"
    )
    taxonomy = parse_csv(text, name="subjects", version="3")
    document = taxonomy.to_document()
    assert document["name"] == "subjects" and document["version"] == "3"
    assert [f["name"] for f in document["facets"]] == ["subject", "audience"]
    cardiology = document["facets"][0]["labels"][1]
    assert cardiology == {
        "id": "cardiology",
        "name": "Cardiology",
        "description": "Heart, and vessels",
        "parent": "medicine",
    }


def test_csv_columns_may_come_in_any_order() -> None:
    text = "id,facet,parent,name,description\nx,f,,X,\n"
    assert parse_csv(text, name="t").facets[0].labels == (Label("x", "X"),)
    assert parse_csv("\ufeff" + text, name="t").facets[0].labels == (Label("x", "X"),)


def test_csv_reports_every_bad_row_in_one_error() -> None:
    text = HEADER + (
        "subject,medicine,Medicine,,\n"  # row 2: fine
        "subject,medicine,Again,,\n"  # row 3: duplicate id
        "subject,cardiology,Cardiology,,nowhere\n"  # row 4: unknown parent
        ",orphan,Orphan,,\n"  # row 5: empty facet
        "subject,nameless,,,\n"  # row 6: missing name
        "subject,a,A,,b\n"  # row 7: cycle a -> b -> a
        "subject,b,B,,a\n"  # row 8: cycle
        "subject,self,Self,,self\n"  # row 9: own parent
        "subject,bad id,Bad,,\n"  # row 10: whitespace in id
    )
    with pytest.raises(TaxonomyInvalid) as info:
        parse_csv(text, name="subjects")
    assert sorted(_codes(info)) == sorted(
        [
            ("row 3", "duplicate_id"),
            ("row 4", "unknown_parent"),
            ("row 5", "missing_facet"),
            ("row 6", "missing_name"),
            ("row 7", "cycle"),
            ("row 8", "cycle"),
            ("row 9", "cycle"),
            ("row 10", "invalid_id"),
        ]
    )
    # The duplicate names the first occurrence; nothing echoes submitted values.
    duplicate = next(p for p in info.value.problems if p.code == "duplicate_id")
    assert "row 2" in duplicate.message
    rendered = json.dumps([p.as_dict() for p in info.value.problems])
    for value in ("Again", "nowhere", "orphan", "nameless", "bad id"):
        assert value not in rendered


def test_csv_with_wrong_header_or_ragged_rows() -> None:
    with pytest.raises(TaxonomyInvalid) as info:
        parse_csv("facet,id,name\nf,x,X\n", name="t")
    assert _codes(info) == [("row 1", "invalid_header")]
    with pytest.raises(TaxonomyInvalid) as info:
        parse_csv(HEADER + "f,x,X,,\nf,y,Y,,,extra\nf,z\n", name="t")
    assert _codes(info) == [("row 3", "invalid_row"), ("row 4", "invalid_row")]


def test_json_reports_every_problem_with_its_path() -> None:
    document = {
        "name": "bad name!",
        "version": "1",
        "facets": [
            {"name": "empty", "labels": []},
            {"name": "", "labels": [{"id": "x", "name": "X"}]},
            {
                "name": "subject",
                "labels": [
                    {"id": "a", "name": "A", "parent": "zzz"},
                    {"id": "a", "name": "A2"},
                    {"name": "no id"},
                    "not an object",
                ],
            },
            {"name": "subject", "labels": [{"id": "q", "name": "Q"}]},
        ],
    }
    with pytest.raises(TaxonomyInvalid) as info:
        parse_json(document)
    assert sorted(_codes(info)) == sorted(
        [
            ("name", "invalid_name"),
            ("facets[0]", "empty_facet"),
            ("facets[1]", "missing_facet"),
            ("facets[1].labels[0]", "missing_facet"),
            ("facets[2].labels[0]", "unknown_parent"),
            ("facets[2].labels[1]", "duplicate_id"),
            ("facets[2].labels[2]", "missing_id"),
            ("facets[2].labels[3]", "invalid_shape"),
            ("facets[3]", "duplicate_facet"),
        ]
    )


def test_json_without_facets_or_not_json() -> None:
    with pytest.raises(TaxonomyInvalid) as info:
        parse_json('{"name": "t", "facets": []}')
    assert _codes(info) == [("facets", "no_facets")]
    with pytest.raises(TaxonomyInvalid) as info:
        parse_json("{nope")
    assert _codes(info) == [("$", "invalid_json")]
    with pytest.raises(TaxonomyInvalid):
        parse_json("[1, 2]")


def test_long_parent_chain_is_not_a_cycle_and_long_cycle_is() -> None:
    rows = [f"f,n{i},N{i},,{f'n{i - 1}' if i else ''}" for i in range(2000)]
    taxonomy = parse_csv(HEADER + "\n".join(rows) + "\n", name="deep")
    assert len(taxonomy.facets[0].labels) == 2000
    loop = [f"f,c{i},C{i},,c{(i + 1) % 50}" for i in range(50)]
    with pytest.raises(TaxonomyInvalid) as info:
        parse_csv(HEADER + "\n".join(loop) + "\n", name="loop")
    assert [c for _, c in _codes(info)] == ["cycle"] * 50


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("subjects", ("subjects", None)),
        ("subjects@3", ("subjects", "3")),
        ("a.b@v-1", ("a.b", "v-1")),
    ],
)
def test_parse_reference(reference: str, expected: tuple[str, str | None]) -> None:
    assert parse_reference(reference) == expected


@pytest.mark.parametrize("reference", ["", "@3", "subjects@", "a b", "x@y@z", "../etc"])
def test_parse_reference_rejects_malformed(reference: str) -> None:
    with pytest.raises(ValueError):
        parse_reference(reference)


def _taxonomy(*labels: tuple[str, str, str | None]) -> Taxonomy:
    rows = "".join(f"f,{i},{n},,{p or ''}\n" for i, n, p in labels)
    return parse_csv(HEADER + rows, name="t")


def test_diff_lists_added_removed_renamed_and_moved() -> None:
    a = _taxonomy(("root", "Root", None), ("x", "X", "root"), ("gone", "Gone", None))
    b = _taxonomy(("root", "Root", None), ("x", "Ex", None), ("new", "New", "root"))
    change = diff(a, b)
    assert change.added == (("f", "new"),)
    assert change.removed == (("f", "gone"),)
    assert change.renamed == (("f", "x", "X", "Ex"),)
    assert change.moved == (("f", "x", "root", None),)
    assert not change.empty and diff(a, a).empty
