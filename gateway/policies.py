"""Task policies (DESIGN.md, "Task policy"): parsing from YAML or JSON, and `needs_review`.

A policy maps a task name to its decoding mode, what it optimises for, and when a result needs
human review. `sample_based` review picks documents with a keyed hash (HMAC-SHA256 under a
server key, per tenant), never the raw id: the choice is deterministic per document, a member
cannot predict or steer it, and nothing derived from the id is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = [
    "HUMAN_REVIEW",
    "MODES",
    "PRIORITIES",
    "Policy",
    "PolicyInvalid",
    "TaskPolicy",
    "needs_review",
    "parse_policy",
    "policy_from_mapping",
    "review_key",
]

MODES = frozenset({"diffusion", "autoregressive", "self_speculative"})
PRIORITIES = frozenset({"cost_and_speed", "accuracy", "latency"})
HUMAN_REVIEW = frozenset({"none", "optional", "sample_based", "below_threshold"})
_TASK_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_FIELDS = frozenset({"mode", "priority", "human_review", "review_rate", "review_threshold"})


class PolicyInvalid(ValueError):
    """Every problem in one policy document; each names the task and field, never values."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class TaskPolicy:
    mode: str = "diffusion"
    priority: str = "cost_and_speed"
    human_review: str = "none"
    review_rate: float | None = None  # sample_based: fraction of documents, in [0, 1]
    review_threshold: float | None = None  # below_threshold: top probability below this

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode,
            "priority": self.priority,
            "human_review": self.human_review,
        }
        if self.review_rate is not None:
            out["review_rate"] = self.review_rate
        if self.review_threshold is not None:
            out["review_threshold"] = self.review_threshold
        return out


Policy = Mapping[str, TaskPolicy]


def _fraction(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else None


def _task(name: str, raw: Any, problems: list[str]) -> TaskPolicy | None:
    where = f"tasks.{name}"
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: must be a mapping")
        return None
    for extra in sorted(set(map(str, raw)) - _FIELDS):
        problems.append(f"{where}: unknown field {extra!r}")
    before = len(problems)
    mode, priority = raw.get("mode", "diffusion"), raw.get("priority", "cost_and_speed")
    review = raw.get("human_review", "none")
    if mode not in MODES:
        problems.append(f"{where}.mode: must be one of {sorted(MODES)}")
    if priority not in PRIORITIES:
        problems.append(f"{where}.priority: must be one of {sorted(PRIORITIES)}")
    if review not in HUMAN_REVIEW:
        problems.append(f"{where}.human_review: must be one of {sorted(HUMAN_REVIEW)}")
    rate = _fraction(raw.get("review_rate"))
    threshold = _fraction(raw.get("review_threshold"))
    for field_name, parsed in (("review_rate", rate), ("review_threshold", threshold)):
        if field_name in raw and parsed is None:
            problems.append(f"{where}.{field_name}: must be a number between 0 and 1")
    if review == "sample_based" and "review_rate" not in raw:
        problems.append(f"{where}.review_rate: required with human_review: sample_based")
    if review == "below_threshold" and "review_threshold" not in raw:
        problems.append(f"{where}.review_threshold: required with human_review: below_threshold")
    if len(problems) > before:
        return None
    return TaskPolicy(mode, priority, review, rate, threshold)


def policy_from_mapping(document: Any) -> dict[str, TaskPolicy]:
    """`{"tasks": {name: {...}}}` -> {name: TaskPolicy}; PolicyInvalid lists every problem."""
    if not isinstance(document, Mapping) or not isinstance(document.get("tasks"), Mapping):
        raise PolicyInvalid(["policy must be a mapping with a `tasks` mapping"])
    extra = sorted(set(map(str, document)) - {"tasks"})
    problems = [f"unknown top-level field {k!r}" for k in extra]
    tasks: dict[str, TaskPolicy] = {}
    for name, raw in document["tasks"].items():
        if not isinstance(name, str) or not _TASK_RE.fullmatch(name):
            problems.append("tasks: a task name must match [A-Za-z0-9_.-]{1,64}")
            continue
        task = _task(name, raw, problems)
        if task is not None:
            tasks[name] = task
    if problems:
        raise PolicyInvalid(problems)
    return tasks


def parse_policy(text: str | bytes) -> dict[str, TaskPolicy]:
    """A policy from YAML or JSON text (JSON is YAML; `safe_load` builds no objects)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        raise PolicyInvalid(["policy is neither YAML nor JSON"]) from None
    return policy_from_mapping(document)


def review_key(server_key: bytes, tenant_id: str) -> bytes:
    """The sampling key of one tenant, so two tenants' samples are independent."""
    return hmac.new(server_key, b"tacet-review:" + tenant_id.encode(), hashlib.sha256).digest()


def _sample_point(key: bytes, document_key: str | bytes) -> float:
    data = document_key.encode("utf-8") if isinstance(document_key, str) else document_key
    digest = hmac.new(key, data, hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64  # uniform in [0, 1)


def needs_review(
    policy: TaskPolicy,
    document_key: str | bytes,
    top_probability: float | None,
    *,
    key: bytes,
) -> bool:
    """Whether one result goes to a human.

    - `none` / `optional`: never flagged by Tacet (`optional` leaves it to the caller).
    - `below_threshold`: the top label's probability is below `review_threshold`, or the
      model abstained (no probability).
    - `sample_based`: a fixed `review_rate` fraction of documents, chosen by
      HMAC(key, document_key); the same document always gets the same answer under one key.
    """
    if policy.human_review == "below_threshold":
        threshold = policy.review_threshold if policy.review_threshold is not None else 1.0
        return top_probability is None or top_probability < threshold
    if policy.human_review == "sample_based":
        if len(key) < 16:
            raise ValueError("review sampling key must hold at least 16 bytes")
        rate = policy.review_rate or 0.0
        return _sample_point(key, document_key) < rate
    return False
