"""The control-plane store against real SQLite and a real PostgreSQL server.

PostgreSQL: `TACET_TEST_POSTGRES_URL` when set (its `public` schema is reset for each test), else
a throwaway server started here from the Debian binaries (`/usr/lib/postgresql/*/bin`, or
`initdb` on PATH) in a temp dir with a Unix socket and no TCP listener, as an unprivileged user
when we are root. Skipped, with the reason, only when those binaries are absent.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, inspect, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from gateway.apikeys import SCOPES, KeyVerifier, Peppers, parse_key
from gateway.policies import needs_review, parse_policy, review_key
from gateway.store import (
    Conflict,
    NotFound,
    Store,
    TenantLimits,
    create_engine,
    database_url,
    ensure_dev_key,
    head_revision,
    open_store,
    redacted,
    upgrade_to_head,
)
from gateway.store.migrate import current_revision
from gateway.store.models import Base
from gateway.taxonomy_io import parse_csv, parse_json
from tests.integration._postgres import reset_schema

pytestmark = pytest.mark.integration

PEPPERS = Peppers([b"integration-test-pepper-0123456789abcdef"])
HEADER = "facet,id,name,description,parent\n"
TAXONOMY_V1 = parse_csv(
    HEADER + "subject,medicine,Medicine,,\nsubject,cardiology,Cardiology,,medicine\n",
    name="subjects",
)
TAXONOMY_V2 = parse_csv(
    HEADER + "subject,medicine,Medicine,,\nsubject,cardio,Cardiology,,\nsubject,derm,Derm,,\n",
    name="subjects",
)
POLICY = parse_policy(
    "tasks:\n"
    "  archive_retag: {mode: diffusion, human_review: sample_based, review_rate: 0.02}\n"
    "  member_facing: {mode: autoregressive, priority: accuracy,"
    " human_review: below_threshold, review_threshold: 0.8}\n"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> URL:
    if request.param == "sqlite":
        return database_url(tmp_path / "data", {})
    url: URL = request.getfixturevalue("postgres_url")
    asyncio.run(reset_schema(url))
    return url


def run_with_store(url: URL, body: Callable[[Store], Awaitable[None]]) -> None:
    async def main() -> None:
        store = await open_store(url)
        try:
            await body(store)
        finally:
            await store.engine.dispose()

    asyncio.run(main())


# --- schema --------------------------------------------------------------------------------


def test_database_url_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    url = database_url(tmp_path, {})
    assert url.drivername == "sqlite+aiosqlite"
    assert url.database == str((tmp_path / "tacet.db").resolve())
    pg = database_url(tmp_path, {"TACET_DATABASE_URL": "postgres://u:pw@db.internal/tacet"})
    assert pg.drivername == "postgresql+asyncpg" and pg.database == "tacet"
    assert "pw" not in redacted(pg) and "db.internal" in redacted(pg)


def test_unsupported_database_url_is_refused(tmp_path: Path) -> None:
    from gateway.store import UnsupportedDatabase

    for raw in ("mysql://x/y", "sqlite://", "not a url"):
        with pytest.raises(UnsupportedDatabase):
            database_url(tmp_path, {"TACET_DATABASE_URL": raw})


def test_database_url_from_a_credential_file(tmp_path: Path) -> None:
    from gateway.store import UnsupportedDatabase

    secret = tmp_path / "database-url"
    secret.write_text("postgres://u:pw@db.internal/tacet\n")
    url = database_url(tmp_path, {"TACET_DATABASE_URL_FILE": str(secret)})
    assert url.drivername == "postgresql+asyncpg" and url.password == "pw"
    both = {"TACET_DATABASE_URL": "sqlite:///x.db", "TACET_DATABASE_URL_FILE": str(secret)}
    with pytest.raises(UnsupportedDatabase, match="not both"):
        database_url(tmp_path, both)
    secret.write_text("  \n")
    with pytest.raises(UnsupportedDatabase, match="empty"):
        database_url(tmp_path, {"TACET_DATABASE_URL_FILE": str(secret)})
    with pytest.raises(UnsupportedDatabase, match="cannot read") as refused:
        database_url(tmp_path, {"TACET_DATABASE_URL_FILE": str(tmp_path / "absent")})
    assert "absent" not in str(refused.value)  # no path or content in the message


def test_sqlite_file_is_private(tmp_path: Path) -> None:
    url = database_url(tmp_path / "data", {})
    assert upgrade_to_head(url) == head_revision()
    assert (tmp_path / "data" / "tacet.db").stat().st_mode & 0o077 == 0


def test_migrations_reach_head_idempotently_and_match_the_models(db_url: URL) -> None:
    assert upgrade_to_head(db_url) == head_revision()
    assert upgrade_to_head(db_url) == head_revision()

    async def check() -> None:
        engine = create_engine(db_url)
        try:
            assert await current_revision(engine) == head_revision()
            async with engine.connect() as connection:
                tables = await connection.run_sync(
                    lambda c: {
                        t: {col["name"] for col in inspect(c).get_columns(t)}
                        for t in inspect(c).get_table_names()
                    }
                )
        finally:
            await engine.dispose()
        for table in Base.metadata.sorted_tables:
            assert tables[table.name] == {c.name for c in table.columns}, table.name

    asyncio.run(check())


# --- tenants and keys ----------------------------------------------------------------------


def test_tenants_are_unique_and_carry_limits(db_url: URL) -> None:
    async def body(store: Store) -> None:
        acme = await store.create_tenant("acme", TenantLimits(requests_per_minute=60))
        with pytest.raises(Conflict):
            await store.create_tenant("acme")
        assert (await store.tenant_by_name("acme")) == acme
        assert acme.id.startswith("tn_") and acme.limits.requests_per_minute == 60
        updated = await store.set_tenant_limits(acme.id, TenantLimits(max_concurrency=4))
        assert updated.limits == TenantLimits(max_concurrency=4)
        assert [t.name for t in await store.list_tenants()] == ["acme"]
        with pytest.raises(NotFound):
            await store.set_tenant_limits("tn_missing", TenantLimits())
        with pytest.raises(NotFound):
            await store.create_key("tn_missing", PEPPERS, scopes={"classify"})
        with pytest.raises(NotFound):
            await store.put_taxonomy("tn_missing", TAXONOMY_V1)

    run_with_store(db_url, body)


def test_key_lifecycle_create_verify_rotate_revoke(db_url: URL) -> None:
    async def body(store: Store) -> None:
        tenant = await store.create_tenant("acme")
        issued = await store.create_key(tenant.id, PEPPERS, scopes={"classify", "jobs"})
        verifier = KeyVerifier(store, PEPPERS, ttl=30, epoch_interval=0)
        principal = await verifier.verify(issued.token)
        assert principal is not None and principal.tenant_id == tenant.id
        assert principal.scopes == {"classify", "jobs"}

        rotated = await store.rotate_key(
            tenant.id, issued.row.key_id, PEPPERS, overlap=timedelta(hours=1)
        )
        assert rotated.row.scopes == issued.row.scopes
        assert await verifier.verify(rotated.token) is not None
        assert await verifier.verify(issued.token) is not None  # overlap window
        old = next(k for k in await store.list_keys(tenant.id) if k.key_id == issued.row.key_id)
        assert old.expires_at is not None
        assert old.expires_at - datetime.now(UTC) <= timedelta(hours=1)

        await store.revoke_key(tenant.id, rotated.row.key_id)
        assert await verifier.verify(rotated.token) is None
        with pytest.raises(Conflict):
            await store.rotate_key(tenant.id, rotated.row.key_id, PEPPERS)

    run_with_store(db_url, body)


def test_expired_key_and_disabled_tenant_are_refused(db_url: URL) -> None:
    async def body(store: Store) -> None:
        tenant = await store.create_tenant("acme")
        with pytest.raises(ValueError):
            await store.create_key(
                tenant.id, PEPPERS, scopes={"classify"}, expires_at=datetime.now(UTC)
            )
        soon = datetime.now(UTC) + timedelta(seconds=1)
        short = await store.create_key(tenant.id, PEPPERS, scopes={"classify"}, expires_at=soon)
        other = await store.create_key(tenant.id, PEPPERS, scopes={"admin"})
        verifier = KeyVerifier(store, PEPPERS, epoch_interval=0)
        assert await verifier.verify(short.token) is not None
        await asyncio.sleep((soon - datetime.now(UTC)).total_seconds() + 0.05)
        assert await verifier.verify(short.token) is None
        assert await verifier.verify(other.token) is not None
        await store.disable_tenant(tenant.id)
        assert await verifier.verify(other.token) is None

    run_with_store(db_url, body)


def test_revocation_through_one_gateway_is_seen_by_another(db_url: URL) -> None:
    """Two stores with their own engines and pools stand for two gateway processes."""

    async def main() -> None:
        first, second = await open_store(db_url), await open_store(db_url)
        try:
            tenant = await first.create_tenant("acme")
            issued = await first.create_key(tenant.id, PEPPERS, scopes={"classify"})
            verifier = KeyVerifier(second, PEPPERS, ttl=60, epoch_interval=0.2)
            assert await verifier.verify(issued.token) is not None
            await first.revoke_key(tenant.id, issued.row.key_id)
            start = asyncio.get_running_loop().time()
            while await verifier.verify(issued.token) is not None:
                await asyncio.sleep(0.05)
            waited = asyncio.get_running_loop().time() - start
            assert waited <= 0.2 + 0.5  # the epoch interval plus scheduling slack, far below 60
        finally:
            await first.engine.dispose()
            await second.engine.dispose()

    asyncio.run(main())


# --- taxonomies and policies ---------------------------------------------------------------


def test_taxonomy_versions_are_immutable_and_resolvable(db_url: URL) -> None:
    async def body(store: Store) -> None:
        tenant = await store.create_tenant("acme")
        v1 = await store.put_taxonomy(tenant.id, TAXONOMY_V1)
        assert v1.reference == "subjects@1"
        assert (await store.put_taxonomy(tenant.id, TAXONOMY_V1)).reference == "subjects@1"
        v2 = await store.put_taxonomy(tenant.id, TAXONOMY_V2)
        assert v2.reference == "subjects@2"
        named = await store.put_taxonomy(tenant.id, TAXONOMY_V1.with_version("2027-a"))
        assert named.reference == "subjects@2027-a"
        with pytest.raises(Conflict):
            await store.put_taxonomy(tenant.id, TAXONOMY_V2.with_version("2027-a"))

        latest = await store.resolve_taxonomy(tenant.id, "subjects")
        assert latest is not None and latest.version == "2027-a"
        pinned = await store.resolve_taxonomy(tenant.id, "subjects@1")
        assert pinned is not None and pinned.taxonomy == TAXONOMY_V1.with_version("1")
        assert await store.resolve_taxonomy(tenant.id, "subjects@9") is None
        assert await store.resolve_taxonomy(tenant.id, "bad ref!") is None
        assert await store.list_versions(tenant.id, "subjects") == ["1", "2", "2027-a"]
        assert await store.list_taxonomies(tenant.id) == [("subjects", "2027-a")]

        async with store.engine.begin() as connection:
            with pytest.raises(DBAPIError, match="immutable"):
                await connection.execute(text("UPDATE taxonomy_versions SET version = 'x'"))

    run_with_store(db_url, body)


def test_bundled_taxonomy_survives_a_round_trip(db_url: URL) -> None:
    root = Path(__file__).resolve().parents[2] / "models" / "taxonomies" / "debtags.json"
    taxonomy = parse_json(root.read_text(encoding="utf-8"))

    async def body(store: Store) -> None:
        tenant = await store.create_tenant("debian")
        await store.put_taxonomy(tenant.id, taxonomy)
        found = await store.resolve_taxonomy(tenant.id, f"{taxonomy.name}@{taxonomy.version}")
        assert found is not None and found.taxonomy == taxonomy

    run_with_store(db_url, body)


def test_policies_replace_as_a_whole(db_url: URL) -> None:
    async def body(store: Store) -> None:
        tenant = await store.create_tenant("acme")
        assert await store.get_policy(tenant.id) == {}
        await store.set_policy(tenant.id, POLICY)
        assert await store.get_policy(tenant.id) == POLICY
        smaller = {"member_facing": POLICY["member_facing"]}
        await store.set_policy(tenant.id, smaller)
        assert await store.get_policy(tenant.id) == smaller
        assert await store.get_task_policy(tenant.id, "archive_retag") is None
        with pytest.raises(NotFound):
            await store.set_policy("tn_missing", POLICY)

    run_with_store(db_url, body)


def test_tenant_isolation_in_every_scoped_call(db_url: URL) -> None:
    async def body(store: Store) -> None:
        a, b = await store.create_tenant("a"), await store.create_tenant("b")
        key_b = await store.create_key(b.id, PEPPERS, scopes={"classify"})
        await store.put_taxonomy(b.id, TAXONOMY_V1)
        await store.set_policy(b.id, POLICY)

        assert await store.resolve_taxonomy(a.id, "subjects") is None
        assert await store.resolve_taxonomy(a.id, "subjects@1") is None
        assert await store.list_taxonomies(a.id) == []
        assert await store.list_versions(a.id, "subjects") == []
        assert await store.list_keys(a.id) == []
        assert await store.get_policy(a.id) == {}
        with pytest.raises(NotFound):
            await store.revoke_key(a.id, key_b.row.key_id)
        with pytest.raises(NotFound):
            await store.rotate_key(a.id, key_b.row.key_id, PEPPERS)
        # Tenant a putting a taxonomy of the same name makes its own version 1.
        mine = await store.put_taxonomy(a.id, TAXONOMY_V2)
        assert mine.reference == "subjects@1" and mine.tenant_id == a.id
        theirs = await store.resolve_taxonomy(b.id, "subjects")
        assert theirs is not None and theirs.taxonomy == TAXONOMY_V1.with_version("1")
        verifier = KeyVerifier(store, PEPPERS)
        principal = await verifier.verify(key_b.token)
        assert principal is not None and principal.tenant_id == b.id

    run_with_store(db_url, body)


# --- nothing secret, nothing content-like --------------------------------------------------


async def _every_value(store: Store) -> list[Any]:
    async with store.engine.connect() as connection:
        metadata = MetaData()
        await connection.run_sync(lambda c: metadata.reflect(c))
        values: list[Any] = []
        for table in metadata.sorted_tables:
            for row in (await connection.execute(select(table))).all():
                values.extend(row)
    return values


def test_database_holds_no_key_secret_and_no_document_content(db_url: URL) -> None:
    canaries = ["CANARY-document-text-7f3a", "canary-member-doc-id-91c2"]

    async def body(store: Store) -> None:
        tenant = await store.create_tenant("acme")
        await store.put_taxonomy(tenant.id, TAXONOMY_V1)
        await store.set_policy(tenant.id, POLICY)
        issued = [await store.create_key(tenant.id, PEPPERS, scopes={"classify"})]
        issued.append(await store.rotate_key(tenant.id, issued[0].row.key_id, PEPPERS))
        verifier = KeyVerifier(store, PEPPERS)
        for key in issued:
            assert await verifier.verify(key.token) is not None
        # What a request would carry goes through every read path, and must not stick.
        for canary in canaries:
            assert await verifier.verify(f"tacet_live_{canary}") is None
            assert await store.resolve_taxonomy(tenant.id, canary) is None
            task = await store.get_task_policy(tenant.id, "member_facing")
            assert task is not None
            needs_review(task, canary, 0.5, key=review_key(PEPPERS.derive("review"), tenant.id))

        secrets_ = []
        for key in issued:
            secret = parse_key(key.token).secret
            secrets_ += [key.token, secret, hashlib.sha256(secret.encode()).hexdigest()]
        raw_needles = [s.encode() for s in secrets_ + canaries]
        raw_needles += [hashlib.sha256(parse_key(k.token).secret.encode()).digest() for k in issued]
        values = await _every_value(store)
        assert values, "the scan read nothing"
        for value in values:
            blob = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
            for needle in raw_needles:
                assert needle not in blob
        digests = {bytes(v) for v in values if isinstance(v, bytes | memoryview)}
        assert {k.row.digest for k in issued} <= digests  # the scan did see the digest column

    run_with_store(db_url, body)


_CHILD = """
import asyncio, os, sys, time
from pathlib import Path
from gateway.apikeys import KeyVerifier, load_peppers
from gateway.store import Store, create_engine

