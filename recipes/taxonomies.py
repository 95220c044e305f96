"""The two demo taxonomies, `debian-sections` and `debtags`, as DESIGN.md taxonomy files.

    python -m recipes.taxonomies build --data DIR [--out models/taxonomies] [--min-tag-count 10]

Both are built from the train split only (held-out rows never shape a label set):
- `debian-sections`: one single-choice facet `section`; a label per section present in train,
  id = the section id (`admin`), name and description from `recipes.sections`.
- `debtags`: one `multi` facet per debtags facet, id = the facet id; labels are the
  vocabulary's tags, id = `facet::tag`, name = the tag's short description, description = its
  long description (or "Facet: Tag" where the vocabulary has none).
  A tag is kept when at least `min_tag_count` train packages carry it: rarer tags cannot be
  learned or measured (the validation bucket is 1/13 of train), and every label lengthens the
  prompt. Tags missing from the vocabulary (bookworm's Packages carry a few `privacy::` tags
  the debtags package does not describe) have no description and are left out. A facet left
  without labels is dropped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipes.dataset import Package
from recipes.deb822 import iter_stanzas, long_description, synopsis
from recipes.errors import RecipeError, TaxonomyError, VocabularyError
from recipes.sections import SECTIONS
from recipes.split import Split, load_split

__all__ = [
    "DEBTAGS_NAME",
    "MIN_TAG_COUNT",
    "SECTIONS_NAME",
    "TAXONOMY_VERSION",
    "BuildReport",
    "Vocabulary",
    "build_debtags_taxonomy",
    "build_sections_taxonomy",
    "parse_vocabulary",
    "section_label",
    "validate_taxonomy",
    "write_taxonomy",
]

SECTIONS_NAME = "debian-sections"
DEBTAGS_NAME = "debtags"
TAXONOMY_VERSION = "1"
MIN_TAG_COUNT = 10


@dataclass(frozen=True, slots=True)
class Term:
    """A facet or a tag of the vocabulary: id, short description, long description."""

    id: str
    short: str
    long: str


@dataclass(frozen=True)
class Vocabulary:
    """The debtags vocabulary: facets and tags in file order."""

    facets: dict[str, Term]
    tags: dict[str, Term]

    def facet_of(self, tag: str) -> str:
        return tag.split("::", 1)[0]


@dataclass
class BuildReport:
    """What a build kept and why it left things out; printed by the CLI."""

    labels: dict[str, int] = field(default_factory=dict)
    rare_tags: list[str] = field(default_factory=list)
    unknown_tags: list[str] = field(default_factory=list)
    dropped_facets: list[str] = field(default_factory=list)
    undescribed_sections: list[str] = field(default_factory=list)


def parse_vocabulary(lines: Iterable[str]) -> Vocabulary:
    """Read the debtags vocabulary (deb822 stanzas of `Facet:` or `Tag:` with `Description:`)."""
    facets: dict[str, Term] = {}
    tags: dict[str, Term] = {}
    for stanza in iter_stanzas(lines):
        description = stanza.get("Description", "")
        if "Facet" in stanza:
            facets[stanza["Facet"]] = Term(
                stanza["Facet"], synopsis(description), long_description(description)
            )
        elif "Tag" in stanza:
            tags[stanza["Tag"]] = Term(
                stanza["Tag"], synopsis(description), long_description(description)
            )
    if not facets or not tags:
        raise VocabularyError("the debtags vocabulary has no facets or no tags")
    orphans = sorted({tag.split("::", 1)[0] for tag in tags} - set(facets))
    if orphans:
        raise VocabularyError(f"vocabulary tags name undeclared facets: {', '.join(orphans)}")
    return Vocabulary(facets, tags)


def section_label(section: str, report: BuildReport | None = None) -> dict[str, str]:
    """The label of one section; an unknown id gets a plain description and is reported."""
    if section in SECTIONS:
        name, description = SECTIONS[section]
    else:
        name, description = section, f"Debian packages in the '{section}' archive section."
        if report is not None:
            report.undescribed_sections.append(section)
    return {"id": section, "name": name, "description": description}


def build_sections_taxonomy(
    train: Iterable[Package], report: BuildReport | None = None
) -> dict[str, Any]:
    """`debian-sections`: one label per section present in the train rows, sorted by id."""
    sections = sorted({row.section for row in train})
    if not sections:
        raise TaxonomyError("no train rows: cannot build the sections taxonomy")
    labels = [section_label(section, report) for section in sections]
    if report is not None:
        report.labels["section"] = len(labels)
    return {
        "name": SECTIONS_NAME,
        "version": TAXONOMY_VERSION,
        "facets": [{"name": "section", "multi": False, "labels": labels}],
    }


def _tag_label(vocabulary: Vocabulary, tag: str) -> dict[str, str]:
    term = vocabulary.tags[tag]
    facet = vocabulary.facets[vocabulary.facet_of(tag)]
    description = term.long or f"{facet.short}: {term.short}"
    return {"id": tag, "name": term.short or tag, "description": description}


def build_debtags_taxonomy(
    vocabulary: Vocabulary,
    train: Iterable[Package],
    *,
    min_tag_count: int = MIN_TAG_COUNT,
    report: BuildReport | None = None,
) -> dict[str, Any]:
    """`debtags`: a `multi` facet per vocabulary facet, with its tags frequent enough in train."""
    report = report if report is not None else BuildReport()
    counts: Counter[str] = Counter(tag for row in train for tag in set(row.tags))
    report.unknown_tags = sorted(tag for tag in counts if tag not in vocabulary.tags)
    facets: list[dict[str, Any]] = []
    for facet in vocabulary.facets:
        tags = [t for t in vocabulary.tags if vocabulary.facet_of(t) == facet]
        kept = [t for t in tags if counts[t] >= min_tag_count]
        report.rare_tags.extend(t for t in tags if 0 < counts[t] < min_tag_count)
        if not kept:
            report.dropped_facets.append(facet)
            continue
        report.labels[facet] = len(kept)
        facets.append(
            {"name": facet, "multi": True, "labels": [_tag_label(vocabulary, t) for t in kept]}
        )
    if not facets:
        raise TaxonomyError("no debtags tag reaches min_tag_count in train; lower it")
    return {"name": DEBTAGS_NAME, "version": TAXONOMY_VERSION, "facets": facets}


def _nonempty_str(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def validate_taxonomy(doc: Mapping[str, Any]) -> None:
    """Check a taxonomy against DESIGN.md's contract; raise `TaxonomyError` naming the fault."""
    if set(doc) != {"name", "version", "facets"}:
        raise TaxonomyError("a taxonomy has exactly the keys name, version, facets")
    if not _nonempty_str(doc["name"]) or not _nonempty_str(doc["version"]):
        raise TaxonomyError("taxonomy name and version must be non-empty strings")
    facets = doc["facets"]
    if not isinstance(facets, list) or not facets:
        raise TaxonomyError("a taxonomy needs at least one facet")
    facet_names: set[str] = set()
    for facet in facets:
        if not isinstance(facet, dict) or set(facet) != {"name", "multi", "labels"}:
            raise TaxonomyError("a facet has exactly the keys name, multi, labels")
        if not _nonempty_str(facet["name"]) or facet["name"] in facet_names:
            raise TaxonomyError(f"facet name {facet['name']!r} is empty or repeated")
        facet_names.add(facet["name"])
        if not isinstance(facet["multi"], bool):
            raise TaxonomyError(f"facet {facet['name']}: multi must be true or false")
        _validate_labels(facet["name"], facet["labels"])


