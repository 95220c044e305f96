"""Documents/s with N engine processes behind one EnginePool against one engine, in one run.

Both sides are real `python -m engine.process` processes spawned and supervised as `tacet serve
--engines N` spawns them (`gateway.engine_pool.build_engines`), fed the same documents by the
same concurrent callers (calls of `--batch` documents, `--concurrency` in flight). The baseline
is one engine using every core (torch's default); N engines on CPU get cores/N threads each.

On a CPU host the gain is bounded by the cores: two engines on two cores can at best match one
engine that already uses both, and only win what one process leaves idle (the gaps between its
steps: tokenizing, scheduling, IPC). The layout pays off on GPUs, one engine per GPU, where
N engines have N times the compute; run it there with `--device cuda` (engine i sees GPU i).

    python bench/bench_engines.py [--model DIR] [--engines 2] [--docs 256] [--batch 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from engine.testing import write_tiny_checkpoint
from gateway.engine_pool import EnginePool, build_engines
from gateway.settings import EngineSettings

WORDS = "kernel driver python module mail server puzzle game editor shell font library".split()  # noqa: SIM905
TAXONOMY = {
    "name": "bench",
    "version": "1",
    "facets": [{"name": "section", "multi": False, "labels": [
        {"id": f"s{i}", "name": name} for i, name in enumerate(
            ["Kernel", "Python", "Mail", "Games", "Editors", "Shells", "Fonts", "Libraries"]
        )
    ]}],
}


def documents(count: int, words: int) -> list[str]:
    return [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(words)) for i in range(count)]


async def one_pass(engine: Any, calls: list[list[str]], concurrency: int) -> float:
    """docs/s of one pass over `calls` with `concurrency` callers."""
    queue = list(calls)
    started = time.perf_counter()

    async def caller() -> None:
        while queue:
            await engine.classify(TAXONOMY, queue.pop())

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return sum(map(len, calls)) / (time.perf_counter() - started)


async def compare(model: Path, args: argparse.Namespace) -> dict[int, tuple[float, list[int]]]:
    """Both layouts started side by side (idle engines cost nothing), then measured in
    alternating passes, so that a change in the machine's load hits both; best pass of each."""
    texts = documents(args.docs, args.words)
    calls = [texts[i : i + args.batch] for i in range(0, len(texts), args.batch)]
    runtime = Path(tempfile.mkdtemp(prefix="tacet-b-"))
    layouts: dict[int, Any] = {}
    try:
        for count in (1, args.engines):
            settings = EngineSettings(model_dir=model, device=args.device, engines=count)
            layouts[count] = build_engines(settings, runtime / f"n{count}")
            await layouts[count].start()
        for engine in layouts.values():
            every = {"every": True} if isinstance(engine, EnginePool) else {}
            if not await engine.wait_ready(600, **every):
                raise SystemExit("the engines did not become ready")
        rates: dict[int, list[float]] = {count: [] for count in layouts}
        for round_ in range(args.repeats + 1):  # round 0 warms up (allocator, thread pools)
            for count, engine in layouts.items():
                rate = await one_pass(engine, calls, args.concurrency)
                if round_:
                    rates[count].append(rate)
        return {
            count: (max(rates[count]), list(getattr(engine, "routed_documents", [0])))
            for count, engine in layouts.items()
        }
    finally:
        for engine in layouts.values():
            await engine.stop()
        shutil.rmtree(runtime, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model directory (default: models/demo, "
                        "else a tiny random checkpoint)")
    parser.add_argument("--engines", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--docs", type=int, default=256)
    parser.add_argument("--words", type=int, default=60, help="words per document")
    parser.add_argument("--batch", type=int, default=8, help="documents per call")
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight")
    parser.add_argument("--repeats", type=int, default=3, help="measured passes per layout")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="tacet-bench-"))
    model = args.model
    if model is None:
        demo = Path(__file__).resolve().parent.parent / "models" / "demo"
        model = demo if (demo / "config.json").is_file() else write_tiny_checkpoint(
            "llada", scratch / "tiny"
        )
    results = asyncio.run(compare(model, args))
    shutil.rmtree(scratch, ignore_errors=True)

    base = results[1][0]
    table = Table(title=f"{model.name}, {args.device}, {os.cpu_count()} cores, {args.docs} docs "
                  f"x {args.words} words, calls of {args.batch}, {args.concurrency} in flight")
    for column in ("engines", "docs/s", "vs 1 engine", "documents per engine"):
        table.add_column(column, justify="right")
    for count, (rate, split) in results.items():
        shown = "/".join(map(str, split)) if count > 1 else "all"
        table.add_row(str(count), f"{rate:.1f}", f"{rate / base:.2f}x", shown)
    Console().print(table)
    if args.device == "cpu":
        Console().print(f"CPU: the gain is bounded by the {os.cpu_count()} cores, which one engine "
                        "already uses; one engine per GPU is where the layout pays.")


if __name__ == "__main__":
    main()
