"""OpenTelemetry traces and metrics on the ZDR allowlist, and `GET /metrics` in Prometheus text.

Why three layers: the Python SDK cannot redact in a span processor (`on_end` gets an immutable
span; open-telemetry/opentelemetry-python #5614, #4424), and ASGI auto-instrumentation records
raw query strings and exception messages (research/gateway.md, section 4). So Tacet uses no
auto-instrumentation and:
1. creates every span and instrument here: span names are `METHOD /route/{template}` (never a
   raw path), attributes go through `safe_attributes` (the `compliance.zdr` allowlist) when set;
2. exports spans through `RedactingSpanExporter`, which rebuilds each span with allowlisted
   attributes only, no events, no links, no status description and a constant resource;
3. records metrics with `metric_labels` only (allowlisted label names, shape-checked values).

Export (OTLP over HTTP, or the console) is off by default (`TelemetrySettings`). `/metrics` is
always served, unauthenticated like `/healthz`: its labels carry no tenant, key or request data,
only route templates, methods, statuses, modes, the model id and limiter outcomes (docs/zdr.md).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from litestar import Request, Response, get
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    Gauge,
    Histogram,
    InMemoryMetricReader,
    MetricExporter,
    PeriodicExportingMetricReader,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind, Status
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from compliance.zdr import ALLOWED_FIELDS, REDACTED
from gateway.settings import TelemetrySettings

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.config.app import AppConfig

    from engine.protocol import DocumentDone
    from gateway.engine_client import EngineClient

__all__ = [
    "METRICS",
    "SPAN_ATTRIBUTES",
    "MeteredEngine",
    "MetricSpec",
    "RedactingSpanExporter",
    "Telemetry",
    "TelemetryMiddleware",
    "configure_telemetry",
    "current_telemetry",
    "install_telemetry",
    "metric_labels",
    "safe_attributes",
    "safe_span_name",
]

SERVICE_NAME = "tacet-gateway"
UNMATCHED_ROUTE = "/{unmatched}"  # no route matched (404): the raw path is never used

# Span attribute -> the allowlist field whose check its value must pass. Nothing else is set,
# and the exporter drops anything else that might appear.
SPAN_ATTRIBUTES: Mapping[str, str] = {
    "http.request.method": "method",
    "http.route": "route",
    "http.response.status_code": "status",
    "tacet.request_id": "request_id",
    "tacet.tenant_id": "tenant_id",
    "tacet.key_id": "key_id",
}


@dataclass(frozen=True)
class MetricSpec:
    """One instrument: its OpenTelemetry name, Prometheus name, kind, unit and label names."""

    name: str
    prometheus: str
    kind: str  # histogram | counter | gauge (observable) | observable_counter
    unit: str
    description: str
    labels: tuple[str, ...]  # each an allowlist field (checked by tests against compliance.zdr)
    buckets: tuple[float, ...] = ()


_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_PASSES = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0)

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "tacet.http.server.request.duration", "tacet_http_server_request_duration_seconds",
        "histogram", "s", "HTTP request duration", ("route", "method", "status"), _SECONDS,
    ),
    MetricSpec(
        "tacet.classify.time_to_first_result", "tacet_classify_time_to_first_result_seconds",
        "histogram", "s", "Time from request start to the first result byte (classify routes)",
        ("route",), _SECONDS,
    ),
    MetricSpec(
        "tacet.documents", "tacet_documents_total", "counter", "{document}",
        "Documents classified (per minute: rate(...[1m]) * 60)", ("mode", "model_id"),
    ),
    MetricSpec(
        "tacet.tokens", "tacet_tokens_total", "counter", "{token}",
        "Document tokens classified (per minute: rate(...[1m]) * 60)", ("mode", "model_id"),
    ),
    MetricSpec(
        "tacet.engine.forward_passes", "tacet_engine_forward_passes", "histogram",
        "{pass}", "Forward passes per document", ("mode", "model_id"), _PASSES,
    ),
    MetricSpec(
        "tacet.engine.queue_depth", "tacet_engine_queue_depth", "gauge", "{document}",
        "Documents queued in or running on the engine", (),
    ),
    MetricSpec(
        "tacet.engine.restarts", "tacet_engine_restarts_total", "observable_counter",
        "{restart}", "Engine process restarts since the gateway started", (),
    ),
    MetricSpec(
        "tacet.limiter.decisions", "tacet_limiter_decisions_total", "counter", "{decision}",
        "Tenant-limit decisions (gateway.ratelimit), by outcome and where counted; no tenant",
        ("outcome", "limiter"),
    ),
    MetricSpec(
        "tacet.engines.ready", "tacet_engines_ready", "gauge", "{engine}",
        "Engines ready to take calls (readyz is 200 while this is at least 1)", (),
    ),
    MetricSpec(
        "tacet.engines.configured", "tacet_engines_configured", "gauge", "{engine}",
        "Engines this gateway is configured with (sockets, or engines it spawns)", (),
    ),
)
_BY_NAME = {spec.name: spec for spec in METRICS}


# ---- the allowlist, applied ------------------------------------------------------------------


def safe_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Known span attributes whose values pass their allowlist check; everything else dropped."""
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        field = SPAN_ATTRIBUTES.get(key)
        if field is not None and ALLOWED_FIELDS[field](value):
            out[key] = value
    return out


