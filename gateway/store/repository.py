"""The control plane's async repository: every tenant-scoped call takes the tenant id first.

The tenant passed in must come from the caller's key record (`Principal.tenant_id`), never from
the request. A row of another tenant is treated exactly like a missing one (`NotFound` / None),
so the HTTP layer can answer 404 without an existence oracle. Results are frozen dataclasses,
detached from the session, so nothing lazy-loads later.
"""

from __future__ import annotations

import base64
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gateway.apikeys import (
    IssuedKey,
    KeyRow,
    Peppers,
    digest_secret,
    generate_key,
    normalize_scopes,
    rotation_deadline,
)
from gateway.policies import TaskPolicy, policy_from_mapping
from gateway.store.errors import Conflict, NotFound
from gateway.store.models import ApiKey, KeyEpoch, TaskPolicyRow, TaxonomyVersion, Tenant
from gateway.taxonomy_io import NAME_RE, Taxonomy, parse_json, parse_reference

__all__ = ["Store", "TaxonomyRecord", "TenantLimits", "TenantRecord"]


_TAXONOMY_CACHE_SIZE = 256


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class TenantLimits:
    """None means the gateway default."""

    requests_per_minute: int | None = None
    documents_per_minute: int | None = None
    max_concurrency: int | None = None


@dataclass(frozen=True)
class TenantRecord:
    id: str
    name: str
    created_at: datetime
    disabled_at: datetime | None
    limits: TenantLimits


@dataclass(frozen=True)
class TaxonomyRecord:
    tenant_id: str
    name: str
    version: str
    created_at: datetime
    taxonomy: Taxonomy

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.version}"


def _tenant_record(row: Tenant) -> TenantRecord:
    limits = TenantLimits(row.requests_per_minute, row.documents_per_minute, row.max_concurrency)
    return TenantRecord(row.id, row.name, row.created_at, row.disabled_at, limits)


def _key_row(row: ApiKey, tenant_disabled: bool = False) -> KeyRow:
    return KeyRow(
        key_id=row.key_id,
        tenant_id=row.tenant_id,
        env=row.env,
        digest=bytes(row.digest),
        pepper_id=row.pepper_id,
        scopes=frozenset(row.scopes.split()),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        tenant_disabled=tenant_disabled,
    )


def _taxonomy_record(row: TaxonomyVersion) -> TaxonomyRecord:
    taxonomy = parse_json(row.document)
    return TaxonomyRecord(row.tenant_id, row.name, row.version, row.created_at, taxonomy)


def _new_tenant_id() -> str:
    return "tn_" + base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()


