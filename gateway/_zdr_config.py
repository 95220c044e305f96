"""Gateway sections of `tacet zdr report`: engines, logging, tracing, metrics, storage and TLS.

Each section reads the same environment `tacet serve` reads (`ServeSettings.from_env`), so the
report shows what a start from this shell would run with. A setting that `tacet serve` refuses
without an `--unsafe-...` flag (`gateway.settings.UNSAFE_SETTINGS`) is `unsafe` here, whether
or not the flag would be given: the report describes the posture, and that posture leaks. Check
names are the setting names audited as `config.unsafe_flag`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from compliance.host import Check, Verdict
from compliance.zdr import ALLOWED_FIELDS
from gateway.settings import UNSAFE_SETTINGS, ServeSettings, SettingsError

__all__ = ["CONFIG_SECTIONS", "config_checks"]

_UNSAFE = {u.name: u for u in UNSAFE_SETTINGS}


def _flagged(name: str, on: bool, safe_reason: str) -> Check:
    unsafe = _UNSAFE[name]
    if on:
        return Check(name, Verdict.UNSAFE, f"{unsafe.reason}: tacet serve refuses without "
                     f"{unsafe.flag}")
    return Check(name, Verdict.OK, safe_reason)


def logging_checks(settings: ServeSettings, env: Mapping[str, str]) -> list[Check]:
    log = settings.log
    return [
        (
            _flagged("log.level", log.level == "debug", f"level {log.level}")
            if log.level in ("debug", "info", "warning", "error")
            else Check("log.level", Verdict.UNSAFE, "TACET_LOG_LEVEL is not a level tacet accepts")
        ),
        _flagged("log.debug", log.debug, "no debug mode"),
        _flagged("log.bodies", log.bodies, "no body logging"),
        _flagged("log.headers", log.headers, "no header logging"),
        Check(
            "log.allowlist",
            Verdict.OK,
            f"JSON lines through the ZDR allowlist ({len(ALLOWED_FIELDS)} fields), "
            "exceptions by type only",
        ),
        Check("log.access_log", Verdict.OK, "granian access log off (paths never logged)"),
    ]


def tracing_checks(settings: ServeSettings, env: Mapping[str, str]) -> list[Check]:
    telemetry = settings.telemetry
    if telemetry.exporter == "otlp":
        where = urlsplit(telemetry.endpoint or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "")
        target = f"{where.scheme}://{where.hostname}" if where.hostname else "the OTel default"
        export = f"OTLP/HTTP to {target}"
    elif telemetry.exporter == "console":
        export = "console (stdout)"
    else:
        export = "off (TACET_OTEL_EXPORTER unset)"
    return [
        Check("telemetry.export", Verdict.OK, export),
        _flagged("telemetry.capture_headers", telemetry.capture_headers, "no header capture"),
        Check(
            "telemetry.span_redaction",
            Verdict.OK,
            "route-template span names; allowlisted attributes at set time and at export",
        ),
    ]


def metrics_checks(settings: ServeSettings, env: Mapping[str, str]) -> list[Check]:
    from gateway.telemetry import METRICS

    labels = sorted({label for spec in METRICS for label in spec.labels})
    return [
        Check("metrics.labels", Verdict.OK, "labels: " + ", ".join(labels) + " (allowlisted)"),
        Check("metrics.endpoint", Verdict.OK, "GET /metrics, no auth, no tenant or key labels"),
    ]


def storage_checks(settings: ServeSettings, env: Mapping[str, str]) -> list[Check]:
    url = env.get("TACET_DATABASE_URL")
    database = (
        f"{urlsplit(url).scheme or 'database'} (TACET_DATABASE_URL): metadata only"
        if url
        else "SQLite in the data dir: metadata only (tenants, key digests, taxonomies, audit)"
    )
    data_dir = settings.data_dir
    try:
        mode = stat.S_IMODE(data_dir.stat().st_mode)
    except FileNotFoundError:
        folder = Check("storage.data_dir", Verdict.OK, "not created yet (created 0700)")
    except OSError as exc:
        folder = Check("storage.data_dir", Verdict.UNKNOWN, f"cannot stat: {type(exc).__name__}")
    else:
        folder = (
            Check("storage.data_dir", Verdict.UNSAFE, f"mode {mode:04o}: chmod 0700 the data dir")
            if mode & 0o077
            else Check("storage.data_dir", Verdict.OK, f"mode {mode:04o}")
        )
    return [
        Check("storage.database", Verdict.OK, database),
        folder,
        Check(
            "storage.engine_files",
            Verdict.OK,
            "the engine writes no files; its socket directory is 0700 under TMPDIR",
        ),
    ]


def _socket_check(name: str, path: Path) -> Check:
    """One engine socket: there, a socket, and reachable by its owner only (socket and folder)."""
    try:
        socket_mode = path.stat().st_mode
        folder_mode = stat.S_IMODE(path.parent.stat().st_mode)
    except FileNotFoundError:
        return Check(name, Verdict.UNKNOWN, f"{path}: not there (is the engine running?)")
    except OSError as exc:
        return Check(name, Verdict.UNKNOWN, f"{path}: cannot stat: {type(exc).__name__}")
    if not stat.S_ISSOCK(socket_mode):
        return Check(name, Verdict.UNSAFE, f"{path}: not a Unix socket")
    mode = stat.S_IMODE(socket_mode)
    if mode & 0o077 or folder_mode & 0o077:
        return Check(
            name, Verdict.UNSAFE,
            f"{path}: socket {mode:04o} in a {folder_mode:04o} folder: others could connect",
        )
    return Check(name, Verdict.OK, f"{path}: socket {mode:04o} in a {folder_mode:04o} folder")


def engine_checks(settings: ServeSettings, env: Mapping[str, str]) -> list[Check]:
    """The engines calls are spread over: each unit's socket, or the processes serve spawns."""
    engine = settings.engine
    try:
        engine.validate(dev=True)
    except SettingsError as exc:
        return [Check("engines.settings", Verdict.UNKNOWN, f"invalid setting: {exc}")]
    paths = engine.socket_paths()
    if not paths:
        count = engine.engines
        return [Check(
            "engines.count", Verdict.OK,
            f"{count} engine process{'es' if count > 1 else ''} spawned and supervised by "
            "tacet serve (private network namespace, not dumpable, socket 0600 in a 0700 "
            "folder under TMPDIR)",
        )]
    variable = "TACET_ENGINE_SOCKETS" if engine.sockets else "TACET_ENGINE_SOCKET"
    checks = [Check("engines.count", Verdict.OK, f"{len(paths)} engine unit(s) at {variable}")]
    checks += [_socket_check(f"engines.{i}", path) for i, path in enumerate(paths)]
    return checks