def _validate_labels(facet: str, labels: object) -> None:
    if not isinstance(labels, list) or not labels:
        raise TaxonomyError(f"facet {facet} has no labels")
    ids = [label.get("id") if isinstance(label, dict) else None for label in labels]
    if len(set(ids)) != len(ids):
        raise TaxonomyError(f"facet {facet} repeats a label id")
    for label in labels:
        if not isinstance(label, dict) or not {"id", "name", "description"} <= set(label):
            raise TaxonomyError(f"facet {facet}: a label needs id, name and description")
        if set(label) - {"id", "name", "description", "parent"}:
            raise TaxonomyError(f"facet {facet}: label {label['id']!r} has unknown keys")
        if not all(_nonempty_str(label[key]) for key in ("id", "name", "description")):
            raise TaxonomyError(f"facet {facet}: label {label.get('id')!r} has an empty field")
        if "parent" in label and label["parent"] not in ids:
            raise TaxonomyError(f"facet {facet}: label {label['id']!r} has an unknown parent")


def write_taxonomy(doc: Mapping[str, Any], out_dir: Path) -> Path:
    """Validate, then write `<name>.json` (stable key order, UTF-8, trailing newline)."""
    validate_taxonomy(doc)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{doc['name']}.json"
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _default_out() -> Path:
    # The repository's models/taxonomies, found from this file rather than from the cwd.
    return Path(__file__).resolve().parent.parent / "models" / "taxonomies"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.taxonomies",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("build", help="write debian-sections.json and debtags.json")
    cmd.add_argument("--data", type=Path, required=True, help="dataset dir written by fetch")
    cmd.add_argument("--out", type=Path, default=None, help="default: models/taxonomies")
    cmd.add_argument(
        "--min-tag-count",
        type=int,
        default=MIN_TAG_COUNT,
        help="train packages a tag needs to be a label (default %(default)s)",
    )
    args = parser.parse_args(argv)
    from recipes.debian_data import VOCABULARY_FILE  # the fetch recipe names the file

    out = args.out or _default_out()
    report = BuildReport()
    try:
        train = load_split(args.data, Split.TRAIN)
        vocab_path = args.data / VOCABULARY_FILE
        if not vocab_path.is_file():
            raise VocabularyError(f"{VOCABULARY_FILE} missing in --data; re-run fetch")
        with vocab_path.open(encoding="utf-8") as src:
            vocabulary = parse_vocabulary(src)
        written = [
            write_taxonomy(build_sections_taxonomy(train, report), out),
            write_taxonomy(
                build_debtags_taxonomy(
                    vocabulary, train, min_tag_count=args.min_tag_count, report=report
                ),
                out,
            ),
        ]
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = {
        "written": [str(path) for path in written],
        "labels_per_facet": report.labels,
        "dropped_facets": report.dropped_facets,
        "rare_tags_left_out": len(report.rare_tags),
        "tags_not_in_vocabulary": report.unknown_tags,
        "sections_without_description": report.undescribed_sections,
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
