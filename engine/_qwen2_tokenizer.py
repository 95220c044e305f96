"""A fast tokenizer for model directories that ship only `vocab.json` + `merges.txt`.

Dream's published repositories have no `tokenizer.json`: their tokenizer is a Qwen2-style
byte-level BPE whose class lives in the repository's own Python, which Tacet never runs. This
module builds the equivalent `tokenizers.Tokenizer` from the data files: Qwen2's pre-tokenizer
split pattern (letters, single digits, punctuation runs, newlines, spaces), byte-level mapping,
NFC normalisation, and the added tokens listed in `tokenizer_config.json`. Parity with the
reference tokenizer is checked by `tests/unit/test_tokenizer_fallback.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

__all__ = ["QWEN2_SPLIT_PATTERN", "qwen2_tokenizer_from_files"]

# Qwen2's pre-tokenization pattern, as its tokenizer documents it.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def qwen2_tokenizer_from_files(model_dir: Path, config: dict[str, Any]) -> Tokenizer:
    vocab = json.loads((model_dir / "vocab.json").read_text(encoding="utf-8"))
    merges = _read_merges(model_dir / "merges.txt")
    tokenizer = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False, byte_fallback=False)
    )
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    added = _added_tokens(model_dir, config)
    for token_id in sorted(added):
        entry = added[token_id]
        token = AddedToken(
            entry["content"],
            single_word=bool(entry.get("single_word", False)),
            lstrip=bool(entry.get("lstrip", False)),
            rstrip=bool(entry.get("rstrip", False)),
            normalized=bool(entry.get("normalized", False)),
            special=bool(entry.get("special", True)),
        )
        tokenizer.add_tokens([token])
        if tokenizer.token_to_id(entry["content"]) != token_id:
            raise ValueError("added token ids do not follow the vocabulary")
    return tokenizer


def _read_merges(path: Path) -> list[tuple[str, str]]:
    merges = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#version"):
            continue
        left, _, right = line.partition(" ")
        merges.append((left, right))
    return merges


def _added_tokens(model_dir: Path, config: dict[str, Any]) -> dict[int, dict[str, Any]]:
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, dict) and decoder:
        return {int(k): v for k, v in decoder.items()}
    path = model_dir / "added_tokens.json"
    if path.is_file():
        table = json.loads(path.read_text(encoding="utf-8"))
        return {int(i): {"content": t} for t, i in table.items()}
    return {}
