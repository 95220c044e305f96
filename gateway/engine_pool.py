"""Several engines behind one `EngineClient`: data parallel, one engine process per GPU.

A host with N GPUs runs N engines (`tacet-engine@0..N-1`, each pinned to one GPU, each with its
own socket). The gateway and the bulk worker hold one client per engine and put this pool in
front of them, so the app still sees one engine:

- `ready` while at least one engine is ready; `ready_count` / `configured` feed `/readyz` and
  `/metrics` (`tacet_engines_ready`, `tacet_engines_configured`).
- A call goes to one ready engine, chosen by load: the fewest outstanding estimated tokens
  (what the pool has sent and not yet had back, a document leaving the count as its result
  arrives). Prefix-cache affinity decides among the engines whose load is close (within half
  the call's size of the least): an engine that served the call's affinity key lately (its
  cache is warm) comes first; a key no close engine has served goes to its home, chosen by
  rendezvous hashing over the engines (stable: a key moves only when its home is busy or
  gone). A lone caller thus stays on one engine, and concurrent calls spread: the loads stay
  within one call of each other, and once several engines are warm for a key they take turns.
- An engine that dies fails only its own calls in flight (`EngineUnavailable`: 503 with
  Retry-After, as with one engine); they are not retried elsewhere, so a document that kills
  an engine cannot take the others down with it. New calls go to the engines still ready.
- A full engine queue (`EngineBusy`) sends the call to the next engine; 429 only when all are
  full. Engines that serve another model than the one most ready engines serve get no calls
  (a result must not depend on where it was routed); `engine.model_mismatch` is logged.

The affinity key is the caller's `affinity=` (e.g. tenant + `name@version`), else the
taxonomy's `name@version` plus a digest of its content, which keeps two tenants' different
versions of one name apart. It is a routing hint only: never logged, never sent to an engine.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.protocol import DocumentDone, HealthReport, Welcome
from gateway.engine_client import (
    ConnectedEngine,
    EngineBusy,
    EngineClient,
    EngineUnavailable,
    SupervisedEngine,
)
from gateway.settings import EngineSettings

__all__ = ["EnginePool", "affinity_key", "build_engines", "estimated_tokens", "local_engine_env"]

_log = logging.getLogger("tacet.engine")
_BYTES_PER_TOKEN = 4  # a rough BPE average; the load is an estimate, only compared with itself
_WARM_KEYS = 256  # affinity keys remembered per engine (an engine's prefix cache holds fewer)


def estimated_tokens(text: str) -> int:
    """A document's load estimate: its UTF-8 size over 4, at least 1."""
    return 1 + len(text.encode("utf-8", "replace")) // _BYTES_PER_TOKEN