def safe_span_name(name: str) -> str:
    """`METHOD /template` when both parts pass the allowlist, else the constant `HTTP`."""
    method, _, route = name.partition(" ")
    if ALLOWED_FIELDS["method"](method) and ALLOWED_FIELDS["route"](route):
        return name
    return "HTTP"


def metric_labels(spec: MetricSpec, **values: Any) -> dict[str, str]:
    """The label set of one observation: exactly `spec.labels`, each value shape-checked."""
    labels: dict[str, str] = {}
    for name in spec.labels:
        value = values.get(name)
        if value is None:
            labels[name] = ""
        else:
            labels[name] = str(value) if ALLOWED_FIELDS[name](value) else REDACTED
    return labels


_RESOURCE_KEYS = ("service.name", "service.version")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tacet")
    except PackageNotFoundError:
        return "0"


def _resource() -> Resource:
    # Resource(...) rather than Resource.create(...): the latter merges OTEL_RESOURCE_ATTRIBUTES
    # and detectors (host names, process command lines), none of which we vouch for.
    return Resource({"service.name": SERVICE_NAME, "service.version": _version()})


class RedactingSpanExporter(SpanExporter):
    """Wraps any exporter; every span it passes on is rebuilt from allowlisted parts only."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner
        self._resource = _resource()

    def _redact(self, span: ReadableSpan) -> ReadableSpan:
        return ReadableSpan(
            name=safe_span_name(span.name),
            context=span.context,
            parent=span.parent,
            resource=self._resource,
            attributes=safe_attributes(span.attributes or {}),
            events=(),  # exception events carry messages and stack traces
            links=(),
            kind=span.kind,
            status=Status(span.status.status_code),  # the code, never a description
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([self._redact(span) for span in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


# ---- exporters from settings -----------------------------------------------------------------


def _exporters(settings: TelemetrySettings) -> tuple[SpanExporter | None, MetricExporter | None]:
    if settings.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = settings.endpoint.rstrip("/") if settings.endpoint else None
        return (
            OTLPSpanExporter(endpoint=f"{base}/v1/traces" if base else None),
            OTLPMetricExporter(endpoint=f"{base}/v1/metrics" if base else None),
        )
    if settings.exporter == "console":
        return ConsoleSpanExporter(out=sys.stdout), ConsoleMetricExporter(out=sys.stdout)
    return None, None


# ---- the process's telemetry -----------------------------------------------------------------


class Telemetry:
    """Tracer and meter providers of one process, the Prometheus registry, engine gauges."""

    def __init__(
        self,
        settings: TelemetrySettings | None = None,
        *,
        span_exporter: SpanExporter | None = None,
        metric_exporter: MetricExporter | None = None,
    ) -> None:
        settings = settings or TelemetrySettings()
        default_spans, default_metrics = _exporters(settings)
        span_exporter = span_exporter or default_spans
        metric_exporter = metric_exporter or default_metrics
        resource = _resource()
        self._tracer_provider: TracerProvider | None = None
        if span_exporter is not None:
            self._tracer_provider = TracerProvider(resource=resource)
            self._tracer_provider.add_span_processor(
                BatchSpanProcessor(RedactingSpanExporter(span_exporter))
            )
            self.tracer: trace.Tracer = self._tracer_provider.get_tracer("tacet.gateway")
        else:
            self.tracer = trace.NoOpTracer()  # tracing off: nothing is created at all
        self._reader = InMemoryMetricReader()
        readers: list[Any] = [self._reader]
        if metric_exporter is not None:
            readers.append(PeriodicExportingMetricReader(metric_exporter))
        self._meter_provider = MeterProvider(metric_readers=readers, resource=resource)
        meter = self._meter_provider.get_meter("tacet.gateway")
        self._engine: Any = None
        self._instruments: dict[str, Any] = {}
        self._gauges = {
            "tacet.engine.queue_depth": self._observe_queue,
            "tacet.engines.ready": self._observe_ready,
            "tacet.engines.configured": self._observe_configured,
        }
        for spec in METRICS:
            if spec.kind == "histogram":
                self._instruments[spec.name] = meter.create_histogram(
                    spec.name, spec.unit, spec.description,
                    explicit_bucket_boundaries_advisory=spec.buckets,
                )
            elif spec.kind == "counter":
                self._instruments[spec.name] = meter.create_counter(
                    spec.name, spec.unit, spec.description
                )
            elif spec.kind == "gauge":
                meter.create_observable_gauge(
                    spec.name, [self._gauges[spec.name]], spec.unit, spec.description
                )
            else:
                meter.create_observable_counter(
                    spec.name, [self._observe_restarts], spec.unit, spec.description
                )
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_PrometheusBridge(self._reader))

    # -- engine ------------------------------------------------------------------------------

    def watch(self, engine: Any) -> None:
        """The engine client whose queue depth and restarts the gauges read."""
        self._engine = engine

    def metered(self, engine: EngineClient) -> MeteredEngine:
        """`engine` wrapped so every classify() call counts documents, tokens and passes."""
        return MeteredEngine(engine, self)

    def _observe_queue(self, _: CallbackOptions) -> Iterable[Observation]:
        if self._engine is not None:
            yield Observation(int(getattr(self._engine, "queued_documents", 0)))

    def _observe_ready(self, _: CallbackOptions) -> Iterable[Observation]:
        if self._engine is not None:  # an EnginePool counts its engines; one engine is 0 or 1
            ready = getattr(self._engine, "ready_count", None)
            yield Observation(int(self._engine.ready) if ready is None else int(ready))

    def _observe_configured(self, _: CallbackOptions) -> Iterable[Observation]:
        if self._engine is not None:
            yield Observation(int(getattr(self._engine, "configured", 1)))

    def _observe_restarts(self, _: CallbackOptions) -> Iterable[Observation]:
        if self._engine is not None:
            yield Observation(int(getattr(self._engine, "restarts", 0)))

    # -- recording ---------------------------------------------------------------------------

    def record(self, name: str, value: float, **labels: Any) -> None:
        spec = _BY_NAME[name]
        instrument = self._instruments[name]
        attributes = metric_labels(spec, **labels)
        if spec.kind == "histogram":
            instrument.record(value, attributes)
        else:
            instrument.add(value, attributes)

    def record_documents(self, done: Sequence[DocumentDone], model_id: str | None) -> None:
        for document in done:
            decode = document.decode
            self.record("tacet.documents", 1, mode=decode.mode, model_id=model_id)
            self.record("tacet.tokens", decode.tokens, mode=decode.mode, model_id=model_id)
            self.record(
                "tacet.engine.forward_passes",
                decode.forward_passes,
                mode=decode.mode,
                model_id=model_id,
            )

    def prometheus_text(self) -> bytes:
        return generate_latest(self.registry)

    def flush(self) -> None:
        """Push what is buffered to the exporters (app shutdown; tests)."""
        if self._tracer_provider is not None:
            self._tracer_provider.force_flush()
        self._meter_provider.force_flush()

    def shutdown(self) -> None:
        """Flush and stop the export threads (end of process; tests)."""
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()
        self._meter_provider.shutdown()


class MeteredEngine:
    """An EngineClient that counts what each classify() call returned (never its content)."""

    def __init__(self, engine: EngineClient, telemetry: Telemetry) -> None:
        self._engine = engine
        self._telemetry = telemetry

    def __getattr__(self, name: str) -> Any:  # pid, wait_ready, queued_documents, ...
        return getattr(self._engine, name)

    @property
    def ready(self) -> bool:
        return self._engine.ready

    @property
    def welcome(self) -> Any:
        return self._engine.welcome

    @property
    def restarts(self) -> int:
        return self._engine.restarts

    async def start(self) -> None:
        await self._engine.start()

    async def stop(self) -> None:
        await self._engine.stop()

    async def classify(
        self, taxonomy: dict[str, Any], texts: list[str], **options: Any
    ) -> list[DocumentDone]:
        """The engine's classify() with the caller's options passed through unchanged; each
        result is counted once: as it arrives when the caller streams (`on_document`), else
        when the call returns."""
        welcome = self._engine.welcome
        model_id = welcome.model_id if welcome is not None else None
        counted: set[int] = set()

        def count(done: DocumentDone) -> None:
            if done.index not in counted:
                counted.add(done.index)
                self._telemetry.record_documents([done], model_id)

        on_document = options.get("on_document")
        if on_document is not None:

            def counting(done: DocumentDone) -> None:
                count(done)
                on_document(done)

            options["on_document"] = counting
        results = await self._engine.classify(taxonomy, texts, **options)
        for done in results:
            count(done)
        return results


class _PrometheusBridge:
    """prometheus_client collector over the SDK's in-memory reader (cumulative data)."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self._reader = reader

    def collect(self) -> Iterable[Metric]:
        data = self._reader.get_metrics_data()
        if data is None:
            return
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    spec = _BY_NAME.get(metric.name)
                    if spec is not None:
                        yield _family(spec, metric.data)


