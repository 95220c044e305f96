"""Logging for both processes: structlog JSON lines, with the ZDR allowlist as the last step.

- Every event goes through `compliance.zdr.sanitize` last, so no processor added later and no
  call site can emit a field that is not on the allowlist.
- Exceptions are rendered by type only (`error_type`); tracebacks, messages and locals are never
  rendered, because each can carry document text.
- The stdlib root logger is routed into the same chain; third-party loggers are pinned to
  WARNING and their free-text messages are replaced by a constant event name.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from compliance.zdr import is_safe_event, sanitize

__all__ = ["configure_logging", "get_logger"]

# Libraries whose log text we do not control: they may format request data into messages.
PINNED_LOGGERS = (
    "asyncio", "granian", "_granian", "litestar", "httpx", "httpcore", "sqlalchemy",
    "alembic", "aiosqlite", "asyncpg", "botocore", "boto3", "urllib3", "opentelemetry",
)


def _exception_type_only(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    exc_info = event.pop("exc_info", None)
    event.pop("exception", None)
    event.pop("stack_info", None)
    if exc_info:
        if exc_info is True:
            exc_info = sys.exc_info()
        if isinstance(exc_info, BaseException):
            event["error_type"] = type(exc_info).__name__
        elif isinstance(exc_info, tuple) and exc_info[0] is not None:
            event["error_type"] = exc_info[0].__name__
    return event


def _constant_event(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Free-text messages (third-party, or a mistake in our code) become a constant."""
    if not is_safe_event(event.get("event")):
        event["event"] = "unstructured_message"
    return event


def _allowlist(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    return sanitize(event)


def _pre_chain() -> list[Any]:
    return [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog and stdlib logging for this process (idempotent)."""
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_pre_chain(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _exception_type_only,
                _constant_event,
                _allowlist,  # last before rendering: nothing after it can add a field
                structlog.processors.JSONRenderer(),
            ],
            # stdlib `extra=` fields join the event, then meet the allowlist like any other.
            foreign_pre_chain=[*_pre_chain(), structlog.stdlib.ExtraAdder()],
            keep_exc_info=False,  # the stdlib formatter must not append a traceback
            keep_stack_info=False,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in PINNED_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


def get_logger(name: str = "tacet") -> Any:
    return structlog.get_logger(name)