def tls_checks(settings: ServeSettings, env: Mapping[str, str]) -> list[Check]:
    tls = settings.tls
    if tls.cert is not None:
        certificate = "certificate from --tls-cert / TACET_TLS_CERT"
    elif settings.dev:
        certificate = "dev CA in the data dir (--dev)"
    else:
        certificate = "none configured: tacet serve needs --tls-cert/--tls-key or --dev"
    return [
        _flagged("tls.disabled", tls.disabled, "TLS on (no plain-HTTP listener)"),
        _flagged("tls.unsafe_tls12", tls.unsafe_tls12, "TLS 1.3 minimum"),
        Check(
            "tls.certificate",
            Verdict.OK,  # without one, tacet serve refuses to start: nothing can leak
            certificate,
        ),
    ]


_Builder = Callable[[ServeSettings, Mapping[str, str]], list[Check]]
CONFIG_SECTIONS: tuple[tuple[str, _Builder], ...] = (
    ("engines", engine_checks),
    ("logging", logging_checks),
    ("tracing", tracing_checks),
    ("metrics", metrics_checks),
    ("storage", storage_checks),
    ("tls", tls_checks),
)


def config_checks(name: str, env: Mapping[str, str] | None = None) -> list[Check]:
    """The checks of one configuration section, read from `env` (default: os.environ)."""
    env = os.environ if env is None else env
    try:
        settings = ServeSettings.from_env(env)
    except SettingsError as exc:
        return [Check(f"{name}.settings", Verdict.UNSAFE, f"invalid setting: {exc}")]
    build = dict(CONFIG_SECTIONS)[name]
    return build(settings, env)

