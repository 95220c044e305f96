"""Admin-scoped HTTP endpoints (scope `admin`): the caller's own tenant's keys, policy, limits.

Routes (all under `/v1/admin`, all need a key with the `admin` scope, else 403)::

    GET    /keys                   this tenant's keys (ids and state, never secrets)
    POST   /keys                   issue a key; its token is in this response body, once
    GET    /keys/{key_id}          one key
    POST   /keys/{key_id}/rotate   a new key with the old one's scopes; the old one lapses
                                   after `overlap_hours` (default 24); the new token, once
    DELETE /keys/{key_id}          revoke now (every gateway sharing the database refuses it
                                   within the verifier's epoch interval, about 1 s)
    GET    /policy                 this tenant's task policies
    PUT    /policy                 replace them (JSON or YAML, DESIGN.md "Task policy")
    GET    /limits                 this tenant's rate and concurrency limits (read-only)

The tenant is always the caller's key record's (`Principal.tenant_id`); no route takes a tenant
in its path or body. A key id of another tenant, or of the wrong shape, answers the same 404 as
an id that exists nowhere.

What is not here, and why: the `admin` scope belongs to a tenant's key, and a tenant admin
raising its own quota would make the quota meaningless. Creating and listing tenants and
setting their limits are operator acts: `gateway/_operator_routes.py` (`/v1/operator`, the
admin keys of the `TACET_OPERATOR_TENANT` tenant) or the CLI on the database. Taxonomy import,
listing, showing and diff have their routes under `/v1/taxonomies`.

Audit: every call gets the request trail's record (`gateway.app.AuditTrail`: operation
`admin.*`, the acting key, the status). Each act that changes state also appends the record the
admin CLI writes for it (`keys.create|rotate|revoke`, `policy.set`: the tenant and the key acted
on, never a token) before the response is sent; if that append fails the answer is 503
`audit-unavailable` and no token is returned. A new key's token appears only in the create or
rotate response body: it is not logged, audited or stored (the database keeps its digest).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.params import FromPath

from compliance.audit import Activity, AuditEvent
from gateway import problems
from gateway.apikeys import ApiKeyError, KeyRow, Principal
from gateway.store.errors import Conflict as StoreConflict
from gateway.store.errors import NotFound as StoreNotFound

__all__ = ["ADMIN_OPERATIONS", "AdminController", "KeyConflict", "PolicyRejected"]

# operation_id -> (the trail's constant operation name, OCSF activity); gateway.app merges it.
ADMIN_OPERATIONS: dict[str, tuple[str, Activity]] = {
    "adminListKeys": ("admin.keys.list", Activity.READ),
    "adminCreateKey": ("admin.keys.create", Activity.CREATE),
    "adminGetKey": ("admin.keys.get", Activity.READ),
    "adminRotateKey": ("admin.keys.rotate", Activity.UPDATE),
    "adminRevokeKey": ("admin.keys.revoke", Activity.DELETE),
    "adminGetPolicy": ("admin.policy.get", Activity.READ),
    "adminPutPolicy": ("admin.policy.set", Activity.UPDATE),
    "adminGetLimits": ("admin.limits.get", Activity.READ),
}

_KEY_ID_RE = re.compile(r"^[a-z2-7]{16}$")
_POLICY_MEDIA = frozenset(
    {"application/json", "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}
)


class KeyConflict(problems.Problem):
    status, slug, title = 409, "key-conflict", "Key cannot be rotated"
    detail = "A revoked or expired key cannot be rotated; create a new key instead."


class PolicyRejected(problems.Problem):
    status, slug, title = 422, "invalid-policy", "Invalid task policy"
    detail = (
        "The policy is not valid: a mapping `tasks` of task name to mode, priority, "
        "human_review, review_rate and review_threshold (DESIGN.md, Task policy)."
    )


# ---- bodies ---------------------------------------------------------------------------------


class KeyOut(msgspec.Struct):
    key_id: str
    env: str
    scopes: list[str]
    state: Literal["usable", "revoked", "expired"]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class KeyList(msgspec.Struct):
    keys: list[KeyOut]


class NewKey(msgspec.Struct):
    """`token` is the whole API key, shown in this body only; store it now."""

    token: str
    key: KeyOut
    replaced: KeyOut | None = None  # rotate: the old key, with its new expiry


class KeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    scopes: Annotated[list[str], msgspec.Meta(min_length=1, max_length=8)]
    env: Literal["live", "test", "dev"] = "live"
    expires_in_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] | None = None


class KeyRotate(msgspec.Struct, forbid_unknown_fields=True):
    overlap_hours: Annotated[float, msgspec.Meta(ge=0, le=720)] = 24.0


class PolicyOut(msgspec.Struct):
    tasks: dict[str, dict[str, Any]]


class LimitsOut(msgspec.Struct):
    """None: unlimited."""

    requests_per_minute: int | None
    documents_per_minute: int | None
    max_concurrency: int | None


# ---- helpers --------------------------------------------------------------------------------


def _key_out(row: KeyRow, now: datetime) -> KeyOut:
    state: Literal["usable", "revoked", "expired"] = (
        "revoked" if row.revoked_at else ("usable" if row.usable_at(now) else "expired")
    )
    return KeyOut(
        key_id=row.key_id,
        env=row.env,
        scopes=sorted(row.scopes),
        state=state,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


def _admin(request: Request[Principal, str, Any]) -> str:
    """The caller's tenant id, once the key is known to hold `admin`."""
    if not request.user.allows("admin"):
        raise problems.Forbidden()
    return request.user.tenant_id


