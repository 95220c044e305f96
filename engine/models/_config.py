"""Small helpers to read a Hugging Face config.json with errors that name the key."""

from __future__ import annotations

from typing import Any

from engine.errors import ConfigError


def need(config: dict[str, Any], key: str, kind: type = int) -> Any:
    """A required key of the given type."""
    if key not in config or config[key] is None:
        raise ConfigError(f"config.json lacks required key '{key}'")
    value = config[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"config.json key '{key}' must be {kind.__name__}, got {value!r}")
    return value


def refuse(config: dict[str, Any], key: str, unsupported: Any, why: str) -> None:
    """Fail when the config asks for a feature the native implementation does not have."""
    if key in config and config[key] == unsupported:
        raise ConfigError(f"config.json sets {key}={config[key]!r}: {why}")


def refuse_unless(config: dict[str, Any], key: str, allowed: tuple[Any, ...], why: str) -> None:
    if key in config and config[key] not in allowed:
        raise ConfigError(f"config.json sets {key}={config[key]!r}: {why}")
