"""The demo model's start (recipes.demo_init): word vectors that separate the train split's
classes, and a wiring whose match and copy paths do what the recipe relies on."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from engine.models import DiffusionTransformer, llada
from recipes.demo_init import WordVectors, layout_for, train_word_vectors, wire
from recipes.errors import RecipeError
from recipes.train_demo import TrainConfig, llada_config

VOCAB = 64


def _model(d_model: int = 64, n_layers: int = 2, n_heads: int = 4) -> DiffusionTransformer:
    config = TrainConfig(d_model=d_model, n_layers=n_layers, n_heads=n_heads, mlp_hidden=32)
    shape = llada.shape_from_config(llada_config(VOCAB, eos_id=0, mask_id=1, config=config))
    return DiffusionTransformer(shape)


def _toy(n: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """Class c's documents draw from tokens 10c..10c+9 with a little shared noise."""
    rng = random.Random(seed)
    docs, labels = [], []
    for _ in range(n):
        c = rng.randrange(3)
        docs.append([rng.randrange(10 * c + 10, 10 * c + 20) if rng.random() < 0.8
                     else rng.randrange(50, 64) for _ in range(rng.randint(3, 12))])
        labels.append(c)
    return docs, labels


def test_word_vectors_separate_the_classes_and_are_seeded() -> None:
    docs, labels = _toy(600, 0)
    names = [[10, 11], [20, 21], [30, 31]]  # each label's name shares its class's tokens
    val = _toy(100, 1)
    words = train_word_vectors(docs, labels, names, val, vocab=VOCAB, dim=16, epochs=8, seed=0)
    assert words.accuracy >= 0.9
    assert words.vectors.shape == (VOCAB, 16) and words.bilinear.shape == (16, 16)
    again = train_word_vectors(docs, labels, names, val, vocab=VOCAB, dim=16, epochs=8, seed=0)
    assert torch.equal(words.vectors, again.vectors)
    untrained = train_word_vectors(docs, labels, names, val, vocab=VOCAB, dim=16, epochs=0,
                                   seed=0)
    assert untrained.accuracy < words.accuracy


def test_word_vectors_refuse_empty_documents() -> None:
    with pytest.raises(RecipeError, match="at least one token"):
        train_word_vectors([[1], []], [0, 0], [[1]], ([[1]], [0]), vocab=VOCAB, dim=4,
                           epochs=1, seed=0)


def test_wiring_matches_document_to_label_and_copies_the_code() -> None:
    model = _model()
    lay = layout_for(model)
    hd = lay.head_dim
    gen = torch.Generator().manual_seed(0)
    bilinear = torch.randn(hd, hd, generator=gen)
    vectors = F.normalize(torch.randn(VOCAB, hd, generator=gen), dim=-1)
    salience = torch.randn(hd, generator=gen)
    words = WordVectors(vectors, bilinear, salience, 1.0)
    wire(model, words, torch.Generator().manual_seed(1))
    first, last = model.layers[0], model.layers[-1]
    with torch.no_grad():
        # Layer 0: head 0 writes a token's word vector into the document block, head 1 into
        # the label block (what each head attends to is learned, not wired).
        token = model.embed.weight[7]
        for head, block in ((0, lay.document), (1, lay.label)):
            value = first.v(token)[head * hd : (head + 1) * hd]
            out = first.o(F.pad(value, (head * hd, model.shape.hidden - (head + 1) * hd)))
            assert torch.allclose(out[block : block + hd], token[lay.words : lay.words + hd])
        # Head 0's lowest-frequency rotary pair scores any query against token t's key as
        # salience . vector[t] (the encoder's pooling weight), whatever the query token.
        slow = hd // 2 - 1
        normed = first.attn_norm(model.embed.weight)
        q_slow, k_slow = first.q(normed)[:, slow], first.k(normed)[:, slow]
        for query in (1, 5):
            scores = q_slow[query] * k_slow / hd**0.5
            assert torch.allclose(scores, vectors @ salience, atol=1e-4)
        # Last layer, head 0: query . key is the dual encoder's bilinear score of the
        # document block (query side) and the label block (key side).
        a, b = torch.randn(hd, generator=gen), torch.randn(hd, generator=gen)
        xq, xk = torch.zeros(model.shape.hidden), torch.zeros(model.shape.hidden)
        xq[lay.document : lay.document + hd], xk[lay.label : lay.label + hd] = a, b
        score = last.q(xq)[:hd] @ last.k(xk)[:hd]
        assert torch.allclose(score, a @ bilinear @ b, atol=1e-4)
        # ... and its value/output copy a position's code block; the LM head reads it back
        # as that token, among all tokens.
        hidden = last.o(F.pad(last.v(model.embed.weight[42])[:hd], (0, model.shape.hidden - hd)))
        assert int(model.logits_from_hidden(hidden).argmax()) == 42


def test_wiring_needs_room_for_its_blocks() -> None:
    with pytest.raises(RecipeError, match="at least 2 layers"):
        layout_for(_model(n_layers=1))
    with pytest.raises(RecipeError, match="hidden"):
        layout_for(_model(d_model=32, n_heads=2))
