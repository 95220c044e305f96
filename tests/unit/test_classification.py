"""Scoring-first classification on tiny random models, checked against brute force."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from engine import load_model, load_tokenizer
from engine.canvas import build_canvas
from engine.core import EngineConfig, EngineCore
from engine.errors import TokenizerError
from engine.taxonomy import CompiledTaxonomy
from tests.fixtures import FAMILIES, write_tiny_checkpoint

WORDS = [
    "heart",
    "tumour",
    "nerve",
    "brain",
    "vessel",
    "cell",
    "drug",
    "trial",
    "patient",
    "dose",
    "scan",
    "gene",
]


def taxonomy(n_topics: int = 6, n_kinds: int = 4) -> dict:
    return {
        "name": "subjects",
        "version": "3",
        "facets": [
            {
                "name": "topic",
                "multi": False,
                "labels": [
                    {"id": f"topic-{i}", "name": f"Topic {WORDS[i]}", "description": "x"}
                    for i in range(n_topics)
                ],
            },
            {
                "name": "kind",
                "multi": True,
                "labels": [{"id": f"kind-{i}", "name": f"Kind {i}"} for i in range(n_kinds)],
            },
        ],
    }


def documents(n: int, seed: int = 0) -> list[str]:
    rng = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(2, 40, (1,), generator=rng))
        idx = torch.randint(0, len(WORDS), (length,), generator=rng).tolist()
        out.append(" ".join(WORDS[i] for i in idx))
    return out


@pytest.fixture(scope="module", params=FAMILIES)
def core(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> EngineCore:
    directory = write_tiny_checkpoint(request.param, tmp_path_factory.mktemp(request.param), seed=2)
    return EngineCore(load_model(directory), load_tokenizer(directory))


def brute_force_joint(core: EngineCore, compiled: CompiledTaxonomy, text: str) -> dict:
    """log p(label) for every label of every facet: the chain rule left to right, one full
    forward (all logits, no engine machinery) per label and position."""
    canvas = build_canvas(core.template(compiled), core.tokenizer.encode(text))
    shift = 1 if core.model.shape.shift_logits else 0
    joint = {}
    for facet in compiled.facets:
        slots = canvas.slots[facet.name]
        scores = []
        for row in facet.tokens.tolist():
            ids = list(canvas.ids)
            total = 0.0
            for depth, token in enumerate(row):
                logits = core.model(torch.tensor([ids]))[0, slots[depth] - shift]
                total += float(torch.log_softmax(logits.double(), -1)[token])
                ids[slots[depth]] = token
            scores.append(total)
        joint[facet.name] = torch.tensor(scores, dtype=torch.float64)
    return joint


def test_autoregressive_is_the_exact_joint_argmax(core: EngineCore) -> None:
    compiled = core.compile(taxonomy(), single_token_codes=False)
    assert all(f.slots > 1 for f in compiled.facets)  # multi-token codes: the trie is used
    for text in documents(3, seed=1):
        result = core.classify(compiled, [text], mode="autoregressive")[0]
        joint = brute_force_joint(core, compiled, text)
        topic = joint["topic"]
        best = compiled.facets[0].label_ids[int(torch.argmax(topic))]
        chosen = [s for s in result.labels if s.facet == "topic"]
        assert [s.label for s in chosen] == [best]
        expected = float(torch.softmax(topic, 0).max())
        assert chosen[0].probability == pytest.approx(expected, abs=1e-4)
        assert result.label_mass["topic"] == pytest.approx(float(topic.exp().sum()), rel=1e-3)
        assert result.decode.exact
        assert result.decode.forward_passes == max(f.slots for f in compiled.facets)


def test_diffusion_single_token_codes_take_one_exact_pass(core: EngineCore) -> None:
    compiled = core.compile(taxonomy())
    assert all(f.single_token for f in compiled.facets)
    results = core.classify(compiled, documents(4), mode="diffusion")
    for text, result in zip(documents(4), results, strict=True):
        assert result.decode.forward_passes == 1 and result.decode.exact
        joint = brute_force_joint(core, compiled, text)["topic"]
        chosen = next(s for s in result.labels if s.facet == "topic")
        assert chosen.probability == pytest.approx(float(torch.softmax(joint, 0).max()), abs=1e-4)


def test_self_speculative_agrees_with_autoregressive(core: EngineCore) -> None:
    compiled = core.compile(taxonomy(n_topics=12), single_token_codes=False)
    texts = documents(12, seed=3)
    ar = core.classify(compiled, texts, mode="autoregressive")
    spec = core.classify(compiled, texts, mode="self_speculative")
    for a, s in zip(ar, spec, strict=True):
        pick = lambda r: [x.label for x in r.labels if x.facet == "topic"]  # noqa: E731
        assert pick(a) == pick(s)
        assert s.decode.exact
        assert s.decode.forward_passes >= 2


def test_diffusion_multi_token_commits_at_most_l_passes(core: EngineCore) -> None:
    compiled = core.compile(taxonomy(n_topics=12), single_token_codes=False)
    longest = max(f.slots for f in compiled.facets)
    for result in core.classify(compiled, documents(6, seed=4), mode="diffusion"):
        assert 1 <= result.decode.forward_passes <= longest


@pytest.mark.parametrize("mode", ["diffusion", "autoregressive", "self_speculative"])
def test_batch_does_not_change_results(core: EngineCore, mode: str) -> None:
    """One document alone and inside a padded batch of 32 mixed-length documents."""
    compiled = core.compile(taxonomy(), single_token_codes=mode != "diffusion")
    texts = documents(32, seed=5)
    small = EngineCore(core.model, core.tokenizer, EngineConfig(max_batch_tokens=1))
    batched = core.classify(compiled, texts, mode=mode)
    for i in (0, 13, 31):
        alone = small.classify(compiled, [texts[i]], mode=mode)[0]
        assert [(s.facet, s.label) for s in alone.labels] == [
            (s.facet, s.label) for s in batched[i].labels
        ]
        for x, y in zip(alone.labels, batched[i].labels, strict=True):
            assert x.probability == pytest.approx(y.probability, abs=1e-4)


@pytest.mark.parametrize("mode", ["diffusion", "autoregressive", "self_speculative"])
def test_every_label_comes_from_the_taxonomy(core: EngineCore, mode: str) -> None:
    tax = taxonomy()
    known = {(f["name"], label["id"]) for f in tax["facets"] for label in f["labels"]}
    for single in (True, False):
        compiled = core.compile(tax, single_token_codes=single)
        for result in core.classify(compiled, documents(5, seed=6), mode=mode):
            assert result.labels
            assert {(s.facet, s.label) for s in result.labels} <= known
            assert sum(1 for s in result.labels if s.facet == "topic") == 1


def test_multi_facet_returns_every_label_above_threshold(core: EngineCore) -> None:
    compiled = core.compile(taxonomy(n_kinds=4))
    text = documents(1, seed=8)[0]
    joint = brute_force_joint(core, compiled, text)["kind"]
    probs = torch.softmax(joint, 0)
    threshold = float(probs.sort(descending=True).values[1]) - 1e-6  # exactly the top two
    result = core.classify(compiled, [text], threshold=threshold)[0]
    kinds = [s for s in result.labels if s.facet == "kind"]
    assert len(kinds) == 2
    assert kinds[0].probability >= kinds[1].probability >= threshold


def test_long_document_is_truncated_and_reported(core: EngineCore) -> None:
    small = EngineCore(core.model, core.tokenizer, EngineConfig(document_token_budget=8))
    compiled = small.compile(taxonomy())
    long_text, short_text = " ".join(WORDS * 4), "heart"
    results = small.classify(compiled, [long_text, short_text])
    assert results[0].decode.truncated and not results[1].decode.truncated
    assert results[0].decode.tokens == len(small.template(compiled).before) + 8 + len(
        small.template(compiled).after
    )


def test_codes_can_be_reassigned(core: EngineCore) -> None:
    base = core.compile(taxonomy())
    shuffled = [core.compile(taxonomy(), code_seed=s).facets[0].codes for s in range(4)]
    assert any(codes != base.facets[0].codes for codes in shuffled)
    assert all(sorted(codes) == sorted(base.facets[0].codes) for codes in shuffled)


def test_compiled_taxonomy_is_cached(core: EngineCore) -> None:
    assert core.compile(taxonomy()) is core.compile(taxonomy())
    assert core.compile(taxonomy()) is not core.compile(taxonomy(n_topics=5))


def test_classify_keeps_other_requests_results(core: EngineCore) -> None:
    """classify() steps the shared loop; documents of other requests are not lost."""
    compiled = core.compile(taxonomy())
    core.add_request("other", compiled, documents(3, seed=9))
    mine = core.classify(compiled, documents(2, seed=10))
    assert [r.index for r in mine] == [0, 1]
    others = []
    while core.has_work or not others:
        others += [r for r in core.step() if r.request_id == "other"]
        if not core.has_work:
            break
    assert sorted(r.index for r in others) == [0, 1, 2]


def test_model_can_ask_for_listings_without_descriptions(core: EngineCore, tmp_path) -> None:
    """`tacet_label_descriptions: false` in tokenizer_config.json: the listing keeps codes and
    names and drops descriptions (how the demo model was trained); anything but a boolean is
    refused."""
    described = core.tokenizer.decode(list(core.template(core.compile(taxonomy())).before))
    assert "Topic heart - x" in described
    plain = dataclasses.replace(core.tokenizer, label_descriptions=False)
    bare = EngineCore(core.model, plain)
    listing = plain.decode(list(bare.template(bare.compile(taxonomy())).before))
    assert "Topic heart\n" in listing and " - x" not in listing
    assert "Kind 0" in listing

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "tokenizer.json").write_text(core.tokenizer.tokenizer.to_str(), "utf-8")
    (model_dir / "tokenizer_config.json").write_text('{"tacet_label_descriptions": false}')
    assert load_tokenizer(model_dir).label_descriptions is False
    (model_dir / "tokenizer_config.json").write_text('{"tacet_label_descriptions": "no"}')
    with pytest.raises(TokenizerError, match="tacet_label_descriptions"):
        load_tokenizer(model_dir)
