"""Tenant isolation through the real Litestar app and a real control-plane database.

Each test runs on SQLite and on PostgreSQL (the store tests' throwaway server, or
`TACET_TEST_POSTGRES_URL`). A randomized run makes >= 1,000 cross-tenant attempts over every
tenant-scoped route (tenant A's key on tenant B's taxonomies, versions, task policies, classify
with B's taxonomy, and the admin routes on B's key ids) and checks that none succeeds and that
each answer is the same status and body (less the request id) as for a name that exists
nowhere: no existence oracle. The admin listings (keys, policy, limits) take no id: an attempt
there succeeds if it shows anything of B's. The engine is an in-process fake.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from engine.protocol import DecodeOut, DocumentDone, Isolation, LabelOut, Welcome
from gateway.apikeys import Peppers
from gateway.app import create_app, lazy_audit_log
from gateway.auth import StoreKeyStore
from gateway.policies import TaskPolicy
from gateway.store import database_url, open_store
from gateway.taxonomies import DatabaseTaxonomyStore, import_bundled
from gateway.taxonomy_io import parse_csv
from tests.integration._postgres import reset_schema

pytestmark = pytest.mark.integration

PEPPERS = Peppers([b"isolation-test-pepper-0123456789abcdef"])
REVIEW_SECRET = b"isolation-test-review-secret-0123456789"
HEADER = "facet,id,name,description,parent\n"
ATTEMPTS = 1200
CANARY = f"ZDR-CANARY-{uuid.uuid4().hex}"


class FakeEngine:
    """Answers every document with the first label of the first facet at probability 0.75."""

    def __init__(self) -> None:
        self.ready = True
        self.calls: list[tuple[str, str]] = []
        self.welcome = Welcome(
            version=1, pid=1, model_id="fake-model", family="llada", slot_ops="torch",
            isolation=Isolation(True, True, False, "fake"),
        )

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def classify(
        self, taxonomy: dict[str, Any], texts: list[str], *, mode: str = "diffusion",
        threshold: float | None = None,
    ) -> list[DocumentDone]:
        self.calls.append((taxonomy["name"], mode))
        facet = taxonomy["facets"][0]
        return [
            DocumentDone(
                call_id="c", index=i, labels=[LabelOut(facet["name"], facet["labels"][0]["id"],
                                                       0.75)],
                label_mass={facet["name"]: 0.9},
                decode=DecodeOut(mode=mode, forward_passes=1, exact=True, truncated=False,
                                 tokens=3),
            )
            for i in range(len(texts))
        ]


@dataclass
class World:
    url: Any
    keys: dict[str, str]  # tenant label -> token with every scope
    narrow: dict[str, str]  # tenant label -> token with `classify` only
    tenant_ids: dict[str, str]
    taxonomies: dict[str, list[str]]  # tenant label -> taxonomy names
    tasks: dict[str, list[str]]  # tenant label -> task names
    jobs: dict[str, list[str]] = field(default_factory=dict)  # tenant label -> job ids


def _csv(first_label: str) -> str:
    return HEADER + f"topic,{first_label},First,,\ntopic,other,Other,,\n"


async def _seed(url: Any, rng: random.Random) -> World:
    store = await open_store(url)
    world = World(url, {}, {}, {}, {}, {})
    try:
        for label in ("a", "b"):
            tenant = await store.create_tenant(f"tenant-{label}")
            world.tenant_ids[label] = tenant.id
            issued = await store.create_key(
                tenant.id, PEPPERS,
                scopes={"classify", "jobs", "taxonomy:write", "audit:read", "admin"}, env="test",
            )
            world.keys[label] = issued.token
            narrow = await store.create_key(tenant.id, PEPPERS, scopes={"classify"}, env="test")
            world.narrow[label] = narrow.token
            names = [f"{label}-tax-{rng.randrange(10**6)}-{i}" for i in range(4)]
            for name in names:
                for version in range(1, rng.randrange(2, 4)):
                    await store.put_taxonomy(
                        tenant.id, parse_csv(_csv(f"v{version}"), name=name, version=str(version))
                    )
            world.taxonomies[label] = names
            tasks = [f"{label}_task_{i}" for i in range(3)]
            await store.set_policy(
                tenant.id,
                {
                    tasks[0]: TaskPolicy(mode="autoregressive", human_review="none"),
                    tasks[1]: TaskPolicy(human_review="sample_based", review_rate=1.0),
                    tasks[2]: TaskPolicy(human_review="below_threshold", review_threshold=0.8),
                },
            )
            world.tasks[label] = tasks
        # Bulk jobs (rows only: no S3 is needed to read or cancel one).
        from gateway.jobs import JobStore, ShardPlan
        from gateway.jobs.repository import JobSpec

        jobs = JobStore(store.engine)
        for label in ("a", "b"):
            spec = JobSpec(
                input_uri=f"s3://{label}-in/docs.jsonl", output_uri=f"s3://{label}-out/run/",
                compression="none", taxonomy=world.taxonomies[label][0], taxonomy_version="1",
                labelled_with=None, task=None, mode="diffusion", shard_size=100,
            )
            plans = [ShardPlan(i, i * 100, (i + 1) * 100, None, None) for i in range(2)]
            world.jobs[label] = [
                (await jobs.create(world.tenant_ids[label], spec, plans)).id for _ in range(3)
            ]
        # A name both tenants own: each must see only its own content.
        for label in ("a", "b"):
            await store.put_taxonomy(
                world.tenant_ids[label], parse_csv(_csv(f"only-{label}"), name="shared-name")
            )
    finally:
        await store.engine.dispose()
    return world


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> World:
    """Seeded tenants on SQLite and on the PostgreSQL server of the store tests' fixture."""
    if request.param == "sqlite":
        url = database_url(tmp_path, {})
    else:
        url = request.getfixturevalue("postgres_url")
        asyncio.run(reset_schema(url))
    return asyncio.run(_seed(url, random.Random(1234)))


