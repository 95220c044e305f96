"""Taxonomy lookup by `name` (latest version) or `name@version`.

`StaticTaxonomyStore` is a small read-only store of `*.json` files (tests, embedding);
`tacet serve` uses `DatabaseTaxonomyStore`: each tenant's own immutable versions and task
policies from the control-plane database (`--dev` imports `models/taxonomies/*.json` into the
dev tenant once).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "DatabaseTaxonomyStore",
    "SharedStaticTaxonomies",
    "StaticTaxonomyStore",
    "TaxonomyStore",
    "TenantTaxonomyStore",
    "bundled_taxonomy_dir",
    "import_bundled",
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


# ---- per-tenant, database-backed (the control plane) ---------------------------------------


class TenantTaxonomyStore(Protocol):
    """What the app needs per tenant: taxonomies, versions and task policies.

    The tenant id always comes from the caller's key record. Another tenant's resource answers
    exactly like a missing one (None / empty), so no route can tell the two apart.
    """

    async def resolve(self, tenant_id: str, reference: str) -> Mapping[str, Any] | None: ...
    async def put(self, tenant_id: str, taxonomy: Any) -> tuple[str, str]: ...
    async def list(self, tenant_id: str) -> list[tuple[str, str]]: ...
    async def versions(self, tenant_id: str, name: str) -> list[str]: ...
    async def task_policy(self, tenant_id: str, task: str) -> Any | None: ...
    def review_key(self, tenant_id: str) -> bytes: ...


class SharedStaticTaxonomies:
    """A `StaticTaxonomyStore` seen by every tenant alike, read-only and without policies.

    For tests and single-tenant embedding only; `tacet serve` uses `DatabaseTaxonomyStore`.
    """

    def __init__(self, static: StaticTaxonomyStore, review_secret: bytes | None = None) -> None:
        import secrets

        self._static = static
        self._review_secret = review_secret or secrets.token_bytes(32)

    async def resolve(self, tenant_id: str, reference: str) -> Mapping[str, Any] | None:
        return self._static.resolve(reference)

    async def put(self, tenant_id: str, taxonomy: Any) -> tuple[str, str]:
        raise PermissionError("static taxonomies are read-only")

    async def list(self, tenant_id: str) -> list[tuple[str, str]]:
        latest: dict[str, str] = {}
        for reference in self._static.names():
            name, version = parse_reference(reference)
            if version is not None and (
                name not in latest or _version_key(version) > _version_key(latest[name])
            ):
                latest[name] = version
        return sorted(latest.items())

    async def versions(self, tenant_id: str, name: str) -> list[str]:
        found = [parse_reference(r) for r in self._static.names()]
        return sorted((v for n, v in found if n == name and v), key=_version_key)

    async def task_policy(self, tenant_id: str, task: str) -> Any | None:
        return None

    def review_key(self, tenant_id: str) -> bytes:
        from gateway.policies import review_key

        return review_key(self._review_secret, tenant_id)


class DatabaseTaxonomyStore:
    """Taxonomy versions and task policies of each tenant, from the control-plane `Store`.

    `store` is an async callable returning the opened Store (the key store's, so one engine
    serves both); every call passes the principal's tenant id first.
    """

    def __init__(self, store: Any, review_secret: bytes) -> None:
        self._store = store
        self._review_secret = review_secret

    async def resolve(self, tenant_id: str, reference: str) -> Mapping[str, Any] | None:
        record = await (await self._store()).resolve_taxonomy(tenant_id, reference)
        return None if record is None else record.taxonomy.to_document()

    async def put(self, tenant_id: str, taxonomy: Any) -> tuple[str, str]:
        record = await (await self._store()).put_taxonomy(tenant_id, taxonomy)
        return record.name, record.version

    async def list(self, tenant_id: str) -> list[tuple[str, str]]:
        return await (await self._store()).list_taxonomies(tenant_id)

    async def versions(self, tenant_id: str, name: str) -> list[str]:
        return await (await self._store()).list_versions(tenant_id, name)

    async def task_policy(self, tenant_id: str, task: str) -> Any | None:
        return await (await self._store()).get_task_policy(tenant_id, task)

    def review_key(self, tenant_id: str) -> bytes:
        from gateway.policies import review_key

        return review_key(self._review_secret, tenant_id)


async def import_bundled(store: Any, tenant_id: str, directory: Path | None = None) -> list[str]:
    """Import each bundled `*.json` taxonomy into a tenant unless that name@version exists.

    Returns the references imported (for `tacet serve --dev`'s first start).
    """
    from gateway.taxonomy_io import parse_json

    directory = directory or bundled_taxonomy_dir()
    if directory is None:
        return []
    imported: list[str] = []
    for path in sorted(directory.glob("*.json")):
        taxonomy = parse_json(path.read_bytes())
        reference = taxonomy.name + (f"@{taxonomy.version}" if taxonomy.version else "")
        if await store.resolve_taxonomy(tenant_id, reference) is None:
            record = await store.put_taxonomy(tenant_id, taxonomy)
            imported.append(record.reference)
    return imported
