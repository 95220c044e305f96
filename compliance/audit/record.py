"""One audit event as a typed struct, and its OCSF API Activity (class_uid 6003) form.

Metadata only (DESIGN.md, "Audit record"): every field passes through `compliance.zdr.sanitize`,
the same allowlist every other sink uses, so a value of the wrong shape is stored as REDACTED and
a field that is not allowlisted cannot exist. Never text, labels, titles or raw content hashes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from compliance.zdr import ALLOWED_FIELDS, REDACTED, sanitize

__all__ = [
    "FIELD_NOTES",
    "INVALID_CHAIN",
    "OCSF_VERSION",
    "SYSTEM_CHAIN",
    "Activity",
    "AuditEvent",
    "is_chain_id",
    "ocsf_body",
    "record_fields",
]

OCSF_VERSION = "1.3.0"
SYSTEM_CHAIN = "system"  # the chain of events with no tenant (start-up configuration, ...)
INVALID_CHAIN = "invalid"  # events whose tenant id failed the allowlist's shape check


class Activity(IntEnum):
    """OCSF API Activity `activity_id`: type_uid = 600300 + activity_id."""

    CREATE = 1
    READ = 2
    UPDATE = 3
    DELETE = 4
    OTHER = 99


@dataclass(frozen=True)
class AuditEvent:
    """What the request path knows after the response status is fixed; every field metadata."""

    operation: str  # constant name written in code: "classify", "keys.create", "auth.failure"
    status: int  # HTTP status sent (or the CLI's equivalent)
    request_id: str | None = None
    tenant_id: str | None = None
    key_id: str | None = None
    activity: Activity = Activity.OTHER
    model_id: str | None = None
    taxonomy: str | None = None  # name@version
    mode: str | None = None
    documents: int | None = None
    bytes: int | None = None
    tokens: int | None = None
    duration_ms: float | None = None
    source_ip: str | None = None
    setting: str | None = None  # for configuration events: the setting's name, never its value
    hostname: str | None = None  # configuration events: the gateway host's name (from the OS)
    port: int | None = None  # configuration events: the gateway's listening port

    def fields(self) -> dict[str, Any]:
        """The given fields through the ZDR allowlist (None means not given)."""
        raw = {k: v for k, v in self.__dict__.items() if k != "activity" and v is not None}
        return sanitize(raw)

    @property
    def chain_id(self) -> str:
        """The tenant's chain; a tenant id of the wrong shape cannot name a chain (or a file)."""
        tenant = self.fields().get("tenant_id")
        if tenant is None:
            return SYSTEM_CHAIN
        return INVALID_CHAIN if tenant == REDACTED else str(tenant)


# What each AuditEvent field holds, in words: the report's zero-data-retention statement lists
# these (tests check the keys are exactly AuditEvent's fields, each on the ZDR allowlist).
FIELD_NOTES: Mapping[str, str] = {
    "operation": "constant operation name written in code (classify, keys.rotate, ...)",
    "status": "HTTP status sent (or the CLI's equivalent)",
    "request_id": "id Tacet generated for the request",
    "tenant_id": "tenant id, from the API key record (never from the request)",
    "key_id": "public id of the API key (never the secret)",
    "model_id": "model id (the model directory's name)",
    "taxonomy": "taxonomy name@version as resolved for the tenant (never what the caller typed)",
    "mode": "decode mode: diffusion, autoregressive or self_speculative",
    "documents": "number of documents",
    "bytes": "total byte count of the documents",
    "tokens": "total token count",
    "duration_ms": "duration in milliseconds",
    "source_ip": "the TCP peer's address (never a forwarded header)",
    "setting": "name (never the value) of a configuration setting",
    "hostname": "the gateway host's name, on configuration events (from the OS)",
    "port": "the gateway's listening port, on configuration events",
}


def is_chain_id(value: str) -> bool:
    """A chain id is a tenant id of the allowlisted shape, or one of the fixed names."""
    return value in (SYSTEM_CHAIN, INVALID_CHAIN) or ALLOWED_FIELDS["tenant_id"](value)


def _drop_none(value: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            item = _drop_none(item)
            if not item:
                continue
        if item is not None:
            out[key] = item
    return out


def _long(value: Any) -> Any:
    return round(value) if isinstance(value, float) else value


def ocsf_body(event: AuditEvent, time_ms: int) -> dict[str, Any]:
    """The OCSF 6003 record without its chain; fields come only from the sanitized mapping."""
    f = event.fields()
    activity = int(event.activity)
    status = f.get("status")
    ok = isinstance(status, int) and status < 400
    return _drop_none(
        {
            "class_uid": 6003,
            "category_uid": 6,
            "activity_id": activity,
            "type_uid": 600300 + activity,
            "severity_id": 1 if ok else 3,
            "status_id": 1 if ok else 2,
            "time": time_ms,
            "metadata": {
                "version": OCSF_VERSION,
                "product": {"name": "tacet", "vendor_name": "tacet"},
                "tenant_uid": f.get("tenant_id"),
                "correlation_uid": f.get("request_id"),
            },
            "actor": {"user": {"uid": f.get("key_id"), "type": "api_key"}},
            "api": {
                "operation": f.get("operation"),
                "request": {"uid": f.get("request_id")},
                "response": {"code": status},
            },
            "http_response": {"code": status},
            "src_endpoint": {"ip": f.get("source_ip")},
            "dst_endpoint": {"hostname": f.get("hostname"), "port": f.get("port")},
            "duration": _long(f.get("duration_ms")),  # OCSF: long_t milliseconds
            "unmapped": {
                "model_id": f.get("model_id"),
                "taxonomy": f.get("taxonomy"),
                "mode": f.get("mode"),
                "documents": f.get("documents"),
                "bytes": f.get("bytes"),
                "tokens": f.get("tokens"),
                "setting": f.get("setting"),
                "dropped_fields": f.get("dropped_fields"),
            },
        }
    )


def _at(record: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def record_fields(record: Any) -> dict[str, Any]:
    """The AuditEvent fields an OCSF record holds (ocsf_body's inverse), through the allowlist
    again: a reader (the report) shows only values of the allowlisted shape, whatever the file."""
    raw = {
        "operation": _at(record, "api", "operation"),
        "status": _at(record, "http_response", "code"),
        "request_id": _at(record, "api", "request", "uid"),
        "tenant_id": _at(record, "metadata", "tenant_uid"),
        "key_id": _at(record, "actor", "user", "uid"),
        "source_ip": _at(record, "src_endpoint", "ip"),
        "hostname": _at(record, "dst_endpoint", "hostname"),
        "port": _at(record, "dst_endpoint", "port"),
        "duration_ms": _at(record, "duration"),
        **{
            name: _at(record, "unmapped", name)
            for name in ("model_id", "taxonomy", "mode", "documents", "bytes", "tokens", "setting")
        },
    }
    return sanitize({k: v for k, v in raw.items() if v is not None})
