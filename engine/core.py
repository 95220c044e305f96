"""EngineCore: owns the scheduler and the model runner; one step = schedule -> run -> update.

The engine process drives `step()`; tests and the bulk path may call `classify()`, which loops
over steps until the given documents are done.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.canvas import CanvasTemplate, PromptFormat, build_canvas, build_template
from engine.decoding import DocumentDecoder, Mode
from engine.errors import EngineError
from engine.models import DiffusionTransformer
from engine.runner import ModelRunner
from engine.taxonomy import CompiledTaxonomy, compile_taxonomy
from engine.tokenizer import ModelTokenizer

_TEMPLATE_CACHE_SIZE = 64  # canvas templates kept, one per compiled taxonomy

__all__ = ["DecodeStats", "DocumentResult", "EngineConfig", "EngineCore", "LabelScore"]


@dataclass(frozen=True)
class EngineConfig:
    """Knobs of the engine loop; every field has a safe default."""

    max_batch_tokens: int = 8192  # padded tokens per forward pass
    document_token_budget: int = 512  # documents are truncated beyond this (reported)
    multi_threshold: float = 0.25  # a `multi` facet returns labels at or above this probability
    use_chat_template: bool = True


@dataclass(frozen=True)
class LabelScore:
    facet: str
    label: str  # label id from the taxonomy version used (never free text)
    probability: float


@dataclass(frozen=True)
class DecodeStats:
    mode: str
    forward_passes: int
    exact: bool
    truncated: bool
    tokens: int  # canvas tokens of the document's first row


@dataclass(frozen=True)
class DocumentResult:
    request_id: str
    index: int  # position of the document in its request
    labels: list[LabelScore]
    label_mass: dict[str, float]  # facet -> probability mass inside the label set
    decode: DecodeStats


@dataclass
class _Active:
    request_id: str
    index: int
    taxonomy: CompiledTaxonomy
    decoder: DocumentDecoder
    truncated: bool
    tokens: int


class EngineCore:
    def __init__(
        self,
        model: DiffusionTransformer,
        tokenizer: ModelTokenizer,
        config: EngineConfig | None = None,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.config = config or EngineConfig()
        shape = model.shape
        if shape.mask_token_id is None:
            raise EngineError("config.json has no mask_token_id; a diffusion LM needs one")
        self.mask_id = shape.mask_token_id
        self.pad_id = shape.eos_token_id if shape.eos_token_id is not None else self.mask_id
        self.read_shift = 1 if shape.shift_logits else 0
        self.runner = ModelRunner(model, max_batch_tokens=self.config.max_batch_tokens)
        self.prompt = PromptFormat(
            use_chat_template=self.config.use_chat_template,
            document_token_budget=self.config.document_token_budget,
        )
        self._templates: dict[int, tuple[CompiledTaxonomy, CanvasTemplate]] = {}
        self._undelivered: list[DocumentResult] = []  # finished while classify() was stepping
        self._active: list[_Active] = []
        self._counter = itertools.count()
        self.document_passes = 0  # documents run through the model, summed over steps

    # -- requests ---------------------------------------------------------------------------

    def compile(
        self,
        taxonomy: dict[str, Any],
        *,
        code_seed: int | None = None,
        single_token_codes: bool = True,
    ) -> CompiledTaxonomy:
        return compile_taxonomy(
            taxonomy,
            self.tokenizer,
            pad_token_id=self.pad_id,
            code_seed=code_seed,
            single_token_codes=single_token_codes,
        )

    def template(self, compiled: CompiledTaxonomy) -> CanvasTemplate:
        # Keyed by identity (compiled taxonomies are cached); the entry keeps the taxonomy alive
        # so its id cannot be reused by another object while the entry exists.
        entry = self._templates.get(id(compiled))
        if entry is None or entry[0] is not compiled:
            template = build_template(
                compiled,
                self.tokenizer,
                mask_token_id=self.mask_id,
                read_shift=self.read_shift,
                prompt=self.prompt,
            )
            if len(self._templates) >= _TEMPLATE_CACHE_SIZE:
                self._templates.pop(next(iter(self._templates)))  # oldest first
            entry = self._templates[id(compiled)] = (compiled, template)
        return entry[1]

    def add_request(
        self,
        request_id: str,
        compiled: CompiledTaxonomy,
        texts: Sequence[str],
        mode: Mode | str = Mode.DIFFUSION,
        threshold: float | None = None,
    ) -> None:
        mode = Mode(mode)
        template = self.template(compiled)
        threshold = self.config.multi_threshold if threshold is None else threshold
        for index, text in enumerate(texts):
            canvas = build_canvas(template, self.tokenizer.encode(text))
            decoder = DocumentDecoder(canvas, compiled.facets, mode, threshold)
            self._active.append(
                _Active(request_id, index, compiled, decoder, canvas.truncated, len(canvas.ids))
            )

    def abort(self, request_id: str) -> int:
        """Drop a request's remaining work; returns how many documents were dropped."""
        before = len(self._active)
        self._active = [a for a in self._active if a.request_id != request_id]
        return before - len(self._active)

    @property
    def has_work(self) -> bool:
        return bool(self._active)

    # -- the loop ---------------------------------------------------------------------------

    def schedule(self) -> list[tuple[_Active, list]]:
        """Documents in arrival order while their rows fit the token budget (at least one)."""
        batch, tokens = [], 0
        for active in self._active:
            rows = active.decoder.rows()
            cost = sum(len(r.ids) for r in rows)
            if batch and tokens + cost > self.config.max_batch_tokens:
                break
            batch.append((active, rows))
            tokens += cost
        return batch

    def step(self) -> list[DocumentResult]:
        """One forward pass over a scheduled batch; returns the documents that finished."""
        finished_before, self._undelivered = self._undelivered, []
        return finished_before + self._step()

    def _step(self) -> list[DocumentResult]:
        batch = self.schedule()
        flat = [row for _, rows in batch for row in rows]
        results = self.runner.run(flat) if flat else []
        self.document_passes += len(batch)
        start = 0
        finished = []
        for active, rows in batch:
            active.decoder.update(results[start : start + len(rows)])
            start += len(rows)
            if active.decoder.done:
                finished.append(active)
        done_ids = {id(a) for a in finished}
        self._active = [a for a in self._active if id(a) not in done_ids]
        return [self.result_of(a) for a in finished]

    def result_of(self, active: _Active) -> DocumentResult:
        labels, mass = [], {}
        facets = {f.name: f for f in active.taxonomy.facets}
        for facet_result in active.decoder.results():
            facet = facets[facet_result.facet]
            mass[facet.name] = facet_result.label_mass
            labels += [
                LabelScore(facet.name, facet.label_ids[i], p) for i, p in facet_result.labels
            ]
        stats = DecodeStats(
            mode=active.decoder.mode.value,
            forward_passes=active.decoder.forward_passes,
            exact=active.decoder.exact,
            truncated=active.truncated,
            tokens=active.tokens,
        )
        return DocumentResult(active.request_id, active.index, labels, mass, stats)

    def classify(
        self,
        taxonomy: dict[str, Any] | CompiledTaxonomy,
        texts: Sequence[str],
        mode: Mode | str = Mode.DIFFUSION,
        threshold: float | None = None,
    ) -> list[DocumentResult]:
        """Classify `texts` to completion (in order), stepping the loop as the process would."""
        compiled = taxonomy if isinstance(taxonomy, CompiledTaxonomy) else self.compile(taxonomy)
        request_id = f"local-{next(self._counter)}"
        self.add_request(request_id, compiled, texts, mode, threshold)
        out: dict[int, DocumentResult] = {}
        while any(a.request_id == request_id for a in self._active):
            for result in self._step():
                if result.request_id == request_id:
                    out[result.index] = result
                else:  # another request's document: hand it to the next step() caller
                    self._undelivered.append(result)
        return [out[i] for i in range(len(texts))]
