"""`tacet serve`: the HTTPS gateway (Litestar on granian) and its supervised engine process.

Process tree: `tacet serve` becomes granian's main process (it binds the TLS socket and answers
signals); one granian worker runs the Litestar app, whose lifespan starts the engine process
through `SupervisedEngine` (`--engines N`: N of them behind an `EnginePool`; with
`TACET_ENGINE_SOCKETS` it connects to engine units instead). Signals to the main process:
- SIGTERM / SIGINT: the worker stops accepting, drains in-flight requests, then the app's
  lifespan stops the engine (graceful shutdown).
- SIGHUP: granian starts a new worker (which re-reads the TLS certificate and key), waits, then
  stops the old one; see `gateway.tls` for what that costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from gateway.apikeys import PepperError
from gateway.settings import UNSAFE_SETTINGS, ServeSettings, SettingsError, TLSSettings

__all__ = [
    "audit_start",
    "bundled_demo_model",
    "prepare",
    "register",
    "run",
    "serve",
    "settings_from_args",
    "unsafe_flags",
]

TINY_MODEL_SUBDIR = Path("models") / "tiny-random"
_LEVELS = ("debug", "info", "warning", "error")


def bundled_demo_model() -> Path | None:
    """`models/demo` next to the package in a source checkout, if it holds a model."""
    candidate = Path(__file__).resolve().parent.parent / "models" / "demo"
    return candidate if (candidate / "config.json").is_file() else None


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="serve the HTTPS API (TLS 1.3) and its engine")
    parser.add_argument("--host", help="bind address (default 127.0.0.1; env TACET_HOST)")
    parser.add_argument("--port", type=int, help="TLS port (default 8443; env TACET_PORT)")
    parser.add_argument("--data-dir", type=Path, help="state directory (default .tacet)")
    parser.add_argument(
        "--model", type=Path, help="model directory (default: the bundled demo model)"
    )
    parser.add_argument(
        "--engines", type=int,
        help="engine processes to spawn and supervise, calls spread over them (default 1; env "
        "TACET_ENGINES); with TACET_ENGINE_SOCKETS the engines run as units of their own",
    )
    parser.add_argument("--dev", action="store_true", help="embedded default: local CA, dev key")
    parser.add_argument("--tls-cert", type=Path, help="server certificate chain (PEM)")
    parser.add_argument("--tls-key", type=Path, help="server private key (PEM, PKCS#8)")
    parser.add_argument("--tls-client-ca", type=Path, help="require client certs from this CA")
    parser.add_argument(
        "--taxonomy-dir", type=Path, action="append", default=[],
        help="load every *.json taxonomy in this directory (repeatable)",
    )
    parser.add_argument(
        "--log-level", choices=_LEVELS,
        help="log level (default info; env TACET_LOG_LEVEL); debug needs --unsafe-log-debug",
    )
    parser.add_argument(
        "--unsafe-tls12", action="store_true",
        help="UNSAFE: also accept TLS 1.2 clients (default: TLS 1.3 only)",
    )
    # Each unsafe setting (see gateway.settings.UNSAFE_SETTINGS and docs/zdr.md) is refused at
    # start unless its flag is given; the flag is printed as a warning and audited.
    for unsafe in UNSAFE_SETTINGS:
        if unsafe.flag != "--unsafe-tls12":
            parser.add_argument(
                unsafe.flag, action="append_const", const=unsafe.flag, dest="unsafe_accepted",
                help=f"UNSAFE: start even with {unsafe.reason}",
            )
    parser.set_defaults(func=run)


def settings_from_args(
    args: argparse.Namespace, env: Mapping[str, str] | None = None
) -> ServeSettings:
    """Environment first, then every flag that was given on top."""
    base = ServeSettings.from_env(os.environ if env is None else env)
    server = replace(
        base.server,
        host=args.host or base.server.host,
        port=base.server.port if args.port is None else args.port,
    )
    tls = TLSSettings(
        cert=args.tls_cert or base.tls.cert,
        key=args.tls_key or base.tls.key,
        client_ca=args.tls_client_ca or base.tls.client_ca,
        unsafe_tls12=args.unsafe_tls12 or base.tls.unsafe_tls12,
        disabled=base.tls.disabled,
    )
    engine = replace(
        base.engine,
        model_dir=args.model or base.engine.model_dir,
        engines=base.engine.engines if getattr(args, "engines", None) is None else args.engines,
    )
    return replace(
        base,
        data_dir=args.data_dir or base.data_dir,
        dev=args.dev or base.dev,
        server=server,
        tls=tls,
        engine=engine,
        taxonomy_dirs=base.taxonomy_dirs + tuple(args.taxonomy_dir),
        log=replace(base.log, level=getattr(args, "log_level", None) or base.log.level),
        unsafe_accepted=frozenset(getattr(args, "unsafe_accepted", None) or ()),
    )


def unsafe_flags(settings: ServeSettings) -> list[str]:
    """The names (never values) of the unsafe settings in use; each gets an audit event."""
    return [unsafe.name for unsafe in settings.unsafe_in_use()]


async def audit_start(data_dir: Path, settings: ServeSettings) -> None:
    """`config.start` plus one `config.unsafe_flag` per unsafe setting, on the system chain.

    Raises AuditWriteError if the trail cannot be written: serving does not start unaudited.
    """
    from compliance.audit import Activity, AuditEvent, AuditLog
    from gateway.store import create_engine, database_url

    engine = create_engine(database_url(data_dir, os.environ))
    try:
        log = AuditLog(engine)
        where = {"hostname": socket.gethostname(), "port": settings.server.port}  # which gateway
        await log.append(AuditEvent("config.start", 200, activity=Activity.OTHER, **where))
        for name in unsafe_flags(settings):
            await log.append(
                AuditEvent(
                    "config.unsafe_flag", 200, activity=Activity.OTHER, setting=name, **where
                )
            )
    finally:
        await engine.dispose()


async def _bootstrap_store(data_dir: Path, *, dev: bool) -> Path:
    from gateway.apikeys import load_peppers
    from gateway.store import database_url, ensure_dev_key, open_store

    peppers = load_peppers(os.environ, data_dir=data_dir, dev=dev)
    store = await open_store(database_url(data_dir, os.environ))
    try:
        if dev:
            return await ensure_dev_key(store, peppers, data_dir)
        return data_dir / "dev-api-key"  # not created outside --dev: keys come from `tacet keys`
    finally:
        await store.engine.dispose()


def prepare(settings: ServeSettings, say: Any = print) -> tuple[ServeSettings, Path, Path | None]:
    """Create what serving needs (data dir, TLS, dev key, dev model); return the final settings,
    the key file path and the CA clients should trust. Prints paths, never the key."""
    from gateway.tls import ensure_dev_tls

    settings.validate()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings = replace(settings, data_dir=data_dir)
    ca: Path | None = None
    if settings.tls.cert is None and not settings.tls.disabled:
        files = ensure_dev_tls(data_dir, settings.server.host)
        ca = files.ca
        settings = replace(settings, tls=replace(settings.tls, cert=files.cert, key=files.key))
    # The control-plane database (SQLite in the data dir unless TACET_DATABASE_URL) is migrated
    # here, once, before the worker starts; --dev also gets a `dev` tenant and its key file.
    try:
        key_file = asyncio.run(_bootstrap_store(data_dir, dev=settings.dev))
    except PepperError as exc:
        raise SettingsError(str(exc)) from None
    demo = bundled_demo_model()
    if settings.engine.model_dir is None and not settings.engine.socket_paths() and demo:
        say(f"no --model given: serving the bundled demo model ({demo / 'README.md'}: Debian "
            "sections, trained by recipes/; a demonstration, not a production model)")
        settings = replace(settings, engine=replace(settings.engine, model_dir=demo))
    if settings.engine.model_dir is None and not settings.engine.socket_paths():
        model_dir = data_dir / TINY_MODEL_SUBDIR
        if not (model_dir / "config.json").is_file():
            from engine.testing import write_tiny_checkpoint

            write_tiny_checkpoint("llada", model_dir)
        say(
            "WARNING: no --model given and no bundled demo model: serving a tiny RANDOM LLaDA "
            "checkpoint; "
            "its labels are noise until a real model is configured."
        )
        settings = replace(settings, engine=replace(settings.engine, model_dir=model_dir))
    asyncio.run(audit_start(data_dir, settings))
    for unsafe in settings.unsafe_in_use():
        say(f"WARNING: {unsafe.flag}: {unsafe.reason} is on; this start is audited.")
    return settings, key_file, ca


def serve(settings: ServeSettings, app_loader: Any) -> None:
    """Run granian's main process until SIGTERM/SIGINT. `app_loader()` builds the ASGI app in
    the worker; it must be picklable (granian may spawn rather than fork)."""
    from granian.constants import HTTPModes, Interfaces, SSLProtocols
    from granian.log import LogLevels
    from granian.server import Server

    tls = settings.tls
    assert tls.disabled or (tls.cert is not None and tls.key is not None)
    tls_options: dict[str, Any] = {} if tls.disabled else {
        "ssl_cert": tls.cert,
        "ssl_key": tls.key,
        "ssl_protocol_min": SSLProtocols(tls.min_version),
        "ssl_ca": tls.client_ca,
        "ssl_client_verify": tls.client_ca is not None,
    }
    server = Server(
        "tacet",  # a label only: the app comes from app_loader
        address=settings.server.host,
        port=settings.server.port,
        interface=Interfaces.ASGI,
        workers=1,
        http=HTTPModes.auto,  # HTTP/1.1 and HTTP/2, chosen by ALPN
        websockets=False,
        log_level=LogLevels.warning,
        log_access=False,  # an access log line is a place for paths and ids to leak
        workers_kill_timeout=settings.server.shutdown_timeout_s,  # bounded drain on SIGTERM
        **tls_options,  # none with TACET_TLS=off (refused unless --unsafe-no-tls)
    )
    server.serve(target_loader=app_loader, wrap_loader=False)


def run(args: argparse.Namespace) -> int:
    from gateway.app import app_from_settings
    from gateway.logging import configure_logging

    try:
        settings = settings_from_args(args)
        configure_logging(settings.log.level if settings.log.level in _LEVELS else "info")
        settings, key_file, ca = prepare(settings)
    except SettingsError as exc:
        print(f"tacet serve: {exc}", file=sys.stderr)
        return 2
    host = settings.server.host
    shown = f"[{host}]" if ":" in host else host
    scheme = "http" if settings.tls.disabled else "https"
    print(f"Tacet gateway: {scheme}://{shown}:{settings.server.port}")
    if ca is not None:
        print(f"  CA certificate for clients: {ca}")
    print(f"  API key file (read it, do not share it): {key_file}")
    if settings.tls.client_ca is not None:
        print("  client certificates required (mTLS)")
    sys.stdout.flush()
    serve(settings, partial(app_from_settings, settings))
    return 0
