"""The Litestar application: `create_app()` plus one plugin that wires routes, auth and errors.

Routes: `POST /v1/classify`, `PUT /v1/taxonomies/{name}`, `GET /v1/taxonomies[/{name}[/versions]]`,
`GET /v1/taxonomies/{name}/diff?from=&to=`,
`GET /healthz`, `GET /readyz`, OpenAPI at `/schema`. Every tenant-scoped lookup takes the tenant
from the key record (`Principal.tenant_id`); another tenant's resource answers exactly like a
missing one.

ZDR in this module: no request or response body, header or member-supplied id is logged (the
app installs no logging config and no logging middleware; `debug` is always False), and every
error goes through `gateway.problems`, whose bodies are constants.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
import structlog
from litestar import Controller, Litestar, Request, get, post, put
from litestar.config.app import AppConfig
from litestar.connection import ASGIConnection
from litestar.middleware import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
    DefineMiddleware,
)
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.plugins import InitPluginProtocol
from litestar.response import Response, Stream

from compliance.audit import Activity, AuditEvent, AuditLog
from gateway import problems
from gateway._admin_routes import ADMIN_OPERATIONS, AdminController
from gateway._audit_report_route import REPORT_OPERATIONS, audit_report
from gateway._operator_routes import OPERATOR_OPERATIONS, OperatorController
from gateway.auth import KeyStore, Principal, bearer_token
from gateway.engine_client import EngineClient
from gateway.logging import configure_logging
from gateway.policies import needs_review
from gateway.ratelimit import admit, limiter_for
from gateway.ratelimit import install as install_limiter
from gateway.settings import LimitSettings, TenantLimitSettings
from gateway.store.errors import Conflict as StoreConflict
from gateway.taxonomies import (
    SharedStaticTaxonomies,
    StaticTaxonomyStore,
    TenantTaxonomyStore,
    parse_reference,
)
from gateway.taxonomy_io import NAME_RE, Taxonomy
from gateway.telemetry import configure_telemetry, install_telemetry

if TYPE_CHECKING:
    from engine.protocol import DocumentDone
    from gateway.policies import TaskPolicy
    from gateway.settings import ServeSettings

__all__ = [
    "AuditSource",
    "AuditTrail",
    "ClassifyRequest",
    "ClassifyResponse",
    "GatewayPlugin",
    "app_from_settings",
    "create_app",
    "lazy_audit_log",
]

Mode = Literal["diffusion", "autoregressive", "self_speculative"]
AuditSource = Callable[[], Awaitable[AuditLog]]  # the audit log, opened on first use


# ---- request and response bodies (DESIGN.md, HTTP API v1) -----------------------------------


class DocumentIn(msgspec.Struct, forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]  # member-supplied: never logged
    text: Annotated[str, msgspec.Meta(min_length=1)]


class ClassifyRequest(msgspec.Struct, forbid_unknown_fields=True):
    taxonomy: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]  # name or name@version
    documents: Annotated[list[DocumentIn], msgspec.Meta(min_length=1)]
    task: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None  # policy
    mode: Mode | None = None  # default: the task policy's mode, else diffusion


class LabelResult(msgspec.Struct):
    facet: str
    label: str
    probability: float


class DecodeResult(msgspec.Struct):
    mode: str
    forward_passes: int
    exact: bool


class DocumentResult(msgspec.Struct):
    id: str
    labels: list[LabelResult]
    needs_review: bool
    decode: DecodeResult


class TaxonomyRef(msgspec.Struct):
    name: str
    version: str


class ClassifyResponse(msgspec.Struct):
    request_id: str
    model: str
    taxonomy: TaxonomyRef
    results: list[DocumentResult]


class LabelRef(msgspec.Struct):
    facet: str
    label: str


class Renamed(msgspec.Struct):
    facet: str
    label: str
    old_name: str
    new_name: str


class Moved(msgspec.Struct):
    facet: str
    label: str
    old_parent: str | None
    new_parent: str | None


class TaxonomyDiffOut(msgspec.Struct):
    name: str
    from_version: str
    to_version: str
    added: list[LabelRef]
    removed: list[LabelRef]
    renamed: list[Renamed]
    moved: list[Moved]


class Health(msgspec.Struct):
    status: str


# ---- authentication -------------------------------------------------------------------------


class BearerAuth(AbstractAuthenticationMiddleware):
    """`Authorization: Bearer <key>` -> `Principal`; any failure is one opaque 401."""

    def __init__(self, app: Any, keys: KeyStore, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._keys = keys

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Any:
        token = bearer_token(connection.headers.get("authorization"))
        principal = await self._keys.authenticate(token) if token else None
        if principal is None:
            raise problems.Unauthorized()
        return AuthenticationResult(user=principal, auth=principal.key_id)


# ---- routes ---------------------------------------------------------------------------------


def _check_limits(data: ClassifyRequest, limits: LimitSettings) -> None:
    if len(data.documents) > limits.max_documents:
        raise problems.TooLarge()
    for document in data.documents:
        if len(document.text.encode("utf-8")) > limits.max_document_bytes:
            raise problems.TooLarge()
        if not document.text.strip():
            raise problems.Invalid()


def _result(
    document: DocumentIn, done: DocumentDone, policy: TaskPolicy | None, review_key: bytes
) -> DocumentResult:
    probabilities = [x.probability for x in done.labels]
    review = policy is not None and needs_review(
        policy, document.id, max(probabilities) if probabilities else None, key=review_key
    )
    return DocumentResult(
        id=document.id,
        labels=[LabelResult(x.facet, x.label, x.probability) for x in done.labels],
        needs_review=review,
        decode=DecodeResult(done.decode.mode, done.decode.forward_passes, done.decode.exact),
    )


def _require_any(principal: Principal, *scopes: str) -> None:
    if not any(scope in principal.scopes for scope in scopes):
        raise problems.Forbidden()


class ClassifyController(Controller):
    path = "/v1"
    tags = ["classify"]  # noqa: RUF012 - Litestar reads this class attribute

    @post(
        "/classify",
        operation_id="classify",
        status_code=200,
        summary="Classify documents against a taxonomy",
        security=[{"bearer": []}],
    )
    async def classify(
        self, request: Request[Principal, str, Any], data: JSONBody[ClassifyRequest]
    ) -> ClassifyResponse:
        gateway: _Gateway = request.app.state.gateway
        tenant = request.user.tenant_id
        _audit_note(
            request,
            documents=len(data.documents),
            bytes=sum(len(d.text.encode("utf-8")) for d in data.documents),
        )
        _require_any(request.user, "classify")
        _check_limits(data, gateway.limits)
        await admit(request, documents=len(data.documents))  # tenant limits: 429 or a slot
        taxonomy = await gateway.taxonomies.resolve(tenant, data.taxonomy)
        if taxonomy is None:
            raise problems.UnknownTaxonomy()
        # Only a resolved (the tenant's own) name is recorded, never what the caller typed.
        _audit_note(request, taxonomy=f"{taxonomy['name']}@{taxonomy['version']}")
        policy = None
        if data.task is not None:
            policy = await gateway.taxonomies.task_policy(tenant, data.task)
            if policy is None:
                raise problems.UnknownTask()
        mode = data.mode or (policy.mode if policy is not None else "diffusion")
        welcome = gateway.engine.welcome
        _audit_note(
            request, mode=mode, model_id=welcome.model_id if welcome is not None else None
        )
        done = await gateway.engine.classify(
            dict(taxonomy), [d.text for d in data.documents], mode=mode
        )
        by_index = {item.index: item for item in done}
        if sorted(by_index) != list(range(len(data.documents))):
            raise problems.InternalError()
        review_key = gateway.taxonomies.review_key(tenant)
        name, _ = parse_reference(data.taxonomy)
        return ClassifyResponse(
            request_id=problems.request_id(request),
            model=welcome.model_id if welcome is not None else "unknown",
            taxonomy=TaxonomyRef(name=name, version=str(taxonomy["version"])),
            results=[
                _result(d, by_index[i], policy, review_key)
                for i, d in enumerate(data.documents)
            ],
        )


class TaxonomyVersionOut(msgspec.Struct):
    name: str
    version: str


class TaxonomyList(msgspec.Struct):
    taxonomies: list[TaxonomyVersionOut]


class VersionList(msgspec.Struct):
    name: str
    versions: list[str]


def _parse_upload(name: str, content_type: str, body: bytes) -> Taxonomy:
    """JSON in the DESIGN.md shape (its `name`, if any, must be the path's) or CSV."""
    from gateway.taxonomy_io import Problem, TaxonomyInvalid, parse_csv, parse_json

    media = content_type.partition(";")[0].strip().lower()
    try:
        if media == "text/csv":
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise TaxonomyInvalid([Problem("$", "invalid_encoding", "not UTF-8")]) from None
            return parse_csv(text, name=name)
        if media != "application/json":
            raise problems.UnsupportedMediaType()
        document = msgspec.json.decode(body)
        if isinstance(document, dict) and document.setdefault("name", name) != name:
            raise TaxonomyInvalid(
                [Problem("name", "name_mismatch", "the name differs from the URL's")]
            )
        return parse_json(document)
    except msgspec.DecodeError:
        raise problems.TaxonomyRejected(
            [{"location": "$", "code": "invalid_json", "message": "not JSON"}]
        ) from None
    except TaxonomyInvalid as exc:
        raise problems.TaxonomyRejected([p.as_dict() for p in exc.problems]) from None


_NAME_RULE = "taxonomy name must match [A-Za-z0-9_.-]{1,64}"


class TaxonomyController(Controller):
    """The caller's own taxonomies; a name of another tenant is 404 like an unknown one."""

    path = "/v1/taxonomies"
    tags = ["taxonomies"]  # noqa: RUF012 - Litestar reads this class attribute
    security = [{"bearer": []}]  # noqa: RUF012

    @get("/", operation_id="listTaxonomies", summary="This tenant's taxonomies (latest)")
    async def list_taxonomies(self, request: Request[Principal, str, Any]) -> TaxonomyList:
        _require_any(request.user, "classify", "taxonomy:write")
        gateway: _Gateway = request.app.state.gateway
        found = await gateway.taxonomies.list(request.user.tenant_id)
        return TaxonomyList([TaxonomyVersionOut(n, v) for n, v in found])

    @get("/{name:str}", operation_id="getTaxonomy", summary="`name` (latest) or `name@version`")
    async def get_taxonomy(self, request: Request[Principal, str, Any], name: FromPath[str]) -> Any:
        _require_any(request.user, "classify", "taxonomy:write")
        gateway: _Gateway = request.app.state.gateway
        taxonomy = await gateway.taxonomies.resolve(request.user.tenant_id, name)
        if taxonomy is None:
            raise problems.NotFound()
        return dict(taxonomy)

    @get("/{name:str}/versions", operation_id="listTaxonomyVersions")
    async def versions(
        self, request: Request[Principal, str, Any], name: FromPath[str]
    ) -> VersionList:
        _require_any(request.user, "classify", "taxonomy:write")
        gateway: _Gateway = request.app.state.gateway
        found = await gateway.taxonomies.versions(request.user.tenant_id, name)
        if not found:
            raise problems.NotFound()
        return VersionList(name=name, versions=found)

    @get("/{name:str}/diff", operation_id="diffTaxonomyVersions")
    async def diff_versions(
        self,
        request: Request[Principal, str, Any],
        name: FromPath[str],
        from_version: Annotated[str, QueryParameter(name="from", min_length=1, max_length=32)],
        to_version: Annotated[str | None, QueryParameter(name="to", max_length=32)] = None,
    ) -> TaxonomyDiffOut:
        """Labels added, removed, renamed and moved from version `from` to `to` (default: the
        latest), keyed by facet and label id; the version a delta job would compare."""
        from gateway.taxonomy_io import diff, parse_json

        _require_any(request.user, "classify", "taxonomy:write")
        gateway: _Gateway = request.app.state.gateway
        tenant = request.user.tenant_id
        if "@" in name:
            raise problems.NotFound()
        old = await gateway.taxonomies.resolve(tenant, f"{name}@{from_version}")
        new = await gateway.taxonomies.resolve(
            tenant, name if to_version is None else f"{name}@{to_version}"
        )
        if old is None or new is None:
            raise problems.NotFound()
        change = diff(parse_json(old), parse_json(new))
        return TaxonomyDiffOut(
            name=name,
            from_version=str(old["version"]),
            to_version=str(new["version"]),
            added=[LabelRef(f, label) for f, label in change.added],
            removed=[LabelRef(f, label) for f, label in change.removed],
            renamed=[Renamed(f, label, a, b) for f, label, a, b in change.renamed],
            moved=[Moved(f, label, a, b) for f, label, a, b in change.moved],
        )

    @put(
        "/{name:str}",
        operation_id="putTaxonomy",
        status_code=201,
        summary="A new immutable version (JSON body, or text/csv)",
    )
    async def put_taxonomy(
        self, request: Request[Principal, str, Any], name: FromPath[str]
    ) -> TaxonomyVersionOut:
        _require_any(request.user, "taxonomy:write")
        if not NAME_RE.fullmatch(name):
            raise problems.TaxonomyRejected(
                [{"location": "name", "code": "invalid_name", "message": _NAME_RULE}]
            )
        gateway: _Gateway = request.app.state.gateway
        content_type = request.headers.get("content-type", "")
        taxonomy = _parse_upload(name, content_type, await request.body())
        try:
            stored_name, version = await gateway.taxonomies.put(request.user.tenant_id, taxonomy)
        except StoreConflict:
            raise problems.Conflict() from None
        except PermissionError:
            raise problems.MethodNotAllowed() from None
        return TaxonomyVersionOut(stored_name, version)


@get("/healthz", operation_id="healthz", opt={"exclude_from_auth": True}, tags=["health"])
async def healthz() -> Health:
    """The process is up (it says nothing about the engine)."""
    return Health(status="ok")


@get("/readyz", operation_id="readyz", opt={"exclude_from_auth": True}, tags=["health"])
async def readyz(request: Request[Any, Any, Any]) -> Response[Any]:
    """200 while an engine is ready (one of several is enough); 503 problem (with Retry-After)
    otherwise."""
    gateway: _Gateway = request.app.state.gateway
    if not gateway.engine.ready:
        return problems.problem_response(request, problems.EngineDown)
    return Response(Health(status="ready"))


# ---- audit trail (compliance.audit): one record per /v1 call, durable before the body -------

_AUDIT_NOTES = "tacet_audit"

# operation_id -> (constant operation name, OCSF activity). Anything else under /v1 (an unknown
# path) is recorded as "unknown" with its status.
_OPERATIONS: dict[str, tuple[str, Activity]] = {
    "classify": ("classify", Activity.OTHER),
    "classifyStream": ("classify.stream", Activity.OTHER),
    "listTaxonomies": ("taxonomies.list", Activity.READ),
    "getTaxonomy": ("taxonomies.get", Activity.READ),
    "listTaxonomyVersions": ("taxonomies.versions", Activity.READ),
    "diffTaxonomyVersions": ("taxonomies.diff", Activity.READ),
    "putTaxonomy": ("taxonomies.put", Activity.CREATE),
    "auditExport": ("audit.export", Activity.READ),
    "submitJob": ("jobs.submit", Activity.CREATE),
    "getJob": ("jobs.get", Activity.READ),
    "cancelJob": ("jobs.cancel", Activity.UPDATE),
    **ADMIN_OPERATIONS,
    **OPERATOR_OPERATIONS,
    **REPORT_OPERATIONS,
}


def _audit_note(request: Request[Any, Any, Any], **fields: Any) -> None:
    """Metadata for this request's audit record (names of AuditEvent fields; never content)."""
    request.scope["state"].setdefault(_AUDIT_NOTES, {}).update(fields)


def _audit_event(scope: Any, status: int, started: float) -> AuditEvent:
    """Everything from the scope: route constant, principal, peer address, handler notes."""
    handler = scope.get("route_handler")
    operation_id = getattr(handler, "operation_id", None)
    operation, activity = _OPERATIONS.get(
        operation_id if isinstance(operation_id, str) else "", ("unknown", Activity.OTHER)
    )
    user = scope.get("user")
    principal = user if isinstance(user, Principal) else None
    client = scope.get("client")
    notes = scope["state"].get(_AUDIT_NOTES, {})
    return AuditEvent(
        operation=operation,
        status=status,
        activity=activity,
        request_id=scope["state"]["tacet_request_id"],
        tenant_id=principal.tenant_id if principal is not None else None,
        key_id=principal.key_id if principal is not None else None,
        source_ip=client[0] if client else None,  # the socket peer, never X-Forwarded-For
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
        **notes,
    )


class AuditTrail:
    """ASGI wrapper around the whole Litestar handler: the one place /v1 calls are audited.

    It sits outside routing, authentication and the exception handlers, so it sees the final
    status of every call (401 from auth, 404 for an unknown path, 413 before parsing, 503...).
    It holds `http.response.start` until the record is committed; if the append fails, the
    client gets a constant 503 `audit-unavailable` instead, and the result body is dropped.
    """

    def __init__(self, app: Any, audit: AuditSource) -> None:
        self._app, self._audit = app, audit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/v1/"):
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        request_id = state.setdefault("tacet_request_id", uuid.uuid4().hex)
        failed, body_sent = False, False

        async def audited_send(message: Any) -> None:
            nonlocal failed, body_sent
            if message["type"] == "http.response.start":
                if not await self._append(_audit_event(scope, message["status"], started)):
                    failed, message = True, _audit_failed_start(request_id)
            elif failed and message["type"] == "http.response.body":
                body = b"" if body_sent else problems.problem_body(
                    problems.AuditUnavailable, request_id
                )
                message = {**message, "body": body}
                body_sent = True
            await send(message)

        await self._app(scope, receive, audited_send)

    async def _append(self, event: AuditEvent) -> bool:
        """True once committed; False on any failure (fail closed, whatever the cause)."""
        try:
            await (await self._audit()).append(event)
        except Exception as exc:  # AuditWriteError, or the store could not even be opened
            structlog.get_logger("tacet.gateway").error(
                "audit_write_failed", request_id=event.request_id, error_type=type(exc).__name__
            )
            return False
        return True


def _audit_failed_start(request_id: str) -> dict[str, Any]:
    problem = problems.AuditUnavailable
    return {
        "type": "http.response.start",
        "status": problem.status,
        "headers": [
            (b"content-type", problems.PROBLEM_MEDIA_TYPE.encode()),
            (b"retry-after", str(problem.retry_after).encode()),
            (b"x-request-id", request_id.encode()),
            (b"server", b""),
        ],
    }


def _query_time(value: str | None) -> Any:
    from datetime import UTC, datetime

    if not value:
        raise problems.Invalid()
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise problems.Invalid() from None
    if moment.tzinfo is None:
        raise problems.Invalid()
    return moment.astimezone(UTC)


@get(
    "/v1/audit/export",
    operation_id="auditExport",
    summary="The caller's tenant's audit records in [from, to), as JSONL",
    security=[{"bearer": []}],
    tags=["audit"],
)
async def audit_export(request: Request[Principal, str, Any]) -> Stream:
    """Scope `audit:read`; only the caller's own tenant chain, whatever the query says."""
    from compliance.audit import canonical

    _require_any(request.user, "audit:read")
    start = _query_time(request.query_params.get("from"))
    end = _query_time(request.query_params.get("to"))
    if end <= start:
        raise problems.Invalid()
    gateway: _Gateway = request.app.state.gateway
    if gateway.audit is None:
        raise problems.AuditUnavailable()
    log = await gateway.audit()
    records = await log.records(request.user.tenant_id, start, end)

    async def lines() -> AsyncIterator[bytes]:
        for record in records:
            yield canonical(record) + b"\n"

    return Stream(lines(), media_type="application/x-ndjson")


def lazy_audit_log(keys: Any) -> AuditSource:
    """An AuditSource over the key store's database (one engine, opened in the worker)."""
    holder: list[AuditLog] = []

    async def audit_log() -> AuditLog:
        if not holder:
            holder.append(AuditLog((await keys.store()).engine))
        return holder[0]

    return audit_log


# ---- wiring ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Gateway:
    engine: EngineClient
    keys: KeyStore
    taxonomies: TenantTaxonomyStore
    limits: LimitSettings
    audit: AuditSource | None = None
    tenant_limits: TenantLimitSettings | None = None  # shared limits on PostgreSQL


async def _blank_server_header(message: Any, scope: Any) -> None:
    """Send an empty `server` header on every response the app makes.

    granian adds `server: granian` unless the app sends its own, and has no switch to drop it
    (emmett-framework/granian #594); an empty value is the nearest to "no banner" it allows.
    """
    if message["type"] == "http.response.start":
        headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
        message["headers"] = [*headers, (b"server", b"")]


class GatewayPlugin(InitPluginProtocol):
    """The one wiring point: routes, auth middleware, problem handlers, engine lifespan."""

    def __init__(self, gateway: _Gateway) -> None:
        self._gateway = gateway

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        gateway = self._gateway

        @asynccontextmanager
        async def engine_lifespan(_: Litestar) -> AsyncIterator[None]:
            await gateway.engine.start()
            try:
                yield
            finally:
                # Granian drains in-flight requests before lifespan shutdown runs.
                await gateway.engine.stop()

        from gateway._stream import classify_stream  # it imports this module's helpers

        app_config.route_handlers.extend(
            [ClassifyController, classify_stream, TaxonomyController, audit_export, healthz, readyz]
        )
        app_config.route_handlers.extend([AdminController, OperatorController, audit_report])
        from gateway.jobs.api import JobsController  # bulk jobs (gateway/jobs)

        app_config.route_handlers.append(JobsController)
        app_config.middleware.append(
            DefineMiddleware(BearerAuth, keys=gateway.keys, exclude=["^/schema"])
        )
        app_config.exception_handlers.update(problems.exception_handlers())
        install_limiter(app_config, limiter_for(gateway.keys, gateway.tenant_limits))
        app_config.lifespan.append(engine_lifespan)
        app_config.state["gateway"] = gateway
        app_config.before_send.append(_blank_server_header)
        app_config.debug = False
        app_config.pdb_on_exception = False
        install_telemetry(app_config, gateway.engine)  # /metrics, request spans and metrics
        return app_config


def _openapi() -> OpenAPIConfig:
    from importlib.metadata import PackageNotFoundError, version

    try:
        tacet_version = version("tacet")
    except PackageNotFoundError:
        tacet_version = "0"
    return OpenAPIConfig(
        title="Tacet",
        version=tacet_version,
        path="/schema",
        render_plugins=[JsonRenderPlugin(path=["/", "/openapi.json"])],
        components=Components(
            security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}
        ),
    )