def _family(spec: MetricSpec, data: Any) -> Metric:
    labels = list(spec.labels)

    def values(point: Any) -> list[str]:
        return [str(point.attributes.get(name, "")) for name in labels]

    if isinstance(data, Histogram):
        histogram = HistogramMetricFamily(
            spec.prometheus, spec.description, labels=labels, unit=""
        )
        for point in data.data_points:
            cumulative, buckets = 0, []
            for bound, count in zip(point.explicit_bounds, point.bucket_counts, strict=False):
                cumulative += count
                buckets.append((_bound(bound), cumulative))
            buckets.append(("+Inf", point.count))
            histogram.add_metric(values(point), buckets, point.sum)
        return histogram
    if isinstance(data, Sum) and data.is_monotonic:
        counter = CounterMetricFamily(
            spec.prometheus.removesuffix("_total"), spec.description, labels=labels
        )
        for number in data.data_points:
            counter.add_metric(values(number), number.value)
        return counter
    assert isinstance(data, (Gauge, Sum))
    gauge = GaugeMetricFamily(spec.prometheus, spec.description, labels=labels)
    for number in data.data_points:
        gauge.add_metric(values(number), number.value)
    return gauge


def _bound(value: float) -> str:
    return repr(float(value))


# ---- process-wide instance ---------------------------------------------------------------------

