"""The demo model's start (recipes.demo_init): position kernels, the count curve, a dual encoder
that separates the train split's classes, and a wiring whose forward pass computes that
encoder whatever the listing's order and codes."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from engine.models import DiffusionTransformer, llada
from recipes.demo_init import (
    MAX_COUNT,
    NAME_OFFSETS,
    REGION_REACH,
    Region,
    find_region,
    fit_curve,
    fit_kernel,
    label_bags,
    layout_for,
    region_kernel,
    train_word_vectors,
    wire,
)
from recipes.errors import RecipeError
from recipes.train_demo import TrainConfig, llada_config

VOCAB = 64
PAD, MASK, COLON, SPACE, NEWLINE, MARKER = 0, 1, 2, 3, 4, 42
CODES = [5, 6, 7, 8, 9]
NAMES = [[10, 11], [20, 21], [30, 31]]  # each label's name shares its class's tokens
BASE, HEAD_DIM, DIM = 1e8, 32, 8


def _model(n_layers: int = 4, n_heads: int = 3, rope_theta: float = BASE) -> DiffusionTransformer:
    config = TrainConfig(d_model=HEAD_DIM * n_heads, n_layers=n_layers, n_heads=n_heads,
                         mlp_hidden=32, rope_theta=rope_theta)
    shape = llada.shape_from_config(llada_config(VOCAB, eos_id=PAD, mask_id=MASK, config=config))
    return DiffusionTransformer(shape)


def _toy(n: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """Class c's documents draw from tokens 10c+10..10c+19 with a little shared noise."""
    rng = random.Random(seed)
    docs, labels = [], []
    for _ in range(n):
        c = rng.randrange(3)
        docs.append([rng.randrange(10 * c + 10, 10 * c + 20) if rng.random() < 0.8
                     else rng.randrange(50, 64) for _ in range(rng.randint(3, 12))])
        labels.append(c)
    return docs, labels


def _canvas(doc: list[int], order: list[int], codes: list[int]) -> tuple[list[int], list[int]]:
    """The engine's shape of canvas: instruction, `CODE: name` lines, the document header,
    the document, the answer slot. Returns the ids and the position of each listed code."""
    ids, positions = [40, 41, NEWLINE], []
    for label, code in zip(order, codes, strict=True):
        positions.append(len(ids))
        ids += [code, COLON, SPACE, *NAMES[label], NEWLINE]
    ids += [NEWLINE, MARKER, COLON, NEWLINE, *doc, NEWLINE, 43, COLON, MASK, NEWLINE]
    return ids, positions


def _region(docs: list[list[int]]) -> Region:
    ids, _ = _canvas([50], [0, 1, 2], CODES[:3])
    start = ids.index(MARKER) + 3
    return find_region(ids, (start, start + 1), ids.index(MASK), docs, header=4)


@pytest.fixture(scope="module")
def kernels():
    return fit_kernel(BASE, HEAD_DIM, NAME_OFFSETS), fit_kernel(BASE, HEAD_DIM, (1,))


@pytest.fixture(scope="module")
def encoder(kernels):
    """The toy's encoder (20 epochs) and what it was fitted with."""
    docs, labels = _toy(600, 0)
    ids, positions = _canvas([50], [0, 1, 2], CODES[:3])
    bags = label_bags(ids, positions, kernels[0])
    region, curve = _region(docs), fit_curve()

    def fit(epochs: int):
        return train_word_vectors(docs, labels, bags, _toy(100, 1), region=region, curve=curve,
                                  vocab=VOCAB, dim=DIM, rank=8, zero_tokens=CODES,
                                  epochs=epochs, seed=0, dropout=0.1)

    return fit, fit(20), region, curve


def test_kernels_attend_to_the_name_and_to_the_next_token(kernels) -> None:
    names, following = kernels
    on_name = sum(names.weights().get(d, 0.0) for d in NAME_OFFSETS)
    assert on_name > 0.9
    assert following.weights().get(1, 0.0) > 0.99


def test_region_kernel_scores_keys_after_the_query_only() -> None:
    kernel = region_kernel(BASE, HEAD_DIM)
    after = kernel.scores(torch.arange(1, REGION_REACH + 1))
    before = kernel.scores(torch.arange(-REGION_REACH, 1))
    # One token before the marker already outweighs a whole canvas of other keys (e^16).
    assert after.min() >= 15.9 and before.max() <= -15.9


def test_count_curve_is_the_log_of_the_sink_weight() -> None:
    by_count = fit_curve().by_count()
    n = torch.arange(1, MAX_COUNT + 1, dtype=torch.float64)
    error = (by_count[1:].double() + torch.log1p(n)).abs()
    assert error[:100].max() < 1e-3 and error.max() < 1e-2


