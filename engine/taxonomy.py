"""Taxonomy compilation: facets, label codes, code token sequences and a label trie.

A label is answered by its *code*, not its name: the canvas lists `code: name (description)`
and the answer slots hold the code's tokens. Single-token codes are preferred because then the
slot's distribution is the exact conditional over labels in one forward pass (DESIGN.md,
"Classification: scoring first"). Compiled taxonomies are cached per taxonomy version, tokenizer
and code assignment.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from engine.errors import EngineError
from engine.tokenizer import ModelTokenizer

__all__ = ["CompiledFacet", "CompiledTaxonomy", "TaxonomyError", "compile_taxonomy"]


class TaxonomyError(EngineError):
    """The taxonomy cannot be compiled (no labels, duplicate ids, ...)."""


def _code_pool() -> list[str]:
    """Candidate codes in order of preference: letters, numbers, then letter pairs."""
    letters = list(string.ascii_uppercase)
    pairs = [a + b for a in string.ascii_uppercase for b in string.ascii_uppercase]
    return letters + [str(i) for i in range(1, 1000)] + pairs


@dataclass(frozen=True)
class Trie:
    """Distinct label prefixes per depth: `prefixes[d]` holds rows of length d (d = 0..L-1)."""

    prefixes: list[Tensor]  # prefixes[d]: [n_nodes_d, d]
    node_of_label: list[Tensor]  # node_of_label[d]: [n_labels] index into prefixes[d]


@dataclass(frozen=True)
class CompiledFacet:
    name: str
    multi: bool
    label_ids: tuple[str, ...]
    label_names: tuple[str, ...]
    label_descriptions: tuple[str, ...]
    codes: tuple[str, ...]
    tokens: Tensor  # [n_labels, L]: code tokens, padded at the end with the pad token
    trie: Trie = field(repr=False)

    @property
    def slots(self) -> int:
        return self.tokens.shape[1]

    @property
    def single_token(self) -> bool:
        return self.slots == 1

    def candidates(self, slot: int) -> Tensor:
        """Distinct token ids labels may hold at `slot` (sorted)."""
        return torch.unique(self.tokens[:, slot])


@dataclass(frozen=True)
class CompiledTaxonomy:
    name: str
    version: str
    facets: tuple[CompiledFacet, ...]

    @property
    def all_single_token(self) -> bool:
        return all(f.single_token for f in self.facets)


def compile_taxonomy(
    taxonomy: dict[str, Any],
    tokenizer: ModelTokenizer,
    *,
    pad_token_id: int,
    code_seed: int | None = None,
    single_token_codes: bool = True,
) -> CompiledTaxonomy:
    """Compile (cached). `code_seed` shuffles which code each label gets (training, robustness
    checks); `single_token_codes=False` forces numeric codes even where single tokens exist."""
    key = (_freeze(taxonomy), tokenizer.fingerprint, pad_token_id, code_seed, single_token_codes)
    compiled = _CACHE.get(key)
    if compiled is None:
        compiled = _compile(taxonomy, tokenizer, pad_token_id, code_seed, single_token_codes)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = compiled
    return compiled


_CACHE: dict[Any, CompiledTaxonomy] = {}
_CACHE_SIZE = 64


def _freeze(value: Any) -> Any:
    """A hashable, order-preserving copy of JSON-like data (the cache key)."""
    if isinstance(value, dict):
        return ("{", *sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("[", *(_freeze(v) for v in value))
    return value


def _compile(
    taxonomy: dict[str, Any],
    tokenizer: ModelTokenizer,
    pad_token_id: int,
    code_seed: int | None,
    single_token_codes: bool,
) -> CompiledTaxonomy:
    facets = taxonomy.get("facets") or []
    if not facets:
        raise TaxonomyError("taxonomy has no facets")
    compiled = tuple(
        _compile_facet(f, tokenizer, pad_token_id, code_seed, single_token_codes) for f in facets
    )
    names = [f.name for f in compiled]
    if len(set(names)) != len(names):
        raise TaxonomyError("taxonomy has two facets with the same name")
    name, version = str(taxonomy.get("name", "")), str(taxonomy.get("version", ""))
    return CompiledTaxonomy(name, version, compiled)


def _compile_facet(
    facet: dict[str, Any],
    tokenizer: ModelTokenizer,
    pad_token_id: int,
    code_seed: int | None,
    single_token_codes: bool,
) -> CompiledFacet:
    name = str(facet.get("name", ""))
    labels = facet.get("labels") or []
    if not labels:
        raise TaxonomyError(f"facet {name!r} has no labels")
    ids = [str(label["id"]) for label in labels]
    if len(set(ids)) != len(ids):
        raise TaxonomyError(f"facet {name!r} has duplicate label ids")
    codes, form = assign_codes(len(ids), tokenizer, single_token_codes)
    if code_seed is not None:
        random.Random(code_seed).shuffle(codes)
    seqs = [tokenizer.encode(form.format(code)) for code in codes]
    width = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
    for row, seq in enumerate(seqs):
        tokens[row, : len(seq)] = torch.tensor(seq)
    if len({tuple(r) for r in tokens.tolist()}) != len(seqs):
        raise TaxonomyError(f"facet {name!r}: two codes tokenize to the same sequence")
    return CompiledFacet(
        name=name,
        multi=bool(facet.get("multi", False)),
        label_ids=tuple(ids),
        label_names=tuple(str(label.get("name") or label["id"]) for label in labels),
        label_descriptions=tuple(str(label.get("description") or "") for label in labels),
        codes=tuple(codes),
        tokens=tokens,
        trie=build_trie(tokens),
    )


# How a code is written in the answer scaffold (after `facet:`), hence how it tokenizes: with a
# leading space where the tokenizer has such single tokens (large vocabularies do), else bare.
CODE_FORMS = (" {}", "{}")


def assign_codes(
    n: int, tokenizer: ModelTokenizer, single_token: bool
) -> tuple[list[str], str]:
    """`n` codes and their written form: single-token codes from the pool where the tokenizer
    has enough of them, else numeric codes 1..n (multi-token, scored over the trie)."""
    if single_token:
        for form in CODE_FORMS:
            singles = [c for c in _code_pool() if len(tokenizer.encode(form.format(c))) == 1]
            if len(singles) >= n:
                return singles[:n], form
    return [str(i) for i in range(1, n + 1)], CODE_FORMS[0]


def build_trie(tokens: Tensor) -> Trie:
    prefixes, node_of_label = [], []
    n = tokens.shape[0]
    prefixes.append(tokens.new_zeros((1, 0)))  # depth 0: the empty prefix, shared by all
    node_of_label.append(torch.zeros(n, dtype=torch.long))
    for depth in range(1, tokens.shape[1]):
        unique, inverse = torch.unique(tokens[:, :depth], dim=0, return_inverse=True)
        prefixes.append(unique)
        node_of_label.append(inverse)
    return Trie(prefixes, node_of_label)
