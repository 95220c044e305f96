"""Delta reclassification rules (gateway/jobs/delta.py): which labels a diff touches, and which
records pass through unchanged."""

from __future__ import annotations

from typing import Any

from gateway.jobs.delta import DeltaPlan, touched_labels
from gateway.taxonomy_io import parse_json


def _taxonomy(version: str, facets: list[tuple[str, bool, list[dict[str, Any]]]]) -> Any:
    return parse_json(
        {
            "name": "subjects",
            "version": version,
            "facets": [{"name": n, "multi": m, "labels": labels} for n, m, labels in facets],
        }
    )


def _tree(*extra: dict[str, Any], skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """medicine > {cardio, neuro, onco}; law > {tax, trade}; plus `extra`, minus `skip`."""
    labels = [
        {"id": "medicine", "name": "Medicine"},
        {"id": "cardio", "name": "Cardiology", "parent": "medicine"},
        {"id": "neuro", "name": "Neurology", "parent": "medicine"},
        {"id": "onco", "name": "Oncology", "parent": "medicine"},
        {"id": "law", "name": "Law"},
        {"id": "tax", "name": "Tax law", "parent": "law"},
        {"id": "trade", "name": "Trade law", "parent": "law"},
    ]
    return [x for x in labels if x["id"] not in skip] + list(extra)


KIND = ("kind", True, [{"id": "trial", "name": "Trial"}, {"id": "review", "name": "Review"}])


def test_removed_renamed_and_moved_labels_are_touched() -> None:
    old = _taxonomy("1", [("subject", False, _tree())])
    changed = _tree(skip=("onco",))
    for label in changed:
        if label["id"] == "tax":
            label["name"] = "Taxation"
        if label["id"] == "trade":
            label["parent"] = "medicine"
    new = _taxonomy("2", [("subject", False, changed)])
    assert touched_labels(old, new) == {("subject", "onco"), ("subject", "tax"),
                                        ("subject", "trade")}


def test_an_added_label_touches_its_siblings_and_parent_only() -> None:
    old = _taxonomy("1", [("subject", False, _tree())])
    new = _taxonomy("2", [("subject", False, _tree({"id": "derm", "name": "Dermatology",
                                                     "parent": "medicine"}))])
    assert touched_labels(old, new) == {("subject", x) for x in
                                        ("medicine", "cardio", "neuro", "onco")}


def test_an_added_label_in_a_flat_facet_touches_the_whole_facet() -> None:
    flat = [{"id": "a", "name": "A"}, {"id": "b", "name": "B"}]
    old = _taxonomy("1", [("subject", False, _tree()), ("kind", False, flat)])
    new = _taxonomy("2", [("subject", False, _tree()),
                          ("kind", False, [*flat, {"id": "c", "name": "C"}])])
    assert touched_labels(old, new) == {("kind", "a"), ("kind", "b")}


def test_records_pass_through_only_when_fully_labelled_and_untouched() -> None:
    old = _taxonomy("1", [("subject", False, _tree()), KIND])
    changed = _tree(skip=("onco",))
    new = _taxonomy("2", [("subject", False, changed), KIND])
    plan = DeltaPlan.build(old, new)
    # Every facet covered, nothing touched: carried over, sorted by (facet, id).
    assert plan.carried({"subject": "cardio", "kind": ["trial", "review"]}) == [
        ("kind", "review"), ("kind", "trial"), ("subject", "cardio")]
    assert plan.carried(["cardio", "trial"]) == [("kind", "trial"), ("subject", "cardio")]
    assert plan.carried({"subject": "onco", "kind": "trial"}) is None  # touched (removed)
    assert plan.carried("cardio") is None  # the `kind` facet is not covered
    assert plan.carried(None) is None  # no label: re-score
    assert plan.carried({"subject": "nope", "kind": "trial"}) is None  # unknown in v1
    assert plan.carried({"subject": 3, "kind": "trial"}) is None  # malformed
    assert plan.carried([]) is None


def test_a_facet_the_target_gained_re_scores_everything() -> None:
    old = _taxonomy("1", [("subject", False, _tree())])
    new = _taxonomy("2", [("subject", False, _tree()), KIND])
    assert touched_labels(old, new) == set()
    assert DeltaPlan.build(old, new).carried("cardio") is None


def test_an_id_shared_by_two_facets_is_ambiguous_unless_the_facet_is_named() -> None:
    shared = [{"id": "general", "name": "General"}, {"id": "other", "name": "Other"}]
    old = _taxonomy("1", [("subject", False, shared), ("kind", False, shared)])
    plan = DeltaPlan.build(old, old)
    assert plan.carried(["general", "other"]) is None
    assert plan.carried({"subject": "general", "kind": "other"}) == [
        ("kind", "other"), ("subject", "general")]
