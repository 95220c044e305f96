"""Evaluation command: the demo model beside the TF-IDF + logistic-regression baseline.

    python -m recipes.evaluate_demo --data DIR --model models/demo [--json FILE] [--device cuda]

On the validation bucket only (held-out rows are never read), through the engine exactly as
the gateway serves it (`EngineCore` with its default `EngineConfig`):

- section accuracy and macro-F1 of the demo model (diffusion mode), beside the baseline
  trained on the same train split in the same run (`recipes.baseline`);
- debtags micro-F1 (pooled over every tag of every facet, tags returned at the engine's
  threshold) on the first `--debtags-docs` tagged validation packages, beside the baseline's on
  all of them. The demo model is trained on sections only: its debtags figure shows how far
  reading an unseen listing carries, not a trained result;
- robustness: the same documents with label codes reassigned (`code_seed`) and the labels
  listed in another order; the accuracy drop;
- agreement of `diffusion` and `autoregressive` decoding (share of documents with the same
  section).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from sklearn.metrics import f1_score

from engine.core import EngineConfig, EngineCore
from engine.loader import load_model
from engine.tokenizer import load_tokenizer
from recipes import baseline
from recipes.errors import DatasetError, RecipeError
from recipes.split import load_split

__all__ = ["classify_sections", "evaluate", "main", "reordered"]

ROBUSTNESS_SEED = 20_251_123  # codes and listing order of the robustness check


def reordered(taxonomy: dict[str, Any], seed: int) -> dict[str, Any]:
    """The taxonomy with every facet's labels listed in a seeded random order."""
    rng = random.Random(seed)
    facets = []
    for facet in taxonomy["facets"]:
        labels = list(facet["labels"])
        rng.shuffle(labels)
        facets.append({**facet, "labels": labels})
    return {**taxonomy, "facets": facets}


def classify_sections(
    core: EngineCore,
    taxonomy: dict[str, Any],
    texts: Sequence[str],
    *,
    mode: str = "diffusion",
    code_seed: int | None = None,
) -> list[str]:
    """The section label id the engine returns for each text."""
    compiled = core.compile(taxonomy, code_seed=code_seed)
    results = core.classify(compiled, texts, mode=mode)
    return [result.labels[0].label for result in results]


def debtags_micro_f1(
    core: EngineCore, taxonomy: dict[str, Any], texts: Sequence[str], gold: Sequence[Sequence[str]]
) -> float:
    """Micro-F1 of the tags the engine returns (every facet) against the packages' tags."""
    known = {label["id"] for facet in taxonomy["facets"] for label in facet["labels"]}
    results = core.classify(core.compile(taxonomy), texts)
    hits = returned = expected = 0
    for result, tags in zip(results, gold, strict=True):
        predicted = {score.label for score in result.labels}
        wanted = set(tags) & known
        hits += len(predicted & wanted)
        returned += len(predicted)
        expected += len(wanted)
    return 2 * hits / max(1, returned + expected)


def _accuracy(gold: Sequence[str], predicted: Sequence[str]) -> float:
    return sum(g == p for g, p in zip(gold, predicted, strict=True)) / max(1, len(gold))


