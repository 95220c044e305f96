"""Baseline: TF-IDF + logistic regression on the train split, scored on validation.

    python -m recipes.baseline --data DIR [--taxonomies models/taxonomies]

The figure the demo model is compared to (issue 11): section accuracy and macro-F1, and
debtags micro-F1 (one-vs-rest, one binary classifier per tag). Same documents as the demo
model (the long description, `text`), same label sets (the taxonomy files when given, else
built from train exactly as `recipes.taxonomies` builds them). Held-out rows are never read:
the data comes through `load_training_data`.

Debtags are scored on validation packages that carry at least one tag: in bookworm fewer than
half the packages are tagged, and an untagged package is unannotated, not "no tag applies".
Hyper-parameters are fixed below, not searched.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from recipes.dataset import Package
from recipes.errors import DatasetError, RecipeError
from recipes.split import load_training_data
from recipes.taxonomies import build_debtags_taxonomy, build_sections_taxonomy, parse_vocabulary

__all__ = ["BaselineConfig", "evaluate", "main"]


class BaselineConfig:
    """Fixed hyper-parameters; a class of constants so a report can print them."""

    ngram_range = (1, 2)
    min_df = 2
    max_features = 200_000
    section_c = 10.0
    tag_c = 10.0
    tag_threshold = 0.5
    max_iter = 2000


def _vectorizer() -> TfidfVectorizer:
    return TfidfVectorizer(
        sublinear_tf=True,
        ngram_range=BaselineConfig.ngram_range,
        min_df=BaselineConfig.min_df,
        max_features=BaselineConfig.max_features,
        dtype=np.float32,
    )


def _label_sets(
    train: Sequence[Package], dataset_dir: Path, taxonomy_dir: Path | None
) -> tuple[list[str], dict[str, list[str]]]:
    """(section ids, {facet: tag ids}) from the taxonomy files, or built from train."""
    if taxonomy_dir is not None:
        sections_doc = json.loads((taxonomy_dir / "debian-sections.json").read_text("utf-8"))
        debtags_doc = json.loads((taxonomy_dir / "debtags.json").read_text("utf-8"))
    else:
        from recipes.debian_data import VOCABULARY_FILE

        vocab_path = dataset_dir / VOCABULARY_FILE
        if not vocab_path.is_file():
            raise DatasetError(f"{VOCABULARY_FILE} missing in the dataset dir; re-run fetch")
        with vocab_path.open(encoding="utf-8") as src:
            vocabulary = parse_vocabulary(src)
        sections_doc = build_sections_taxonomy(train)
        debtags_doc = build_debtags_taxonomy(vocabulary, train)
    sections = [label["id"] for label in sections_doc["facets"][0]["labels"]]
    facets = {f["name"]: [label["id"] for label in f["labels"]] for f in debtags_doc["facets"]}
    return sections, facets


def evaluate_sections(
    train: Sequence[Package], validation: Sequence[Package], sections: Sequence[str]
) -> dict[str, Any]:
    """Multinomial LR on TF-IDF; accuracy and macro-F1 over the taxonomy's sections."""
    known = set(sections)
    fit_rows = [row for row in train if row.section in known]
    vectorizer = _vectorizer()
    x_train = vectorizer.fit_transform([row.text for row in fit_rows])
    model = LogisticRegression(C=BaselineConfig.section_c, max_iter=BaselineConfig.max_iter)
    model.fit(x_train, [row.section for row in fit_rows])
    predicted = model.predict(vectorizer.transform([row.text for row in validation]))
    gold = [row.section for row in validation]
    return {
        "n_train": len(fit_rows),
        "n_validation": len(validation),
        "classes": len(model.classes_),
        "accuracy": float(accuracy_score(gold, predicted)),
        # Averaged over the taxonomy's sections; one never seen in validation nor predicted
        # scores 0 F1 only if predicted, so `labels` is the union actually involved.
        "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0)),
        "majority_accuracy": max(gold.count(s) for s in set(gold)) / len(gold) if gold else 0.0,
    }


def _indicator(rows: Sequence[Package], tags: Sequence[str]) -> np.ndarray:
    index = {tag: i for i, tag in enumerate(tags)}
    matrix = np.zeros((len(rows), len(tags)), dtype=np.int8)  # [N, L]
    for r, row in enumerate(rows):
        for tag in row.tags:
            if tag in index:
                matrix[r, index[tag]] = 1
    return matrix


def _fit_predict_tag(x_train: Any, y: np.ndarray, x_val: Any) -> np.ndarray:
    """One binary LR per tag; a tag seen with a single class predicts that class."""
    if y.min() == y.max():
        return np.full(x_val.shape[0], y[0], dtype=np.int8)
    model = LogisticRegression(
        C=BaselineConfig.tag_c, solver="liblinear", max_iter=BaselineConfig.max_iter
    )
    model.fit(x_train, y)
    return (model.predict_proba(x_val)[:, 1] >= BaselineConfig.tag_threshold).astype(np.int8)


def evaluate_debtags(
    train: Sequence[Package], validation: Sequence[Package], facets: dict[str, list[str]]
) -> dict[str, Any]:
    """One-vs-rest LR per tag on tagged packages; micro-F1 pooled and per facet."""
    train = [row for row in train if row.tags]
    validation = [row for row in validation if row.tags]
    tags = [tag for labels in facets.values() for tag in labels]
    if not train or not validation:
        raise DatasetError("no tagged packages in train or validation; cannot score debtags")
    vectorizer = _vectorizer()
    x_train = vectorizer.fit_transform([row.text for row in train])
    x_val = vectorizer.transform([row.text for row in validation])
    y_train, y_val = _indicator(train, tags), _indicator(validation, tags)
    predicted = np.stack(
        [_fit_predict_tag(x_train, y_train[:, j], x_val) for j in range(len(tags))], axis=1
    )  # [N, L]
    per_facet: dict[str, float] = {}
    start = 0
    for facet, labels in facets.items():
        cols = slice(start, start + len(labels))
        start += len(labels)
        per_facet[facet] = float(
            f1_score(y_val[:, cols], predicted[:, cols], average="micro", zero_division=0)
        )
    return {
        "n_train": len(train),
        "n_validation": len(validation),
        "facets": len(facets),
        "tags": len(tags),
        "micro_f1": float(f1_score(y_val, predicted, average="micro", zero_division=0)),
        "mean_facet_micro_f1": float(np.mean(list(per_facet.values()))),
        "per_facet_micro_f1": per_facet,
    }


def evaluate(dataset_dir: Path, *, taxonomy_dir: Path | None = None) -> dict[str, Any]:
    """Train the baseline on train, score it on validation; the evaluation command calls this."""
    started = time.monotonic()
    train, validation = load_training_data(Path(dataset_dir))
    sections, facets = _label_sets(train, Path(dataset_dir), taxonomy_dir)
    result = {
        "model": "tfidf+logreg",
        "sections": evaluate_sections(train, validation, sections),
        "debtags": evaluate_debtags(train, validation, facets),
    }
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.baseline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, required=True, help="dataset dir written by fetch")
    parser.add_argument(
        "--taxonomies",
        type=Path,
        default=None,
        help="dir with debian-sections.json and debtags.json (default: build "
        "the label sets from train)",
    )
    args = parser.parse_args(argv)
    try:
        result = evaluate(args.data, taxonomy_dir=args.taxonomies)
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