class Store:
    """All control-plane reads and writes, each in its own short transaction."""

    def __init__(self, engine: AsyncEngine, *, now: Callable[[], datetime] = _utcnow) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._now = now
        self._taxonomies: OrderedDict[tuple[str, str, str], TaxonomyRecord] = OrderedDict()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session, session.begin():
            yield session

    @staticmethod
    async def _bump_epoch(session: AsyncSession) -> None:
        """Tell every verifier sharing this database to drop its cached keys (same tx)."""
        await session.execute(
            update(KeyEpoch).where(KeyEpoch.id == 1).values(epoch=KeyEpoch.epoch + 1)
        )

    # --- tenants -------------------------------------------------------------------------

    async def create_tenant(self, name: str, limits: TenantLimits | None = None) -> TenantRecord:
        if not NAME_RE.fullmatch(name):
            raise ValueError("tenant name must match [A-Za-z0-9_.-]{1,64}")
        limits = limits or TenantLimits()
        row = Tenant(
            id=_new_tenant_id(),
            name=name,
            created_at=self._now(),
            requests_per_minute=limits.requests_per_minute,
            documents_per_minute=limits.documents_per_minute,
            max_concurrency=limits.max_concurrency,
        )
        try:
            async with self._tx() as session:
                session.add(row)
        except IntegrityError:
            raise Conflict("a tenant with this name exists") from None
        return _tenant_record(row)

    async def get_tenant(self, tenant_id: str) -> TenantRecord | None:
        async with self._sessions() as session:
            row = await session.get(Tenant, tenant_id)
            return _tenant_record(row) if row else None

    async def tenant_by_name(self, name: str) -> TenantRecord | None:
        async with self._sessions() as session:
            row = await session.scalar(select(Tenant).where(Tenant.name == name))
            return _tenant_record(row) if row else None

    async def list_tenants(self) -> list[TenantRecord]:
        async with self._sessions() as session:
            rows = await session.scalars(select(Tenant).order_by(Tenant.name))
            return [_tenant_record(r) for r in rows]

    async def set_tenant_limits(self, tenant_id: str, limits: TenantLimits) -> TenantRecord:
        async with self._tx() as session:
            row = await session.get(Tenant, tenant_id)
            if row is None:
                raise NotFound("no such tenant")
            row.requests_per_minute = limits.requests_per_minute
            row.documents_per_minute = limits.documents_per_minute
            row.max_concurrency = limits.max_concurrency
        return _tenant_record(row)

    async def disable_tenant(self, tenant_id: str) -> None:
        """Every key of the tenant stops working (within the verifier's epoch interval)."""
        async with self._tx() as session:
            row = await session.get(Tenant, tenant_id)
            if row is None:
                raise NotFound("no such tenant")
            if row.disabled_at is None:
                row.disabled_at = self._now()
            await self._bump_epoch(session)

    # --- keys ----------------------------------------------------------------------------

    def _new_key_row(
        self,
        peppers: Peppers,
        tenant_id: str,
        scopes: frozenset[str],
        env: str,
        expires_at: datetime | None,
        rotated_from: str | None = None,
    ) -> tuple[str, ApiKey]:
        token, parsed = generate_key(env)
        row = ApiKey(
            key_id=parsed.key_id,
            tenant_id=tenant_id,
            env=env,
            digest=digest_secret(peppers.current, parsed.key_id, parsed.secret),
            pepper_id=peppers.current_id,
            scopes=" ".join(sorted(scopes)),
            created_at=self._now(),
            expires_at=expires_at,
            revoked_at=None,
            rotated_from=rotated_from,
        )
        return token, row

    async def create_key(
        self,
        tenant_id: str,
        peppers: Peppers,
        *,
        scopes: frozenset[str] | set[str] | list[str],
        env: str = "live",
        expires_at: datetime | None = None,
    ) -> IssuedKey:
        """A new key; its token exists only in the returned object (show it once)."""
        checked = normalize_scopes(scopes)
        if expires_at is not None and expires_at <= self._now():
            raise ValueError("a new key must expire in the future")
        token, row = self._new_key_row(peppers, tenant_id, checked, env, expires_at)
        async with self._tx() as session:
            if await session.get(Tenant, tenant_id) is None:
                raise NotFound("no such tenant")
            session.add(row)
        return IssuedKey(token=token, row=_key_row(row))

    async def get_key(self, key_id: str) -> KeyRow | None:
        """For authentication only: the one lookup not scoped by tenant (the key decides it)."""
        async with self._sessions() as session:
            result = await session.execute(
                select(ApiKey, Tenant.disabled_at)
                .join(Tenant, Tenant.id == ApiKey.tenant_id)
                .where(ApiKey.key_id == key_id)
            )
            found = result.first()
            if found is None:
                return None
            return _key_row(found[0], tenant_disabled=found[1] is not None)

    async def key_epoch(self) -> int:
        async with self._sessions() as session:
            return int(await session.scalar(select(KeyEpoch.epoch).where(KeyEpoch.id == 1)) or 0)

    async def list_keys(self, tenant_id: str) -> list[KeyRow]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at)
            )
            return [_key_row(r) for r in rows]

    async def _owned_key(self, session: AsyncSession, tenant_id: str, key_id: str) -> ApiKey:
        row = await session.scalar(
            select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.key_id == key_id)
        )
        if row is None:
            raise NotFound("no such key")
        return row

    async def revoke_key(self, tenant_id: str, key_id: str) -> KeyRow:
        async with self._tx() as session:
            row = await self._owned_key(session, tenant_id, key_id)
            if row.revoked_at is None:
                row.revoked_at = self._now()
            await self._bump_epoch(session)
        return _key_row(row)

    async def rotate_key(
        self,
        tenant_id: str,
        key_id: str,
        peppers: Peppers,
        *,
        overlap: timedelta = timedelta(hours=24),
    ) -> IssuedKey:
        """A new key with the old one's scopes; the old one keeps working for `overlap`."""
        async with self._tx() as session:
            old = await self._owned_key(session, tenant_id, key_id)
            now = self._now()
            if old.revoked_at is not None or (old.expires_at is not None and old.expires_at <= now):
                raise Conflict("a revoked or expired key cannot be rotated")
            scopes = frozenset(old.scopes.split())
            token, row = self._new_key_row(
                peppers, tenant_id, scopes, old.env, None, rotated_from=old.key_id
            )
            old.expires_at = rotation_deadline(now, overlap, old.expires_at)
            session.add(row)
            await self._bump_epoch(session)
        return IssuedKey(token=token, row=_key_row(row))

    # --- taxonomies ----------------------------------------------------------------------

    async def put_taxonomy(self, tenant_id: str, taxonomy: Taxonomy) -> TaxonomyRecord:
        """Store a new immutable version. Without a version the next integer is given; an
        existing version with the same content is returned as is, with other content Conflict."""
        async with self._tx() as session:
            if await session.get(Tenant, tenant_id) is None:
                raise NotFound("no such tenant")
            scope = (TaxonomyVersion.tenant_id == tenant_id, TaxonomyVersion.name == taxonomy.name)
            if taxonomy.version is not None:
                existing = await session.scalar(
                    select(TaxonomyVersion).where(
                        *scope, TaxonomyVersion.version == taxonomy.version
                    )
                )
                if existing is not None:
                    if existing.document != taxonomy.to_document():
                        raise Conflict("this taxonomy version exists with other content")
                    return _taxonomy_record(existing)
            latest = await session.scalar(
                select(TaxonomyVersion).where(*scope).order_by(TaxonomyVersion.seq.desc()).limit(1)
            )
            # Re-importing the newest content without a version is a no-op, not a new version.
            if (
                taxonomy.version is None
                and latest is not None
                and latest.document == taxonomy.with_version(latest.version).to_document()
            ):
                return _taxonomy_record(latest)
            seq = (latest.seq if latest is not None else 0) + 1
            if taxonomy.version is None:
                taxonomy = taxonomy.with_version(str(seq))
            row = TaxonomyVersion(
                tenant_id=tenant_id,
                name=taxonomy.name,
                version=taxonomy.version,
                seq=seq,
                document=taxonomy.to_document(),
                created_at=self._now(),
            )
            session.add(row)
            try:
                await session.flush()
            except IntegrityError:
                raise Conflict("this taxonomy version was created concurrently") from None
        return TaxonomyRecord(tenant_id, row.name, row.version, row.created_at, taxonomy)

    async def resolve_taxonomy(self, tenant_id: str, reference: str) -> TaxonomyRecord | None:
        """`name` (latest) or `name@version` of this tenant; None when absent or malformed.

        Versions are immutable (a trigger refuses UPDATE), so a parsed version is cached per
        (tenant, name, version); `name` alone costs one small query for the newest version.
        """
        try:
            name, version = parse_reference(reference)
        except ValueError:
            return None
        scope = (TaxonomyVersion.tenant_id == tenant_id, TaxonomyVersion.name == name)
        async with self._sessions() as session:
            if version is None:
                version = await session.scalar(
                    select(TaxonomyVersion.version)
                    .where(*scope)
                    .order_by(TaxonomyVersion.seq.desc())
                    .limit(1)
                )
                if version is None:
                    return None
            cache_key = (tenant_id, name, version)
            cached = self._taxonomies.get(cache_key)
            if cached is not None:
                self._taxonomies.move_to_end(cache_key)
                return cached
            row = await session.scalar(
                select(TaxonomyVersion).where(*scope, TaxonomyVersion.version == version)
            )
            if row is None:
                return None
            record = _taxonomy_record(row)
        self._taxonomies[cache_key] = record
        while len(self._taxonomies) > _TAXONOMY_CACHE_SIZE:
            self._taxonomies.popitem(last=False)
        return record

    async def list_taxonomies(self, tenant_id: str) -> list[tuple[str, str]]:
        """(name, latest version) for each taxonomy of the tenant, by name."""
        latest = (
            select(TaxonomyVersion.name, func.max(TaxonomyVersion.seq).label("seq"))
            .where(TaxonomyVersion.tenant_id == tenant_id)
            .group_by(TaxonomyVersion.name)
            .subquery()
        )
        query = (
            select(TaxonomyVersion.name, TaxonomyVersion.version)
            .join(
                latest,
                (latest.c.name == TaxonomyVersion.name) & (latest.c.seq == TaxonomyVersion.seq),
            )
            .where(TaxonomyVersion.tenant_id == tenant_id)
            .order_by(TaxonomyVersion.name)
        )
        async with self._sessions() as session:
            return [(n, v) for n, v in (await session.execute(query)).all()]

    async def list_versions(self, tenant_id: str, name: str) -> list[str]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(TaxonomyVersion.version)
                .where(TaxonomyVersion.tenant_id == tenant_id, TaxonomyVersion.name == name)
                .order_by(TaxonomyVersion.seq)
            )
            return list(rows)

    # --- task policies -------------------------------------------------------------------

    async def set_policy(self, tenant_id: str, policy: Mapping[str, TaskPolicy]) -> None:
        """Replace the tenant's whole policy (every task) in one transaction."""
        async with self._tx() as session:
            if await session.get(Tenant, tenant_id) is None:
                raise NotFound("no such tenant")
            existing = await session.scalars(
                select(TaskPolicyRow).where(TaskPolicyRow.tenant_id == tenant_id)
            )
            for row in existing:
                await session.delete(row)
            await session.flush()
            now = self._now()
            for task, settings in sorted(policy.items()):
                session.add(
                    TaskPolicyRow(
                        tenant_id=tenant_id, task=task, settings=settings.as_dict(), updated_at=now
                    )
                )

    async def get_policy(self, tenant_id: str) -> dict[str, TaskPolicy]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(TaskPolicyRow).where(TaskPolicyRow.tenant_id == tenant_id)
            )
            document: dict[str, Any] = {"tasks": {r.task: r.settings for r in rows}}
        return policy_from_mapping(document) if document["tasks"] else {}

    async def get_task_policy(self, tenant_id: str, task: str) -> TaskPolicy | None:
        return (await self.get_policy(tenant_id)).get(task)