def affinity_key(taxonomy: dict[str, Any]) -> str:
    """`name@version#digest` of a taxonomy document (the content digest never leaves the pool)."""
    canonical = json.dumps(taxonomy, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.blake2b(canonical.encode("utf-8"), digest_size=8).hexdigest()
    return f"{taxonomy.get('name')}@{taxonomy.get('version')}#{digest}"


def _rank(key: str, index: int) -> int:
    """Rendezvous (highest random weight) score of engine `index` for `key`."""
    raw = hashlib.blake2b(f"{index}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(raw, "big")


@dataclass
class _Load:
    tokens: int = 0  # estimated tokens sent and not yet answered
    calls: int = 0
    documents: int = 0  # documents routed here since the pool started (bench, tests)
    # Affinity keys of the calls this engine served lately, oldest first (its cache is warm for
    # them), and the pid they were served by.
    warm: OrderedDict[str, None] = field(default_factory=OrderedDict)
    pid: int | None = None


class EnginePool:
    """`EngineClient` over several engine clients (see the module doc)."""

    def __init__(self, engines: Sequence[EngineClient]) -> None:
        if not engines:
            raise ValueError("an engine pool needs at least one engine")
        self.engines: tuple[EngineClient, ...] = tuple(engines)
        self._loads = [_Load() for _ in self.engines]
        self._turn = 0  # round-robin among equals
        self._mismatch_logged: set[int] = set()

    # -- state -------------------------------------------------------------------------------

    @property
    def configured(self) -> int:
        return len(self.engines)

    @property
    def ready_count(self) -> int:
        return len(self._serving())

    @property
    def ready(self) -> bool:
        return bool(self._serving())

    @property
    def welcome(self) -> Welcome | None:
        """A serving engine's Welcome (they serve one model), else any engine's last one."""
        serving = [self.engines[i].welcome for i in self._serving()]
        others = [engine.welcome for engine in self.engines]
        return next((w for w in serving + others if w is not None), None)

    @property
    def restarts(self) -> int:
        return sum(engine.restarts for engine in self.engines)

    @property
    def queued_documents(self) -> int:
        return sum(int(getattr(engine, "queued_documents", 0)) for engine in self.engines)

    @property
    def routed_documents(self) -> list[int]:
        """Documents routed to each engine since the pool started (in configured order)."""
        return [load.documents for load in self._loads]

    @property
    def outstanding_tokens(self) -> list[int]:
        """Estimated tokens sent to each engine and not yet answered (the routing load)."""
        return [load.tokens for load in self._loads]

    def _serving(self) -> list[int]:
        """Indexes of the ready engines that serve the pool's model (the one most of them
        serve; an engine that has not said which model it serves is not held back)."""
        ready = [i for i, engine in enumerate(self.engines) if engine.ready]
        models = {i: w.model_id for i in ready if (w := self.engines[i].welcome) is not None}
        counts = Counter(models.values())
        if len(counts) <= 1:
            return ready
        model = models[max(models, key=lambda i: (counts[models[i]], -i))]
        serving = []
        for i in ready:
            if models.get(i, model) == model:
                serving.append(i)
            elif i not in self._mismatch_logged:
                self._mismatch_logged.add(i)
                pid = self.engines[i].welcome.pid  # type: ignore[union-attr]
                _log.warning("engine.model_mismatch", extra={"pid": pid})
        return serving

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        for engine in self.engines:
            await engine.start()

    async def stop(self) -> None:
        await asyncio.gather(*(engine.stop() for engine in self.engines))

    async def wait_ready(self, timeout: float, *, every: bool = False) -> bool:
        """True once one engine (`every`: each engine) is ready, False after `timeout` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            count = self.ready_count
            if count == self.configured or (count and not every):
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)

    async def health(self, timeout: float = 10.0) -> HealthReport:
        """The ready engines' counters, summed."""
        reports = [
            await self.engines[i].health(timeout)  # type: ignore[attr-defined]
            for i in self._serving()
        ]
        if not reports:
            raise EngineUnavailable("no engine is ready")
        return HealthReport(
            ready=True,
            queued_documents=sum(r.queued_documents for r in reports),
            steps=sum(r.steps for r in reports),
            document_passes=sum(r.document_passes for r in reports),
            aborted_documents=sum(r.aborted_documents for r in reports),
        )

    # -- routing -----------------------------------------------------------------------------

    def order(self, key: str, cost: int) -> list[int]:
        """The ready engines to try for a call of `cost` tokens with affinity `key`, best first:
        among the engines whose load is within `cost // 2` of the least, those warm for `key`
        (fewest tokens, then calls, then in turn), else the key's rendezvous home; then the
        rest by load (where a full queue sends the call next)."""
        serving = self._serving()
        if not serving:
            return []
        self._turn = (self._turn + 1) % len(self.engines)
        turn, count = self._turn, len(self.engines)

        def by_load(i: int) -> tuple[int, int, int]:
            return self._loads[i].tokens, self._loads[i].calls, (i - turn) % count

        ranked = sorted(serving, key=by_load)
        least = self._loads[ranked[0]].tokens
        close = [i for i in ranked if self._loads[i].tokens <= least + cost // 2]
        warm = [i for i in close if key in self._warm_keys(i)]
        first = warm[0] if warm else max(close, key=lambda i: _rank(key, i))
        ranked.remove(first)
        return [first, *ranked]

    def _warm_keys(self, index: int) -> OrderedDict[str, None]:
        """The keys engine `index` served lately; forgotten when it restarted (another pid)."""
        load, welcome = self._loads[index], self.engines[index].welcome
        pid = welcome.pid if welcome is not None else None
        if pid != load.pid:
            load.pid = pid
            load.warm.clear()
        return load.warm

    async def classify(
        self,
        taxonomy: dict[str, Any],
        texts: list[str],
        *,
        on_document: Callable[[DocumentDone], None] | None = None,
        affinity: str | None = None,
        **options: Any,  # mode, threshold, ...: passed to the engine unchanged
    ) -> list[DocumentDone]:
        """One engine's classify() (see the module doc for which), same arguments and errors."""
        costs = [estimated_tokens(text) for text in texts]
        key = affinity or affinity_key(taxonomy)
        order = self.order(key, sum(costs))
        if not order:
            raise EngineUnavailable("no engine is ready")
        for position, index in enumerate(order):
            try:
                results = await self._call(index, costs, taxonomy, texts, on_document, options)
            except EngineBusy:
                if position == len(order) - 1:
                    raise
                continue
            warm = self._warm_keys(index)
            warm[key] = None
            warm.move_to_end(key)
            while len(warm) > _WARM_KEYS:
                warm.popitem(last=False)
            return results
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call(
        self,
        index: int,
        costs: list[int],
        taxonomy: dict[str, Any],
        texts: list[str],
        on_document: Callable[[DocumentDone], None] | None,
        options: dict[str, Any],
    ) -> list[DocumentDone]:
        load = self._loads[index]
        pending = dict(enumerate(costs))  # index -> tokens still counted against the engine
        load.tokens += sum(costs)
        load.calls += 1

        def arrived(done: DocumentDone) -> None:
            load.tokens -= pending.pop(done.index, 0)
            if on_document is not None:
                on_document(done)

        try:
            results = await self.engines[index].classify(
                taxonomy, texts, on_document=arrived, **options
            )
            load.documents += len(texts)
            return results
        finally:
            load.tokens -= sum(pending.values())
            load.calls -= 1


# -- from settings ------------------------------------------------------------------------------


def local_engine_env(index: int, count: int, device: str) -> dict[str, str]:
    """The environment of local engine `index` of `count`: one GPU each (as `tacet-engine@N`
    does with CUDA_VISIBLE_DEVICES=%i), or on CPU an equal share of the cores, so that N engines
    do not oversubscribe them."""
    if count == 1:
        return {}
    if device.startswith("cuda"):
        return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": str(index)}
    threads = max(1, (os.cpu_count() or 1) // count)
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def build_engines(settings: EngineSettings, runtime_dir: Path | None) -> EngineClient:
    """The engine client(s) `settings` describe: one client as before when there is one engine,
    else an EnginePool over one client per socket or per spawned engine.

    `runtime_dir` (0700, owned by the caller) holds the spawned engines' sockets, one
    subdirectory each; it is not used when the settings name sockets.
    """
    queued = settings.max_queued_documents
    clients: list[EngineClient]
    paths = settings.socket_paths()
    if paths:
        clients = [ConnectedEngine(socket_path=p, max_queued_documents=queued) for p in paths]
    else:
        if settings.model_dir is None or runtime_dir is None:
            raise ValueError("spawning engines needs a model directory and a runtime directory")
        count = settings.engines
        device = settings.device
        clients = [
            SupervisedEngine(
                model_dir=settings.model_dir,
                runtime_dir=runtime_dir if count == 1 else runtime_dir / f"e{i}",
                max_queued_documents=queued,
                device=device,
                extra_env=local_engine_env(i, count, device),
            )
            for i in range(count)
        ]
    return clients[0] if len(clients) == 1 else EnginePool(clients)