def evaluate(
    data: Path,
    model_dir: Path,
    taxonomy_dir: Path,
    *,
    limit: int | None = None,
    debtags_docs: int = 300,
    with_baseline: bool = True,
    device: str = "cpu",
    console: Console | None = None,
) -> dict[str, Any]:
    console = console or Console()
    started = time.monotonic()
    sections = json.loads((taxonomy_dir / "debian-sections.json").read_text("utf-8"))
    validation = load_split(data, "validation")
    if not validation:
        raise DatasetError("the validation split is empty; re-run the fetch recipe")
    if limit is not None:
        validation = validation[:limit]
    texts = [row.text for row in validation]
    gold = [row.section for row in validation]
    core = EngineCore(load_model(model_dir, device=device), load_tokenizer(model_dir),
                      EngineConfig())

    with console.status("demo model: diffusion"):
        diffusion = classify_sections(core, sections, texts)
    with console.status("demo model: codes reassigned, labels reordered"):
        robust = classify_sections(
            core, reordered(sections, ROBUSTNESS_SEED), texts, code_seed=ROBUSTNESS_SEED
        )
    with console.status("demo model: autoregressive"):
        autoregressive = classify_sections(core, sections, texts, mode="autoregressive")
    tagged = [row for row in validation if row.tags][:debtags_docs]
    debtags_path = taxonomy_dir / "debtags.json"
    debtags: dict[str, Any] | str = (
        "not scored: no debtags.json, no tagged validation package, or --debtags-docs 0"
    )
    if tagged and debtags_path.is_file():
        with console.status(f"demo model: debtags ({len(tagged)} documents)"):
            micro = debtags_micro_f1(core, json.loads(debtags_path.read_text("utf-8")),
                                     [row.text for row in tagged], [row.tags for row in tagged])
        debtags = {"micro_f1": micro, "documents": len(tagged),
                   "note": "not trained on debtags (sections only)"}
    accuracy = _accuracy(gold, diffusion)
    result: dict[str, Any] = {
        "validation_documents": len(validation),
        "demo": {
            "sections": {
                "accuracy": accuracy,
                "macro_f1": float(f1_score(gold, diffusion, average="macro", zero_division=0)),
            },
            "debtags": debtags,
            "robustness": {
                "accuracy_codes_reassigned_reordered": _accuracy(gold, robust),
                "drop_points": round(100 * (accuracy - _accuracy(gold, robust)), 2),
            },
            "diffusion_autoregressive_agreement": _accuracy(diffusion, autoregressive),
        },
    }
    if with_baseline:
        with console.status("baseline: TF-IDF + logistic regression"):
            base = baseline.evaluate(data, taxonomy_dir=taxonomy_dir)
        result["baseline"] = {
            "sections": {k: base["sections"][k] for k in ("accuracy", "macro_f1")},
            "debtags_micro_f1": base["debtags"]["micro_f1"],
        }
        if limit is not None:
            result["baseline"]["note"] = "baseline scored on the whole validation split"
    result["seconds"] = round(time.monotonic() - started, 1)
    result["device"] = str(device)
    return result


def _table(result: dict[str, Any]) -> Table:
    demo, base = result["demo"], result.get("baseline")
    table = Table(title=f"validation bucket ({result['validation_documents']} documents)")
    table.add_column("metric")
    table.add_column("demo model", justify="right")
    table.add_column("TF-IDF + LR", justify="right")

    def fmt(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    table.add_row("section accuracy", fmt(demo["sections"]["accuracy"]),
                  fmt(base["sections"]["accuracy"]) if base else "-")
    table.add_row("section macro-F1", fmt(demo["sections"]["macro_f1"]),
                  fmt(base["sections"]["macro_f1"]) if base else "-")
    debtags = demo["debtags"]
    table.add_row("debtags micro-F1 (demo: untrained on debtags)",
                  fmt(debtags["micro_f1"]) if isinstance(debtags, dict) else "-",
                  fmt(base["debtags_micro_f1"]) if base else "-")
    robust = demo["robustness"]
    table.add_row("accuracy, codes reassigned + reordered",
                  fmt(robust["accuracy_codes_reassigned_reordered"]), "-")
    table.add_row("  drop (points)", f"{robust['drop_points']:.2f}", "-")
    table.add_row("diffusion vs autoregressive agreement",
                  fmt(demo["diffusion_autoregressive_agreement"]), "-")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.evaluate_demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, required=True, help="dataset dir written by fetch")
    parser.add_argument("--model", type=Path, default=Path("models/demo"))
    parser.add_argument("--taxonomies", type=Path, default=Path("models/taxonomies"))
    parser.add_argument("--limit", type=int, default=None,
                        help="score only the first N validation documents (quick checks)")
    parser.add_argument("--debtags-docs", type=int, default=300,
                        help="tagged validation documents the demo model scores on debtags")
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="torch device of the demo model (cuda)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    console = Console()
    try:
        result = evaluate(args.data, args.model, args.taxonomies, limit=args.limit,
                          debtags_docs=args.debtags_docs, with_baseline=not args.no_baseline,
                          device=args.device, console=console)
    except (RecipeError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    console.print(_table(result))
    console.print(f"wall time {result['seconds'] / 60:.1f} min")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
