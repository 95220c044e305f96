"""Gateway settings: one frozen dataclass per concern, read from `TACET_*` variables and CLI flags.

Precedence: CLI flag > environment variable > default. Every default is the safe one (loopback
host, TLS 1.3 minimum, bounded requests). `validate()` raises `SettingsError` with a message that
names the flag or variable to change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "UNSAFE_SETTINGS",
    "EngineSettings",
    "LimitSettings",
    "LogSettings",
    "ServeSettings",
    "ServerSettings",
    "SettingsError",
    "TLSSettings",
    "TelemetrySettings",
    "TenantLimitSettings",
    "UnsafeSetting",
]


class SettingsError(ValueError):
    """A setting that cannot work; the message says which flag or variable fixes it."""


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer") from None


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds") from None


def _env_path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return Path(raw) if raw else None


@dataclass(frozen=True)
class ServerSettings:
    """Where the HTTPS listener binds. There is no plain-HTTP listener at all."""

    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 8443
    # On SIGTERM, in-flight requests get this long to finish before the worker is killed.
    shutdown_timeout_s: int = 30

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServerSettings:
        return cls(
            host=env.get("TACET_HOST") or cls.host,
            port=_env_int(env, "TACET_PORT", 8443),
            shutdown_timeout_s=_env_int(env, "TACET_SHUTDOWN_TIMEOUT_S", 30),
        )

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingsError("--port / TACET_PORT must be between 0 and 65535")
        if self.shutdown_timeout_s < 1:
            raise SettingsError("TACET_SHUTDOWN_TIMEOUT_S must be a positive integer")


@dataclass(frozen=True)
class TLSSettings:
    """Server certificate, optional client CA (mTLS) and the minimum protocol version.

    `cert`/`key` None means the dev CA in `<data-dir>/tls/` (only with --dev).
    """

    cert: Path | None = None
    key: Path | None = None  # PKCS#8 PEM (granian accepts no other key format)
    client_ca: Path | None = None  # when set, clients must present a certificate it signed
    unsafe_tls12: bool = False  # allow TLS 1.2 clients; loud, never the default
    # TACET_TLS=off: plain HTTP (only behind a proxy that ends TLS); refused without
    # --unsafe-no-tls, because request bodies would cross the network in clear text.
    disabled: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TLSSettings:
        tls = (env.get("TACET_TLS") or "on").lower()
        if tls not in ("on", "off"):
            raise SettingsError("TACET_TLS must be 'on' or 'off'")
        return cls(
            cert=_env_path(env, "TACET_TLS_CERT"),
            key=_env_path(env, "TACET_TLS_KEY"),
            client_ca=_env_path(env, "TACET_TLS_CLIENT_CA"),
            unsafe_tls12=env.get("TACET_UNSAFE_TLS12", "") == "1",
            disabled=tls == "off",
        )

    @property
    def min_version(self) -> str:
        return "tls1.2" if self.unsafe_tls12 else "tls1.3"

    def validate(self, *, dev: bool) -> None:
        if (self.cert is None) != (self.key is None):
            raise SettingsError("give both --tls-cert and --tls-key (TACET_TLS_CERT/_KEY)")
        if self.cert is None and not dev and not self.disabled:
            raise SettingsError(
                "no TLS certificate: pass --tls-cert and --tls-key, or --dev for a local CA"
            )
        for flag, path in (
            ("--tls-cert", self.cert),
            ("--tls-key", self.key),
            ("--tls-client-ca", self.client_ca),
        ):
            if path is not None and not path.is_file():
                raise SettingsError(f"{flag}: {path} is not a readable file")


@dataclass(frozen=True)
class LimitSettings:
    """Per-request bounds; exceeding one is a 413 problem, never a truncation."""

    max_documents: int = 256
    max_document_bytes: int = 64 * 1024  # UTF-8 bytes of one document's text
    max_body_bytes: int = 8 * 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LimitSettings:
        return cls(
            max_documents=_env_int(env, "TACET_MAX_DOCUMENTS", cls.max_documents),
            max_document_bytes=_env_int(env, "TACET_MAX_DOCUMENT_BYTES", cls.max_document_bytes),
            max_body_bytes=_env_int(env, "TACET_MAX_BODY_BYTES", cls.max_body_bytes),
        )

    def validate(self) -> None:
        for name, value in (
            ("TACET_MAX_DOCUMENTS", self.max_documents),
            ("TACET_MAX_DOCUMENT_BYTES", self.max_document_bytes),
            ("TACET_MAX_BODY_BYTES", self.max_body_bytes),
        ):
            if value < 1:
                raise SettingsError(f"{name} must be a positive integer")


MAX_ENGINES = 64  # engines per gateway; a host has at most a few GPUs per engine anyway


@dataclass(frozen=True)
class TenantLimitSettings:
    """How gateways sharing one PostgreSQL count per-tenant limits together (issue 25;
    `gateway._shared_limiter`). Unused on SQLite, where each process counts on its own."""

    # A gateway's concurrency slots are a lease renewed every third of this; a gateway that
    # dies (SIGKILL, host lost) gives its slots back at most this long after its last renewal.
    lease_seconds: float = 30.0  # TACET_LIMIT_LEASE_SECONDS
    # Units leased from a per-minute window may be spent locally for this long (then the rest
    # goes back): fewer database round trips for busy tenants, a window stricter by this much.
    slice_seconds: float = 1.0  # TACET_LIMIT_SLICE_SECONDS
    max_slice: int = 64  # TACET_LIMIT_MAX_SLICE: most units one lease takes beyond the need

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TenantLimitSettings:
        return cls(
            lease_seconds=_env_float(env, "TACET_LIMIT_LEASE_SECONDS", cls.lease_seconds),
            slice_seconds=_env_float(env, "TACET_LIMIT_SLICE_SECONDS", cls.slice_seconds),
            max_slice=_env_int(env, "TACET_LIMIT_MAX_SLICE", cls.max_slice),
        )

    def validate(self) -> None:
        if not 1.0 <= self.lease_seconds <= 3600.0:
            raise SettingsError("TACET_LIMIT_LEASE_SECONDS must be between 1 and 3600")
        if not 0.0 < self.slice_seconds <= 10.0:
            raise SettingsError("TACET_LIMIT_SLICE_SECONDS must be above 0 and at most 10")
        if not 1 <= self.max_slice <= 10_000:
            raise SettingsError("TACET_LIMIT_MAX_SLICE must be between 1 and 10000")


@dataclass(frozen=True)
class EngineSettings:
    """The engine processes the gateway starts and supervises (`engines` of them, one by
    default), or the sockets of engines that run on their own (`TACET_ENGINE_SOCKET`, or
    `TACET_ENGINE_SOCKETS` for one engine per GPU); calls are spread over them (EnginePool)."""

    model_dir: Path | None = None  # None with --dev: a tiny random checkpoint (labels are noise)
    device: str = "cpu"
    max_queued_documents: int = 256  # per engine; beyond this, 429 with Retry-After
    # An engine that runs on its own (`tacet engine`, its own unit): connect, never spawn.
    socket: Path | None = None
    # Several such engines (`tacet-engine@N`, one per GPU): TACET_ENGINE_SOCKETS=a,b,...
    sockets: tuple[Path, ...] = ()
    # How many engine processes to spawn when no socket is given (--engines, TACET_ENGINES).
    engines: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EngineSettings:
        raw = env.get("TACET_ENGINE_SOCKETS") or ""
        return cls(
            model_dir=_env_path(env, "TACET_MODEL"),
            device=env.get("TACET_DEVICE") or "cpu",
            max_queued_documents=_env_int(env, "TACET_MAX_QUEUED_DOCUMENTS", 256),
            socket=_env_path(env, "TACET_ENGINE_SOCKET"),
            sockets=tuple(Path(part.strip()) for part in raw.split(",") if part.strip()),
            engines=_env_int(env, "TACET_ENGINES", 1),
        )

    def socket_paths(self) -> tuple[Path, ...]:
        """Every engine socket to connect to, in order; empty: spawn `engines` engines."""
        return ((self.socket,) if self.socket is not None else ()) + self.sockets

    def validate(self, *, dev: bool) -> None:
        if self.max_queued_documents < 1:
            raise SettingsError("TACET_MAX_QUEUED_DOCUMENTS must be a positive integer")
        if not 1 <= self.engines <= MAX_ENGINES:
            raise SettingsError(f"--engines / TACET_ENGINES must be between 1 and {MAX_ENGINES}")
        if self.engines > 1 and self.device.startswith("cuda:"):
            raise SettingsError(
                "--engines with TACET_DEVICE=cuda:N: use TACET_DEVICE=cuda, engine i gets GPU i"
            )
        paths = self.socket_paths()
        if paths:
            self._validate_sockets(paths)
            return
        if self.model_dir is None and not dev:
            raise SettingsError("no model: pass --model PATH (TACET_MODEL), or --dev")
        if self.model_dir is not None and not (self.model_dir / "config.json").is_file():
            raise SettingsError(f"--model: {self.model_dir} has no config.json")

    def _validate_sockets(self, paths: tuple[Path, ...]) -> None:
        if self.socket is not None and self.sockets:
            raise SettingsError(
                "TACET_ENGINE_SOCKET and TACET_ENGINE_SOCKETS both given: list every engine "
                "in TACET_ENGINE_SOCKETS"
            )
        if self.model_dir is not None:
            raise SettingsError(
                "TACET_ENGINE_SOCKET(S) and --model both given: the engine at the socket "
                "already has its model"
            )
        if self.engines != 1:
            raise SettingsError(
                "--engines / TACET_ENGINES counts the engines to spawn; with "
                "TACET_ENGINE_SOCKET(S) the engines are the sockets listed"
            )
        if len(paths) > MAX_ENGINES:
            raise SettingsError(f"TACET_ENGINE_SOCKETS lists more than {MAX_ENGINES} engines")
        if not all(path.is_absolute() for path in paths):
            raise SettingsError("TACET_ENGINE_SOCKET(S) must be absolute paths")
        if len(set(paths)) != len(paths):
            raise SettingsError("TACET_ENGINE_SOCKETS lists a socket twice")


_LOG_LEVELS = ("debug", "info", "warning", "error")
_EXPORTERS = ("none", "otlp", "console")
_HEADER_CAPTURE_VARS = (
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE",
)


def _env_flag(env: Mapping[str, str], *names: str) -> bool:
    return any(env.get(name, "").lower() in ("1", "true", "yes", "on") for name in names)


@dataclass(frozen=True)
class LogSettings:
    """Structured logs (JSON lines on stderr, always through the ZDR allowlist).

    `debug`, `bodies` and `headers` exist so that a deployment asking for them is refused
    rather than silently ignored: Tacet has no debug mode, no body logging and no header
    logging, and its allowlist stays the last step of every sink whatever is set. With the
    matching `--unsafe-...` flag the process starts (audited); only code outside Tacet that
    reads the same variable (e.g. `LITESTAR_DEBUG`) can act on it.
    """

    level: str = "info"  # TACET_LOG_LEVEL / --log-level; debug needs --unsafe-log-debug
    debug: bool = False  # TACET_DEBUG=1 or LITESTAR_DEBUG=1
    bodies: bool = False  # TACET_LOG_BODIES=1
    headers: bool = False  # TACET_LOG_HEADERS=1

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LogSettings:
        return cls(
            level=(env.get("TACET_LOG_LEVEL") or "info").lower(),
            debug=_env_flag(env, "TACET_DEBUG", "LITESTAR_DEBUG"),
            bodies=_env_flag(env, "TACET_LOG_BODIES"),
            headers=_env_flag(env, "TACET_LOG_HEADERS"),
        )

    def validate(self) -> None:
        if self.level not in _LOG_LEVELS:
            raise SettingsError("--log-level / TACET_LOG_LEVEL must be one of " + ", ".join(
                _LOG_LEVELS))


@dataclass(frozen=True)
class TelemetrySettings:
    """OpenTelemetry traces and metrics (gateway.telemetry). Export is off by default;
    `/metrics` (Prometheus text) is always served from the same allowlisted instruments."""

    exporter: str = "none"  # TACET_OTEL_EXPORTER: none | otlp (OTLP/HTTP) | console (stdout)
    endpoint: str | None = None  # TACET_OTEL_ENDPOINT: OTLP/HTTP base URL (else OTEL_* vars)
    # Header capture by OpenTelemetry HTTP instrumentations (the OTel variables above, or
    # TACET_OTEL_CAPTURE_HEADERS=1). Tacet's own spans never carry headers; refused without
    # --unsafe-capture-headers because other instrumentation in the process would obey it.
    capture_headers: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TelemetrySettings:
        return cls(
            exporter=(env.get("TACET_OTEL_EXPORTER") or "none").lower(),
            endpoint=env.get("TACET_OTEL_ENDPOINT") or None,
            capture_headers=_env_flag(env, "TACET_OTEL_CAPTURE_HEADERS")
            or any(env.get(name, "").strip() for name in _HEADER_CAPTURE_VARS),
        )

    def validate(self) -> None:
        if self.exporter not in _EXPORTERS:
            raise SettingsError("TACET_OTEL_EXPORTER must be one of " + ", ".join(_EXPORTERS))
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise SettingsError("TACET_OTEL_ENDPOINT must be an http:// or https:// URL")


@dataclass(frozen=True)
class UnsafeSetting:
    """A setting that could let content leave a request, and the flag that accepts it."""

    name: str  # audited as `config.unsafe_flag` (the name only, never a value)
    flag: str  # the `tacet serve` flag that accepts it
    reason: str  # one line, for the refusal, the warning and `tacet zdr report`


UNSAFE_SETTINGS: tuple[UnsafeSetting, ...] = (
    UnsafeSetting("log.level", "--unsafe-log-debug", "log level debug (TACET_LOG_LEVEL)"),
    UnsafeSetting("log.debug", "--unsafe-debug", "debug mode (TACET_DEBUG / LITESTAR_DEBUG)"),
    UnsafeSetting("log.bodies", "--unsafe-log-bodies", "body logging (TACET_LOG_BODIES)"),
    UnsafeSetting("log.headers", "--unsafe-log-headers", "header logging (TACET_LOG_HEADERS)"),
    UnsafeSetting(
        "telemetry.capture_headers",
        "--unsafe-capture-headers",
        "header capture (OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*)",
    ),
    UnsafeSetting("tls.disabled", "--unsafe-no-tls", "TLS off (TACET_TLS=off)"),
    UnsafeSetting("tls.unsafe_tls12", "--unsafe-tls12", "TLS 1.2 accepted (TACET_UNSAFE_TLS12)"),
)


@dataclass(frozen=True)
class ServeSettings:
    """Everything `tacet serve` needs; picklable, so it can travel to granian's worker."""

    data_dir: Path = Path(".tacet")
    dev: bool = False
    server: ServerSettings = field(default_factory=ServerSettings)
    tls: TLSSettings = field(default_factory=TLSSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    tenant_limits: TenantLimitSettings = field(default_factory=TenantLimitSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    taxonomy_dirs: tuple[Path, ...] = ()
    log: LogSettings = field(default_factory=LogSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    # The `--unsafe-...` flags given on the command line (never read from the environment).
    unsafe_accepted: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServeSettings:
        env = os.environ if env is None else env
        dirs = tuple(Path(p) for p in env.get("TACET_TAXONOMY_DIRS", "").split(os.pathsep) if p)
        return cls(
            data_dir=Path(env.get("TACET_DATA_DIR") or ".tacet"),
            dev=env.get("TACET_DEV", "") == "1",
            server=ServerSettings.from_env(env),
            tls=TLSSettings.from_env(env),
            limits=LimitSettings.from_env(env),
            tenant_limits=TenantLimitSettings.from_env(env),
            engine=EngineSettings.from_env(env),
            taxonomy_dirs=dirs,
            log=LogSettings.from_env(env),
            telemetry=TelemetrySettings.from_env(env),
        )

    def unsafe_in_use(self) -> list[UnsafeSetting]:
        """The unsafe settings this configuration asks for, in UNSAFE_SETTINGS order."""
        used = {
            "log.level": self.log.level == "debug",
            "log.debug": self.log.debug,
            "log.bodies": self.log.bodies,
            "log.headers": self.log.headers,
            "telemetry.capture_headers": self.telemetry.capture_headers,
            "tls.disabled": self.tls.disabled,
            "tls.unsafe_tls12": self.tls.unsafe_tls12,
        }
        return [u for u in UNSAFE_SETTINGS if used[u.name]]

    def refused(self) -> list[UnsafeSetting]:
        """Unsafe settings in use whose flag was not given (TLS 1.2 is its own flag)."""
        accepted = self.unsafe_accepted | {"--unsafe-tls12"}
        return [u for u in self.unsafe_in_use() if u.flag not in accepted]

    def validate(self) -> None:
        refused = self.refused()
        if refused:
            first = refused[0]
            raise SettingsError(
                f"refusing to start: {first.reason} can let request content leave the process;"
                f" unset it, or pass {first.flag} to accept the risk (it is audited)"
            )
        self.log.validate()
        self.telemetry.validate()
        self.server.validate()
        self.tls.validate(dev=self.dev)
        self.limits.validate()
        self.tenant_limits.validate()
        self.engine.validate(dev=self.dev)
        for directory in self.taxonomy_dirs:
            if not directory.is_dir():
                raise SettingsError(f"--taxonomy-dir: {directory} is not a directory")
