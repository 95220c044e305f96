"""Decoding modes as per-facet state machines over answer-slot distributions.

Each decoder asks for rows (a canvas, possibly with some slots filled, plus the slot positions to
read) and is updated with the log-probabilities, normalised over the full vocabulary, of each
read's candidate tokens. The engine batches the rows of many documents into one forward pass.

- diffusion: one pass; exact when codes are single tokens or every chosen token's probability
  exceeds 1 - 1/(L+1) (Fast-dLLM, Thm. 1); otherwise commit the most confident slot and
  re-score, at most L passes.
- autoregressive: the exact chain rule left to right over the label trie, one batched pass per
  depth; every label's joint probability is computed, so the argmax is the exact one.
- self_speculative: the one-pass answer is a draft; one batched pass computes its exact chain-rule
  probability and the exact probability of every branch off its path. If the draft's joint
  probability is at least every branch's upper bound, it is the exact argmax; otherwise fall
  back to autoregressive.

Each facet is decoded given the document with the other facets' slots masked, so facets are
independent of their order in the canvas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

import torch
from torch import Tensor

from engine.canvas import Canvas
from engine.taxonomy import CompiledFacet

__all__ = ["DocumentDecoder", "FacetResult", "Mode", "Read", "Row"]


class Mode(StrEnum):
    DIFFUSION = "diffusion"
    AUTOREGRESSIVE = "autoregressive"
    SELF_SPECULATIVE = "self_speculative"


@dataclass(frozen=True)
class Read:
    position: int  # where the hidden state is read (Dream's shift already applied)
    candidates: Tensor  # [K] token ids whose log-probabilities are wanted


@dataclass
class Row:
    ids: tuple[int, ...]
    reads: list[Read] = field(default_factory=list)


@dataclass(frozen=True)
class FacetResult:
    facet: str
    labels: list[tuple[int, float]]  # (label index, probability) chosen, most probable first
    exact: bool
    label_mass: float  # probability mass inside the label set (1 - this may abstain)


class FacetDecoder:
    """Shared plumbing: candidate indices per slot and the final selection."""

    def __init__(self, canvas: Canvas, facet: CompiledFacet, threshold: float) -> None:
        self.canvas, self.facet, self.threshold = canvas, facet, threshold
        self.slot_positions = canvas.slots[facet.name]
        self.candidates = [facet.candidates(s) for s in range(facet.slots)]
        # token_index[s][label] = index of the label's token at slot s within candidates[s]
        self.token_index = [
            torch.searchsorted(self.candidates[s], facet.tokens[:, s].contiguous())
            for s in range(facet.slots)
        ]
        self.result: FacetResult | None = None

    def read(self, slot: int) -> Read:
        return Read(self.canvas.read_position(self.slot_positions[slot]), self.candidates[slot])

    def filled(self, tokens: dict[int, int]) -> tuple[int, ...]:
        """The canvas with some of this facet's slots set to tokens (slot index -> token)."""
        ids = list(self.canvas.ids)
        for slot, token in tokens.items():
            ids[self.slot_positions[slot]] = token
        return tuple(ids)

    def label_logp(self, slot: int, logp: Tensor) -> Tensor:
        """[n_labels] log-probability of each label's token at `slot` under `logp` [K]."""
        return logp[self.token_index[slot]]

    def finish(self, scores: Tensor, exact: bool) -> None:
        """Normalise label scores (log joint probabilities) over the label set and choose."""
        mass = torch.logsumexp(scores, 0)
        probs = torch.exp(scores - mass)
        order = torch.argsort(probs, descending=True).tolist()
        if self.facet.multi:
            chosen = [(i, float(probs[i])) for i in order if probs[i] >= self.threshold]
        else:
            chosen = [(order[0], float(probs[order[0]]))]
        self.result = FacetResult(self.facet.name, chosen, exact, min(1.0, float(mass.exp())))

    @property
    def done(self) -> bool:
        return self.result is not None

    def rows(self) -> list[Row]:
        raise NotImplementedError

    def update(self, results: list[list[Tensor]]) -> None:
        raise NotImplementedError


class DiffusionFacet(FacetDecoder):
    def __init__(self, canvas: Canvas, facet: CompiledFacet, threshold: float) -> None:
        super().__init__(canvas, facet, threshold)
        self.committed: dict[int, tuple[int, Tensor]] = {}  # slot -> (token, logp at commit)

    def open_slots(self) -> list[int]:
        return [s for s in range(self.facet.slots) if s not in self.committed]

    def rows(self) -> list[Row]:
        tokens = {s: tok for s, (tok, _) in self.committed.items()}
        return [Row(self.filled(tokens), [self.read(s) for s in self.open_slots()])]

    def update(self, results: list[list[Tensor]]) -> None:
        dists = {s: lp for s, (_, lp) in self.committed.items()}
        dists.update(zip(self.open_slots(), results[0], strict=True))
        scores = sum(self.label_logp(s, dists[s]) for s in range(self.facet.slots))
        best = int(torch.argmax(scores))
        chosen = {s: float(self.label_logp(s, dists[s])[best].exp()) for s in dists}
        length = self.facet.slots
        if length == 1 or min(chosen.values()) > 1 - 1 / (length + 1):
            return self.finish(scores, exact=True)
        if len(self.open_slots()) == 1:
            return self.finish(scores, exact=False)
        slot = max(self.open_slots(), key=lambda s: chosen[s])
        self.committed[slot] = (int(self.facet.tokens[best, slot]), dists[slot])
        return None


