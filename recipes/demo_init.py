"""How the demo model starts: a bag-of-words dual encoder, written exactly into a four-layer start.

A small transformer trained from random weights on a 2-core CPU does not find, within the hour
the issue allows, the two-hop lookup the task needs (pool the document, pool each listed
label's name, match the two, copy the matching line's code). The recipe therefore computes a
starting point whose forward pass *is* a dual encoder fitted on the train split, and trains
every weight end to end from there (`recipes.train_demo`).

1. Position kernels (`fit_kernel`, `region_kernel`): attention from a listed code to the first
   tokens of its own name (offsets 3 to 5: `CODE`, `:`, `Ġ`, name...), from any token to the
   next one, and from any token to a marker token after it (the document header's).
2. `fit_curve`: a SiLU-gated MLP's approximation of log(x), so that the model can weight each
   occurrence of a token by 1 / (1 + its count in the document): a token repeated ten times
   counts about once (as sublinear term frequencies do), which an attention average alone
   cannot do.
3. `train_word_vectors`: the dual encoder, simulating exactly what the model computes. A
   document is its region of the canvas (`Region`: from the header's marker to the end, the
   answer slot left out); each token is a unit vector, pooled with weight exp(salience . vector
   + the token's bias + curve(1 / (1 + count))). A label is the label vectors (a table of their
   own) around its code pooled with the names kernel's own weights, code tokens counting as
   zero there, so a label does not depend on the codes drawn. The score is a low-rank bilinear
   form.
4. `wire`: the residual stream is laid out in blocks (`Layout`).
   - Layer 0: head 0 marks tokens before the marker (`before`: the instruction and the
     listing); head 1 pools the label words after each code into `label`; head 2 marks tokens
     followed by `:`.
   - Layer 1: head 0 attends from each token to the other occurrences of the same token in the
     document and to the answer slot (a sink): its weight on the slot is 1 / (1 + count); the
     MLP turns that into the log weight (`fit_curve`).
   - Layer 2: head 0 pools `words` into `document` with the weights above, leaving out the
     tokens before the marker and the slot.
   - The last layer: head 0 points from the slot to the listed code whose `label` best matches
     the `document` (low-rank match on rotary pairs that barely turn over a canvas, plus a bias
     for code tokens followed by `:` before the marker) and copies that position's `code`
     vector, which the LM head reads back as the code's token.
   A large constant coordinate keeps every token's RMS nearly equal, so RMSNorm scales all
   positions alike.

Rotary bases: the demo config uses a large `rope_theta` so that most rotary pairs are static
over a canvas (content matching) and a few turn fast enough for the position kernels.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.models import DiffusionTransformer
from recipes.errors import RecipeError

__all__ = [
    "Curve",
    "Kernel",
    "Layout",
    "Region",
    "WordVectors",
    "find_region",
    "fit_curve",
    "fit_kernel",
    "label_bags",
    "layout_for",
    "region_kernel",
    "train_word_vectors",
    "wire",
]

NAME_OFFSETS = (3, 4, 5)  # a listing line is `CODE` `:` `Ġ` name...: where its name starts
KERNEL_SPAN = 700  # kernels are fitted over offsets -span..span
POSITION_PAIRS = 8  # the fastest rotary pairs carry the position kernels
STATIC_TURN = 0.02  # a static pair turns by less than this (radians) across a canvas
REGION_REACH = 900  # the region head tells before from after the marker up to this distance
REGION_EDGE = 16.0  # its score one token from the marker: e^16 outweighs a whole canvas
SAME_TOKEN = 20.0  # the counting head's score between two occurrences of a token (and the sink)
EXCLUDE = 60.0  # score taken off keys outside the document (the context, the answer slot)
MAX_COUNT = 1100  # counts up to this are fitted by the curve (a canvas is shorter)
CURVE_UNITS = 32
CONSTANT = 40.0  # the constant coordinate: dominates every token's RMS
WORD_NORM = 4.0
CODE_NORM = 4.0
LOGW_UNIT = 0.1  # `logw` holds the log weight times this: small, so it barely moves the RMS


@dataclass(frozen=True)
class Kernel:
    """Attention over relative offsets (key - query) from the rotary pairs `pairs`:
    score(d) = sum_f a_f cos(theta_f d + phase_f)."""

    amplitude: Tensor  # [n]
    phase: Tensor  # [n]
    thetas: Tensor  # [n]
    pairs: tuple[int, ...] = tuple(range(POSITION_PAIRS))

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
class Curve:
    """h(x) = sum_k out_k silu(slope_k x + shift_k): the MLP's approximation of log(x)."""

    slope: Tensor  # [units]
    shift: Tensor
    out: Tensor

    def __call__(self, x: Tensor) -> Tensor:
        x = x.double()
        return (F.silu(x[..., None] * self.slope + self.shift) * self.out).sum(-1)

    def by_count(self) -> Tensor:
        """h(1 / (1 + n)) for n = 0..MAX_COUNT (index n): what a token seen n times adds to
        its log weight."""
        n = torch.arange(MAX_COUNT + 1, dtype=torch.float64)
        return self(1.0 / (1.0 + n)).float()


