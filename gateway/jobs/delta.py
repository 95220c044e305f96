"""Delta reclassification: which documents must be re-scored after a taxonomy change.

A job may name `labelled_with`, the version of its taxonomy that the input's labels come from;
each input record may carry its current label(s) in `label`: a label id, a list of ids, or an
object `{facet: id | [ids]}`. The diff from `labelled_with` to the job's (target) version
decides, label by label, what is *touched* (`gateway.taxonomy_io.diff`):

- **removed**: the label no longer exists, so its documents need a new one;
- **renamed**: the label's name is what the model reads, so its meaning may have moved;
- **moved**: a new parent changes the label's place (and what it means) in the hierarchy;
- **added**: a new label can take documents from the labels next to it. Touched are its
  *siblings* (the labels of the same facet with the same parent in `labelled_with`) and its
  parent, if any. In a flat facet every label is a sibling, so adding a label there touches
  the whole facet: any document of that facet could now belong to it. This applies to `multi`
  facets alike (a document near the new label may gain it); a document far from it in the
  hierarchy keeps its labels, which is the point of a delta job; run a full job to revisit all.

A record **passes through** (its labels copied to the output unchanged, without an engine call)
only when all of these hold: it carries labels; every label resolves to exactly one (facet, id)
of `labelled_with` (a bare id that two facets share is ambiguous); every facet of the target
version is covered by its labels; and none of its labels is touched. Everything else is
**re-scored** with the target version: a record without labels, with an unknown label, a facet
the target gained, or any touched label. The job manifest reports both counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.taxonomy_io import Taxonomy, diff

__all__ = ["DeltaPlan", "touched_labels"]

LabelKey = tuple[str, str]  # (facet, label id)


def touched_labels(old: Taxonomy, new: Taxonomy) -> frozenset[LabelKey]:
    """The (facet, id) pairs of `old` whose documents must be re-scored under `new`."""
    changes = diff(old, new)
    touched: set[LabelKey] = set(changes.removed)
    touched |= {(facet, label) for facet, label, _, _ in changes.renamed}
    touched |= {(facet, label) for facet, label, _, _ in changes.moved}
    new_parent = {(f.name, label.id): label.parent for f in new.facets for label in f.labels}
    for facet_name, label_id in changes.added:
        parent = new_parent[(facet_name, label_id)]
        for facet in old.facets:
            if facet.name != facet_name:
                continue
            touched |= {(facet.name, x.id) for x in facet.labels if x.parent == parent}
            if parent is not None and any(x.id == parent for x in facet.labels):
                touched.add((facet.name, parent))
    return frozenset(touched)


@dataclass(frozen=True)
class DeltaPlan:
    touched: frozenset[LabelKey]
    facets_of: Mapping[str, tuple[str, ...]]  # label id -> facets of `old` that have it
    old_keys: frozenset[LabelKey]
    target_facets: frozenset[str]

    @classmethod
    def build(cls, old: Taxonomy, new: Taxonomy) -> DeltaPlan:
        facets_of: dict[str, list[str]] = {}
        for facet in old.facets:
            for label in facet.labels:
                facets_of.setdefault(label.id, []).append(facet.name)
        return cls(
            touched=touched_labels(old, new),
            facets_of={k: tuple(v) for k, v in facets_of.items()},
            old_keys=frozenset((f.name, x.id) for f in old.facets for x in f.labels),
            target_facets=frozenset(f.name for f in new.facets),
        )

    def _resolve(self, label: Any) -> list[LabelKey] | None:
        if isinstance(label, str):
            facets = self.facets_of.get(label, ())
            return [(facets[0], label)] if len(facets) == 1 else None
        if isinstance(label, list):
            keys: list[LabelKey] = []
            for item in label:
                resolved = self._resolve(item) if isinstance(item, str) else None
                if resolved is None:
                    return None
                keys += resolved
            return keys
        if isinstance(label, dict):
            keys = []
            for facet, ids in label.items():
                items = [ids] if isinstance(ids, str) else ids
                if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                    return None
                keys += [(str(facet), i) for i in items]
            return keys if all(k in self.old_keys for k in keys) else None
        return None

    def carried(self, label: Any) -> list[LabelKey] | None:
        """The record's labels if it passes through unchanged; None if it must be re-scored."""
        if label is None:
            return None
        keys = self._resolve(label)
        if not keys:
            return None
        if {facet for facet, _ in keys} != self.target_facets:
            return None  # a facet of the target is not covered (or one is no longer there)
        if any(key in self.touched for key in keys):
            return None
        return sorted(set(keys))