class AutoregressiveFacet(FacetDecoder):
    def __init__(
        self, canvas: Canvas, facet: CompiledFacet, threshold: float, root: Tensor | None = None
    ) -> None:
        super().__init__(canvas, facet, threshold)
        self.logjoint = torch.zeros(len(facet.label_ids))
        self.depth = 0
        if root is not None:  # depth 0 is the all-masked canvas another mode already scored
            self.update([[root]])

    def rows(self) -> list[Row]:
        prefixes = self.facet.trie.prefixes[self.depth].tolist()
        return [
            Row(self.filled(dict(enumerate(p))), [self.read(self.depth)]) for p in prefixes
        ]

    def update(self, results: list[list[Tensor]]) -> None:
        node_logp = torch.stack([r[0] for r in results])  # [n_nodes, K]
        nodes = self.facet.trie.node_of_label[self.depth]
        self.logjoint += node_logp[nodes, self.token_index[self.depth]]
        self.depth += 1
        if self.depth == self.facet.slots:
            self.finish(self.logjoint, exact=True)


class SelfSpeculativeFacet(FacetDecoder):
    def __init__(self, canvas: Canvas, facet: CompiledFacet, threshold: float) -> None:
        super().__init__(canvas, facet, threshold)
        self.draft: list[int] | None = None  # draft label's tokens
        self.root: Tensor | None = None
        self.fallback: AutoregressiveFacet | None = None

    def rows(self) -> list[Row]:
        if self.fallback is not None:
            return self.fallback.rows()
        if self.draft is None:
            return [Row(self.filled({}), [self.read(s) for s in range(self.facet.slots)])]
        return [
            Row(self.filled(dict(enumerate(self.draft[:d]))), [self.read(d)])
            for d in range(1, self.facet.slots)
        ]

    def update(self, results: list[list[Tensor]]) -> None:
        if self.fallback is not None:
            self.fallback.update(results)
            self.result = self.fallback.result
        elif self.draft is None:
            self.take_draft(results[0])
        else:
            self.verify([r[0] for r in results])

    def take_draft(self, dists: list[Tensor]) -> None:
        scores = sum(self.label_logp(s, dists[s]) for s in range(self.facet.slots))
        if self.facet.slots == 1:
            return self.finish(scores, exact=True)  # the slot is the exact conditional
        self.root = dists[0]
        if self.facet.multi:  # a threshold set needs every label's exact probability
            return self.fall_back()
        self.draft = self.facet.tokens[int(torch.argmax(scores))].tolist()
        return None

    def verify(self, path: list[Tensor]) -> None:
        """path[d-1] = log p(slot d | draft[:d]) over candidates[d], for d = 1..L-1."""
        assert self.draft is not None and self.root is not None
        dists = [self.root, *path]
        tokens = self.facet.tokens
        prefix_logp, bounds = 0.0, []
        for d, logp in enumerate(dists):
            on_path = (tokens[:, :d] == torch.tensor(self.draft[:d])).all(1)
            for token in torch.unique(tokens[on_path, d]).tolist():
                if token != self.draft[d]:
                    index = torch.searchsorted(self.candidates[d], torch.tensor(token))
                    bounds.append(prefix_logp + float(logp[index]))
            index = torch.searchsorted(self.candidates[d], torch.tensor(self.draft[d]))
            prefix_logp += float(logp[index])
        if bounds and prefix_logp < max(bounds):
            return self.fall_back()
        # Accepted: the draft is the exact argmax. Its probability is normalised by an upper
        # bound of the label-set mass (every branch off the path at its exact bound).
        upper = math.exp(prefix_logp) + sum(math.exp(b) for b in bounds)
        label = next(i for i, row in enumerate(tokens.tolist()) if row == self.draft)
        probability = math.exp(prefix_logp) / upper
        self.result = FacetResult(self.facet.name, [(label, probability)], True, min(1.0, upper))
        return None

    def fall_back(self) -> None:
        self.fallback = AutoregressiveFacet(self.canvas, self.facet, self.threshold, self.root)


_DECODERS: dict[Mode, type[FacetDecoder]] = {
    Mode.DIFFUSION: DiffusionFacet,
    Mode.AUTOREGRESSIVE: AutoregressiveFacet,
    Mode.SELF_SPECULATIVE: SelfSpeculativeFacet,
}


class DocumentDecoder:
    """All facets of one document; rows with the same canvas are merged into one."""

    def __init__(
        self, canvas: Canvas, facets: tuple[CompiledFacet, ...], mode: Mode, threshold: float
    ) -> None:
        self.canvas, self.mode = canvas, mode
        self.facets = [_DECODERS[mode](canvas, f, threshold) for f in facets]
        self.forward_passes = 0
        self._routes: list[tuple[FacetDecoder, list[tuple[int, int, int]]]] = []

    @property
    def done(self) -> bool:
        return all(f.done for f in self.facets)

    def rows(self) -> list[Row]:
        merged: dict[tuple[int, ...], int] = {}  # canvas -> index in `rows`
        rows: list[Row] = []
        self._routes = []
        for decoder in self.facets:
            if decoder.done:
                continue
            route = []
            for row in decoder.rows():
                index = merged.setdefault(row.ids, len(rows))
                if index == len(rows):
                    rows.append(Row(row.ids))
                route.append((index, len(rows[index].reads), len(row.reads)))
                rows[index].reads.extend(row.reads)
            self._routes.append((decoder, route))
        return rows

    def update(self, results: list[list[Tensor]]) -> None:
        """results[row][read]: log-probs over that read's candidates."""
        self.forward_passes += 1
        for decoder, route in self._routes:
            decoder.update([results[row][start : start + n] for row, start, n in route])

    @property
    def exact(self) -> bool:
        return all(f.result is not None and f.result.exact for f in self.facets)

    def results(self) -> list[FacetResult]:
        return [f.result for f in self.facets if f.result is not None]