async def main():
    token = sys.stdin.readline().strip()
    peppers = load_peppers(os.environ, data_dir=Path("."), dev=False)
    store = Store(create_engine(os.environ["CHILD_DB_URL"]))
    verifier = KeyVerifier(store, peppers, ttl=60, epoch_interval=1.0)
    print("ok" if await verifier.verify(token) else "refused-at-start", flush=True)
    sys.stdin.readline()  # the parent has revoked the key
    start = time.monotonic()
    while await verifier.verify(token) is not None and time.monotonic() - start < 90:
        await asyncio.sleep(0.05)
    print(f"refused {time.monotonic() - start:.3f}", flush=True)
    await store.engine.dispose()

asyncio.run(main())
"""


def test_revocation_reaches_another_process_within_the_bound(db_url: URL) -> None:
    """A second gateway process, with its own cache, refuses a key revoked through the first."""
    pepper = "cross-process-pepper-0123456789abcdef"
    peppers = Peppers([pepper.encode()])

    async def setup(store: Store) -> None:
        tenant = await store.create_tenant("acme")
        issued = await store.create_key(tenant.id, peppers, scopes={"classify"})
        holder.extend([tenant.id, issued.row.key_id, issued.token])

    holder: list[str] = []
    run_with_store(db_url, setup)
    tenant_id, key_id, token = holder
    env = {
        **os.environ,
        "TACET_KEY_PEPPER": pepper,
        "CHILD_DB_URL": db_url.render_as_string(hide_password=False),
    }
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    ) as child:
        try:
            assert child.stdin is not None
            child.stdin.write(token + "\n")
            child.stdin.flush()
            _watch_revocation(child, db_url, tenant_id, key_id)
        finally:
            if child.poll() is None:
                child.kill()


def _watch_revocation(child: subprocess.Popen[str], url: URL, tenant_id: str, key_id: str) -> None:
    assert child.stdin is not None and child.stdout is not None
    assert child.stdout.readline().strip() == "ok"

    async def revoke(store: Store) -> None:
        await store.revoke_key(tenant_id, key_id)

    run_with_store(url, revoke)
    child.stdin.write("revoked\n")
    child.stdin.flush()
    word, seconds = child.stdout.readline().split()
    assert word == "refused"
    assert float(seconds) <= 1.0 + 2.0  # epoch interval plus slack; the contract is 60 s
    assert child.wait(timeout=30) == 0


def test_randomized_cross_tenant_attempts_never_succeed(db_url: URL) -> None:
    """1,000 random calls with one tenant's id on another tenant's resources: 0 successes."""
    rng = random.Random(20261123)

    async def body(store: Store) -> None:
        tenants = [await store.create_tenant(f"t{i}") for i in range(3)]
        keys: dict[str, list[str]] = {}
        for tenant in tenants:
            issued = [await store.create_key(tenant.id, PEPPERS, scopes={"classify"})]
            keys[tenant.id] = [k.row.key_id for k in issued]
            await store.put_taxonomy(tenant.id, parse_csv(TAXONOMY_CSV, name=f"tax-{tenant.name}"))
            await store.set_policy(tenant.id, {f"task-{tenant.name}": POLICY["member_facing"]})
        before = {t.id: await _snapshot(store, t.id) for t in tenants}

        successes = 0
        for _ in range(1000):
            attacker, victim = rng.sample(tenants, 2)
            victim_key = keys[victim.id][0]
            operation = rng.randrange(7)
            try:
                if operation == 0:
                    found = await store.resolve_taxonomy(attacker.id, f"tax-{victim.name}")
                elif operation == 1:
                    found = await store.resolve_taxonomy(attacker.id, f"tax-{victim.name}@1")
                elif operation == 2:
                    found = await store.list_versions(attacker.id, f"tax-{victim.name}")
                elif operation == 3:
                    found = await store.get_task_policy(attacker.id, f"task-{victim.name}")
                elif operation == 4:
                    found = victim_key in {k.key_id for k in await store.list_keys(attacker.id)}
                elif operation == 5:
                    found = await store.revoke_key(attacker.id, victim_key)
                else:
                    found = await store.rotate_key(attacker.id, victim_key, PEPPERS)
            except NotFound:
                found = None
            successes += bool(found)
        assert successes == 0
        assert {t.id: await _snapshot(store, t.id) for t in tenants} == before

    run_with_store(db_url, body)


TAXONOMY_CSV = HEADER + "f,x,X,,\n"


async def _snapshot(store: Store, tenant_id: str) -> tuple[Any, ...]:
    return (
        await store.list_keys(tenant_id),
        await store.list_taxonomies(tenant_id),
        await store.get_policy(tenant_id),
    )


def test_dev_key_is_created_once_and_replaced_when_stale(db_url: URL, tmp_path: Path) -> None:
    data_dir = tmp_path / "dev-data"

    async def body(store: Store) -> None:
        path = await ensure_dev_key(store, PEPPERS, data_dir)
        assert path.stat().st_mode & 0o777 == 0o600
        token = path.read_text().strip()
        verifier = KeyVerifier(store, PEPPERS, ttl=0, epoch_interval=0)
        principal = await verifier.verify(token)
        assert principal is not None and principal.scopes == SCOPES
        dev = await store.tenant_by_name("dev")
        assert dev is not None and principal.tenant_id == dev.id

        assert (await ensure_dev_key(store, PEPPERS, data_dir)).read_text().strip() == token
        await store.revoke_key(dev.id, principal.key_id)
        fresh = (await ensure_dev_key(store, PEPPERS, data_dir)).read_text().strip()
        assert fresh != token and await verifier.verify(fresh) is not None
        assert len(await store.list_keys(dev.id)) == 2

    run_with_store(db_url, body)