def test_region_starts_at_the_header_marker_or_a_later_one() -> None:
    region = _region([[50, 51]] * 3 + [[NEWLINE, COLON]])
    assert region.marker == MARKER  # the header's only token that the tail does not repeat
    assert region.header == (MARKER, COLON, NEWLINE)
    assert region.tail == (NEWLINE, 43, COLON, NEWLINE)  # the slot left out
    assert region.tokens([50, MARKER, 51])[:2] == [MARKER, 51]  # a marker inside moves it


def test_region_needs_a_marker() -> None:
    ids = [COLON, NEWLINE, 50, NEWLINE, COLON, MASK]
    with pytest.raises(RecipeError, match="no token of its own"):
        find_region(ids, (2, 3), 5, [[50]], header=2)


def test_word_vectors_separate_the_classes_and_are_seeded(encoder) -> None:
    fit, words, _, _ = encoder
    assert words.accuracy >= 0.9
    assert words.vectors.shape == (VOCAB, DIM) and words.doc_map.shape == (DIM, 8)
    assert torch.all(words.label_vectors[CODES] == 0)  # labels never read the codes drawn
    assert torch.equal(words.vectors, fit(20).vectors)
    assert fit(0).accuracy < words.accuracy


def test_word_vectors_refuse_empty_documents() -> None:
    region, curve = _region([[50]]), fit_curve()
    with pytest.raises(RecipeError, match="at least one token"):
        train_word_vectors([[1], []], [0, 0], [[(1, 1.0)]], ([[1]], [0]), region=region,
                           curve=curve, vocab=VOCAB, dim=4, rank=4, zero_tokens=[], epochs=1,
                           seed=0)


def _wired(kernels, encoder) -> tuple[DiffusionTransformer, object]:
    names, following = kernels
    _, words, region, curve = encoder
    model = _model()
    layout = wire(model, words, names=names, next_token=following,
                  region=region_kernel(BASE, HEAD_DIM), curve=curve, code_tokens=CODES,
                  colon_tokens=[COLON], marker_id=region.marker, mask_id=MASK,
                  generator=torch.Generator().manual_seed(0))
    return model, layout


def test_wired_model_pools_the_document_as_the_encoder_does(kernels, encoder) -> None:
    """Layer 2's pooled document at the answer slot is the encoder's: only the document's
    region, each token weighted by exp(salience . vector) / (1 + its count)."""
    model, layout = _wired(kernels, encoder)
    _, words, region, curve = encoder
    by_count = curve.by_count()
    worst = 1.0
    for doc in _toy(20, 3)[0]:
        doc = doc + doc[:3] + doc[:1]  # repeated tokens: counts 1, 2 and 3
        ids, _ = _canvas(doc, [2, 0, 1], CODES[2:])
        with torch.no_grad():
            cos, sin = model.rotary.cos_sin(torch.arange(len(ids))[None])
            x = model.embed(torch.tensor([ids]))
            for layer in model.layers[:3]:
                x = layer(x, model.rotary, cos, sin, None)
        pooled = x[0, ids.index(MASK), layout.document : layout.document + DIM]
        tokens = region.tokens(doc)
        counts = torch.tensor([min(tokens.count(t), MAX_COUNT) for t in tokens])
        u = words.vectors[tokens]
        weights = (u @ words.salience + words.bias[tokens] + by_count[counts]).exp()
        expected = (u * weights[:, None]).sum(0)
        worst = min(worst, float(F.cosine_similarity(pooled, expected, dim=0)))
    assert worst > 0.999


def test_wired_model_classifies_like_the_encoder_in_any_order(kernels, encoder) -> None:
    model, _ = _wired(kernels, encoder)
    _, words, _, _ = encoder
    val_docs, val_labels = _toy(100, 1)
    rng = random.Random(2)
    correct = 0
    with torch.no_grad():
        for doc, gold in zip(val_docs, val_labels, strict=True):
            order, codes = rng.sample(range(3), 3), rng.sample(CODES, 3)
            canvas, _ = _canvas(doc, order, codes)
            hidden = model.trunk(torch.tensor([canvas]))[0, canvas.index(MASK)]
            logits = model.logits_from_hidden(hidden)
            correct += order[int(logits[codes].argmax())] == gold
    # The forward pass is the encoder (about its own accuracy) with shuffled listings and
    # codes the encoder never saw; a broken kernel, pointer or copy falls to chance (1/3).
    assert correct / len(val_docs) >= words.accuracy - 0.05


def test_wiring_needs_room_for_its_blocks() -> None:
    with pytest.raises(RecipeError, match="4 layers, 3 heads"):
        layout_for(_model(n_layers=3), DIM)
    with pytest.raises(RecipeError, match="4 layers, 3 heads"):
        layout_for(_model(n_heads=2), DIM)
    with pytest.raises(RecipeError, match="rope_theta"):
        layout_for(_model(rope_theta=10_000.0), DIM)
    layout = layout_for(_model(), DIM)
    assert layout.rank >= 8 and layout.code_dims >= 8