@dataclass(frozen=True)
class Region:
    """The part of a canvas the document pool reads: from the last `marker` on. `header`
    runs from the header's marker to the document; `tail` follows the document (the answer
    slot left out)."""

    marker: int
    header: tuple[int, ...]
    tail: tuple[int, ...]

    def tokens(self, document: Sequence[int]) -> list[int]:
        row = [*self.header, *document, *self.tail]
        last = max(i for i, t in enumerate(row) if t == self.marker)
        return row[last:]


def find_region(ids: Sequence[int], document: tuple[int, int], slot: int,
                documents: Sequence[Sequence[int]], header: int) -> Region:
    """The region of the canvas `ids` (document at [start, end)). Its marker is a token of the
    document's header (the `header` tokens before it) that occurs neither later in the header
    nor after the document, the one rarest in `documents`: tokens before its last occurrence
    are context (an occurrence inside a document moves the region's start there)."""
    start, end = document
    later = [t for i, t in enumerate(ids[end:], end) if i != slot]
    seen = Counter(t for row in documents for t in set(row))
    near = [i for i in range(max(0, start - header), start)
            if ids[i] not in (*ids[i + 1 : start], *later)]
    if not near:
        raise RecipeError("the document header has no token of its own to mark the region")
    at = min(near, key=lambda i: (seen[ids[i]], -i))
    return Region(ids[at], tuple(ids[at:start]), tuple(later))


@dataclass(frozen=True)
class WordVectors:
    vectors: Tensor  # [vocab, dim]: unit rows, what documents pool
    label_vectors: Tensor  # [vocab, dim]: unit rows, zero for code tokens: what labels pool
    doc_map: Tensor  # [dim, rank]: score = (doc @ doc_map) . (label @ label_map)
    label_map: Tensor  # [dim, rank]
    salience: Tensor  # [dim] and
    bias: Tensor  # [vocab]: pooling weight exp(salience . vector + bias + curve(count))
    scale: float  # the encoder's temperature (for normalised documents)
    accuracy: float  # on the validation documents given to `train_word_vectors`


@dataclass(frozen=True)
class Layout:
    """Offsets of the residual-stream blocks (see the module docstring)."""

    head_dim: int
    dim: int  # word-vector width
    words: int
    label_words: int  # the label vectors (code tokens at zero): what labels pool
    document: int
    label: int
    logw: int  # log pooling weight of the token, times LOGW_UNIT
    is_code: int
    is_colon: int
    next_colon: int
    before: int  # the token comes before the marker
    sink: int  # the counting head's weight on the answer slot: 1 / (1 + count)
    is_mask: int
    is_marker: int
    filler: int  # gives the answer slot the RMS of a token with content
    code: int
    code_dims: int
    static_rows: tuple[int, ...]  # head rows on the static rotary pairs (both halves)

    @property
    def rank(self) -> int:
        """The match rank: one per static row."""
        return len(self.static_rows)


_FLAGS = ("logw", "is_code", "is_colon", "next_colon", "before", "sink", "is_mask", "is_marker",
          "filler")


