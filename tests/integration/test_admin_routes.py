"""Admin-scoped HTTP endpoints (`/v1/admin/...`) through the real app and control plane.

SQLite and PostgreSQL (the conftest fixture). The audit trail is the real one on the same
database, read back through `GET /v1/audit/export`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from engine.protocol import DecodeOut, DocumentDone, Isolation, LabelOut, Welcome
from gateway.apikeys import Peppers
from gateway.app import create_app, lazy_audit_log
from gateway.auth import StoreKeyStore
from gateway.problems import PROBLEM_BASE
from gateway.store import database_url, open_store
from gateway.taxonomies import DatabaseTaxonomyStore
from gateway.taxonomy_io import parse_csv
from tests.integration._postgres import reset_schema

pytestmark = pytest.mark.integration

PEPPERS = Peppers([b"admin-routes-test-pepper-0123456789abcdef"])
CANARY = f"ZDR-CANARY-{uuid.uuid4().hex}"
TAXONOMY = "facet,id,name,description,parent\ntopic,one,One,,\ntopic,two,Two,,\n"
ALL = {"classify", "jobs", "taxonomy:write", "audit:read", "admin"}


class FakeEngine:
    def __init__(self) -> None:
        self.ready = True
        isolation = Isolation(True, True, False, "-")
        self.welcome = Welcome(1, 1, "fake-model", "llada", "torch", isolation)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def classify(
        self, taxonomy: dict[str, Any], texts: list[str], *, mode: str = "diffusion",
        threshold: float | None = None,
    ) -> list[DocumentDone]:
        facet = taxonomy["facets"][0]
        decode = DecodeOut(mode, 1, True, False, 3)
        label = LabelOut(facet["name"], facet["labels"][0]["id"], 0.5)
        return [DocumentDone("c", i, [label], {}, decode) for i in range(len(texts))]


@dataclass
class World:
    url: Any
    tenant_ids: dict[str, str]
    admin: dict[str, str]  # every scope
    narrow: dict[str, str]  # classify only


async def _seed(url: Any) -> World:
    store = await open_store(url)
    world = World(url, {}, {}, {})
    try:
        for label in ("a", "b"):
            tenant = await store.create_tenant(f"tenant-{label}")
            world.tenant_ids[label] = tenant.id
            world.admin[label] = (await store.create_key(tenant.id, PEPPERS, scopes=ALL)).token
            narrow = await store.create_key(tenant.id, PEPPERS, scopes={"classify"})
            world.narrow[label] = narrow.token
            await store.put_taxonomy(tenant.id, parse_csv(TAXONOMY, name="topics"))
    finally:
        await store.engine.dispose()
    return world


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> World:
    if request.param == "sqlite":
        url = database_url(tmp_path, {})
    else:
        url = request.getfixturevalue("postgres_url")
        asyncio.run(reset_schema(url))
    return asyncio.run(_seed(url))


@pytest.fixture
def client(world: World) -> Iterator[TestClient[Any]]:
    keys = StoreKeyStore(world.url, PEPPERS)
    app = create_app(
        engine=FakeEngine(),
        keys=keys,
        taxonomies=DatabaseTaxonomyStore(keys.store, b"r" * 32),
        audit=lazy_audit_log(keys),
    )
    app.on_shutdown.append(keys.close)
    with TestClient(app) as test_client:
        yield test_client


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _key_id(token: str) -> str:
    return token.split("_")[2]


def _until_status(client: TestClient[Any], token: str, status: int) -> None:
    """Poll a cheap route until the key gets `status` (the verifier's epoch check runs about
    every second); fail after 30 s."""
    deadline = time.monotonic() + 30
    while client.get("/v1/taxonomies", headers=_auth(token)).status_code != status:
        assert time.monotonic() < deadline, f"the key never got {status}"
        time.sleep(0.05)


def _audit(client: TestClient[Any], world: World, label: str) -> list[dict[str, Any]]:
    response = client.get(
        "/v1/audit/export",
        params={"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"},
        headers=_auth(world.admin[label]),
    )
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def test_key_lifecycle_over_http(
    client: TestClient[Any], world: World, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = _auth(world.admin["a"])
    created = client.post(
        "/v1/admin/keys", json={"scopes": ["classify"], "env": "test", "expires_in_days": 30},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    token, key = body["token"], body["key"]
    assert token.startswith("tacet_test_") and _key_id(token) == key["key_id"]
    assert key["scopes"] == ["classify"] and key["state"] == "usable"
    expires = datetime.fromisoformat(key["expires_at"])
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    # The new key works for its scope, and only that.
    assert client.get("/v1/taxonomies", headers=_auth(token)).status_code == 200
    assert client.get("/v1/admin/keys", headers=_auth(token)).status_code == 403
    # Listing and reading show ids and state, never a token or digest.
    listed = client.get("/v1/admin/keys", headers=admin)
    assert listed.status_code == 200
    assert key["key_id"] in {k["key_id"] for k in listed.json()["keys"]}
    assert token not in listed.text and token.split("_")[3] not in listed.text
    one = client.get(f"/v1/admin/keys/{key['key_id']}", headers=admin)
    assert one.status_code == 200 and one.json() == key

    rotated = client.post(
        f"/v1/admin/keys/{key['key_id']}/rotate", json={"overlap_hours": 1}, headers=admin
    )
    assert rotated.status_code == 201, rotated.text
    new_token = rotated.json()["token"]
    assert rotated.json()["key"]["scopes"] == ["classify"]
    old = rotated.json()["replaced"]
    assert old["key_id"] == key["key_id"] and old["state"] == "usable"
    assert datetime.fromisoformat(old["expires_at"]) - datetime.now(UTC) <= timedelta(hours=1)
    assert client.get("/v1/taxonomies", headers=_auth(new_token)).status_code == 200
    assert client.get("/v1/taxonomies", headers=_auth(token)).status_code == 200  # overlap

    revoked = client.delete(f"/v1/admin/keys/{key['key_id']}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    _until_status(client, token, 401)
    again = client.delete(f"/v1/admin/keys/{key['key_id']}", headers=admin)
    assert again.status_code == 200  # idempotent
    conflict = client.post(f"/v1/admin/keys/{key['key_id']}/rotate", headers=admin)
    assert conflict.status_code == 409
    assert conflict.json()["type"] == PROBLEM_BASE + "key-conflict"
    # Rotation with no overlap: the old key stops at once.
    instant = client.post(
        f"/v1/admin/keys/{_key_id(new_token)}/rotate", json={"overlap_hours": 0}, headers=admin
    )
    assert instant.status_code == 201
    _until_status(client, new_token, 401)
    assert client.get("/v1/taxonomies", headers=_auth(instant.json()["token"])).status_code == 200

    # The audit trail: the CLI-style act records name the key acted on, the request records
    # the acting key; no token anywhere in it, in the logs or on the console.
    records = _audit(client, world, "a")
    acts = [(r["api"]["operation"], r.get("actor", {}).get("user", {}).get("uid")) for r in records]
    text = json.dumps(records)
    for secret in (token, new_token, instant.json()["token"]):
        assert secret not in text
        assert secret not in caplog.text
        assert secret.split("_")[3] not in text
    out, err = capsys.readouterr()
    assert token not in out + err
    assert ("keys.create", key["key_id"]) in acts  # the act: the key acted on
    assert ("admin.keys.create", _key_id(world.admin["a"])) in acts  # the call: the actor
    operations = [r["api"]["operation"] for r in records]
    for expected in (
        "keys.create", "admin.keys.create", "keys.rotate", "admin.keys.rotate", "keys.revoke",
        "admin.keys.revoke", "admin.keys.list", "admin.keys.get",
    ):
        assert expected in operations, expected


def test_audit_records_name_the_key_acted_on_and_the_actor(
    client: TestClient[Any], world: World
) -> None:
    admin = _auth(world.admin["a"])
    victim = _key_id(world.narrow["a"])
    assert client.delete(f"/v1/admin/keys/{victim}", headers=admin).status_code == 200
    records = _audit(client, world, "a")
    flat = [json.dumps(r, sort_keys=True) for r in records]
    act = [f for f in flat if '"keys.revoke"' in f]
    call = [f for f in flat if '"admin.keys.revoke"' in f]
    assert len(act) == 1 and victim in act[0]
    assert len(call) == 1 and _key_id(world.admin["a"]) in call[0]
    assert world.tenant_ids["a"] in act[0] and world.tenant_ids["a"] in call[0]
    # B's chain holds nothing of A's act.
    assert not any(victim in json.dumps(r) for r in _audit(client, world, "b"))


def test_admin_scope_is_required_everywhere(client: TestClient[Any], world: World) -> None:
    narrow = _auth(world.narrow["a"])
    key_id = _key_id(world.admin["a"])
    calls = [
        client.get("/v1/admin/keys", headers=narrow),
        client.post("/v1/admin/keys", json={"scopes": ["admin"]}, headers=narrow),
        client.get(f"/v1/admin/keys/{key_id}", headers=narrow),
        client.post(f"/v1/admin/keys/{key_id}/rotate", headers=narrow),
        client.delete(f"/v1/admin/keys/{key_id}", headers=narrow),
        client.get("/v1/admin/policy", headers=narrow),
        client.put("/v1/admin/policy", json={"tasks": {}}, headers=narrow),
        client.get("/v1/admin/limits", headers=narrow),
    ]
    assert [c.status_code for c in calls] == [403] * len(calls)
    assert client.get("/v1/admin/keys", headers=_auth("tacet_test_nope")).status_code == 401
    # The admin key is still whole.
    assert client.get("/v1/admin/keys", headers=_auth(world.admin["a"])).status_code == 200


def test_bad_bodies_answer_constant_problems(client: TestClient[Any], world: World) -> None:
    admin = _auth(world.admin["a"])
    cases = [
        client.post("/v1/admin/keys", json={"scopes": [CANARY]}, headers=admin),
        client.post("/v1/admin/keys", json={"scopes": []}, headers=admin),
        client.post("/v1/admin/keys", json={"scopes": ["classify"], CANARY: 1}, headers=admin),
        client.post("/v1/admin/keys", content=CANARY.encode(), headers=admin),
        client.post(
            "/v1/admin/keys", json={"scopes": ["classify"], "expires_in_days": 0}, headers=admin
        ),
        client.post(
            f"/v1/admin/keys/{_key_id(world.narrow['a'])}/rotate",
            json={"overlap_hours": -1}, headers=admin,
        ),
    ]
    for response in cases:
        assert response.status_code == 422, response.text
        assert response.json()["type"] == PROBLEM_BASE + "invalid-request"
        assert CANARY not in response.text
    policy = client.put(
        "/v1/admin/policy",
        content=json.dumps({"tasks": {CANARY: {"mode": CANARY}}, CANARY: 1}),
        headers={**admin, "Content-Type": "application/json"},
    )
    assert policy.status_code == 422
    assert policy.json()["type"] == PROBLEM_BASE + "invalid-policy"
    assert CANARY not in policy.text
    media = client.put(
        "/v1/admin/policy", content=b"tasks: {}", headers={**admin, "Content-Type": "text/plain"}
    )
    assert media.status_code == 415
    # Nothing was created by the refused calls.
    listed = client.get("/v1/admin/keys", headers=admin).json()["keys"]
    assert len(listed) == 2


def test_policy_over_http_drives_classify(client: TestClient[Any], world: World) -> None:
    admin = _auth(world.admin["a"])
    assert client.get("/v1/admin/policy", headers=admin).json() == {"tasks": {}}
    yaml_body = (
        "tasks:\n"
        "  retag: {mode: autoregressive, human_review: sample_based, review_rate: 1.0}\n"
        "  answer: {mode: diffusion, priority: accuracy, human_review: below_threshold,"
        " review_threshold: 0.9}\n"
    )
    put = client.put(
        "/v1/admin/policy", content=yaml_body,
        headers={**admin, "Content-Type": "application/yaml"},
    )
    assert put.status_code == 200, put.text
    expected = {
        "answer": {"mode": "diffusion", "priority": "accuracy", "human_review": "below_threshold",
                   "review_threshold": 0.9},
        "retag": {"mode": "autoregressive", "priority": "cost_and_speed",
                  "human_review": "sample_based", "review_rate": 1.0},
    }
    assert put.json() == {"tasks": expected}
    assert client.get("/v1/admin/policy", headers=admin).json() == {"tasks": expected}
    body = {"taxonomy": "topics", "task": "answer", "documents": [{"id": "d", "text": "t"}]}
    classified = client.post("/v1/classify", json=body, headers=admin)
    assert classified.status_code == 200
    assert classified.json()["results"][0]["needs_review"] is True  # 0.5 < 0.9
    # B sees none of it, and its task names are not A's.
    assert client.get("/v1/admin/policy", headers=_auth(world.admin["b"])).json() == {"tasks": {}}
    other = client.post("/v1/classify", json=body, headers=_auth(world.admin["b"]))
    assert other.status_code == 422
    # Replacing with JSON drops the old tasks.
    replaced = client.put(
        "/v1/admin/policy", json={"tasks": {"only": {"mode": "diffusion"}}}, headers=admin
    )
    assert set(replaced.json()["tasks"]) == {"only"}
    assert client.post("/v1/classify", json=body, headers=admin).status_code == 422


def test_limits_are_readable_not_writable(client: TestClient[Any], world: World) -> None:
    admin = _auth(world.admin["a"])
    assert client.get("/v1/admin/limits", headers=admin).json() == {
        "requests_per_minute": None, "documents_per_minute": None, "max_concurrency": None
    }
    refused = client.put(
        "/v1/admin/limits", json={"requests_per_minute": 10**6}, headers=admin
    )
    assert refused.status_code == 405


def test_another_tenants_key_is_404_like_a_missing_one(
    client: TestClient[Any], world: World
) -> None:
    admin = _auth(world.admin["a"])
    theirs = _key_id(world.narrow["b"])
    ghost = "a" * 16
    for path in (f"/v1/admin/keys/{theirs}", f"/v1/admin/keys/{ghost}", "/v1/admin/keys/x"):
        got = client.get(path, headers=admin)
        assert got.status_code == 404
        assert client.delete(path, headers=admin).status_code == 404
        assert client.post(f"{path}/rotate", headers=admin).status_code == 404
    listed = client.get("/v1/admin/keys", headers=admin).text
    assert theirs not in listed and world.tenant_ids["b"] not in listed
    # B's key still works.
    assert client.get("/v1/taxonomies", headers=_auth(world.narrow["b"])).status_code == 200