async def _store(request: Request[Any, Any, Any]) -> Any:
    """The control-plane Store behind the key store; 404 where there is none (dev/test keys)."""
    opener = getattr(request.app.state.gateway.keys, "store", None)
    if opener is None:
        raise problems.NotFound()
    return await opener()


def _peppers(request: Request[Any, Any, Any]) -> Any:
    # StoreKeyStore keeps the peppers it verifies with; new digests must use the same ones.
    peppers = getattr(request.app.state.gateway.keys, "peppers", None)
    if peppers is None:
        raise problems.NotFound()
    return peppers


def _decode(body: bytes, kind: type[Any]) -> Any:
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.DecodeError:  # ValidationError included; its message names fields: dropped
        raise problems.Invalid() from None


async def _owned(store: Any, tenant_id: str, key_id: str) -> KeyRow:
    if not _KEY_ID_RE.fullmatch(key_id):
        raise problems.NotFound()
    for row in await store.list_keys(tenant_id):
        if row.key_id == key_id:
            return row  # type: ignore[no-any-return]
    raise problems.NotFound()


async def _record(
    request: Request[Principal, str, Any],
    operation: str,
    activity: Activity,
    *,
    key_id: str | None = None,
    tenant_id: str | None = None,
) -> None:
    """The admin CLI's record of this act, before the response; 503 if it cannot be written.
    `tenant_id`: the tenant acted on, when not the caller's (operator routes)."""
    source = request.app.state.gateway.audit
    if source is None:  # an app built without an audit trail (tests, embedding)
        return
    client = request.scope.get("client")
    event = AuditEvent(
        operation,
        200,
        activity=activity,
        request_id=problems.request_id(request),
        tenant_id=tenant_id or request.user.tenant_id,
        key_id=key_id,
        source_ip=client[0] if client else None,
    )
    try:
        await (await source()).append(event)
    except Exception:
        raise problems.AuditUnavailable() from None


async def issue_key(
    request: Request[Principal, str, Any], store: Any, tenant_id: str, spec: KeyCreate
) -> NewKey:
    """Create a key for `tenant_id`, record `keys.create` (for that tenant), return the token
    once. Shared by the admin route (own tenant) and the operator route (any tenant)."""
    expires = None
    if spec.expires_in_days is not None:
        expires = datetime.now(UTC) + timedelta(days=spec.expires_in_days)
    try:
        issued = await store.create_key(
            tenant_id, _peppers(request), scopes=spec.scopes, env=spec.env, expires_at=expires
        )
    except (ApiKeyError, ValueError):  # unknown scope: the message names it, so it is dropped
        raise problems.Invalid() from None
    await _record(
        request, "keys.create", Activity.CREATE, key_id=issued.row.key_id, tenant_id=tenant_id
    )
    return NewKey(token=issued.token, key=_key_out(issued.row, datetime.now(UTC)))


# ---- routes ---------------------------------------------------------------------------------