def _app(url: Any, engine: FakeEngine, *, audited: bool = False) -> Any:
    keys = StoreKeyStore(url, PEPPERS)
    app = create_app(
        engine=engine, keys=keys, taxonomies=DatabaseTaxonomyStore(keys.store, REVIEW_SECRET),
        audit=lazy_audit_log(keys) if audited else None,
    )
    app.on_shutdown.append(keys.close)
    return app


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def client(world: World, engine: FakeEngine) -> Iterator[TestClient[Any]]:
    with TestClient(_app(world.url, engine)) as test_client:
        yield test_client


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _shape(response: Any) -> tuple[int, str, dict[str, Any]]:
    """Status, media type and body without the per-request id: what an oracle could use."""
    body = dict(response.json())
    body.pop("request_id", None)
    return response.status_code, response.headers.get("content-type", ""), body


def _docs() -> list[dict[str, str]]:
    return [{"id": "doc-1", "text": "some text"}]


# ---- positive controls: the same routes work on one's own resources --------------------------


def test_own_resources_work(client: TestClient[Any], world: World, engine: FakeEngine) -> None:
    key = _auth(world.keys["a"])
    own = world.taxonomies["a"][0]
    listed = client.get("/v1/taxonomies", headers=key)
    assert listed.status_code == 200
    names = {t["name"] for t in listed.json()["taxonomies"]}
    assert names == {*world.taxonomies["a"], "shared-name"}
    assert client.get(f"/v1/taxonomies/{own}", headers=key).status_code == 200
    assert client.get(f"/v1/taxonomies/{own}@1", headers=key).json()["version"] == "1"
    assert client.get(f"/v1/taxonomies/{own}/versions", headers=key).json()["versions"][0] == "1"
    shared = client.get("/v1/taxonomies/shared-name", headers=key).json()
    assert shared["facets"][0]["labels"][0]["id"] == "only-a"
    response = client.post(
        "/v1/classify",
        json={"taxonomy": own, "task": world.tasks["a"][0], "documents": _docs()},
        headers=key,
    )
    assert response.status_code == 200, response.text
    assert engine.calls[-1] == (own, "autoregressive")  # the mode comes from the task policy


