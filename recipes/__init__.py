"""Recipes that build Tacet's bundled demo model from open data (issue 11).

- `recipes.debian_data`: Debian package descriptions, sections and debtags -> JSONL (via apt).
- `recipes.split`: the sha256 split and the guard that keeps held-out rows out of training.
- `recipes.taxonomies`: the `debian-sections` and `debtags` taxonomy files.
- `recipes.baseline`: TF-IDF + logistic regression, the figure the demo model is compared to.
"""

__all__: list[str] = []