_current: list[Telemetry] = []


def configure_telemetry(
    settings: TelemetrySettings,
    *,
    span_exporter: SpanExporter | None = None,
    metric_exporter: MetricExporter | None = None,
) -> Telemetry:
    """Set this process's telemetry (granian's worker calls it once, before building the app);
    tests may pass exporters of their own, which still sit behind the redacting wrapper."""
    telemetry = Telemetry(settings, span_exporter=span_exporter, metric_exporter=metric_exporter)
    _current[:] = [telemetry]
    return _current[0]


def current_telemetry() -> Telemetry:
    """This process's telemetry; a default one (no export, /metrics only) if none was set."""
    if not _current:
        _current.append(Telemetry())
    return _current[0]


# ---- the HTTP side -----------------------------------------------------------------------------


class TelemetryMiddleware:
    """Outermost ASGI wrapper: one server span and the request metrics per HTTP request.

    It runs outside routing (404s and 405s are measured too) and reads only what routing left in
    the scope: the route template, the principal's ids, Tacet's request id and the status.
    """

    def __init__(self, app: Any, telemetry: Telemetry) -> None:
        self.app = app
        self._telemetry = telemetry

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        telemetry = self._telemetry
        started = time.perf_counter()
        first_body: list[float] = []
        status: list[int] = []

        async def timed_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            elif message["type"] == "http.response.body" and not first_body and message.get(
                "body"
            ):
                first_body.append(time.perf_counter())
            await send(message)

        with telemetry.tracer.start_as_current_span(
            "HTTP", kind=SpanKind.SERVER, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                await self.app(scope, receive, timed_send)
            finally:
                code = status[0] if status else 500
                method = scope.get("method")
                method = method if ALLOWED_FIELDS["method"](method) else None
                route = scope.get("path_template") or UNMATCHED_ROUTE
                span.update_name(safe_span_name(f"{method} {route}"))
                user = scope.get("user")
                state = scope.get("state") or {}
                span.set_attributes(
                    safe_attributes(
                        {
                            "http.request.method": method,
                            "http.route": route,
                            "http.response.status_code": code,
                            "tacet.request_id": state.get("tacet_request_id"),
                            "tacet.tenant_id": getattr(user, "tenant_id", None),
                            "tacet.key_id": getattr(user, "key_id", None),
                        }
                    )
                )
                if code >= 500:
                    span.set_status(Status(trace.StatusCode.ERROR))
                telemetry.record(
                    "tacet.http.server.request.duration",
                    time.perf_counter() - started,
                    route=route,
                    method=method,
                    status=code,
                )
                if first_body and 200 <= code < 300 and route.startswith("/v1/classify"):
                    telemetry.record(
                        "tacet.classify.time_to_first_result",
                        first_body[0] - started,
                        route=route,
                    )


@get(
    "/metrics",
    operation_id="metrics",
    opt={"exclude_from_auth": True},
    include_in_schema=False,
    sync_to_thread=False,
)
def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus text exposition of the allowlisted instruments (no auth, no tenant data)."""
    telemetry: Telemetry = request.app.state.telemetry
    return Response(telemetry.prometheus_text(), media_type=CONTENT_TYPE_LATEST)


def _wrap_outermost(telemetry: Telemetry, app: Litestar) -> None:
    # On startup, after create_app has added its own wrappers (the audit trail), so the span
    # covers the whole request including the audit append.
    if not isinstance(app.asgi_handler, TelemetryMiddleware):
        app.asgi_handler = TelemetryMiddleware(app.asgi_handler, telemetry)


def install_telemetry(app_config: AppConfig, engine: Any) -> Telemetry:
    """Add `/metrics`, the request span and metrics, and the engine gauges to an app."""
    telemetry = current_telemetry()
    telemetry.watch(engine)
    app_config.state["telemetry"] = telemetry
    app_config.route_handlers.append(metrics)
    app_config.on_startup.append(partial(_wrap_outermost, telemetry))
    app_config.on_shutdown.append(telemetry.flush)
    return telemetry