def test_task_policy_sets_needs_review(client: TestClient[Any], world: World) -> None:
    key = _auth(world.keys["a"])
    own = world.taxonomies["a"][0]

    def flags(task: str | None) -> list[bool]:
        body: dict[str, Any] = {"taxonomy": own, "documents": _docs() * 1}
        if task is not None:
            body["task"] = task
        response = client.post("/v1/classify", json=body, headers=key)
        assert response.status_code == 200, response.text
        return [r["needs_review"] for r in response.json()["results"]]

    assert flags(None) == [False]
    assert flags(world.tasks["a"][0]) == [False]  # human_review: none
    assert flags(world.tasks["a"][1]) == [True]  # sample_based at rate 1.0
    assert flags(world.tasks["a"][2]) == [True]  # 0.75 is below the 0.8 threshold


def test_put_taxonomy_json_and_csv_make_new_versions(client: TestClient[Any], world: World) -> None:
    key = _auth(world.keys["a"])
    document = {"facets": [{"name": "f", "labels": [{"id": "x", "name": "X"}]}]}
    first = client.put("/v1/taxonomies/fresh", json=document, headers=key)
    assert (first.status_code, first.json()) == (201, {"name": "fresh", "version": "1"})
    again = client.put("/v1/taxonomies/fresh", json=document, headers=key)
    assert again.json()["version"] == "1"  # same content: no new version
    csv_body = HEADER + "f,x,X,,\nf,y,Y,,\n"
    second = client.put(
        "/v1/taxonomies/fresh", content=csv_body, headers={**key, "Content-Type": "text/csv"}
    )
    assert second.json()["version"] == "2"
    versions = client.get("/v1/taxonomies/fresh/versions", headers=key).json()["versions"]
    assert versions == ["1", "2"]
    pinned = {**document, "version": "1"}
    pinned["facets"] = [{"name": "f", "labels": [{"id": "z", "name": "Z"}]}]
    conflict = client.put("/v1/taxonomies/fresh", json=pinned, headers=key)
    assert conflict.status_code == 409
    mismatch = client.put("/v1/taxonomies/fresh", json={**document, "name": "other"}, headers=key)
    assert mismatch.status_code == 422
    assert mismatch.json()["errors"][0]["code"] == "name_mismatch"
    bad_name = client.put("/v1/taxonomies/fresh@2", json=document, headers=key)
    assert (bad_name.status_code, bad_name.json()["errors"][0]["code"]) == (422, "invalid_name")
    wrong_type = client.put(
        "/v1/taxonomies/fresh", content=b"x", headers={**key, "Content-Type": "text/plain"}
    )
    assert wrong_type.status_code == 415


def test_diff_between_versions_over_http(client: TestClient[Any], world: World) -> None:
    key = _auth(world.keys["a"])
    v1 = HEADER + "f,x,X,,\nf,y,Y,,\nf,z,Z,,\n"
    v2 = HEADER + "f,x,X,,\nf,y,Why,,\nf,z,Z,,x\nf,w,W,,\n"  # y renamed, z moved, w added
    csv = {**key, "Content-Type": "text/csv"}
    assert client.put("/v1/taxonomies/evolving", content=v1, headers=csv).status_code == 201
    assert client.put("/v1/taxonomies/evolving", content=v2, headers=csv).status_code == 201
    latest = client.get("/v1/taxonomies/evolving/diff?from=1", headers=key)
    assert latest.status_code == 200, latest.text
    assert latest.json() == {
        "name": "evolving", "from_version": "1", "to_version": "2",
        "added": [{"facet": "f", "label": "w"}],
        "removed": [],
        "renamed": [{"facet": "f", "label": "y", "old_name": "Y", "new_name": "Why"}],
        "moved": [{"facet": "f", "label": "z", "old_parent": None, "new_parent": "x"}],
    }
    back = client.get("/v1/taxonomies/evolving/diff?from=2&to=1", headers=key).json()
    assert back["removed"] == [{"facet": "f", "label": "w"}] and back["added"] == []
    same = client.get("/v1/taxonomies/evolving/diff?from=2&to=2", headers=key).json()
    assert (same["added"], same["removed"], same["renamed"], same["moved"]) == ([], [], [], [])
    assert client.get("/v1/taxonomies/evolving/diff?from=9", headers=key).status_code == 404
    assert client.get("/v1/taxonomies/evolving/diff", headers=key).status_code == 422  # no from
    other = _auth(world.keys["b"])  # tenant B sees nothing of A's taxonomy
    assert client.get("/v1/taxonomies/evolving/diff?from=1", headers=other).status_code == 404