def create_app(
    *,
    engine: EngineClient,
    keys: KeyStore,
    taxonomies: TenantTaxonomyStore | StaticTaxonomyStore,
    limits: LimitSettings | None = None,
    audit: AuditSource | None = None,
    stream: Any = None,  # gateway._stream.StreamSettings; default bounds when None
    operator_tenant: str | None = None,  # its admin keys may call /v1/operator (tenants, limits)
    tenant_limits: TenantLimitSettings | None = None,  # leases of the shared tenant limits
) -> Litestar:
    """The gateway app around an engine client, a key store and a taxonomy store.

    A `StaticTaxonomyStore` (tests, embedding) is shared read-only by every tenant; `tacet
    serve` passes a `DatabaseTaxonomyStore`, which keeps each tenant's own. With `audit`, every
    /v1 call is recorded before its response leaves (`AuditTrail`); `tacet serve` always
    passes one.
    """
    if isinstance(taxonomies, StaticTaxonomyStore):
        taxonomies = SharedStaticTaxonomies(taxonomies)
    gateway = _Gateway(engine, keys, taxonomies, limits or LimitSettings(), audit, tenant_limits)
    app = Litestar(
        plugins=[GatewayPlugin(gateway)],
        openapi_config=_openapi(),
        request_max_body_size=gateway.limits.max_body_bytes,  # 413 before the body is parsed
        logging_config=None,  # logging is configured once per process, on the ZDR allowlist
        debug=False,
    )
    if stream is not None:
        app.state["stream_settings"] = stream
    if operator_tenant:
        from gateway._operator_routes import STATE_KEY as OPERATOR_STATE_KEY

        app.state[OPERATOR_STATE_KEY] = operator_tenant
    if audit is not None:
        app.asgi_handler = AuditTrail(app.asgi_handler, audit)
    return app


