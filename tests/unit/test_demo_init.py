"""The demo model's start (recipes.demo_init): position kernels, a dual encoder that separates
the train split's classes, and a wiring whose forward pass classifies like that encoder
whatever the listing's order and codes."""

from __future__ import annotations

import random

import pytest
import torch

from engine.models import DiffusionTransformer, llada
from recipes.demo_init import (
    NAME_OFFSETS,
    context_of,
    fit_kernel,
    label_bags,
    layout_for,
    train_word_vectors,
    wire,
)
from recipes.errors import RecipeError
from recipes.train_demo import TrainConfig, llada_config

VOCAB = 64
PAD, MASK, COLON, SPACE, NEWLINE = 0, 1, 2, 3, 4
CODES = [5, 6, 7, 8, 9]
NAMES = [[10, 11], [20, 21], [30, 31]]  # each label's name shares its class's tokens
BASE, HEAD_DIM = 1e8, 32


def _model(n_layers: int = 2, n_heads: int = 3, rope_theta: float = BASE) -> DiffusionTransformer:
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
    """The engine's shape of canvas: instruction, `CODE: name` lines, document, answer slot.
    Returns the ids and the position of each listed code."""
    ids, positions = [40, 41, NEWLINE], []
    for label, code in zip(order, codes, strict=True):
        positions.append(len(ids))
        ids += [code, COLON, SPACE, *NAMES[label], NEWLINE]
    ids += [42, COLON, NEWLINE, *doc, NEWLINE, 43, COLON, MASK, NEWLINE]
    return ids, positions


@pytest.fixture(scope="module")
def kernels():
    return fit_kernel(BASE, HEAD_DIM, NAME_OFFSETS), fit_kernel(BASE, HEAD_DIM, (1,))


def test_kernels_attend_to_the_name_and_to_the_next_token(kernels) -> None:
    names, following = kernels
    on_name = sum(names.weights().get(d, 0.0) for d in NAME_OFFSETS)
    assert on_name > 0.9
    assert following.weights().get(1, 0.0) > 0.99


def test_word_vectors_separate_the_classes_and_are_seeded(kernels) -> None:
    ids, positions = _canvas([50], [0, 1, 2], CODES[:3])
    bags = label_bags(ids, positions, kernels[0])
    docs, labels = _toy(600, 0)
    val = _toy(100, 1)

    def fit(epochs: int):
        return train_word_vectors(docs, labels, bags, val, vocab=VOCAB, dim=8, rank=8,
                                  zero_tokens=CODES, epochs=epochs, seed=0)

    words = fit(8)
    assert words.accuracy >= 0.9
    assert words.vectors.shape == (VOCAB, 8) and words.doc_map.shape == (8, 8)
    assert torch.all(words.vectors[CODES] == 0)  # codes carry no content
    assert torch.equal(words.vectors, fit(8).vectors)
    assert fit(0).accuracy < words.accuracy


def test_word_vectors_refuse_empty_documents() -> None:
    with pytest.raises(RecipeError, match="at least one token"):
        train_word_vectors([[1], []], [0, 0], [[(1, 1.0)]], ([[1]], [0]), vocab=VOCAB, dim=4,
                           rank=4, zero_tokens=[], epochs=1, seed=0)


def test_wired_model_classifies_like_the_encoder_in_any_order(kernels) -> None:
    names, following = kernels
    model = _model()
    ids, positions = _canvas([50], [0, 1, 2], CODES[:3])
    doc_span = range(ids.index(42) + 3, ids.index(42) + 4)
    fixed = [t for i, t in enumerate(ids) if i not in doc_span and t != MASK]
    docs, labels = _toy(600, 0)
    val_docs, val_labels = _toy(100, 1)
    words = train_word_vectors(docs, labels, label_bags(ids, positions, names),
                               (val_docs, val_labels), vocab=VOCAB, dim=8, rank=8,
                               zero_tokens=CODES, epochs=8, seed=0)
    wire(model, words, names=names, next_token=following, context=context_of(words, fixed),
         code_tokens=CODES, colon_tokens=[COLON], mask_id=MASK,
         generator=torch.Generator().manual_seed(0))
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
    with pytest.raises(RecipeError, match="2 layers, 3 heads"):
        layout_for(_model(n_layers=1), 8)
    with pytest.raises(RecipeError, match="2 layers, 3 heads"):
        layout_for(_model(n_heads=2), 8)
    with pytest.raises(RecipeError, match="rope_theta"):
        layout_for(_model(rope_theta=10_000.0), 8)
    assert layout_for(_model(), 8).rank >= 8
