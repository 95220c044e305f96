"""The recipes' exception tree. Messages are one line and name the fix.

    RecipeError
    ├── AptError            apt could not update or list the package indexes
    ├── VocabularyError     the debtags vocabulary is missing or malformed
    ├── DatasetError        the dataset directory is missing, incomplete or malformed
    ├── TaxonomyError       a built taxonomy breaks the DESIGN.md taxonomy contract
    └── HeldOutAccessError  a training/tuning path asked for the held-out buckets
"""

from __future__ import annotations

__all__ = [
    "AptError",
    "DatasetError",
    "HeldOutAccessError",
    "RecipeError",
    "TaxonomyError",
    "VocabularyError",
]


class RecipeError(Exception):
    """Root of every error the recipes raise on purpose."""


class AptError(RecipeError):
    """apt-get / apt-helper failed or listed no usable index file."""


class VocabularyError(RecipeError):
    """The debtags vocabulary cannot be found or parsed."""


class DatasetError(RecipeError):
    """The JSONL dataset is absent or a row is malformed."""


class TaxonomyError(RecipeError):
    """A taxonomy document does not follow the contract (names, ids, versions)."""


class HeldOutAccessError(RecipeError):
    """Held-out rows were requested through an API used for training, tuning or selection.

    Issue 11: buckets e and f are never used for training, tuning or model selection; only
    `recipes.split.load_held_out_for_final_report` reads them.
    """
