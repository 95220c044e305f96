"""Task policies: the DESIGN.md example parses; bad documents list every problem; review."""

from __future__ import annotations

import json

import pytest

from gateway.policies import (
    PolicyInvalid,
    TaskPolicy,
    needs_review,
    parse_policy,
    review_key,
)

DESIGN_EXAMPLE = """
tasks:
  archive_retag:   {mode: diffusion, priority: cost_and_speed, human_review: sample_based, review_rate: 0.02}
  member_facing:   {mode: autoregressive, priority: accuracy, human_review: below_threshold, review_threshold: 0.8}
  editor_suggest:  {mode: self_speculative, priority: latency, human_review: optional}
"""  # noqa: E501
KEY = b"k" * 32


def test_design_example_parses() -> None:
    policy = parse_policy(DESIGN_EXAMPLE)
    assert policy["archive_retag"] == TaskPolicy(
        "diffusion", "cost_and_speed", "sample_based", review_rate=0.02
    )
    assert policy["member_facing"].review_threshold == 0.8
    assert policy["editor_suggest"].mode == "self_speculative"


def test_json_is_accepted_and_round_trips() -> None:
    policy = parse_policy(DESIGN_EXAMPLE)
    text = json.dumps({"tasks": {k: v.as_dict() for k, v in policy.items()}})
    assert parse_policy(text) == policy


def test_every_problem_is_reported_at_once() -> None:
    text = """
tasks:
  a: {mode: fast, priority: accuracy}
  b: {human_review: sample_based}
  c: {human_review: below_threshold, review_threshold: 1.5}
  d: {colour: blue}
  e: not-a-mapping
extra: 1
"""
    with pytest.raises(PolicyInvalid) as info:
        parse_policy(text)
    problems = info.value.problems
    assert "tasks.a.mode: must be one of ['autoregressive', 'diffusion', 'self_speculative']" in (
        problems
    )
    assert any(p.startswith("tasks.b.review_rate: required") for p in problems)
    assert any(p.startswith("tasks.c.review_threshold: must be a number") for p in problems)
    assert "tasks.d: unknown field 'colour'" in problems
    assert "tasks.e: must be a mapping" in problems
    assert "unknown top-level field 'extra'" in problems
    assert len(problems) == 6


@pytest.mark.parametrize("text", ["", "- a\n- b", "tasks: 3", "{unclosed: [", "tasks: {'a b': {}}"])
def test_malformed_documents(text: str) -> None:
    with pytest.raises(PolicyInvalid):
        parse_policy(text)


def test_yaml_objects_are_never_constructed() -> None:
    with pytest.raises(PolicyInvalid):
        parse_policy("tasks: !!python/object/apply:os.system ['true']")


def test_booleans_are_not_rates() -> None:
    with pytest.raises(PolicyInvalid):
        parse_policy("tasks: {a: {human_review: sample_based, review_rate: true}}")


def test_below_threshold() -> None:
    policy = TaskPolicy(human_review="below_threshold", review_threshold=0.8)
    assert needs_review(policy, "d", 0.79, key=KEY)
    assert not needs_review(policy, "d", 0.8, key=KEY)
    assert needs_review(policy, "d", None, key=KEY)  # abstention goes to a human


@pytest.mark.parametrize("mode", ["none", "optional"])
def test_no_review_modes(mode: str) -> None:
    assert not needs_review(TaskPolicy(human_review=mode), "d", 0.01, key=KEY)


def test_sampling_is_deterministic_and_close_to_the_rate() -> None:
    policy = TaskPolicy(human_review="sample_based", review_rate=0.02)
    ids = [f"doc-{i}" for i in range(20_000)]
    first = [needs_review(policy, i, 0.99, key=KEY) for i in ids]
    second = [needs_review(policy, i, 0.99, key=KEY) for i in ids]
    assert first == second
    rate = sum(first) / len(ids)
    assert 0.015 < rate < 0.025  # 2% of 20k: sd ~ 0.1%, so this is > 5 sigma wide


def test_sampling_depends_on_the_key_not_only_the_id() -> None:
    policy = TaskPolicy(human_review="sample_based", review_rate=0.5)
    ids = [f"doc-{i}" for i in range(400)]
    a = [needs_review(policy, i, 0.9, key=review_key(KEY, "tn_a")) for i in ids]
    b = [needs_review(policy, i, 0.9, key=review_key(KEY, "tn_b")) for i in ids]
    assert a != b
    agreement = sum(x == y for x, y in zip(a, b, strict=True)) / len(ids)
    assert 0.4 < agreement < 0.6  # independent samples agree about half the time


def test_rate_edges_and_short_key() -> None:
    assert not needs_review(
        TaskPolicy(human_review="sample_based", review_rate=0.0), "d", 1, key=KEY
    )
    assert needs_review(TaskPolicy(human_review="sample_based", review_rate=1.0), "d", 1, key=KEY)
    with pytest.raises(ValueError):
        needs_review(TaskPolicy(human_review="sample_based", review_rate=0.5), "d", 1, key=b"x")
