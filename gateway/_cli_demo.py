"""`tacet demo`: classify a few sample documents end to end on this machine.

Without `--model` it uses the bundled demo model (`models/demo`, trained on Debian package
descriptions) on sample package descriptions against the `debian-sections` taxonomy. With
`--model PATH` it serves that checkpoint directory on sample abstracts against a small subject
taxonomy. Where neither is at hand (an install without `models/`), it builds a tiny random
LLaDA-family checkpoint in a temporary directory, which shows the whole engine path (loader,
tokenizer, canvas, decoding modes) but not a useful classifier: its labels are noise.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

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
# Written for this demo (not taken from the archive), in the style of package descriptions.
PACKAGE_DOCUMENTS = [
    "A fast-paced arcade shooter: steer your ship through waves of alien invaders, collect "
    "power-ups and beat the high score. Includes levels, music and sound effects.",
    "This Python 3 module parses and writes YAML files. It provides a safe loader and a "
    "dumper that keeps the order of mappings.",
    "A collection of TrueType fonts with wide coverage of Latin, Greek and Cyrillic scripts, "
    "for use on screen and in print.",
]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="classify sample documents end to end")
    parser.add_argument(
        "--model", type=Path, help="model directory (default: the bundled demo model)"
    )
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
    taxonomy: dict[str, Any] = SAMPLE_TAXONOMY
    documents = SAMPLE_DOCUMENTS
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.model
        bundled = _bundled() if directory is None else None
        if bundled is not None:
            directory, taxonomy = bundled
            documents = PACKAGE_DOCUMENTS
            console.print(f"No --model given: the bundled demo model ({directory}).")
        elif directory is None:
            from engine.testing import write_tiny_checkpoint

            directory = write_tiny_checkpoint("llada", Path(tmp) / "tiny-llada", seed=0)
            console.print("[yellow]No --model and no bundled demo model: a tiny RANDOM model; "
                          "labels are noise.")
        core = EngineCore(load_model(directory), load_tokenizer(directory))
    modes = ["diffusion", "autoregressive", "self_speculative"] if args.mode == "all" else [
        args.mode
    ]
    table = Table(title=f"{taxonomy['name']} on {core.model.shape.family}")
    for col in ("doc", "mode", "label", "probability", "passes", "exact", "ms"):
        table.add_column(col)
    for mode in modes:
        start = time.perf_counter()
        results = core.classify(taxonomy, documents, mode=mode)
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


def _bundled() -> tuple[Path, dict[str, Any]] | None:
    """The bundled demo model and its `debian-sections` taxonomy, in a source checkout."""
    from gateway._cli_serve import bundled_demo_model

    model = bundled_demo_model()
    if model is None:
        return None
    sections = model.parent / "taxonomies" / "debian-sections.json"
    if not sections.is_file():
        return None
    return model, json.loads(sections.read_text("utf-8"))
