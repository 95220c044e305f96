"""Operator HTTP endpoints (`/v1/operator/...`): tenants, limits and first keys, over HTTP.

The operator is the admin key of the tenant `TACET_OPERATOR_TENANT` names; every other key sees
404 (the routes might as well not exist), the operator tenant's non-admin keys 403. SQLite and
PostgreSQL, the real audit trail on the same database.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from gateway.app import create_app, lazy_audit_log
from gateway.auth import StoreKeyStore
from gateway.store import database_url
from gateway.taxonomies import DatabaseTaxonomyStore
from tests.integration._postgres import reset_schema
from tests.integration.test_admin_routes import PEPPERS, FakeEngine, World, _seed

pytestmark = pytest.mark.integration

SPAN = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> World:
    if request.param == "sqlite":
        url = database_url(tmp_path, {})
    else:
        url = request.getfixturevalue("postgres_url")
        asyncio.run(reset_schema(url))
    return asyncio.run(_seed(url))


def _client(world: World, operator_tenant: str | None) -> TestClient[Any]:
    keys = StoreKeyStore(world.url, PEPPERS)
    app = create_app(
        engine=FakeEngine(),
        keys=keys,
        taxonomies=DatabaseTaxonomyStore(keys.store, b"r" * 32),
        audit=lazy_audit_log(keys),
        operator_tenant=operator_tenant,
    )
    app.on_shutdown.append(keys.close)
    return TestClient(app)


@pytest.fixture
def client(world: World) -> Iterator[TestClient[Any]]:
    with _client(world, "tenant-a") as test_client:  # tenant A runs the deployment
        yield test_client


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_operator_onboards_a_tenant_over_http(client: TestClient[Any], world: World) -> None:
    operator = _auth(world.admin["a"])
    listed = client.get("/v1/operator/tenants", headers=operator)
    assert listed.status_code == 200, listed.text
    assert {t["name"] for t in listed.json()["tenants"]} == {"tenant-a", "tenant-b"}

    created = client.post(
        "/v1/operator/tenants", json={"name": "tenant-c", "requests_per_minute": 100},
        headers=operator,
    )
    assert created.status_code == 201, created.text
    tenant = created.json()
    assert (tenant["name"], tenant["state"]) == ("tenant-c", "active")
    assert tenant["limits"] == {
        "requests_per_minute": 100, "documents_per_minute": None, "max_concurrency": None
    }
    again = client.post("/v1/operator/tenants", json={"name": "tenant-c"}, headers=operator)
    assert again.status_code == 409

    limits = {"requests_per_minute": None, "documents_per_minute": 500, "max_concurrency": 2}
    changed = client.put(
        f"/v1/operator/tenants/{tenant['id']}/limits", json=limits, headers=operator
    )
    assert changed.status_code == 200 and changed.json()["limits"] == limits

    issued = client.post(
        f"/v1/operator/tenants/{tenant['id']}/keys",
        json={"scopes": ["admin", "audit:read"]}, headers=operator,
    )
    assert issued.status_code == 201, issued.text
    token = issued.json()["token"]
    own = _auth(token)
    # The new tenant's admin sees its own limits and key, and nothing of the operator's.
    assert client.get("/v1/admin/limits", headers=own).json() == limits
    keys = client.get("/v1/admin/keys", headers=own).json()["keys"]
    assert [k["key_id"] for k in keys] == [issued.json()["key"]["key_id"]]
    assert client.get("/v1/operator/tenants", headers=own).status_code == 404

    # The acts are in the new tenant's own audit chain; no token anywhere in it.
    records = client.get("/v1/audit/export", params=SPAN, headers=own)
    assert records.status_code == 200
    operations = [json.loads(line)["api"]["operation"] for line in records.text.splitlines()]
    assert {"tenants.create", "tenants.limits", "keys.create"} <= set(operations)
    assert token not in records.text


def test_only_the_operator_tenants_admin_keys_are_operators(
    client: TestClient[Any], world: World
) -> None:
    victim = world.tenant_ids["a"]
    calls = {
        "list": lambda h: client.get("/v1/operator/tenants", headers=h),
        "create": lambda h: client.post("/v1/operator/tenants", json={"name": "x"}, headers=h),
        "limits": lambda h: client.put(
            f"/v1/operator/tenants/{victim}/limits", json={"max_concurrency": 1}, headers=h
        ),
        "key": lambda h: client.post(
            f"/v1/operator/tenants/{victim}/keys", json={"scopes": ["admin"]}, headers=h
        ),
    }
    for name, call in calls.items():
        # Tenant B's admin key: the routes do not exist for it.
        assert call(_auth(world.admin["b"])).status_code == 404, name
        # The operator tenant's classify-only key: forbidden.
        assert call(_auth(world.narrow["a"])).status_code == 403, name
    names = {t["name"] for t in client.get(
        "/v1/operator/tenants", headers=_auth(world.admin["a"])
    ).json()["tenants"]}
    assert "x" not in names  # nothing was created by a refused call
    assert client.get("/v1/admin/limits", headers=_auth(world.admin["a"])).json() == {
        "requests_per_minute": None, "documents_per_minute": None, "max_concurrency": None
    }


def test_no_operator_by_default(world: World) -> None:
    with _client(world, None) as client:
        for label in ("a", "b"):
            listed = client.get("/v1/operator/tenants", headers=_auth(world.admin[label]))
            assert listed.status_code == 404


def test_unknown_tenant_and_bad_bodies(client: TestClient[Any], world: World) -> None:
    operator = _auth(world.admin["a"])
    ghost = "tn_" + "z" * 16
    assert client.put(
        f"/v1/operator/tenants/{ghost}/limits", json={}, headers=operator
    ).status_code == 404
    assert client.post(
        f"/v1/operator/tenants/{ghost}/keys", json={"scopes": ["admin"]}, headers=operator
    ).status_code == 404
    for body in ({"name": "bad name!"}, {"name": "ok", "max_concurrency": 0}, {"nom": "x"}):
        response = client.post("/v1/operator/tenants", json=body, headers=operator)
        assert response.status_code == 422
        assert "bad name" not in response.text and "nom" not in response.text
    unknown_scope = client.post(
        f"/v1/operator/tenants/{world.tenant_ids['b']}/keys",
        json={"scopes": ["superuser"]}, headers=operator,
    )
    assert unknown_scope.status_code == 422 and "superuser" not in unknown_scope.text