class AdminController(Controller):
    """The caller's own tenant's control plane; see the module doc."""

    path = "/v1/admin"
    tags = ["admin"]  # noqa: RUF012 - Litestar reads this class attribute
    security = [{"bearer": []}]  # noqa: RUF012

    @get("/keys", operation_id="adminListKeys", summary="This tenant's keys (never secrets)")
    async def list_keys(self, request: Request[Principal, str, Any]) -> KeyList:
        tenant_id = _admin(request)
        now = datetime.now(UTC)
        rows = await (await _store(request)).list_keys(tenant_id)
        return KeyList([_key_out(row, now) for row in rows])

    @post(
        "/keys",
        operation_id="adminCreateKey",
        status_code=201,
        summary="Issue a key; its token is in this response only",
    )
    async def create_key(self, request: Request[Principal, str, Any]) -> NewKey:
        tenant_id = _admin(request)
        spec: KeyCreate = _decode(await request.body(), KeyCreate)
        return await issue_key(request, await _store(request), tenant_id, spec)

    @get("/keys/{key_id:str}", operation_id="adminGetKey", summary="One key of this tenant")
    async def get_key(self, request: Request[Principal, str, Any], key_id: FromPath[str]) -> KeyOut:
        tenant_id = _admin(request)
        row = await _owned(await _store(request), tenant_id, key_id)
        return _key_out(row, datetime.now(UTC))

    @post(
        "/keys/{key_id:str}/rotate",
        operation_id="adminRotateKey",
        status_code=201,
        summary="A new key with the same scopes; the old one lapses after the overlap",
    )
    async def rotate_key(
        self, request: Request[Principal, str, Any], key_id: FromPath[str]
    ) -> NewKey:
        tenant_id = _admin(request)
        spec: KeyRotate = _decode(await request.body(), KeyRotate)
        store = await _store(request)
        await _owned(store, tenant_id, key_id)
        try:
            issued = await store.rotate_key(
                tenant_id, key_id, _peppers(request), overlap=timedelta(hours=spec.overlap_hours)
            )
        except StoreNotFound:
            raise problems.NotFound() from None
        except StoreConflict:
            raise KeyConflict() from None
        await _record(request, "keys.rotate", Activity.UPDATE, key_id=issued.row.key_id)
        now = datetime.now(UTC)
        old = await _owned(store, tenant_id, key_id)
        return NewKey(
            token=issued.token, key=_key_out(issued.row, now), replaced=_key_out(old, now)
        )

    @delete(
        "/keys/{key_id:str}",
        operation_id="adminRevokeKey",
        status_code=200,
        summary="Revoke a key now (idempotent)",
    )
    async def revoke_key(
        self, request: Request[Principal, str, Any], key_id: FromPath[str]
    ) -> KeyOut:
        tenant_id = _admin(request)
        store = await _store(request)
        if not _KEY_ID_RE.fullmatch(key_id):
            raise problems.NotFound()
        try:
            row = await store.revoke_key(tenant_id, key_id)
        except StoreNotFound:
            raise problems.NotFound() from None
        await _record(request, "keys.revoke", Activity.DELETE, key_id=row.key_id)
        return _key_out(row, datetime.now(UTC))

    @get("/policy", operation_id="adminGetPolicy", summary="This tenant's task policies")
    async def get_policy(self, request: Request[Principal, str, Any]) -> PolicyOut:
        tenant_id = _admin(request)
        policy = await (await _store(request)).get_policy(tenant_id)
        return PolicyOut({task: settings.as_dict() for task, settings in sorted(policy.items())})

    @put(
        "/policy",
        operation_id="adminPutPolicy",
        status_code=200,
        summary="Replace this tenant's task policies (JSON or YAML)",
    )
    async def put_policy(self, request: Request[Principal, str, Any]) -> PolicyOut:
        from gateway.policies import PolicyInvalid, parse_policy

        tenant_id = _admin(request)
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media not in _POLICY_MEDIA:
            raise problems.UnsupportedMediaType()
        try:
            policy = parse_policy(await request.body())
        except PolicyInvalid:  # its problems name tasks and fields from the body: not echoed
            raise PolicyRejected() from None
        store = await _store(request)
        await store.set_policy(tenant_id, policy)
        await _record(request, "policy.set", Activity.UPDATE)
        return PolicyOut({task: settings.as_dict() for task, settings in sorted(policy.items())})

    @get("/limits", operation_id="adminGetLimits", summary="This tenant's limits (None: none)")
    async def get_limits(self, request: Request[Principal, str, Any]) -> LimitsOut:
        tenant_id = _admin(request)
        tenant = await (await _store(request)).get_tenant(tenant_id)
        if tenant is None:
            raise problems.NotFound()
        limits = tenant.limits
        return LimitsOut(
            limits.requests_per_minute, limits.documents_per_minute, limits.max_concurrency
        )
