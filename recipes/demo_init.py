"""How the demo model starts: word vectors from the train split, wired into a two-layer start.

A small transformer trained from random weights on a 2-core CPU does not find, within the hour
the issue allows, the two-hop lookup the task needs (pool the document, pool each listed
label's name, match the two, copy the matching line's code). The recipe therefore starts it
from a known configuration and trains everything end to end from there:

1. `train_word_vectors`: a bag-of-words dual encoder on the train split only. A document is
   its tokens' unit vectors pooled with learned salience weights, a label the mean of its
   name's; the score is a bilinear form of the two. These are the model's word vectors (the
   `words` block of each embedding).
2. `wire`: the residual stream is laid out in blocks, `[1 | words | document | label | code]`.
   Layer 0's head 0 copies the `words` of the tokens it attends to into `document` (its
   attention starts from the encoder's salience weights), head 1 into `label`; the last
   layer's head 0 matches `document` (query, through the encoder's bilinear form) against
   `label` (key) and copies the attended position's `code` block (a random unit vector per
   token) into the answer slot, which the LM head (the embedding, scaled) reads back as the
   code's token. The constant first coordinate lets attention depend on relative position
   alone.

Which positions each head attends to is not wired: training learns it, guided by the
attention targets in `recipes.train_demo`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.models import DiffusionTransformer
from recipes.errors import RecipeError

__all__ = ["Layout", "WordVectors", "layout_for", "train_word_vectors", "wire"]


@dataclass(frozen=True)
class WordVectors:
    vectors: Tensor  # [vocab, dim], unit rows
    bilinear: Tensor  # [dim, dim]: score(document, label) = doc @ bilinear @ label
    salience: Tensor  # [dim]: a document pools its tokens with weights exp(salience . vector)
    accuracy: float  # on the validation documents given to `train_word_vectors`


@dataclass(frozen=True)
class Layout:
    """Offsets of the residual-stream blocks (see the module docstring)."""

    head_dim: int
    words: int
    document: int
    label: int
    code: int
    code_dims: int


def layout_for(model: DiffusionTransformer) -> Layout:
    shape = model.shape
    hd = shape.head_dim
    code = 1 + 3 * hd
    if shape.n_layers < 2 or shape.n_heads < 2 or shape.hidden <= code:
        raise RecipeError(
            "the demo model needs at least 2 layers, 2 heads and hidden > 3 * head_dim + 1"
        )
    return Layout(hd, 1, 1 + hd, 1 + 2 * hd, code, min(hd, shape.hidden - code))


def _bags(rows: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    flat = torch.tensor([t for row in rows for t in row], dtype=torch.long)
    offsets = torch.tensor([0] + [len(row) for row in rows[:-1]], dtype=torch.long).cumsum(0)
    return flat, offsets


def _bag_index(offsets: Tensor, n: int) -> Tensor:
    """Which bag each flat position belongs to."""
    index = torch.zeros(n, dtype=torch.long)
    index[offsets[1:]] = 1
    return index.cumsum(0)


def train_word_vectors(
    documents: Sequence[Sequence[int]],
    labels: Sequence[int],
    names: Sequence[Sequence[int]],
    validation: tuple[Sequence[Sequence[int]], Sequence[int]],
    *,
    vocab: int,
    dim: int,
    epochs: int,
    seed: int,
    batch: int = 256,
    lr: float = 3e-3,
) -> WordVectors:
    """Fit the dual encoder: softmax over every label of `names` for each training document.
    A document is its tokens' unit vectors pooled with weights exp(salience . vector) (the
    attention the wired layer-0 head starts from), a label the mean of its name's."""
    if any(len(row) == 0 for row in (*documents, *names)):
        raise RecipeError("every document and label name needs at least one token")
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.nn.Parameter(torch.randn(vocab, dim, generator=generator) * 0.1)
    bilinear = torch.nn.Parameter(torch.eye(dim))
    temperature = torch.nn.Parameter(torch.tensor(10.0))
    salience = torch.nn.Parameter(torch.zeros(dim))
    optimizer = torch.optim.Adam([vectors, bilinear, temperature, salience], lr=lr)
    name_bags = _bags(names)

    def scores(rows: Sequence[Sequence[int]]) -> Tensor:
        unit = F.normalize(vectors, dim=-1)
        flat, offsets = _bags(rows)
        weights = (unit[flat] @ salience).exp()  # attention pooling: exp(salience . vector)
        total = F.embedding_bag(flat, unit, offsets, mode="sum", per_sample_weights=weights)
        mass = torch.zeros(len(rows)).index_add_(0, _bag_index(offsets, len(flat)), weights)
        docs = total / mass[:, None]
        labels_ = F.embedding_bag(name_bags[0], unit, name_bags[1], mode="mean")
        return temperature * F.normalize(docs, dim=-1) @ bilinear @ F.normalize(labels_, dim=-1).T

    order = list(range(len(documents)))
    rng = random.Random(seed)
    for _ in range(epochs):
        rng.shuffle(order)
        for start in range(0, len(order), batch):
            picks = order[start : start + batch]
            target = torch.tensor([labels[i] for i in picks])
            loss = F.cross_entropy(scores([documents[i] for i in picks]), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        rows, gold = validation
        accuracy = float((scores(rows).argmax(-1) == torch.tensor(list(gold))).float().mean())
    return WordVectors(F.normalize(vectors.detach(), dim=-1), bilinear.detach(),
                       salience.detach(), accuracy)


@torch.no_grad()
def wire(
    model: DiffusionTransformer,
    words: WordVectors,
    generator: torch.Generator,
    *,
    constant: float = 0.5,
    word_norm: float = 4.0,
    code_norm: float = 4.0,
    head_scale: float = 0.1,
    match_scale: float = 1.0,
) -> Layout:
    """Write the starting configuration into `model` (whose other weights are already
    initialised at random); returns the layout it used."""
    lay = layout_for(model)
    hd, vocab, hidden = lay.head_dim, model.shape.vocab_size, model.shape.hidden
    if tuple(words.vectors.shape) != (vocab, hd):
        raise RecipeError(f"word vectors must be [{vocab}, {hd}] for this model")
    embed = torch.zeros(vocab, hidden)
    embed[:, 0] = constant
    embed[:, lay.words : lay.words + hd] = words.vectors * word_norm
    codes = torch.randn(vocab, hidden - lay.code, generator=generator)
    embed[:, lay.code :] = F.normalize(codes, dim=-1) * code_norm
    model.embed.weight.copy_(embed)
    model.head.weight.copy_(embed * head_scale)

    eye = torch.eye(hd)
    first, last = model.layers[0], model.layers[-1]
    # Head 0's salience: the constant coordinate (query) against the word vector (key) in the
    # head's lowest-frequency rotary pair, which turns by under 0.1 rad over 600 positions, so
    # the score is exp(salience . vector) whatever the distance. RMSNorm divides both sides by
    # the embedding's RMS, which the key weight undoes.
    rms2 = float(embed.pow(2).mean())
    slow = hd // 2 - 1
    first.q.weight[slow] = 0.0
    first.q.weight[slow, 0] = 1.0
    first.k.weight[slow] = 0.0
    first.k.weight[slow, lay.words : lay.words + hd] = (
        words.salience * math.sqrt(hd) * rms2 / (constant * word_norm)
    )
    for head, block in ((0, lay.document), (1, lay.label)):
        rows = slice(head * hd, (head + 1) * hd)
        first.v.weight[rows] = 0.0
        first.v.weight[rows, lay.words : lay.words + hd] = eye
        first.o.weight[:, rows] = 0.0
        first.o.weight[block : block + hd, rows] = eye
    n = lay.code_dims
    last.q.weight[:hd] = 0.0
    last.q.weight[:hd, lay.document : lay.document + hd] = words.bilinear.T * match_scale
    last.k.weight[:hd] = 0.0
    last.k.weight[:hd, lay.label : lay.label + hd] = eye
    last.v.weight[:hd] = 0.0
    last.v.weight[:n, lay.code : lay.code + n] = torch.eye(n)
    last.o.weight[:, :hd] = 0.0
    last.o.weight[lay.code : lay.code + n, :n] = torch.eye(n)
    return lay
