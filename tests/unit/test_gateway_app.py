"""The Litestar app with a fake engine: auth, limits, problem bodies (canary), error mapping."""

from __future__ import annotations

import asyncio
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from engine.protocol import DecodeOut, DocumentDone, Isolation, LabelOut, Welcome
from gateway.app import create_app
from gateway.auth import DevKeyStore, Principal, ensure_dev_key
from gateway.engine_client import EngineBusy, EngineRejected, EngineUnavailable
from gateway.problems import PROBLEM_BASE
from gateway.settings import LimitSettings, ServeSettings, SettingsError, TLSSettings
from gateway.taxonomies import StaticTaxonomyStore, bundled_taxonomy_dir

CANARY = f"ZDR-CANARY-{uuid.uuid4()}"


class FakeEngine:
    """An in-memory stand-in for `gateway.engine_client.EngineClient`."""

    def __init__(self) -> None:
        self.ready = True
        self.raises: Exception | None = None
        self.calls: list[tuple[str, list[str], str]] = []
        self.started = self.stopped = False
        self.welcome = Welcome(
            version=1, pid=1, model_id="fake-model", family="llada", slot_ops="torch",
            isolation=Isolation(True, True, False, "fake"),
        )

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def classify(
        self, taxonomy: dict[str, Any], texts: list[str], *, mode: str = "diffusion",
        threshold: float | None = None,
    ) -> list[DocumentDone]:
        self.calls.append((taxonomy["name"], texts, mode))
        if self.raises is not None:
            raise self.raises
        facet = taxonomy["facets"][0]
        label = facet["labels"][0]["id"]
        # Out of order on purpose: the gateway must put results back in document order.
        return [
            DocumentDone(
                call_id="c", index=i, labels=[LabelOut(facet["name"], label, 0.75)],
                label_mass={facet["name"]: 0.9},
                decode=DecodeOut(mode=mode, forward_passes=1, exact=True, truncated=False,
                                 tokens=10),
            )
            for i in reversed(range(len(texts)))
        ]


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def key(tmp_path: Path) -> str:
    return ensure_dev_key(tmp_path).read_text().strip()


@pytest.fixture
def client(engine: FakeEngine, tmp_path: Path, key: str) -> Iterator[TestClient[Any]]:
    bundled = bundled_taxonomy_dir()
    assert bundled is not None
    app = create_app(
        engine=engine,
        keys=DevKeyStore(tmp_path / "dev-api-key"),
        taxonomies=StaticTaxonomyStore.from_dirs([bundled]),
        limits=LimitSettings(max_documents=4, max_document_bytes=1000, max_body_bytes=20_000),
    )
    with TestClient(app) as test_client:
        test_client.headers["Authorization"] = f"Bearer {key}"
        yield test_client


def _body(*texts: str, **extra: Any) -> dict[str, Any]:
    docs = [{"id": f"{CANARY}-id-{i}", "text": t} for i, t in enumerate(texts)]
    return {"taxonomy": "debian-sections", "documents": docs, **extra}


def _assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert CANARY not in response.text
    assert CANARY not in str(response.headers)
    body = response.json()
    assert body["type"] == PROBLEM_BASE + slug
    assert body["status"] == status
    assert set(body) <= {"type", "title", "status", "detail", "request_id", "retry_after"}
    return body


