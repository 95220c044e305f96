"""Data recipe: Debian package descriptions with their Section and debtags, as JSONL.

    python -m recipes.debian_data fetch [--out DIR] [--no-update]

1. `apt-get update -o Acquire::Languages=en` (the only network access: Debian's mirror).
2. Ask apt for its Packages and Translation-en files (`apt-get indextargets`).
3. Join each binary package to its English long description by `Description-md5`; take its
   `Section` (component prefix such as `contrib/` dropped) and its `Tag:` field (bookworm's
   Packages lists carry the debtags tags).
4. Split by sha256(name) (see `recipes.split`) and write train/validation/held-out JSONL files,
   the debtags vocabulary and a manifest to DIR (default: the user's cache, never the repo).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from recipes import apt
from recipes.dataset import Package, default_data_dir, write_jsonl
from recipes.deb822 import iter_stanzas, long_description, parse_tag_field, synopsis
from recipes.errors import RecipeError
from recipes.split import SPLIT_FILES, Split, split_of

__all__ = [
    "JoinStats",
    "fetch",
    "index_translations",
    "join_packages",
    "main",
    "strip_component",
]

VOCABULARY_FILE = "debtags-vocabulary"
MANIFEST_FILE = "manifest.json"


@dataclass
class JoinStats:
    """What the join kept and dropped, for the manifest and the model card."""

    stanzas: int = 0
    duplicates: int = 0
    no_translation: int = 0
    empty_long_description: int = 0
    kept: int = 0
    components: Counter[str] = field(default_factory=Counter)


def strip_component(section: str) -> tuple[str, str]:
    """Split `contrib/games` into (`contrib`, `games`); a bare section is in `main`.

    The section names the same kind of software whatever the licence component, so the label
    is the bare section and the component is only counted.
    """
    component, _, bare = section.rpartition("/")
    return (component or "main", bare)


def index_translations(stanzas: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """Map Description-md5 to the full `Description-en` field (synopsis + long part).

    apt joins the two lists by this md5 (of the English description), not by package name:
    several packages may share one translation.
    """
    table: dict[str, str] = {}
    for stanza in stanzas:
        md5 = stanza.get("Description-md5")
        text = stanza.get("Description-en")
        if md5 and text:
            table[md5] = text
    return table


def _description_of(stanza: Mapping[str, str], translations: Mapping[str, str]) -> str | None:
    md5 = stanza.get("Description-md5")
    if md5 and md5 in translations:
        return translations[md5]
    for key in ("Description-en", "Description"):
        value = stanza.get(key, "")
        if "\n" in value:  # a Packages list that carries the long description itself
            return value
    return None


def join_packages(
    package_stanzas: Iterable[Mapping[str, str]],
    translations: Mapping[str, str],
    stats: JoinStats | None = None,
) -> list[Package]:
    """Join Packages stanzas with English descriptions; one row per package name, sorted.

    A name listed by several suites (e.g. bookworm and bookworm-security) keeps the last
    stanza in apt's source order, i.e. the update. Packages without an English long
    description are dropped: there is no document to classify.
    """
    stats = stats if stats is not None else JoinStats()
    rows: dict[str, Package] = {}
    for stanza in package_stanzas:
        stats.stanzas += 1
        name = stanza.get("Package")
        if not name:
            continue
        description = _description_of(stanza, translations)
        if description is None:
            stats.no_translation += 1
            continue
        text = long_description(description)
        if not text:
            stats.empty_long_description += 1
            continue
        component, section = strip_component(stanza.get("Section", "misc"))
        if name in rows:
            stats.duplicates += 1
        else:
            stats.components[component] += 1
        rows[name] = Package(
            name=name,
            text=text,
            summary=synopsis(description),
            section=section,
            tags=tuple(parse_tag_field(stanza.get("Tag", ""))),
        )
    stats.kept = len(rows)
    return [rows[name] for name in sorted(rows)]


def _read_stanzas(files: Iterable[apt.IndexFile]) -> Iterable[dict[str, str]]:
    for index in files:
        yield from iter_stanzas(apt.read_index_lines(index.path))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_dataset(out: Path, rows: list[Package]) -> dict[str, int]:
    """Write one JSONL file per split; return the row count of each."""
    by_split: dict[Split, list[Package]] = {split: [] for split in Split}
    for row in rows:
        by_split[split_of(row.name)].append(row)
    return {split.value: write_jsonl(out / SPLIT_FILES[split], by_split[split]) for split in Split}


def fetch(out: Path, *, update: bool = True) -> dict[str, object]:
    """Run the whole data recipe into `out`; return the manifest it wrote."""
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    if update:
        apt.update_lists()
    files = apt.list_index_files()
    translations = index_translations(_read_stanzas(f for f in files if f.kind == "Translations"))
    stats = JoinStats()
    rows = join_packages(
        _read_stanzas(f for f in files if f.kind == "Packages"), translations, stats
    )
    counts = write_dataset(out, rows)

    vocabulary = out / VOCABULARY_FILE
    installed = apt.find_debtags_vocabulary()
    if installed is not None:
        shutil.copyfile(installed, vocabulary)
    else:
        apt.download_debtags_vocabulary(vocabulary)

    manifest: dict[str, object] = {
        "recipe": "recipes.debian_data",
        "sources": sorted({f"{f.release}/{f.component} {f.kind}" for f in files}),
        "translations": len(translations),
        "join": {
            "stanzas": stats.stanzas,
            "duplicate_names": stats.duplicates,
            "no_translation": stats.no_translation,
            "empty_long_description": stats.empty_long_description,
            "kept": stats.kept,
            "components": dict(sorted(stats.components.items())),
        },
        "splits": counts,
        "files": {name: _sha256(out / name) for name in [*SPLIT_FILES.values(), VOCABULARY_FILE]},
        "seconds": round(time.monotonic() - started, 1),
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.debian_data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("fetch", help="update apt's lists and write the JSONL dataset")
    cmd.add_argument(
        "--out",
        type=Path,
        default=None,
        help="dataset directory (default: $TACET_DATA_DIR or the user cache)",
    )
    cmd.add_argument(
        "--no-update",
        action="store_true",
        help="read the lists apt already has (they must include Translation-en)",
    )
    args = parser.parse_args(argv)
    out = args.out or default_data_dir()
    try:
        manifest = fetch(out, update=not args.no_update)
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"out": str(out), **manifest}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
