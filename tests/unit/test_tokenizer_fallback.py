"""Dream directories ship vocab.json + merges.txt, not tokenizer.json: the fallback must
tokenize exactly as the reference Qwen2 tokenizer (goldens from transformers, slow and fast)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import load_tokenizer
from engine.errors import TokenizerError
from tests.fixtures import GOLDENS_DIR, write_tiny_checkpoint


@pytest.fixture
def dream_without_tokenizer_json(tmp_path: Path) -> Path:
    directory = write_tiny_checkpoint("dream", tmp_path / "dream", seed=0)
    (directory / "tokenizer.json").unlink()
    return directory


def test_fallback_matches_reference_ids() -> None:
    """tests/data/qwen2_tokenizer holds a small BPE whose merges cross word, digit and space
    boundaries, so any deviation from Qwen2's pre-tokenizer changes ids; goldens.json holds the
    ids transformers' Qwen2Tokenizer and Qwen2TokenizerFast give for its texts."""
    directory = GOLDENS_DIR.parent / "qwen2_tokenizer"
    goldens = json.loads((directory / "goldens.json").read_text(encoding="utf-8"))
    tokenizer = load_tokenizer(directory)
    for case in goldens["cases"]:
        assert tokenizer.encode(case["text"]) == case["ids"], case["text"]


def test_fallback_keeps_special_tokens_and_chat_template(
    dream_without_tokenizer_json: Path,
) -> None:
    tokenizer = load_tokenizer(dream_without_tokenizer_json)
    config = json.loads((dream_without_tokenizer_json / "config.json").read_text())
    assert tokenizer.token_id("<|mask|>") == config["mask_token_id"]
    messages = [{"role": "user", "content": "hi"}]
    rendered = tokenizer.render_chat(messages, add_generation_prompt=True)
    assert tokenizer.encode(rendered)[0] == tokenizer.token_id("<|im_start|>")


def test_no_tokenizer_files_is_named(dream_without_tokenizer_json: Path) -> None:
    (dream_without_tokenizer_json / "merges.txt").unlink()
    with pytest.raises(TokenizerError, match=r"tokenizer\.json"):
        load_tokenizer(dream_without_tokenizer_json)