def test_put_invalid_taxonomy_lists_every_bad_row_without_values(
    client: TestClient[Any], world: World
) -> None:
    key = {**_auth(world.keys["a"]), "Content-Type": "text/csv"}
    body = (
        HEADER
        + "f,a,A,,\n"
        + f"f,a,{CANARY},,\n"
        + f"f,b,B,,{CANARY}\n"
        + "f,,C,,\n"
    )
    response = client.put("/v1/taxonomies/broken", content=body, headers=key)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    errors = response.json()["errors"]
    assert sorted((e["location"], e["code"]) for e in errors) == [
        ("row 3", "duplicate_id"),
        ("row 4", "unknown_parent"),
        ("row 5", "missing_id"),
    ]
    assert CANARY not in response.text
    assert client.get("/v1/taxonomies/broken", headers=_auth(world.keys["a"])).status_code == 404


def test_scopes_are_enforced(client: TestClient[Any], world: World) -> None:
    narrow = _auth(world.narrow["a"])
    document = {"facets": [{"name": "f", "labels": [{"id": "x", "name": "X"}]}]}
    assert client.put("/v1/taxonomies/t", json=document, headers=narrow).status_code == 403
    assert client.get("/v1/taxonomies", headers=narrow).status_code == 200
    assert client.get("/v1/taxonomies", headers=_auth("tacet_test_nope")).status_code == 401


def test_put_under_another_tenants_name_creates_ones_own(
    client: TestClient[Any], world: World
) -> None:
    b_name = world.taxonomies["b"][0]
    b_versions = client.get(f"/v1/taxonomies/{b_name}/versions", headers=_auth(world.keys["b"]))
    document = {"facets": [{"name": "f", "labels": [{"id": "mine", "name": "Mine"}]}]}
    response = client.put(f"/v1/taxonomies/{b_name}", json=document, headers=_auth(world.keys["a"]))
    # Version 1, whatever B holds: the answer says nothing about B's versions.
    assert (response.status_code, response.json()["version"]) == (201, "1")
    after = client.get(f"/v1/taxonomies/{b_name}/versions", headers=_auth(world.keys["b"]))
    assert after.json() == b_versions.json()
    b_doc = client.get(f"/v1/taxonomies/{b_name}", headers=_auth(world.keys["b"])).json()
    assert b_doc["facets"][0]["labels"][0]["id"] != "mine"


# ---- the randomized cross-tenant run ---------------------------------------------------------


def _key_ids(world: World, label: str) -> list[str]:
    return [token.split("_")[2] for token in (world.keys[label], world.narrow[label])]


def _shows_victim(response: Any, world: World, victim: str) -> bool:
    """Whether a listing shows any of the victim's ids or task names."""
    marks = [*_key_ids(world, victim), world.tenant_ids[victim], *world.tasks[victim]]
    return any(mark in response.text for mark in marks)


def _jobs_attempt(
    client: TestClient[Any], world: World, rng: random.Random, key: dict[str, str], victim: str
) -> tuple[Any, Any]:
    """Tenant A's key on B's jobs: read or cancel, answered like a job that does not exist."""
    theirs = f"/v1/jobs/{rng.choice(world.jobs[victim])}"
    nowhere = "/v1/jobs/job_" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz234567")
                                        for _ in range(16))  # a real id's shape
    call = getattr(client, rng.choice(["get", "delete"]))
    return call(theirs, headers=key), call(nowhere, headers=key)


def _admin_attempt(
    client: TestClient[Any], world: World, rng: random.Random, key: dict[str, str], victim: str
) -> tuple[Any, Any]:
    """Tenant A's key on the admin routes: B's key ids by id, or a listing (ghost None)."""
    route = rng.randrange(4)
    if route == 3:
        path = rng.choice(["/v1/admin/keys", "/v1/admin/policy", "/v1/admin/limits"])
        return client.get(path, headers=key), None
    theirs = f"/v1/admin/keys/{rng.choice(_key_ids(world, victim))}"
    nowhere = "/v1/admin/keys/" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz234567")
                                          for _ in range(16))
    if route == 0:
        return client.get(theirs, headers=key), client.get(nowhere, headers=key)
    if route == 1:
        return client.delete(theirs, headers=key), client.delete(nowhere, headers=key)
    body = {"overlap_hours": rng.choice([0, 1, 24])}
    return (
        client.post(f"{theirs}/rotate", json=body, headers=key),
        client.post(f"{nowhere}/rotate", json=body, headers=key),
    )


