"""OpenTelemetry spans and metrics on the ZDR allowlist, and `GET /metrics` (Prometheus text).

Real SDK providers with the SDK's in-memory span exporter behind Tacet's redacting wrapper,
the real Litestar app (fake engine), and prometheus_client's own parser for `/metrics`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from compliance.zdr import ALLOWED_FIELDS, REDACTED
from gateway import telemetry as tm
from gateway.app import create_app
from gateway.auth import DevKeyStore, ensure_dev_key
from gateway.settings import TelemetrySettings
from gateway.taxonomies import StaticTaxonomyStore, bundled_taxonomy_dir
from tests.unit.test_gateway_app import FakeEngine

CANARY = f"ZDR-CANARY-{uuid.uuid4()}"


def test_every_label_and_attribute_is_an_allowlisted_field() -> None:
    for spec in tm.METRICS:
        assert set(spec.labels) <= set(ALLOWED_FIELDS), spec.name
    assert set(tm.SPAN_ATTRIBUTES.values()) <= set(ALLOWED_FIELDS)
    assert len({spec.prometheus for spec in tm.METRICS}) == len(tm.METRICS)


def test_metric_labels_keep_declared_names_and_redact_bad_values() -> None:
    spec = next(s for s in tm.METRICS if s.name == "tacet.http.server.request.duration")
    labels = tm.metric_labels(
        spec, route="/v1/classify", method=f"GET {CANARY}", status=200, document_id=CANARY
    )
    assert labels == {"route": "/v1/classify", "method": REDACTED, "status": "200"}


def test_span_name_and_attribute_checks() -> None:
    assert tm.safe_span_name("POST /v1/taxonomies/{name}") == "POST /v1/taxonomies/{name}"
    assert tm.safe_span_name(f"GET /v1/x?q={CANARY}") == "HTTP"
    assert tm.safe_span_name(f"{CANARY} /v1/classify") == "HTTP"
    kept = tm.safe_attributes(
        {
            "http.route": "/v1/classify",
            "http.response.status_code": 200,
            "url.query": f"q={CANARY}",
            "http.request.header.x_canary": CANARY,
            "tacet.request_id": f"{CANARY} with spaces",
        }
    )
    assert kept == {"http.route": "/v1/classify", "http.response.status_code": 200}


def test_redacting_exporter_drops_everything_not_allowlisted() -> None:
    inner = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(tm.RedactingSpanExporter(inner)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(f"GET /v1/{CANARY}?q={CANARY}") as span:
        span.set_attribute("http.route", "/v1/classify")
        span.set_attribute("url.full", f"https://h/v1/classify?q={CANARY}")
        span.set_attribute("document.text", CANARY)
        span.add_event("exception", {"exception.message": CANARY})
        span.set_status(Status(StatusCode.ERROR, CANARY))
    provider.shutdown()
    [exported] = inner.get_finished_spans()
    dumped = exported.to_json()
    assert CANARY not in dumped
    assert exported.name == "HTTP"
    assert dict(exported.attributes or {}) == {"http.route": "/v1/classify"}
    assert exported.events == ()
    assert exported.status.status_code == StatusCode.ERROR
    assert exported.status.description is None
    assert dict(exported.resource.attributes) == {
        "service.name": tm.SERVICE_NAME,
        "service.version": exported.resource.attributes["service.version"],
    }


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tm.configure_telemetry(TelemetrySettings(), span_exporter=exporter)
    yield exporter
    tm.current_telemetry().shutdown()
    tm._current.clear()


@pytest.fixture
def served(tmp_path: Path, spans: InMemorySpanExporter) -> Iterator[tuple[TestClient[Any], str]]:
    key = ensure_dev_key(tmp_path).read_text().strip()
    bundled = bundled_taxonomy_dir()
    assert bundled is not None
    telemetry = tm.current_telemetry()
    app = create_app(
        engine=telemetry.metered(FakeEngine()),  # type: ignore[arg-type]
        keys=DevKeyStore(tmp_path / "dev-api-key"),
        taxonomies=StaticTaxonomyStore.from_dirs([bundled]),
    )
    with TestClient(app) as client:
        yield client, key


def _metrics(client: TestClient[Any]) -> dict[str, Any]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert CANARY not in response.text
    return {
        sample.name + json.dumps(sample.labels, sort_keys=True): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_app_spans_and_metrics_carry_templates_and_counts_only(
    served: tuple[TestClient[Any], str], spans: InMemorySpanExporter
) -> None:
    client, key = served
    headers = {"Authorization": f"Bearer {key}", "X-Canary": CANARY, "User-Agent": CANARY}
    body = {
        "taxonomy": "debian-sections",
        "documents": [{"id": CANARY, "text": CANARY}, {"id": "b", "text": CANARY}],
    }
    assert client.post(f"/v1/classify?q={CANARY}", json=body, headers=headers).status_code == 200
    assert client.get(f"/v1/taxonomies/{CANARY}", headers=headers).status_code == 404
    assert client.get(f"/{CANARY}/x?{CANARY}=1", headers=headers).status_code == 404
    denied = client.post("/v1/classify", json=body, headers={"Authorization": CANARY})
    assert denied.status_code == 401
    tm.current_telemetry().flush()
    finished = spans.get_finished_spans()
    assert all(CANARY not in span.to_json() for span in finished)
    names = [span.name for span in finished]
    assert names.count("POST /v1/classify") == 2
    assert "GET /v1/taxonomies/{name}" in names
    assert f"GET {tm.UNMATCHED_ROUTE}" in names
    ok = next(s for s in finished if s.attributes and s.attributes.get(
        "http.response.status_code") == 200)
    assert ok.attributes is not None
    assert ok.attributes["http.route"] == "/v1/classify"
    assert ALLOWED_FIELDS["request_id"](ok.attributes["tacet.request_id"])
    assert "tacet.tenant_id" in ok.attributes

    samples = _metrics(client)
    labels = json.dumps({"mode": "diffusion", "model_id": "fake-model"}, sort_keys=True)
    assert samples["tacet_documents_total" + labels] == 2
    assert samples["tacet_tokens_total" + labels] == 20  # FakeEngine: 10 tokens a document
    assert samples["tacet_engine_forward_passes_count" + labels] == 2
    assert samples["tacet_engine_forward_passes_sum" + labels] == 2
    duration = json.dumps(
        {"method": "POST", "route": "/v1/classify", "status": "401"}, sort_keys=True
    )
    assert samples["tacet_http_server_request_duration_seconds_count" + duration] == 1
    first = json.dumps({"route": "/v1/classify"}, sort_keys=True)
    assert samples["tacet_classify_time_to_first_result_seconds_count" + first] == 1
    assert samples["tacet_engine_queue_depth{}"] == 0
    assert samples["tacet_engine_restarts_total{}"] == 0


def test_metrics_needs_no_key_and_is_not_in_the_schema(
    served: tuple[TestClient[Any], str],
) -> None:
    client, _ = served
    assert client.get("/metrics").status_code == 200
    assert "/metrics" not in client.get("/schema/openapi.json").json()["paths"]


def test_tracing_is_off_by_default() -> None:
    telemetry = tm.Telemetry(TelemetrySettings())
    with telemetry.tracer.start_as_current_span("x") as span:
        assert not span.is_recording()
    telemetry.shutdown()


class StreamingEngine(FakeEngine):
    """FakeEngine that also reports each result as it completes, like the engine client."""

    async def classify(  # type: ignore[override]
        self, taxonomy: dict[str, Any], texts: list[str], **options: Any
    ) -> list[Any]:
        on_document = options.pop("on_document", None)
        done = await super().classify(taxonomy, texts, **options)
        for result in done:
            if on_document is not None:
                on_document(result)
        return done


def test_metered_engine_counts_each_document_once_also_when_streaming() -> None:
    import asyncio

    telemetry = tm.Telemetry()
    engine = telemetry.metered(StreamingEngine())  # type: ignore[arg-type]
    seen: list[int] = []
    taxonomy = {"name": "t", "facets": [{"name": "f", "labels": [{"id": "a"}]}]}
    asyncio.run(engine.classify(taxonomy, ["x", "y", "z"], on_document=lambda d: seen.append(
        d.index)))
    asyncio.run(engine.classify(taxonomy, ["w"], mode="autoregressive"))
    assert sorted(seen) == [0, 1, 2]
    text = telemetry.prometheus_text().decode()
    assert 'tacet_documents_total{mode="diffusion",model_id="fake-model"} 3.0' in text
    assert 'tacet_documents_total{mode="autoregressive",model_id="fake-model"} 1.0' in text
    assert 'tacet_tokens_total{mode="diffusion",model_id="fake-model"} 30.0' in text
    telemetry.shutdown()


def test_console_exporter_prints_redacted_spans(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry = tm.Telemetry(TelemetrySettings(exporter="console"))
    with telemetry.tracer.start_as_current_span("GET /v1/taxonomies/{name}") as span:
        span.set_attribute("http.route", "/v1/taxonomies/{name}")
        span.set_attribute("url.path", f"/v1/taxonomies/{CANARY}")
    telemetry.shutdown()
    out = capsys.readouterr().out
    assert '"name": "GET /v1/taxonomies/{name}"' in out
    assert CANARY not in out
