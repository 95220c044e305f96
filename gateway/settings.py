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
    "EngineSettings",
    "LimitSettings",
    "ServeSettings",
    "ServerSettings",
    "SettingsError",
    "TLSSettings",
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

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TLSSettings:
        return cls(
            cert=_env_path(env, "TACET_TLS_CERT"),
            key=_env_path(env, "TACET_TLS_KEY"),
            client_ca=_env_path(env, "TACET_TLS_CLIENT_CA"),
            unsafe_tls12=env.get("TACET_UNSAFE_TLS12", "") == "1",
        )

    @property
    def min_version(self) -> str:
        return "tls1.2" if self.unsafe_tls12 else "tls1.3"

    def validate(self, *, dev: bool) -> None:
        if (self.cert is None) != (self.key is None):
            raise SettingsError("give both --tls-cert and --tls-key (TACET_TLS_CERT/_KEY)")
        if self.cert is None and not dev:
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


@dataclass(frozen=True)
class EngineSettings:
    """The engine process the gateway starts and supervises."""

    model_dir: Path | None = None  # None with --dev: a tiny random checkpoint (labels are noise)
    device: str = "cpu"
    max_queued_documents: int = 256  # beyond this, 429 with Retry-After

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EngineSettings:
        return cls(
            model_dir=_env_path(env, "TACET_MODEL"),
            device=env.get("TACET_DEVICE") or "cpu",
            max_queued_documents=_env_int(env, "TACET_MAX_QUEUED_DOCUMENTS", 256),
        )

    def validate(self, *, dev: bool) -> None:
        if self.model_dir is None and not dev:
            raise SettingsError("no model: pass --model PATH (TACET_MODEL), or --dev")
        if self.model_dir is not None and not (self.model_dir / "config.json").is_file():
            raise SettingsError(f"--model: {self.model_dir} has no config.json")
        if self.max_queued_documents < 1:
            raise SettingsError("TACET_MAX_QUEUED_DOCUMENTS must be a positive integer")


@dataclass(frozen=True)
class ServeSettings:
    """Everything `tacet serve` needs; picklable, so it can travel to granian's worker."""

    data_dir: Path = Path(".tacet")
    dev: bool = False
    server: ServerSettings = field(default_factory=ServerSettings)
    tls: TLSSettings = field(default_factory=TLSSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    taxonomy_dirs: tuple[Path, ...] = ()

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
            engine=EngineSettings.from_env(env),
            taxonomy_dirs=dirs,
        )

    def validate(self) -> None:
        self.server.validate()
        self.tls.validate(dev=self.dev)
        self.limits.validate()
        self.engine.validate(dev=self.dev)
        for directory in self.taxonomy_dirs:
            if not directory.is_dir():
                raise SettingsError(f"--taxonomy-dir: {directory} is not a directory")