def _attempt(
    client: TestClient[Any], world: World, rng: random.Random, attacker: str, victim: str
) -> tuple[Any, Any]:
    """One cross-tenant request and the same request on a name that exists nowhere (or, for
    an admin listing, the listing and None)."""
    token = rng.choice([world.keys[attacker], world.narrow[attacker]])
    key = _auth(token)
    name = rng.choice(world.taxonomies[victim])
    ghost = f"{victim}-tax-{rng.randrange(10**6)}-ghost"
    route = rng.randrange(12)
    if route == 10:
        return _jobs_attempt(client, world, rng, key, victim)
    if route == 11:  # the audit export: only the caller's tenant's records, whatever is asked
        params = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
        if rng.random() < 0.5:
            params["tenant"] = world.tenant_ids[victim]
        return client.get("/v1/audit/export", params=params, headers=key), None
    if route >= 6:
        return _admin_attempt(client, world, rng, key, victim)
    if route == 5:  # an invalid upload under B's name: the same 422 (or 403) as anywhere
        bad = {**key, "Content-Type": "text/csv"}
        body = HEADER + "f,a,A,,\nf,a,A,,\n"
        return (
            client.put(f"/v1/taxonomies/{name}", content=body, headers=bad),
            client.put(f"/v1/taxonomies/{ghost}", content=body, headers=bad),
        )
    if route == 0:
        return (
            client.get(f"/v1/taxonomies/{name}", headers=key),
            client.get(f"/v1/taxonomies/{ghost}", headers=key),
        )
    if route == 1:
        return (
            client.get(f"/v1/taxonomies/{name}@1", headers=key),
            client.get(f"/v1/taxonomies/{ghost}@1", headers=key),
        )
    if route == 2:
        tail = rng.choice(["versions", "diff?from=1", "diff?from=1&to=1"])
        return (
            client.get(f"/v1/taxonomies/{name}/{tail}", headers=key),
            client.get(f"/v1/taxonomies/{ghost}/{tail}", headers=key),
        )
    if route == 3:
        reference = name if rng.random() < 0.5 else f"{name}@1"
        return (
            client.post("/v1/classify", json={"taxonomy": reference, "documents": _docs()},
                        headers=key),
            client.post("/v1/classify", json={"taxonomy": ghost, "documents": _docs()},
                        headers=key),
        )
    own = rng.choice(world.taxonomies[attacker])
    return (
        client.post(
            "/v1/classify",
            json={"taxonomy": own, "task": rng.choice(world.tasks[victim]), "documents": _docs()},
            headers=key,
        ),
        client.post(
            "/v1/classify",
            json={"taxonomy": own, "task": f"{victim}_task_ghost", "documents": _docs()},
            headers=key,
        ),
    )


@pytest.fixture
def audited_client(world: World, engine: FakeEngine) -> Iterator[TestClient[Any]]:
    with TestClient(_app(world.url, engine, audited=True)) as test_client:
        yield test_client


