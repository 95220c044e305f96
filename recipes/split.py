"""The split, and the guard that keeps held-out rows away from training.

Issue 11: the first hex digit of sha256(package name) decides: 0-c train, d validation,
e-f held out. Held-out rows are never used for training, tuning or model selection, so:

- `load_split` / `load_training_data` serve train and validation only and raise
  `HeldOutAccessError` when asked for held-out;
- every row they return is re-bucketed from its name, so a file that was edited or mixed up
  cannot smuggle a held-out row into training;
- `load_held_out_for_final_report` is the one reader of held-out rows, for the final report.
"""

from __future__ import annotations

import enum
import hashlib
from pathlib import Path

from recipes.dataset import Package, read_jsonl
from recipes.errors import DatasetError, HeldOutAccessError

__all__ = [
    "SPLIT_FILES",
    "Split",
    "bucket",
    "load_held_out_for_final_report",
    "load_split",
    "load_training_data",
    "split_of",
]


class Split(enum.Enum):
    TRAIN = "train"
    VALIDATION = "validation"
    HELD_OUT = "held-out"


SPLIT_FILES: dict[Split, str] = {
    Split.TRAIN: "train.jsonl",
    Split.VALIDATION: "validation.jsonl",
    Split.HELD_OUT: "held-out.jsonl",
}

_BUCKETS: dict[str, Split] = {
    **{digit: Split.TRAIN for digit in "0123456789abc"},
    "d": Split.VALIDATION,
    "e": Split.HELD_OUT,
    "f": Split.HELD_OUT,
}


def bucket(name: str) -> str:
    """The first hex digit of sha256 of the UTF-8 package name."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[0]


def split_of(name: str) -> Split:
    """Which split a package belongs to; depends on its name only, so it never drifts."""
    return _BUCKETS[bucket(name)]


def _read_checked(dataset_dir: Path, split: Split) -> list[Package]:
    rows = list(read_jsonl(Path(dataset_dir) / SPLIT_FILES[split]))
    for row in rows:
        if split_of(row.name) is not split:
            raise DatasetError(
                f"{SPLIT_FILES[split]} holds a row of another split; re-run the fetch recipe"
            )
    return rows


def load_split(dataset_dir: Path, split: Split | str) -> list[Package]:
    """Rows of the train or validation split, for training, tuning and model selection."""
    try:
        wanted = Split(split)
    except ValueError:
        raise DatasetError(f"unknown split {split!r}; use 'train' or 'validation'") from None
    if wanted is Split.HELD_OUT:
        raise HeldOutAccessError(
            "held-out rows are not served to training, tuning or model selection; "
            "only load_held_out_for_final_report reads them"
        )
    return _read_checked(dataset_dir, wanted)


def load_training_data(dataset_dir: Path) -> tuple[list[Package], list[Package]]:
    """(train, validation): everything a training or tuning run may see."""
    return load_split(dataset_dir, Split.TRAIN), load_split(dataset_dir, Split.VALIDATION)


def load_held_out_for_final_report(dataset_dir: Path) -> list[Package]:
    """Held-out rows (buckets e, f). Call only from the final report, after the model is fixed."""
    return _read_checked(dataset_dir, Split.HELD_OUT)
