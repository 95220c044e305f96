"""The audit write's share of classify latency: p50 of a one-document classify on the tiny
engine, with and without a committed audit append (SQLite in a temp data dir), in one run.

Both variants alternate in the same loop, so drift on a shared machine hits them alike. The
append is the whole durable path the request waits for: chain head read, hash, INSERT, COMMIT.

    python bench/bench_audit.py [--family llada --iterations 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from compliance.audit import Activity, AuditEvent, AuditLog
from engine import load_model, load_tokenizer
from engine.core import EngineConfig, EngineCore
from engine.testing import write_tiny_checkpoint
from gateway.store import async_upgrade_to_head, create_engine, database_url

TAXONOMY = {
    "name": "bench",
    "version": "1",
    "facets": [
        {
            "name": "subject",
            "labels": [{"id": f"l{i}", "name": f"Subject {i}"} for i in range(20)],
        }
    ],
}
TEXT = "heart vessel drug trial patient dose scan gene " * 8


def event(i: int) -> AuditEvent:
    return AuditEvent(
        operation="classify",
        status=200,
        request_id=f"bench{i:06d}",
        tenant_id="bench",
        key_id="benchkey",
        activity=Activity.CREATE,
        model_id="tiny",
        taxonomy="bench@1",
        mode="diffusion",
        documents=1,
        bytes=len(TEXT),
        tokens=128,
        duration_ms=1.0,
        source_ip="127.0.0.1",
    )


def p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="llada", choices=["llada", "dream"])
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    torch.manual_seed(0)
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        directory = write_tiny_checkpoint(args.family, Path(tmp) / args.family, seed=0)
        core = EngineCore(load_model(directory), load_tokenizer(directory), EngineConfig())
        compiled = core.compile(TAXONOMY)
        engine = create_engine(database_url(Path(tmp) / "data", {}))
        loop.run_until_complete(async_upgrade_to_head(engine))
        log = AuditLog(engine)
        for i in range(5):  # warm up both paths
            core.classify(compiled, [TEXT])
            loop.run_until_complete(log.append(event(i)))
        plain, audited, append_only = [], [], []
        for i in range(args.iterations):
            start = time.perf_counter()
            core.classify(compiled, [TEXT])
            plain.append(time.perf_counter() - start)

            start = time.perf_counter()
            core.classify(compiled, [TEXT])
            middle = time.perf_counter()
            loop.run_until_complete(log.append(event(i)))
            end = time.perf_counter()
            audited.append(end - start)
            append_only.append(end - middle)
        loop.run_until_complete(engine.dispose())
    loop.close()
    base, with_audit, append = p50_ms(plain), p50_ms(audited), p50_ms(append_only)
    table = Table(title=f"{args.family} tiny, 1 document, {args.iterations} iterations, CPU")
    for col in ("path", "p50 ms", "x classify"):
        table.add_column(col, justify="right")
    table.add_row("classify (no audit)", f"{base:.2f}", "1.00")
    table.add_row("classify + audit append", f"{with_audit:.2f}", f"{with_audit / base:.2f}")
    table.add_row("audit append alone", f"{append:.2f}", f"{append / base:.2f}")
    Console().print(table)
    share = (with_audit - base) / with_audit if with_audit else 0.0
    print(f"audit share of classify+audit latency (p50): {share:.1%}")


if __name__ == "__main__":
    main()
