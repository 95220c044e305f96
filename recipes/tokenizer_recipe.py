"""Tokenizer recipe: a byte-level BPE tokenizer for the demo model, trained on the train split.

    python -m recipes.tokenizer_recipe --data DIR --out models/demo [--vocab 4096]

Corpus: the long descriptions of the train split (read through `recipes.split`, so validation
and held-out text never shape the vocabulary) plus the two bundled taxonomy files' label ids,
names and descriptions, so labels tokenize to few tokens. Writes `tokenizer.json` and
`tokenizer_config.json` (special tokens, no chat template: the engine then builds the plain
canvas) into the model directory. Deterministic: same data, same files.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from engine.taxonomy import _code_pool  # the codes the engine may assign, in its order
from recipes.errors import RecipeError
from recipes.split import load_split

__all__ = [
    "EOS_TOKEN",
    "MASK_TOKEN",
    "SPECIAL_TOKENS",
    "taxonomy_strings",
    "train_tokenizer",
    "without_spaced_codes",
    "write_tokenizer",
]

EOS_TOKEN = "<|endoftext|>"  # also pads label codes and batches
MASK_TOKEN = "<|mdm_mask|>"  # LLaDA's mask token name
SPECIAL_TOKENS = (EOS_TOKEN, "<|startoftext|>", MASK_TOKEN)
# The taxonomy text is a few thousand words; repeating it gives label words merges of their own.
_TAXONOMY_REPEATS = 20


def taxonomy_strings(taxonomies: Iterable[dict[str, Any]]) -> Iterator[str]:
    """Facet names, label ids, names and descriptions of taxonomy documents."""
    for taxonomy in taxonomies:
        for facet in taxonomy.get("facets", []):
            yield f"Facet {facet['name']}:"
            for label in facet.get("labels", []):
                yield f"{label['id']}: {label.get('name') or label['id']}"
                if label.get("description"):
                    yield str(label["description"])


def train_tokenizer(
    texts: Iterable[str], extra: Iterable[str] = (), *, vocab_size: int = 4096
) -> Tokenizer:
    """Byte-level BPE (no unknown tokens) with the special tokens at ids 0..2."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    extra = list(extra)

    def corpus() -> Iterator[str]:
        yield from texts
        for _ in range(_TAXONOMY_REPEATS):
            yield from extra

    tokenizer.train_from_iterator(corpus(), trainer)
    return without_spaced_codes(tokenizer)


def without_spaced_codes(tokenizer: Tokenizer) -> Tokenizer:
    """Drop the merges that make a label code with a leading space (" A", " 12", " AB") one
    token. The engine then writes codes bare in the answer slot (`engine.taxonomy.CODE_FORMS`),
    so the slot's answer is the very token that precedes the label in the listing ("A: ...")
    and the model learns one copy operation instead of a code-to-code mapping. Costs about 5%
    more tokens on descriptions (capitalised words after a space merge less)."""
    document = json.loads(tokenizer.to_str())
    banned = {"\u0120" + code for code in _code_pool()}  # Ġ: byte-level space

    def result(merge: str | list[str]) -> str:
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        return left + right

    merges = document["model"]["merges"]
    document["model"]["merges"] = [m for m in merges if result(m) not in banned]
    return Tokenizer.from_str(json.dumps(document))


def write_tokenizer(tokenizer: Tokenizer, out: Path) -> None:
    """tokenizer.json plus a tokenizer_config.json naming the special tokens (no chat template,
    so the engine builds the plain `... Answer:` canvas the demo model is trained on, and
    `tacet_label_descriptions: false`: its listings hold codes and names only)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(tokenizer.to_str(pretty=False), encoding="utf-8")
    config = {
        "bos_token": "<|startoftext|>",
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "mask_token": MASK_TOKEN,
        "model_max_length": 4096,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "tacet_label_descriptions": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", "utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.tokenizer_recipe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, required=True, help="dataset dir written by fetch")
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--taxonomies", type=Path, default=Path("models/taxonomies"))
    parser.add_argument("--vocab", type=int, default=4096, help="vocabulary size")
    args = parser.parse_args(argv)
    try:
        train = load_split(args.data, "train")
        docs = [
            json.loads((args.taxonomies / name).read_text("utf-8"))
            for name in ("debian-sections.json", "debtags.json")
        ]
    except (RecipeError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    tokenizer = train_tokenizer(
        (row.text for row in train), taxonomy_strings(docs), vocab_size=args.vocab
    )
    write_tokenizer(tokenizer, args.out)
    print(f"tokenizer: {tokenizer.get_vocab_size()} tokens from {len(train)} train documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