def test_classify_returns_labels_in_document_order(client: Any, engine: FakeEngine) -> None:
    response = client.post("/v1/classify", json=_body(f"{CANARY} one", f"{CANARY} two"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "fake-model"
    assert body["taxonomy"] == {"name": "debian-sections", "version": "1"}
    assert len(body["request_id"]) == 32
    assert [r["id"] for r in body["results"]] == [f"{CANARY}-id-0", f"{CANARY}-id-1"]
    first = body["results"][0]
    assert first["labels"] == [{"facet": "section", "label": "admin", "probability": 0.75}]
    assert first["needs_review"] is False
    assert first["decode"] == {"mode": "diffusion", "forward_passes": 1, "exact": True}
    assert engine.calls == [("debian-sections", [f"{CANARY} one", f"{CANARY} two"], "diffusion")]


def test_classify_accepts_curl_form_content_type_and_mode(client: Any, engine: FakeEngine) -> None:
    import json

    payload = json.dumps(_body("text", taxonomy="debtags@1", mode="autoregressive"))
    response = client.post(
        "/v1/classify", content=payload,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["taxonomy"] == {"name": "debtags", "version": "1"}
    assert engine.calls[-1][2] == "autoregressive"


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "Basic abc", "Bearer "])
def test_unknown_key_is_401(client: Any, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    client.headers.pop("Authorization")
    response = client.post("/v1/classify", json=_body("x"), headers=headers)
    _assert_problem(response, 401, "unauthorized")


@pytest.mark.parametrize(
    "payload",
    [
        _body("x", **{CANARY: CANARY}),  # unknown top-level field named with the canary
        {"taxonomy": "debian-sections", "documents": [{"id": "a", "text": "x", CANARY: 1}]},
        {"taxonomy": "debian-sections", "documents": [{"id": CANARY, "text": 5}]},
        {"taxonomy": ["debian-sections"], "documents": [{"id": "a", "text": CANARY}]},
        _body(""),  # empty document
        _body("   "),  # blank document
        {"taxonomy": "debian-sections", "documents": []},
        _body(CANARY, mode=CANARY),
        {"taxonomy": CANARY, "documents": [{"id": "a", "text": CANARY}], "extra": CANARY},
    ],
)
def test_invalid_bodies_are_422_without_submitted_text(client: Any, payload: Any) -> None:
    body = _assert_problem(client.post("/v1/classify", json=payload), 422, "invalid-request")
    assert body["detail"]


def test_malformed_json_is_422_without_text(client: Any) -> None:
    response = client.post("/v1/classify", content=b'{"documents": [' + CANARY.encode())
    _assert_problem(response, 422, "invalid-request")


def test_unknown_taxonomy_is_422_without_echo(client: Any) -> None:
    response = client.post("/v1/classify", json=_body("x", taxonomy=CANARY + "@9"))
    _assert_problem(response, 422, "unknown-taxonomy")


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (_body(*["x"] * 5), "too many documents"),
        (_body(CANARY * 40), "document over max_document_bytes"),
        (_body(*[CANARY * 10] * 4, extra_pad=CANARY * 500), "body over max_body_bytes"),
    ],
)
def test_oversized_requests_are_413(client: Any, payload: Any, why: str) -> None:
    _assert_problem(client.post("/v1/classify", json=payload), 413, "too-large")


@pytest.mark.parametrize(
    ("exc", "status", "slug"),
    [
        (EngineUnavailable(CANARY), 503, "engine-unavailable"),
        (EngineBusy(CANARY), 429, "busy"),
        (EngineRejected(CANARY), 422, "engine-rejected"),
    ],
)
def test_engine_errors_map_to_problems(
    client: Any, engine: FakeEngine, exc: Exception, status: int, slug: str
) -> None:
    engine.raises = exc
    response = client.post("/v1/classify", json=_body(CANARY))
    _assert_problem(response, status, slug)
    if status in (429, 503):
        assert int(response.headers["retry-after"]) >= 1


