"""`tacet demo`: classify a few sample documents end to end on this machine.

With `--model PATH` it serves that checkpoint directory; without, it builds a tiny random LLaDA-
family checkpoint in a temporary directory, which shows the whole engine path (loader,
tokenizer, canvas, decoding modes) but not a useful classifier: its labels are noise.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

SAMPLE_TAXONOMY = {
    "name": "demo-subjects",
    "version": "1",
    "facets": [
        {
            "name": "subject",
            "multi": False,
            "labels": [
                {"id": "cardiology", "name": "Cardiology", "description": "Heart and vessels"},
                {"id": "oncology", "name": "Oncology", "description": "Tumours and cancer"},
                {"id": "neurology", "name": "Neurology", "description": "The nervous system"},
            ],
        }
    ],
}
SAMPLE_DOCUMENTS = [
    "Outcomes of catheter ablation for atrial fibrillation in older patients.",
    "A phase II trial of a targeted therapy for metastatic melanoma.",
    "Sleep and memory consolidation after mild traumatic brain injury.",
]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="classify sample documents end to end")
    parser.add_argument("--model", type=Path, help="model directory (default: tiny random)")
    parser.add_argument(
        "--mode",
        default="all",
        choices=["all", "diffusion", "autoregressive", "self_speculative"],
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine import load_model, load_tokenizer
    from engine.core import EngineCore

    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.model
        if directory is None:
            from engine.testing import write_tiny_checkpoint

            directory = write_tiny_checkpoint("llada", Path(tmp) / "tiny-llada", seed=0)
            console.print("[yellow]No --model given: a tiny RANDOM model; labels are noise.")
        core = EngineCore(load_model(directory), load_tokenizer(directory))
    modes = ["diffusion", "autoregressive", "self_speculative"] if args.mode == "all" else [
        args.mode
    ]
    table = Table(title=f"{SAMPLE_TAXONOMY['name']} on {core.model.shape.family}")
    for col in ("doc", "mode", "label", "probability", "passes", "exact", "ms"):
        table.add_column(col)
    for mode in modes:
        start = time.perf_counter()
        results = core.classify(SAMPLE_TAXONOMY, SAMPLE_DOCUMENTS, mode=mode)
        elapsed_ms = (time.perf_counter() - start) * 1000 / len(results)
        for result in results:
            top = result.labels[0]
            table.add_row(
                str(result.index),
                mode,
                top.label,
                f"{top.probability:.3f}",
                str(result.decode.forward_passes),
                str(result.decode.exact),
                f"{elapsed_ms:.0f}",
            )
    console.print(table)
    return 0
