"""How the demo model starts: a bag-of-words dual encoder, written exactly into a two-layer start.

A small transformer trained from random weights on a 2-core CPU does not find, within the hour
the issue allows, the two-hop lookup the task needs (pool the document, pool each listed
label's name, match the two, copy the matching line's code). The recipe therefore computes a
starting point whose forward pass *is* a dual encoder fitted on the train split, and trains
every weight end to end from there (`recipes.train_demo`).

1. `fit_kernel`: rotary position kernels, fitted once: attention from a listed code to the
   first tokens of its own name (offsets 3 to 5: `CODE`, `:`, `Ġ`, name...), and from any token
   to the next one.
2. `train_word_vectors`: the dual encoder. A document is its tokens' unit vectors pooled with
   weights exp(salience . vector); a label is the vectors around its code pooled with the
   kernel's own weights (so the encoder sees exactly what the model computes); the score is a
   low-rank bilinear form. Code tokens get the zero vector, so a listing's pooled content does
   not depend on which codes were drawn.
3. `wire`: the residual stream is laid out in blocks (`Layout`). Layer 0: head 0 pools `words`
   into `document` with the salience weights (every token of the canvas is pooled; the answer
   slot's own value cancels the fixed instruction and full listing, see `context_of`); head 1
   pools the words after each code into `label`; head 2 marks tokens followed by `:`. Layer 1,
   head 0 points from the slot to the listed code whose `label` best matches the `document`
   (low-rank match on rotary pairs that barely turn over a canvas, plus a bias for code tokens
   followed by `:`) and copies that position's `code` vector, which the LM head reads back as
   the code's token. A large constant coordinate keeps every token's RMS nearly equal, so
   RMSNorm scales all positions alike.

Rotary bases: the demo config uses a large `rope_theta` so that most rotary pairs are static
over a canvas (content matching) and a few turn fast enough for the position kernels.
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

__all__ = [
    "Kernel",
    "Layout",
    "WordVectors",
    "context_of",
    "fit_kernel",
    "label_bags",
    "layout_for",
    "train_word_vectors",
    "wire",
]

NAME_OFFSETS = (3, 4, 5)  # a listing line is `CODE` `:` `Ġ` name...: where its name starts
KERNEL_SPAN = 700  # kernels are fitted over offsets -span..span (canvas length and more)
POSITION_PAIRS = 8  # the fastest rotary pairs carry the position kernels
STATIC_TURN = 0.02  # a static pair turns by less than this (radians) across a canvas
CONSTANT = 40.0  # the constant coordinate: dominates every token's RMS
WORD_NORM = 4.0
CODE_NORM = 4.0


@dataclass(frozen=True)
class Kernel:
    """Attention over relative offsets from rotary pairs 0..n-1: score(d) = sum_f a_f
    cos(theta_f d + phase_f)."""

    amplitude: Tensor  # [n]
    phase: Tensor  # [n]
    thetas: Tensor  # [n]

    def scores(self, offsets: Tensor) -> Tensor:
        angles = self.thetas[:, None] * offsets.float()[None] + self.phase[:, None]
        return (self.amplitude[:, None] * torch.cos(angles)).sum(0)

    def weights(self, near: int = 12) -> dict[int, float]:
        """The attention weight of each offset within `near` (the rest is below 1e-4)."""
        offsets = torch.arange(-KERNEL_SPAN, KERNEL_SPAN + 1)
        p = self.scores(offsets).softmax(0)
        return {int(d): float(w) for d, w in zip(offsets, p, strict=True)
                if abs(int(d)) <= near and float(w) > 1e-4}


@dataclass(frozen=True)
class WordVectors:
    vectors: Tensor  # [vocab, dim]: unit rows, zero for code tokens
    doc_map: Tensor  # [dim, rank]: score = (doc @ doc_map) . (label @ label_map)
    label_map: Tensor  # [dim, rank]
    salience: Tensor  # [dim]: a document pools its tokens with weights exp(salience . vector)
    scale: float  # the encoder's temperature (for normalised documents)
    accuracy: float  # on the validation documents given to `train_word_vectors`


@dataclass(frozen=True)
class Layout:
    """Offsets of the residual-stream blocks (see the module docstring)."""

    head_dim: int
    dim: int  # word-vector width
    rank: int  # match rank: the static rotary pairs of a head, less one for the code bias
    words: int
    document: int
    label: int
    logw: int  # pooling score of the token (salience . vector)
    is_code: int
    is_colon: int
    next_colon: int
    code: int
    code_dims: int


def layout_for(model: DiffusionTransformer, dim: int) -> Layout:
    shape = model.shape
    hd = shape.head_dim
    static = _static_pairs(shape.rope_theta, hd)
    rank = 2 * len(static)
    code = 1 + 3 * dim + 4
    if shape.n_layers < 2 or shape.n_heads < 3 or shape.hidden - code < 16 or dim > hd:
        raise RecipeError("the demo model needs 2 layers, 3 heads, head_dim >= the word-vector "
                          "width and room for a 16-wide code block")
    if rank < 8:
        raise RecipeError("rope_theta too small: too few static rotary pairs for the match")
    return Layout(hd, dim, rank, 1, 1 + dim, 1 + 2 * dim, code - 4, code - 3, code - 2,
                  code - 1, code, shape.hidden - code)


def _theta(base: float, hd: int, f: int) -> float:
    return float(base ** (-2 * f / hd))


def _static_pairs(base: float, hd: int) -> list[int]:
    """Rotary pairs that barely turn across a canvas, less the slowest (kept for biases)."""
    return [f for f in range(POSITION_PAIRS, hd // 2 - 1)
            if _theta(base, hd, f) * KERNEL_SPAN < STATIC_TURN]


def fit_kernel(base: float, head_dim: int, targets: Sequence[int], *, steps: int = 3000,
               seed: int = 0) -> Kernel:
    """Amplitudes and phases of the fastest rotary pairs whose softmax over offsets puts its
    mass on `targets` (a fitted bump; its exact weights are what the encoder then uses)."""
    generator = torch.Generator().manual_seed(seed)
    thetas = torch.tensor([_theta(base, head_dim, f) for f in range(POSITION_PAIRS)])
    offsets = torch.arange(-KERNEL_SPAN, KERNEL_SPAN + 1)
    amplitude = torch.nn.Parameter(3.0 + 0.1 * torch.randn(POSITION_PAIRS, generator=generator))
    phase = torch.nn.Parameter(torch.zeros(POSITION_PAIRS))
    optimizer = torch.optim.Adam([amplitude, phase], lr=0.05)
    index = torch.tensor([t + KERNEL_SPAN for t in targets])
    for _ in range(steps):
        kernel = Kernel(amplitude, phase, thetas)
        logp = kernel.scores(offsets).log_softmax(0)[index]
        loss = -logp.mean() + 0.1 * (logp - logp.mean()).pow(2).sum()  # even over the targets
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return Kernel(amplitude.detach(), phase.detach(), thetas)


def _bags(rows: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor, Tensor]:
    """Flat token ids, offsets and which bag each flat position belongs to."""
    flat = torch.tensor([t for row in rows for t in row], dtype=torch.long)
    offsets = torch.tensor([0] + [len(row) for row in rows[:-1]], dtype=torch.long).cumsum(0)
    index = torch.zeros(len(flat), dtype=torch.long)
    index[offsets[1:]] = 1
    return flat, offsets, index.cumsum(0)


def train_word_vectors(
    documents: Sequence[Sequence[int]],
    labels: Sequence[int],
    label_bags: Sequence[Sequence[tuple[int, float]]],
    validation: tuple[Sequence[Sequence[int]], Sequence[int]],
    *,
    vocab: int,
    dim: int,
    rank: int,
    zero_tokens: Sequence[int],
    epochs: int,
    seed: int,
    batch: int = 256,
    lr: float = 3e-3,
) -> WordVectors:
    """Fit the dual encoder: softmax over every label for each training document. A label is
    the weighted sum of its bag's vectors (token, weight); `zero_tokens` (the code tokens) keep
    the zero vector."""
    if any(len(row) == 0 for row in (*documents, *label_bags)):
        raise RecipeError("every document and label needs at least one token")
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.nn.Parameter(torch.randn(vocab, dim, generator=generator) * 0.1)
    doc_map = torch.nn.Parameter(torch.randn(dim, rank, generator=generator) / math.sqrt(dim))
    label_map = torch.nn.Parameter(torch.randn(dim, rank, generator=generator) / math.sqrt(dim))
    temperature = torch.nn.Parameter(torch.tensor(10.0))
    salience = torch.nn.Parameter(torch.zeros(dim))
    optimizer = torch.optim.Adam([vectors, doc_map, label_map, temperature, salience], lr=lr)
    keep = torch.ones(vocab, 1)
    keep[list(zero_tokens)] = 0.0
    bag_tokens = torch.tensor([t for bag in label_bags for t, _ in bag])
    bag_weights = torch.tensor([w for bag in label_bags for _, w in bag])
    bag_index = torch.tensor([i for i, bag in enumerate(label_bags) for _ in bag])

    def unit() -> Tensor:
        return F.normalize(vectors, dim=-1) * keep

    def scores(rows: Sequence[Sequence[int]]) -> Tensor:
        u = unit()
        flat, _, index = _bags(rows)
        weights = (u[flat] @ salience).exp()
        total = torch.zeros(len(rows), dim).index_add_(0, index, u[flat] * weights[:, None])
        docs = F.normalize(total, dim=-1)  # the pooled average, up to its scale
        names = torch.zeros(len(label_bags), dim).index_add_(
            0, bag_index, u[bag_tokens] * bag_weights[:, None])
        return temperature * (docs @ doc_map) @ (names @ label_map).T

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
        return WordVectors(unit(), doc_map.detach().clone(), label_map.detach().clone(),
                           salience.detach().clone(), float(temperature), accuracy)


def label_bags(ids: Sequence[int], code_positions: Sequence[int],
               kernel: Kernel) -> list[list[tuple[int, float]]]:
    """What the names head pools at each listed code of the canvas `ids`: (token, weight)."""
    near = kernel.weights()
    return [[(ids[c + d], w) for d, w in near.items() if 0 <= c + d < len(ids)]
            for c in code_positions]


def context_of(words: WordVectors, tokens: Sequence[int]) -> tuple[Tensor, float]:
    """The pooled content (sum of weight * vector) and mass of the fixed canvas tokens (the
    instruction, the full listing, the scaffold; not the document, not the slot)."""
    u = words.vectors[list(tokens)]
    weights = (u @ words.salience).exp()
    return (u * weights[:, None]).sum(0), float(weights.sum())


@torch.no_grad()
def wire(
    model: DiffusionTransformer,
    words: WordVectors,
    *,
    names: Kernel,
    next_token: Kernel,
    context: tuple[Tensor, float],
    code_tokens: Sequence[int],
    colon_tokens: Sequence[int],
    mask_id: int,
    generator: torch.Generator,
    match_scale: float = 100.0,
    code_bias: float = 50.0,
    head_scale: float = 10.0,
) -> Layout:
    """Write the starting configuration into `model`; returns the layout it used."""
    dim = words.vectors.shape[1]
    lay = layout_for(model, dim)
    hd, vocab, hidden = lay.head_dim, model.shape.vocab_size, model.shape.hidden
    if tuple(words.vectors.shape) != (vocab, dim) or words.doc_map.shape[1] > lay.rank:
        raise RecipeError(f"word vectors must be [{vocab}, {dim}] with rank <= {lay.rank}")
    embed = torch.zeros(vocab, hidden)
    embed[:, 0] = CONSTANT
    embed[:, lay.words : lay.words + dim] = words.vectors * WORD_NORM
    embed[:, lay.logw] = words.vectors @ words.salience
    embed[list(code_tokens), lay.is_code] = 1.0
    embed[list(colon_tokens), lay.is_colon] = 1.0
    codes = F.normalize(torch.randn(vocab, lay.code_dims, generator=generator), dim=-1)
    embed[:, lay.code :] = codes * CODE_NORM
    # The answer slot: its own pooled value cancels the fixed canvas tokens' content.
    content, mass = context
    embed[mask_id, lay.words : lay.words + dim] = -content * WORD_NORM / mass
    embed[mask_id, lay.logw] = math.log(mass)
    embed[mask_id, lay.code :] = 0.0
    model.embed.weight.copy_(embed)
    rms = math.sqrt((CONSTANT**2 + WORD_NORM**2 + CODE_NORM**2) / hidden)
    head = torch.zeros(vocab, hidden)
    head[:, lay.code :] = codes * head_scale
    model.head.weight.copy_(head)

    # RMSNorm gains bring the normalised constant down to 1, so that the weights reading it
    # are as large as its effect and training moves them no faster than the others.
    unit_constant = rms / CONSTANT
    for norm in (*(layer.attn_norm for layer in model.layers),
                 *(layer.mlp_norm for layer in model.layers), model.norm):
        norm.weight[0] = unit_constant
    half, scale = hd // 2, math.sqrt(hd)
    first, last = model.layers[0], model.layers[1]
    for layer in model.layers:
        layer.o.weight.zero_()
        layer.down.weight.zero_()
    for block in (first.q, first.k, first.v, last.q, last.k, last.v):
        block.weight.zero_()
    slow = half - 1  # a static pair (the slowest)
    # Layer 0, head 0: pooling score = logw (constant query, logw key, static pair).
    first.q.weight[slow, 0] = 1.0 / unit_constant
    first.k.weight[slow, lay.logw] = scale * rms**2 / CONSTANT
    _copy(first, 0, lay.words, lay.document, dim, hd, 1.0)
    # Layer 0, heads 1 and 2: position kernels (constant query and key on the fast pairs).
    for head_index, kernel in ((1, names), (2, next_token)):
        base = head_index * hd
        for f in range(POSITION_PAIRS):
            first.q.weight[base + f, 0] = 1.0 / unit_constant
            size = float(kernel.amplitude[f]) * scale * rms**2 / CONSTANT**2 / unit_constant
            first.k.weight[base + f, 0] = size * math.cos(float(kernel.phase[f]))
            first.k.weight[base + f + half, 0] = size * math.sin(float(kernel.phase[f]))
    _copy(first, 1, lay.words, lay.label, dim, hd, 1.0)
    first.v.weight[2 * hd, lay.is_colon] = 1.0
    first.o.weight[lay.next_colon, 2 * hd] = rms
    # Layer 1, head 0: match on the static pairs (document query, label key) plus the bias.
    static = _static_pairs(model.shape.rope_theta, hd)
    rows = [f for f in static] + [f + half for f in static]
    rank = words.doc_map.shape[1]
    gain = math.sqrt(match_scale * words.scale * scale) * rms**2 / WORD_NORM
    last.q.weight[rows[:rank], lay.document : lay.document + dim] = words.doc_map.T * gain
    last.k.weight[rows[:rank], lay.label : lay.label + dim] = words.label_map.T * gain
    last.q.weight[slow, 0] = 1.0 / unit_constant
    bias = code_bias * scale * rms**2 / CONSTANT
    last.k.weight[slow, lay.is_code] = bias
    last.k.weight[slow, lay.next_colon] = bias
    _copy(last, 0, lay.code, lay.code, lay.code_dims, hd, rms)
    return lay


def _copy(block: torch.nn.Module, head: int, source: int, target: int, width: int, hd: int,
          gain: float) -> None:
    """Head `head` of `block` moves the `width` coordinates at `source` to `target`."""
    rows = slice(head * hd, head * hd + width)
    block.v.weight[rows, source : source + width] = torch.eye(width)
    block.o.weight[target : target + width, rows] = torch.eye(width) * gain
