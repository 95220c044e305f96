"""Model families Tacet implements natively (no `trust_remote_code`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.errors import UnknownModelType
from engine.models import dream, llada
from engine.models._shape import ModelShape
from engine.models._transformer import DiffusionTransformer, positions_from_mask

__all__ = [
    "FAMILIES",
    "DiffusionTransformer",
    "Family",
    "ModelShape",
    "family_for",
    "positions_from_mask",
]


@dataclass(frozen=True)
class Family:
    name: str
    shape_from_config: Callable[[dict[str, Any]], ModelShape]
    weight_names: Callable[[ModelShape], dict[str, str]]


FAMILIES = {
    "llada": Family("llada", llada.shape_from_config, llada.weight_names),
    "dream": Family("dream", dream.shape_from_config, dream.weight_names),
}


def family_for(config: dict[str, Any]) -> Family:
    """The family named by config.json's model_type (Dream ships it as "Dream")."""
    model_type = config.get("model_type")
    family = FAMILIES.get(str(model_type).lower()) if model_type else None
    if family is None:
        known = ", ".join(sorted(FAMILIES))
        raise UnknownModelType(
            f"config.json model_type {model_type!r} is not supported (known: {known})"
        )
    return family
