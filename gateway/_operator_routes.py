"""Operator HTTP endpoints: tenants, their limits and their first key, above any one tenant.

Routes (under `/v1/operator`)::

    GET  /tenants                       every tenant: id, name, state, limits
    POST /tenants                       create one (`{"name": ...}`, optional limits)
    PUT  /tenants/{tenant_id}/limits    set its rate and concurrency limits (null: none)
    POST /tenants/{tenant_id}/keys      issue a key for it (its first admin key, typically);
                                        the token is in this response body, once

Who is an operator: a key with the `admin` scope whose tenant is the one named by
`TACET_OPERATOR_TENANT` (a tenant name; unset by default, and then nobody is). A tenant's own
admin key manages only its own tenant (`/v1/admin`), so a tenant cannot raise its own quota.
Anyone else gets the same 404 as a route that does not exist; the operator tenant's keys
without `admin` get 403.

Audit: besides the request trail's record (`operator.*`, the acting key), each act appends the
record the admin CLI writes for it (`tenants.create`, `tenants.limits`, `keys.create`) with the
tenant acted on, before the response; if that fails the answer is 503 and no token is returned.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, post, put
from litestar.params import FromPath

from compliance.audit import Activity
from gateway import problems
from gateway._admin_routes import KeyCreate, LimitsOut, NewKey, _decode, _record, issue_key
from gateway.apikeys import Principal
from gateway.store.errors import Conflict as StoreConflict
from gateway.store.errors import NotFound as StoreNotFound

__all__ = ["OPERATOR_OPERATIONS", "OPERATOR_TENANT_ENV", "OperatorController"]

OPERATOR_TENANT_ENV = "TACET_OPERATOR_TENANT"
STATE_KEY = "tacet_operator_tenant"  # app.state: the operator tenant's name, or absent

OPERATOR_OPERATIONS: dict[str, tuple[str, Activity]] = {
    "operatorListTenants": ("operator.tenants.list", Activity.READ),
    "operatorCreateTenant": ("operator.tenants.create", Activity.CREATE),
    "operatorSetLimits": ("operator.tenants.limits", Activity.UPDATE),
    "operatorCreateKey": ("operator.keys.create", Activity.CREATE),
}

_Limit = Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] | None


class TenantCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    requests_per_minute: _Limit = None
    documents_per_minute: _Limit = None
    max_concurrency: _Limit = None


class LimitsIn(msgspec.Struct, forbid_unknown_fields=True):
    requests_per_minute: _Limit = None
    documents_per_minute: _Limit = None
    max_concurrency: _Limit = None


class TenantOut(msgspec.Struct):
    id: str
    name: str
    state: Literal["active", "disabled"]
    created_at: datetime
    limits: LimitsOut


class TenantList(msgspec.Struct):
    tenants: list[TenantOut]


def _tenant_out(record: Any) -> TenantOut:
    limits = record.limits
    return TenantOut(
        id=record.id,
        name=record.name,
        state="disabled" if record.disabled_at else "active",
        created_at=record.created_at,
        limits=LimitsOut(
            limits.requests_per_minute, limits.documents_per_minute, limits.max_concurrency
        ),
    )


async def _operator_store(request: Request[Principal, str, Any]) -> Any:
    """The store, once the caller is known to be an operator; 404 for everyone else."""
    name = request.app.state.get(STATE_KEY)
    opener = getattr(request.app.state.gateway.keys, "store", None)
    if not name or opener is None:
        raise problems.NotFound()
    store = await opener()
    operator = await store.tenant_by_name(name)
    if operator is None or operator.id != request.user.tenant_id or operator.disabled_at:
        raise problems.NotFound()
    if not request.user.allows("admin"):
        raise problems.Forbidden()
    return store


class OperatorController(Controller):
    """Tenants and their limits; see the module doc for who may call it."""

    path = "/v1/operator"
    tags = ["operator"]  # noqa: RUF012 - Litestar reads this class attribute
    security = [{"bearer": []}]  # noqa: RUF012

    @get("/tenants", operation_id="operatorListTenants", summary="Every tenant and its limits")
    async def list_tenants(self, request: Request[Principal, str, Any]) -> TenantList:
        store = await _operator_store(request)
        return TenantList([_tenant_out(t) for t in await store.list_tenants()])

    @post("/tenants", operation_id="operatorCreateTenant", status_code=201)
    async def create_tenant(self, request: Request[Principal, str, Any]) -> TenantOut:
        from gateway.store import TenantLimits

        store = await _operator_store(request)
        spec: TenantCreate = _decode(await request.body(), TenantCreate)
        limits = TenantLimits(
            spec.requests_per_minute, spec.documents_per_minute, spec.max_concurrency
        )
        try:
            tenant = await store.create_tenant(spec.name, limits)
        except StoreConflict:
            raise problems.Conflict() from None
        await _record(request, "tenants.create", Activity.CREATE, tenant_id=tenant.id)
        return _tenant_out(tenant)

    @put("/tenants/{tenant_id:str}/limits", operation_id="operatorSetLimits")
    async def set_limits(
        self, request: Request[Principal, str, Any], tenant_id: FromPath[str]
    ) -> TenantOut:
        from gateway.store import TenantLimits

        store = await _operator_store(request)
        spec: LimitsIn = _decode(await request.body(), LimitsIn)
        limits = TenantLimits(
            spec.requests_per_minute, spec.documents_per_minute, spec.max_concurrency
        )
        try:
            tenant = await store.set_tenant_limits(tenant_id, limits)
        except StoreNotFound:
            raise problems.NotFound() from None
        await _record(request, "tenants.limits", Activity.UPDATE, tenant_id=tenant_id)
        return _tenant_out(tenant)

    @post("/tenants/{tenant_id:str}/keys", operation_id="operatorCreateKey", status_code=201)
    async def create_key(
        self, request: Request[Principal, str, Any], tenant_id: FromPath[str]
    ) -> NewKey:
        store = await _operator_store(request)
        spec: KeyCreate = _decode(await request.body(), KeyCreate)
        tenant = await store.get_tenant(tenant_id)
        if tenant is None or tenant.disabled_at:
            raise problems.NotFound()
        return await issue_key(request, store, tenant_id, spec)