def test_randomized_cross_tenant_attempts_never_succeed(
    audited_client: TestClient[Any], world: World, engine: FakeEngine
) -> None:
    client = audited_client
    seed = int(os.environ.get("TACET_ISOLATION_SEED", "0")) or random.randrange(1, 2**32)
    rng = random.Random(seed)
    successes, oracles, admin_attempts, job_attempts, audit_attempts = 0, 0, 0, 0, 0
    for _ in range(ATTEMPTS):
        attacker, victim = rng.choice([("a", "b"), ("b", "a")])
        cross, ghost = _attempt(client, world, rng, attacker, victim)
        admin_attempts += cross.request.url.path.startswith("/v1/admin/")
        job_attempts += cross.request.url.path.startswith("/v1/jobs/")
        audit_attempts += cross.request.url.path.startswith("/v1/audit/")
        if ghost is None:  # an admin listing: it must show nothing of the victim's
            successes += _shows_victim(cross, world, victim)
            continue
        if cross.status_code < 400:
            successes += 1
        if _shape(cross) != _shape(ghost):
            oracles += 1
    assert admin_attempts >= ATTEMPTS // 4  # the admin routes got their share
    assert job_attempts >= ATTEMPTS // 24 and audit_attempts >= ATTEMPTS // 24
    for label in ("a", "b"):  # no job was cancelled by the other tenant
        for job_id in world.jobs[label]:
            job = client.get(f"/v1/jobs/{job_id}", headers=_auth(world.keys[label]))
            assert (job.status_code, job.json()["state"]) == (200, "running")
    for label in ("a", "b"):  # no key was revoked or rotated by the other tenant
        for token in (world.keys[label], world.narrow[label]):
            assert client.get("/v1/taxonomies", headers=_auth(token)).status_code == 200
        keys = client.get("/v1/admin/keys", headers=_auth(world.keys[label])).json()["keys"]
        assert sorted(k["key_id"] for k in keys) == sorted(_key_ids(world, label))
        assert {k["state"] for k in keys} == {"usable"}
    for attacker, victim in (("a", "b"), ("b", "a")):
        listed = client.get("/v1/taxonomies", headers=_auth(world.keys[attacker])).json()
        assert not {t["name"] for t in listed["taxonomies"]} & set(world.taxonomies[victim])
    assert (successes, oracles) == (0, 0), f"seed {seed}"
    assert engine.calls == []  # no cross-tenant request reached the engine


# ---- two gateways, one database -------------------------------------------------------------


def test_revocation_through_one_gateway_is_refused_by_the_other(world: World) -> None:
    headers = _auth(world.keys["a"])
    with TestClient(_app(world.url, FakeEngine())) as one, TestClient(
        _app(world.url, FakeEngine())
    ) as two:
        assert one.get("/v1/taxonomies", headers=headers).status_code == 200
        assert two.get("/v1/taxonomies", headers=headers).status_code == 200  # now cached

        async def revoke() -> None:
            store = await open_store(world.url)
            try:
                key_id = world.keys["a"].split("_")[2]
                await store.revoke_key(world.tenant_ids["a"], key_id)
            finally:
                await store.engine.dispose()

        asyncio.run(revoke())
        started = time.monotonic()
        while two.get("/v1/taxonomies", headers=headers).status_code != 401:
            assert time.monotonic() - started < 60, "revocation not seen within 60 s"
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        assert one.get("/v1/taxonomies", headers=headers).status_code == 401
        assert elapsed < 5  # the verifier's epoch check runs about every second


def test_static_taxonomies_are_listed_read_only(tmp_path: Path) -> None:
    """The file-based store (tests, embedding) answers the same routes, and refuses PUT."""
    from gateway.auth import DevKeyStore, ensure_dev_key
    from gateway.taxonomies import StaticTaxonomyStore

    base = {"name": "subjects", "facets": [{"name": "f", "labels": [{"id": "x", "name": "X"}]}]}
    static = StaticTaxonomyStore([{**base, "version": "2"}, {**base, "version": "10"}])
    key_file = ensure_dev_key(tmp_path)
    app = create_app(engine=FakeEngine(), keys=DevKeyStore(key_file), taxonomies=static)
    key = _auth(key_file.read_text().strip())
    with TestClient(app) as client:
        listed = client.get("/v1/taxonomies", headers=key).json()
        assert listed == {"taxonomies": [{"name": "subjects", "version": "10"}]}
        versions = client.get("/v1/taxonomies/subjects/versions", headers=key).json()
        assert versions["versions"] == ["2", "10"]
        assert client.put("/v1/taxonomies/subjects", json=base, headers=key).status_code == 405


def test_dev_bundled_import_is_idempotent(tmp_path: Path) -> None:
    async def run() -> tuple[list[str], list[str], list[tuple[str, str]]]:
        store = await open_store(database_url(tmp_path, {}))
        try:
            tenant = await store.create_tenant("dev")
            first = await import_bundled(store, tenant.id)
            second = await import_bundled(store, tenant.id)
            return first, second, await store.list_taxonomies(tenant.id)
        finally:
            await store.engine.dispose()

    first, second, listed = asyncio.run(run())
    assert first and second == []
    assert {name for name, _ in listed} == {r.split("@")[0] for r in first}