def layout_for(model: DiffusionTransformer, dim: int) -> Layout:
    shape = model.shape
    hd = shape.head_dim
    static = _static_pairs(shape.rope_theta, hd)
    rank = 2 * len(static)
    first_flag = 1 + 4 * dim
    code = first_flag + len(_FLAGS)
    if shape.n_layers < 4 or shape.n_heads < 3 or shape.hidden - code < 16 or dim > hd:
        raise RecipeError("the demo model needs 4 layers, 3 heads, head_dim >= the word-vector "
                          "width and room for a 16-wide code block")
    if rank < 8:
        raise RecipeError("rope_theta too small: too few static rotary pairs for the match")
    flags = {name: first_flag + i for i, name in enumerate(_FLAGS)}
    return Layout(hd, dim, 1, 1 + dim, 1 + 2 * dim, 1 + 3 * dim, code=code,
                  code_dims=min(shape.hidden - code, rank),
                  static_rows=(*static, *(f + hd // 2 for f in static)), **flags)


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


def region_kernel(base: float, head_dim: int) -> Kernel:
    """One rotary pair scoring 2 E sin(theta d) / sin(theta) - E cos(theta d), E =
    REGION_EDGE: E one token before the marker and more further before, -E on the marker
    itself (it is not before itself), below -3 E after it; up to REGION_REACH tokens away."""
    f = min(f for f in range(head_dim // 2) if _theta(base, head_dim, f) * REGION_REACH <= 3.0)
    theta = _theta(base, head_dim, f)
    a, b = 2 * REGION_EDGE / math.sin(theta), REGION_EDGE  # a sin(x) - b cos(x)
    return Kernel(torch.tensor([math.hypot(a, b)]), torch.tensor([math.atan2(-a, -b)]),
                  torch.tensor([theta]), (f,))


def fit_curve(units: int = CURVE_UNITS) -> Curve:
    """Hinges silu(4 (1 - x / t)) at knots t = 1 / (1 + n), n spread geometrically up to
    MAX_COUNT, plus a constant unit; least squares (weighted to the small counts that are
    common) against log(x) at every x = 1 / (1 + n)."""
    n = torch.arange(1, MAX_COUNT + 1, dtype=torch.float64)
    x = 1.0 / (1.0 + n)
    knots = torch.unique(torch.round(torch.logspace(0, math.log10(MAX_COUNT), units - 1,
                                                    dtype=torch.float64)))
    t = 1.0 / (1.0 + knots)
    sharp = 4.0
    slope = torch.cat([-sharp / t, torch.zeros(1, dtype=torch.float64)])
    shift = torch.cat([torch.full_like(t, sharp), torch.tensor([10.0], dtype=torch.float64)])
    features = F.silu(x[:, None] * slope + shift)
    weight = n.rsqrt()[:, None]
    out = torch.linalg.lstsq(features * weight, torch.log(x)[:, None] * weight).solution[:, 0]
    return Curve(slope, shift, out)


def _bags(rows: Sequence[Sequence[int]], by_count: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Flat token ids, which bag each belongs to, and each one's count term."""
    flat: list[int] = []
    index: list[int] = []
    counted: list[int] = []
    for i, row in enumerate(rows):
        counts = Counter(row)
        flat.extend(row)
        index.extend([i] * len(row))
        counted.extend(min(counts[t], MAX_COUNT) for t in row)
    return torch.tensor(flat), torch.tensor(index), by_count[torch.tensor(counted)]


def train_word_vectors(
    documents: Sequence[Sequence[int]],
    labels: Sequence[int],
    label_bags: Sequence[Sequence[tuple[int, float]]],
    validation: tuple[Sequence[Sequence[int]], Sequence[int]],
    *,
    region: Region,
    curve: Curve,
    vocab: int,
    dim: int,
    rank: int,
    zero_tokens: Sequence[int],
    epochs: int,
    seed: int,
    dropout: float = 0.0,
    batch: int = 256,
    lr: float = 3e-3,
) -> WordVectors:
    """Fit the dual encoder: softmax over every label for each training document (its tokens
    dropped with probability `dropout`, then placed in `region`). A label is the weighted sum
    of its bag's label vectors (token, weight), `zero_tokens` (the code tokens) counting as
    zero. Adam with a cosine learning rate."""
    if any(len(row) == 0 for row in (*documents, *label_bags)):
        raise RecipeError("every document and label needs at least one token")
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.nn.Parameter(torch.randn(vocab, dim, generator=generator) * 0.1)
    doc_map = torch.nn.Parameter(torch.randn(dim, rank, generator=generator) / math.sqrt(dim))
    label_map = torch.nn.Parameter(torch.randn(dim, rank, generator=generator) / math.sqrt(dim))
    label_vectors = torch.nn.Parameter(torch.randn(vocab, dim, generator=generator) * 0.1)
    temperature = torch.nn.Parameter(torch.tensor(10.0))
    salience = torch.nn.Parameter(torch.zeros(dim))
    bias = torch.nn.Parameter(torch.zeros(vocab))
    optimizer = torch.optim.Adam(
        [vectors, doc_map, label_map, label_vectors, temperature, salience, bias], lr=lr)
    total = max(1, epochs * math.ceil(len(documents) / batch))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    keep = torch.ones(vocab, 1)
    keep[list(zero_tokens)] = 0.0

    def _label_table() -> Tensor:
        return F.normalize(label_vectors, dim=-1) * keep

    bag_tokens = torch.tensor([t for bag in label_bags for t, _ in bag])
    bag_weights = torch.tensor([w for bag in label_bags for _, w in bag])
    bag_index = torch.tensor([i for i, bag in enumerate(label_bags) for _ in bag])
    by_count = curve.by_count()

    def scores(bags: tuple[Tensor, Tensor, Tensor], n: int) -> Tensor:
        u = F.normalize(vectors, dim=-1)
        flat, index, counted = bags
        weights = (u[flat] @ salience + bias[flat] + counted).exp()
        pooled = torch.zeros(n, dim).index_add_(0, index, u[flat] * weights[:, None])
        docs = F.normalize(pooled, dim=-1)  # the pooled average, up to its scale
        names = torch.zeros(len(label_bags), dim).index_add_(
            0, bag_index, _label_table()[bag_tokens] * bag_weights[:, None])
        return temperature * (docs @ doc_map) @ (names @ label_map).T

    order = list(range(len(documents)))
    rng = random.Random(seed)
    for _ in range(epochs):
        rng.shuffle(order)
        for start in range(0, len(order), batch):
            picks = order[start : start + batch]
            rows = [region.tokens([t for t in documents[i] if rng.random() >= dropout]
                                  or documents[i][:1]) for i in picks]
            target = torch.tensor([labels[i] for i in picks])
            loss = F.cross_entropy(scores(_bags(rows, by_count), len(rows)), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        rows, gold = validation
        bags = _bags([region.tokens(row) for row in rows], by_count)
        predicted = scores(bags, len(rows)).argmax(-1)
        accuracy = float((predicted == torch.tensor(list(gold))).float().mean())
        return WordVectors(F.normalize(vectors, dim=-1), _label_table(),
                           doc_map.detach().clone(), label_map.detach().clone(),
                           salience.detach().clone(), bias.detach().clone(),
                           float(temperature), accuracy)


def label_bags(ids: Sequence[int], code_positions: Sequence[int],
               kernel: Kernel) -> list[list[tuple[int, float]]]:
    """What the names head pools at each listed code of the canvas `ids`: (token, weight)."""
    near = kernel.weights()
    return [[(ids[c + d], w) for d, w in near.items() if 0 <= c + d < len(ids)]
            for c in code_positions]


@dataclass(frozen=True)
class _Scales:
    """How a weight reads the normalised residual (see `wire`)."""

    rms: float  # every token's RMS, from the embedding
    unit: float  # the constant coordinate's RMSNorm gain: the normalised constant is 1
    head: float  # sqrt(head_dim): attention divides scores by it

    def key(self, score: float) -> float:
        """Key weight on a raw coordinate, for a query reading the constant: adds `score`
        per unit of the coordinate."""
        return score * self.head * self.rms**2 / CONSTANT

    @property
    def query(self) -> float:
        return 1.0 / self.unit


@torch.no_grad()
def wire(
    model: DiffusionTransformer,
    words: WordVectors,
    *,
    names: Kernel,
    next_token: Kernel,
    region: Kernel,
    curve: Curve,
    code_tokens: Sequence[int],
    colon_tokens: Sequence[int],
    marker_id: int,
    mask_id: int,
    generator: torch.Generator,
    match_scale: float = 10.0,
    code_bias: float = 200.0,
    head_scale: float = 10.0,
) -> Layout:
    """Write the starting configuration into `model`; returns the layout it used."""
    dim = words.vectors.shape[1]
    lay = layout_for(model, dim)
    vocab, hidden = model.shape.vocab_size, model.shape.hidden
    if tuple(words.vectors.shape) != (vocab, dim) or words.doc_map.shape[1] > lay.rank:
        raise RecipeError(f"word vectors must be [{vocab}, {dim}] with rank <= {lay.rank}")
    if len(curve.out) > model.shape.intermediate:
        raise RecipeError("the MLP is narrower than the count curve")
    rms = math.sqrt((CONSTANT**2 + 2 * WORD_NORM**2 + CODE_NORM**2) / hidden)
    s = _Scales(rms, rms / CONSTANT, math.sqrt(lay.head_dim))
    codes = _embed(model, words, lay, code_tokens, colon_tokens, marker_id, mask_id, generator)
    head = torch.zeros(vocab, hidden)
    head[:, lay.code : lay.code + lay.code_dims] = codes * head_scale
    model.head.weight.copy_(head)
    # RMSNorm gains bring the normalised constant down to 1, so that the weights reading it
    # are as large as its effect and training moves them no faster than the others.
    for norm in (*(layer.attn_norm for layer in model.layers),
                 *(layer.mlp_norm for layer in model.layers), model.norm):
        norm.weight[0] = s.unit
    for layer in model.layers:
        for block in (layer.q, layer.k, layer.v, layer.o, layer.gate, layer.up, layer.down):
            block.weight.zero_()
    layers = model.layers
    _wire_markers(layers[0], lay, s, names=names, next_token=next_token, region=region)
    _wire_counts(layers[1], lay, s, curve)
    _wire_pool(layers[-2], lay, s)
    _wire_match(layers[-1], lay, s, words, model.shape.rope_theta, match_scale, code_bias)
    return lay


def _embed(model: DiffusionTransformer, words: WordVectors, lay: Layout,
           code_tokens: Sequence[int], colon_tokens: Sequence[int], marker_id: int,
           mask_id: int, generator: torch.Generator) -> Tensor:
    """The embedding; returns the code vectors (unit rows, one per token) it holds."""
    vocab, hidden, dim = model.shape.vocab_size, model.shape.hidden, lay.dim
    embed = torch.zeros(vocab, hidden)
    embed[:, 0] = CONSTANT
    embed[:, lay.words : lay.words + dim] = words.vectors * WORD_NORM
    embed[:, lay.label_words : lay.label_words + dim] = words.label_vectors * WORD_NORM
    embed[:, lay.logw] = (words.vectors @ words.salience + words.bias) * LOGW_UNIT
    embed[list(code_tokens), lay.is_code] = 1.0
    embed[list(colon_tokens), lay.is_colon] = 1.0
    embed[marker_id, lay.is_marker] = 1.0
    codes = F.normalize(torch.randn(vocab, lay.code_dims, generator=generator), dim=-1)
    embed[:, lay.code : lay.code + lay.code_dims] = codes * CODE_NORM
    # The answer slot: no content, no identity; it is the counting head's sink.
    embed[mask_id, 1 : lay.logw + 1] = 0.0
    embed[mask_id, lay.code :] = 0.0
    embed[mask_id, lay.is_mask] = 1.0
    embed[mask_id, lay.filler] = math.sqrt(2 * WORD_NORM**2 + CODE_NORM**2)
    model.embed.weight.copy_(embed)
    return codes


def _wire_markers(block: torch.nn.Module, lay: Layout, s: _Scales, *, names: Kernel,
                  next_token: Kernel, region: Kernel) -> None:
    """Layer 0: head 0 `before` (attention on a marker after the token), head 1 the label
    words after each code, head 2 `next_colon`."""
    hd = lay.head_dim
    _kernel_head(block, 0, region, lay.is_marker, s, hd)
    block.v.weight[0, lay.is_marker] = 1.0
    block.o.weight[lay.before, 0] = s.rms
    _kernel_head(block, 1, names, 0, s, hd)
    _copy(block, 1, lay.label_words, lay.label, lay.dim, hd, 1.0)
    _kernel_head(block, 2, next_token, 0, s, hd)
    block.v.weight[2 * hd, lay.is_colon] = 1.0
    block.o.weight[lay.next_colon, 2 * hd] = s.rms


def _kernel_head(block: torch.nn.Module, head: int, kernel: Kernel, key: int, s: _Scales,
                 hd: int) -> None:
    """Constant query; the key reads coordinate `key` (0: the constant) on the kernel's
    pairs, so that the score is the kernel's."""
    base, half = head * hd, hd // 2
    for f, a, phase in zip(kernel.pairs, kernel.amplitude, kernel.phase, strict=True):
        block.q.weight[base + f, 0] = s.query
        size = s.key(float(a)) / (s.rms if key == 0 else 1.0)  # the normalised constant is 1
        block.k.weight[base + f, key] = size * math.cos(float(phase))
        block.k.weight[base + f + half, key] = size * math.sin(float(phase))


def _wire_counts(block: torch.nn.Module, lay: Layout, s: _Scales, curve: Curve) -> None:
    """Layer 1: head 0 attends to the same token (code-vector identity on the static pairs)
    and to the answer slot, never to tokens before the marker; its weight on the slot is
    1 / (1 + count). The MLP adds curve(that) to `logw`."""
    slow = lay.head_dim // 2 - 1
    rows = list(lay.static_rows[: lay.code_dims])
    gain = math.sqrt(SAME_TOKEN * s.head) * s.rms / CODE_NORM
    identity = torch.eye(lay.code_dims) * gain
    block.q.weight[rows, lay.code : lay.code + lay.code_dims] = identity
    block.k.weight[rows, lay.code : lay.code + lay.code_dims] = identity
    block.q.weight[slow, 0] = s.query
    block.k.weight[slow, lay.is_mask] = s.key(SAME_TOKEN)
    block.k.weight[slow, lay.before] = s.key(-EXCLUDE)
    block.v.weight[0, lay.is_mask] = 1.0
    block.o.weight[lay.sink, 0] = s.rms
    units = len(curve.out)
    block.gate.weight[:units, lay.sink] = curve.slope.float() * s.rms
    block.gate.weight[:units, 0] = curve.shift.float()
    block.up.weight[:units, 0] = 1.0
    block.down.weight[lay.logw, :units] = curve.out.float() * LOGW_UNIT


def _wire_pool(block: torch.nn.Module, lay: Layout, s: _Scales) -> None:
    """Layer 2: head 0 pools `words` with score `logw`, leaving out the context and the slot."""
    slow = lay.head_dim // 2 - 1
    block.q.weight[slow, 0] = s.query
    block.k.weight[slow, lay.logw] = s.key(1.0 / LOGW_UNIT)
    block.k.weight[slow, lay.before] = s.key(-EXCLUDE)
    block.k.weight[slow, lay.is_mask] = s.key(-EXCLUDE)
    _copy(block, 0, lay.words, lay.document, lay.dim, lay.head_dim, 1.0)


def _wire_match(block: torch.nn.Module, lay: Layout, s: _Scales, words: WordVectors,
                rope_theta: float, match_scale: float, code_bias: float) -> None:
    """The last layer: head 0 matches `document` (query) to `label` (key) on the static
    pairs, plus a bias for each of: a code token, followed by `:`, before the marker (only the
    listed codes have all three); copies the `code` block."""
    slow = lay.head_dim // 2 - 1
    rows = list(lay.static_rows)
    rank = words.doc_map.shape[1]
    gain = math.sqrt(match_scale * words.scale * s.head) * s.rms**2 / WORD_NORM
    block.q.weight[rows[:rank], lay.document : lay.document + lay.dim] = words.doc_map.T * gain
    block.k.weight[rows[:rank], lay.label : lay.label + lay.dim] = words.label_map.T * gain
    block.q.weight[slow, 0] = s.query
    block.k.weight[slow, lay.is_code] = s.key(code_bias)
    block.k.weight[slow, lay.next_colon] = s.key(code_bias)
    block.k.weight[slow, lay.before] = s.key(code_bias)
    _copy(block, 0, lay.code, lay.code, lay.code_dims, lay.head_dim, s.rms)


def _copy(block: torch.nn.Module, head: int, source: int, target: int, width: int, hd: int,
          gain: float) -> None:
    """Head `head` of `block` moves the `width` coordinates at `source` to `target`."""
    rows = slice(head * hd, head * hd + width)
    block.v.weight[rows, source : source + width] = torch.eye(width)
    block.o.weight[target : target + width, rows] = torch.eye(width) * gain
