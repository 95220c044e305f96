"""Unsafe settings: `tacet serve` refuses each one unless its `--unsafe-...` flag is given (then
it warns and audits the setting's name), and `tacet zdr report` exits 1 on each one.

Every case sets the variable in the real environment and runs the real command entry point;
the accepted starts run `prepare` for real (data dir, dev TLS, SQLite migrations, audit chain).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from gateway import _cli_serve
from gateway.cli import main as tacet
from gateway.logging import PINNED_LOGGERS
from gateway.settings import UNSAFE_SETTINGS, ServeSettings, SettingsError

# (audited setting name, environment that turns it on); several spellings of one setting.
CASES: list[tuple[str, dict[str, str]]] = [
    ("log.level", {"TACET_LOG_LEVEL": "debug"}),
    ("log.debug", {"TACET_DEBUG": "1"}),
    ("log.debug", {"LITESTAR_DEBUG": "1"}),
    ("log.bodies", {"TACET_LOG_BODIES": "1"}),
    ("log.headers", {"TACET_LOG_HEADERS": "true"}),
    (
        "telemetry.capture_headers",
        {"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "x-forwarded-for"},
    ),
    (
        "telemetry.capture_headers",
        {"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": ".*"},
    ),
    ("telemetry.capture_headers", {"TACET_OTEL_CAPTURE_HEADERS": "1"}),
    ("tls.disabled", {"TACET_TLS": "off"}),
    ("tls.unsafe_tls12", {"TACET_UNSAFE_TLS12": "1"}),
]
FLAG = {u.name: u.flag for u in UNSAFE_SETTINGS}
REFUSABLE = [(name, env) for name, env in CASES if name != "tls.unsafe_tls12"]


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    """`tacet serve` configures the process's logging; put the test run's back afterwards."""
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in PINNED_LOGGERS)]
    saved = [(logger, logger.handlers[:], logger.level) for logger in loggers]
    structlog_config = structlog.get_config()
    yield
    for logger, handlers, level in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
    structlog.configure(**structlog_config)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("TACET_", "OTEL_", "LITESTAR_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TACET_DATA_DIR", str(tmp_path / "data"))


def _ids(cases: list[tuple[str, dict[str, str]]]) -> list[str]:
    return [f"{name}:{next(iter(env))}" for name, env in cases]


def test_cases_cover_every_unsafe_setting() -> None:
    assert {name for name, _ in CASES} == set(FLAG)
    assert len(set(FLAG.values())) == len(FLAG)


def test_default_configuration_has_nothing_unsafe() -> None:
    settings = ServeSettings.from_env(os.environ)
    assert settings.unsafe_in_use() == []
    assert settings.telemetry.exporter == "none"
    assert settings.log.level == "info"


@pytest.mark.parametrize(("name", "env"), REFUSABLE, ids=_ids(REFUSABLE))
def test_serve_refuses_each_unsafe_setting_without_its_flag(
    name: str,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert tacet(["serve", "--dev"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tacet serve: refusing to start:")
    assert FLAG[name] in lines[0]
    assert not (tmp_path / "data").exists()  # refused before anything was created


def test_log_level_flag_is_refused_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert tacet(["serve", "--dev", "--log-level", "debug"]) == 2
    assert "--unsafe-log-debug" in capsys.readouterr().err


def test_invalid_values_are_refused() -> None:
    for env in ({"TACET_LOG_LEVEL": "trace"}, {"TACET_OTEL_EXPORTER": "zipkin"}):
        with pytest.raises(SettingsError):
            ServeSettings.from_env(env).validate()
    with pytest.raises(SettingsError):
        ServeSettings.from_env({"TACET_TLS": "maybe"})


async def _audited_settings(url: Any) -> list[str | None]:
    from sqlalchemy import select

    from gateway.store import create_engine
    from gateway.store.audit_models import AuditRecordRow

    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(select(AuditRecordRow.record))
            records = [json.loads(r[0]) for r in rows]
    finally:
        await engine.dispose()
    return [
        r.get("unmapped", {}).get("setting")
        for r in records
        if r["api"]["operation"] == "config.unsafe_flag"
    ]


@pytest.mark.parametrize(("name", "env"), CASES, ids=_ids(CASES))
def test_flag_accepts_warns_and_audits_the_setting_name(
    name: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from gateway.store import database_url

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    parser = argparse.ArgumentParser(prog="tacet")
    _cli_serve.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", "--dev", "--model", str(model), FLAG[name]])
    said: list[str] = []
    settings, _, ca = _cli_serve.prepare(_cli_serve.settings_from_args(args), say=said.append)
    assert [u.name for u in settings.unsafe_in_use()] == [name]
    [warning] = said
    assert warning.startswith(f"WARNING: {FLAG[name]}:")
    assert (ca is None) == (name == "tls.disabled")  # TLS off: no dev CA is made
    data_dir = tmp_path / "data"
    assert asyncio.run(_audited_settings(database_url(data_dir, {}))) == [name]
    for value in env.values():
        if value not in ("1", "true"):
            assert value not in (data_dir / "tacet.db").read_bytes().decode(errors="replace")


def _report(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = tacet(["zdr", "report", "--json", "--warn-host"])
    return code, json.loads(capsys.readouterr().out)


def _verdicts(report: dict[str, Any]) -> dict[str, str]:
    return {
        c["name"]: c["verdict"]
        for s in report["sections"]
        if s["enforced"]
        for c in s["checks"]
    }


def test_report_is_ok_on_the_default_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = _report(capsys)
    assert code == 0
    assert report["ok"] is True
    names = [s["name"] for s in report["sections"]]
    assert names[:2] == ["host", "engine"]
    assert {"logging", "tracing", "metrics", "storage", "tls"} <= set(names)
    assert set(_verdicts(report).values()) == {"ok"}


@pytest.mark.parametrize(("name", "env"), CASES, ids=_ids(CASES))
def test_report_exits_1_on_each_unsafe_setting(
    name: str,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, report = _report(capsys)
    assert code == 1
    unsafe = {check for check, verdict in _verdicts(report).items() if verdict != "ok"}
    assert unsafe == {name}
    assert tacet(["zdr", "report", "--warn-host"]) == 1
    assert capsys.readouterr().out.rstrip().endswith("result: UNSAFE")


def test_report_exits_1_on_a_data_dir_others_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data").mkdir(mode=0o755)
    os.chmod(tmp_path / "data", 0o755)
    code, report = _report(capsys)
    assert code == 1
    assert _verdicts(report)["storage.data_dir"] == "unsafe"
    os.chmod(tmp_path / "data", 0o700)
    assert _report(capsys)[0] == 0


def test_report_names_the_otlp_host_not_the_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TACET_OTEL_EXPORTER", "otlp")
    monkeypatch.setenv("TACET_OTEL_ENDPOINT", "https://user:secret@collector.internal:4318/x")
    code, report = _report(capsys)
    assert code == 0
    reasons = json.dumps(report)
    assert "OTLP/HTTP to https://collector.internal" in reasons
    assert "secret" not in reasons