async def _import_dev_taxonomies(keys: Any, extra_dirs: tuple[Path, ...]) -> None:
    """`--dev`: the bundled taxonomies (and `--taxonomy-dir` ones) in the dev tenant, once."""
    from gateway.store.bootstrap import DEV_TENANT_NAME
    from gateway.taxonomies import bundled_taxonomy_dir, import_bundled

    store = await keys.store()
    tenant = await store.tenant_by_name(DEV_TENANT_NAME)
    if tenant is None:  # `tacet serve` creates it before the worker starts
        return
    for directory in (bundled_taxonomy_dir(), *extra_dirs):
        if directory is not None:
            await import_bundled(store, tenant.id, directory)


def app_from_settings(settings: ServeSettings) -> Litestar:
    """Build the app inside granian's worker: key store, taxonomies, and the supervised engine
    process(es) (or connections to the engine units at `TACET_ENGINE_SOCKET(S)`)."""
    configure_logging(settings.log.level)  # in the worker too: the allowlist applies to every line
    telemetry = configure_telemetry(settings.telemetry)  # export off unless TACET_OTEL_EXPORTER
    import os

    from gateway._operator_routes import OPERATOR_TENANT_ENV
    from gateway._stream import StreamSettings
    from gateway.apikeys import load_peppers
    from gateway.auth import StoreKeyStore
    from gateway.engine_pool import build_engines  # lazy
    from gateway.store import database_url
    from gateway.taxonomies import DatabaseTaxonomyStore

    # The supervised engine process(es), or connections to the engine units (one per GPU).
    runtime_dir: Path | None = None
    if not settings.engine.socket_paths():
        if settings.engine.model_dir is None:
            raise ValueError("no model directory: `tacet serve` resolves it before starting")
        runtime_dir = Path(tempfile.mkdtemp(prefix="tacet-engine-"))  # 0700 by construction
    engine = build_engines(settings.engine, runtime_dir)
    peppers = load_peppers(os.environ, data_dir=settings.data_dir, dev=settings.dev)
    keys = StoreKeyStore(database_url(settings.data_dir, os.environ), peppers)
    app = create_app(
        engine=telemetry.metered(engine),
        keys=keys,
        taxonomies=DatabaseTaxonomyStore(keys.store, peppers.derive("review-sampling")),
        limits=settings.limits,
        audit=lazy_audit_log(keys),  # config.start is recorded by `tacet serve` before this
        stream=StreamSettings.from_env(os.environ),
        operator_tenant=os.environ.get(OPERATOR_TENANT_ENV) or None,
        tenant_limits=settings.tenant_limits,
    )
    if settings.dev:
        app.on_startup.append(partial(_import_dev_taxonomies, keys, settings.taxonomy_dirs))
    app.on_shutdown.append(keys.close)
    if runtime_dir is not None:
        engine_dir = runtime_dir
        app.on_shutdown.append(lambda: shutil.rmtree(engine_dir, ignore_errors=True))
    return app