def test_unexpected_error_is_500_with_only_request_id(
    client: Any, engine: FakeEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    engine.raises = RuntimeError(CANARY)
    response = client.post("/v1/classify", json=_body(CANARY))
    body = _assert_problem(response, 500, "internal-error")
    assert body["request_id"] == response.headers["x-request-id"]
    assert "RuntimeError" not in response.text
    logged = capsys.readouterr()
    assert "RuntimeError" in logged.out + logged.err  # the operator sees the type ...
    assert CANARY not in logged.out + logged.err  # ... and never the message


def test_health_and_readiness(client: Any, engine: FakeEngine) -> None:
    client.headers.pop("Authorization")
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    engine.ready = False
    response = client.get("/readyz")
    _assert_problem(response, 503, "engine-unavailable")
    assert response.headers["retry-after"]
    assert client.get("/healthz").status_code == 200


def test_schema_documents_classify_without_auth(client: Any) -> None:
    client.headers.pop("Authorization")
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert "/v1/classify" in schema["paths"]
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert client.get("/schema").status_code == 200


def test_no_server_banner_and_unknown_route_is_problem(client: Any) -> None:
    response = client.get(f"/{CANARY}")
    _assert_problem(response, 404, "not-found")
    assert response.headers.get("server", "") == ""  # empty: granian then adds no banner


def test_lifespan_starts_and_stops_engine(engine: FakeEngine, tmp_path: Path) -> None:
    app = create_app(
        engine=engine,
        keys=DevKeyStore(ensure_dev_key(tmp_path)),
        taxonomies=StaticTaxonomyStore(),
    )
    with TestClient(app):
        assert engine.started and not engine.stopped
    assert engine.stopped


def test_dev_key_file_is_private_and_stable(tmp_path: Path) -> None:
    path = ensure_dev_key(tmp_path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first = path.read_text()
    assert len(first.strip()) >= 40
    assert ensure_dev_key(tmp_path).read_text() == first
    store = DevKeyStore(path)
    principal = asyncio.run(store.authenticate(first.strip()))
    assert principal is not None and principal.tenant_id == "dev"
    assert asyncio.run(store.authenticate(first.strip() + "x")) is None
    assert asyncio.run(store.authenticate("é")) is None
    assert first.strip() not in repr(store)


def test_taxonomy_versions_resolve_latest_and_pinned() -> None:
    base = {"name": "subjects", "facets": []}
    store = StaticTaxonomyStore([{**base, "version": "2"}, {**base, "version": "10"}])
    assert store.resolve("subjects")["version"] == "10"  # type: ignore[index]
    assert store.resolve("subjects@2")["version"] == "2"  # type: ignore[index]
    assert store.resolve("subjects@3") is None
    assert store.resolve("other") is None


def test_settings_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="--tls-cert"):
        ServeSettings(dev=False).validate()
    with pytest.raises(SettingsError, match="--tls-key"):
        TLSSettings(cert=tmp_path / "c.pem").validate(dev=True)
    with pytest.raises(SettingsError, match="TACET_PORT"):
        ServeSettings.from_env({"TACET_PORT": "eighty"})
    settings = ServeSettings.from_env({"TACET_DEV": "1", "TACET_UNSAFE_TLS12": "1"})
    assert settings.dev and settings.tls.min_version == "tls1.2"
    assert ServeSettings().tls.min_version == "tls1.3"


def _serve_dev(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, str, ServeSettings]:
    """`tacet serve --dev` with a clean environment, stopped before serving: the data dir, what
    it printed and the settings it would serve with."""
    from gateway import _cli_serve
    from gateway.cli import main

    served: list[ServeSettings] = []
    monkeypatch.setattr(_cli_serve, "serve", lambda settings, loader: served.append(settings))
    for name in list(os.environ):
        if name.startswith("TACET_"):
            monkeypatch.delenv(name)
    data_dir = tmp_path / "state"
    assert main(["serve", "--dev", "--data-dir", str(data_dir), "--port", "9443"]) == 0
    (settings,) = served
    return data_dir, capsys.readouterr().out, settings


def test_serve_dev_prepares_data_dir_and_never_prints_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway import _cli_serve

    data_dir, out, settings = _serve_dev(tmp_path, monkeypatch, capsys)
    key = (data_dir / "dev-api-key").read_text().strip()
    assert key not in out
    assert "https://127.0.0.1:9443" in out
    assert str(data_dir / "tls" / "ca.pem") in out
    assert str(data_dir / "dev-api-key") in out
    assert "bundled demo model" in out and "RANDOM" not in out
    assert settings.engine.model_dir == _cli_serve.bundled_demo_model()
    assert settings.engine.model_dir == Path(_cli_serve.__file__).parent.parent / "models/demo"
    assert (settings.engine.model_dir / "model.safetensors").is_file()
    assert settings.tls.cert == data_dir / "tls" / "server.pem"
    assert settings.tls.min_version == "tls1.3"
    assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o700
    # The control-plane database (SQLite) holds the dev key's digest, never the key itself.
    secret = key.rsplit("_", 1)[-1]
    (database,) = data_dir.glob("*.db")
    assert secret[:20].encode() not in database.read_bytes()


def test_serve_without_dev_or_certificate_names_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    assert main(["serve", "--data-dir", str(tmp_path), "--model", str(tmp_path)]) == 2
    assert "--tls-cert" in capsys.readouterr().err


class ReadOnlyKeys:
    """A second `KeyStore`: what the control plane will plug in, here with no classify scope."""

    async def authenticate(self, bearer: str) -> Principal | None:
        if bearer == "reader":
            return Principal(tenant_id="t1", key_id="k1", scopes=frozenset({"audit:read"}))
        return None


def test_any_key_store_plugs_in_and_scopes_are_checked(engine: FakeEngine) -> None:
    app = create_app(engine=engine, keys=ReadOnlyKeys(), taxonomies=StaticTaxonomyStore())
    with TestClient(app) as test_client:
        response = test_client.post(
            "/v1/classify", json=_body(CANARY), headers={"Authorization": "Bearer reader"}
        )
        _assert_problem(response, 403, "forbidden")
        assert engine.calls == []
        wrong_method = test_client.get("/v1/classify", headers={"Authorization": "Bearer reader"})
        _assert_problem(wrong_method, 405, "method-not-allowed")


def test_serve_without_a_bundled_model_serves_a_random_one_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway import _cli_serve

    monkeypatch.setattr(_cli_serve, "bundled_demo_model", lambda: None)
    data_dir, out, settings = _serve_dev(tmp_path, monkeypatch, capsys)
    assert "RANDOM" in out and "noise" in out
    assert settings.engine.model_dir == data_dir / "models" / "tiny-random"
    assert (settings.engine.model_dir / "config.json").is_file()
