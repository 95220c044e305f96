"""Taxonomy lookup by `name` (latest version) or `name@version`.

A small read-only store until the control-plane issue replaces it with a database-backed one:
it is preloaded with the taxonomy files shipped in the repository (`models/taxonomies/*.json`)
and with any `*.json` in directories given by `--taxonomy-dir`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "StaticTaxonomyStore",
    "TaxonomyStore",
    "bundled_taxonomy_dir",
    "parse_reference",
]


class TaxonomyStore(Protocol):
    def resolve(self, reference: str) -> Mapping[str, Any] | None:
        """The taxonomy for `name` (latest) or `name@version`, or None when unknown."""
        ...

    def names(self) -> list[str]:
        """Every loaded `name@version`, for operators (never for error bodies)."""
        ...


def parse_reference(reference: str) -> tuple[str, str | None]:
    name, sep, version = reference.partition("@")
    return name, (version if sep else None)


def bundled_taxonomy_dir() -> Path | None:
    """`models/taxonomies` next to the package in a source checkout, if it is there."""
    candidate = Path(__file__).resolve().parent.parent / "models" / "taxonomies"
    return candidate if candidate.is_dir() else None


def _version_key(version: str) -> tuple[int, int | str]:
    # Numeric versions sort numerically; others after them, lexically.
    return (0, int(version)) if version.isdigit() else (1, version)


class StaticTaxonomyStore:
    """Taxonomies held in memory, loaded once at start."""

    def __init__(self, taxonomies: Iterable[Mapping[str, Any]] = ()) -> None:
        self._by_name: dict[str, dict[str, Mapping[str, Any]]] = {}
        for taxonomy in taxonomies:
            self.add(taxonomy)

    @classmethod
    def from_dirs(cls, dirs: Iterable[Path]) -> StaticTaxonomyStore:
        store = cls()
        for directory in dirs:
            if not directory.is_dir():
                raise ValueError(f"{directory}: taxonomy directory does not exist")
            for path in sorted(directory.glob("*.json")):
                try:
                    store.add(json.loads(path.read_text(encoding="utf-8")))
                except (ValueError, KeyError, TypeError) as exc:
                    raise ValueError(f"{path}: not a taxonomy in the DESIGN.md format") from exc
        return store

    def add(self, taxonomy: Mapping[str, Any]) -> None:
        name, version = str(taxonomy["name"]), str(taxonomy["version"])
        if not isinstance(taxonomy.get("facets"), list) or "@" in name:
            raise ValueError("a taxonomy needs a name without '@', a version and a facet list")
        versions = self._by_name.setdefault(name, {})
        if version in versions and versions[version] != taxonomy:
            raise ValueError(f"taxonomy {name}@{version} loaded twice with different content")
        versions[version] = taxonomy

    def resolve(self, reference: str) -> Mapping[str, Any] | None:
        name, version = parse_reference(reference)
        versions = self._by_name.get(name)
        if not versions:
            return None
        if version is None:
            version = max(versions, key=_version_key)
        return versions.get(version)

    def names(self) -> list[str]:
        return sorted(f"{n}@{v}" for n, vs in self._by_name.items() for v in vs)
