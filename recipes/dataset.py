"""The dataset row and its JSONL form: one object per package, written outside the repository.

Fields: `name` (package), `text` (English long description), `summary` (the one-line synopsis,
kept so a recipe may choose to use it), `section` (archive section without its component
prefix) and `tags` (debtags `facet::tag` strings, sorted).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from recipes.errors import DatasetError

__all__ = ["Package", "default_data_dir", "read_jsonl", "write_jsonl"]


@dataclass(frozen=True, slots=True)
class Package:
    """One document: a Debian binary package with its labels."""

    name: str
    text: str
    summary: str
    section: str
    tags: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "text": self.text,
            "summary": self.summary,
            "section": self.section,
            "tags": list(self.tags),
        }

    @classmethod
    def from_json(cls, obj: object) -> Package:
        if not isinstance(obj, dict):
            raise DatasetError("a dataset row is not a JSON object; re-run the fetch recipe")
        try:
            tags = obj["tags"]
            row = cls(
                name=str(obj["name"]),
                text=str(obj["text"]),
                summary=str(obj.get("summary", "")),
                section=str(obj["section"]),
                tags=tuple(str(tag) for tag in tags),
            )
        except (KeyError, TypeError) as exc:
            raise DatasetError(
                f"a dataset row lacks field {exc}; re-run the fetch recipe"
            ) from None
        return row


def default_data_dir() -> Path:
    """Where `fetch` writes by default: the user's cache, never the repository.

    `$TACET_DATA_DIR` wins, then `$XDG_CACHE_HOME/tacet/debian-packages`, then
    `~/.cache/tacet/debian-packages`.
    """
    explicit = os.environ.get("TACET_DATA_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "tacet" / "debian-packages"


def write_jsonl(path: Path, rows: Iterable[Package]) -> int:
    """Write rows one JSON object per line (UTF-8, keys in a fixed order); return the count."""
    count = 0
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row.to_json(), ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count


def read_jsonl(path: Path) -> Iterator[Package]:
    """Read rows written by `write_jsonl`; a missing file or a bad line is a `DatasetError`."""
    if not path.is_file():
        raise DatasetError(f"{path.name} is missing; run `python -m recipes.debian_data fetch`")
    with path.open(encoding="utf-8") as src:
        for number, line in enumerate(src, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise DatasetError(f"{path.name} line {number} is not JSON") from None
            yield Package.from_json(obj)
