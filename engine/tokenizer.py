"""The model's tokenizer: `tokenizer.json` (fast tokenizer) plus its chat template, if any.

The chat template is Jinja run in a sandbox, as Hugging Face renders it; it is data shipped with
the model, so it is rendered with no access to Python objects beyond the messages.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from engine._qwen2_tokenizer import qwen2_tokenizer_from_files
from engine.errors import TokenizerError

__all__ = ["ModelTokenizer", "load_tokenizer"]


@dataclass(eq=False)
class ModelTokenizer:
    tokenizer: Tokenizer
    chat_template: str | None
    special: dict[str, str]  # bos_token, eos_token, ... as tokenizer_config.json names them
    fingerprint: str = ""  # sha256 of tokenizer.json: keys caches of compiled taxonomies
    # Whether the taxonomy listing carries label descriptions. A model trained on listings of
    # codes and names only (the demo model) says so with `"tacet_label_descriptions": false`
    # in tokenizer_config.json, so inference builds the canvases it was trained on.
    label_descriptions: bool = True

    def encode(self, text: str) -> list[int]:
        """Token ids of plain text, with no special tokens added."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def token_id(self, token: str) -> int:
        tid = self.tokenizer.token_to_id(token)
        if tid is None:
            raise TokenizerError(f"token {token!r} is not in the vocabulary")
        return tid

    def render_chat(self, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> str:
        """The prompt text the chat template makes of `messages`."""
        if self.chat_template is None:
            raise TokenizerError("the model ships no chat template")
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_template_error
        try:
            template = env.from_string(self.chat_template)
            return template.render(
                messages=messages, add_generation_prompt=add_generation_prompt, **self.special
            )
        except TemplateError as exc:
            raise TokenizerError(f"chat template failed: {type(exc).__name__}") from None


def _raise_template_error(message: str) -> None:
    raise TemplateError(message)


def load_tokenizer(path: str | Path) -> ModelTokenizer:
    model_dir = Path(path)
    tokenizer_file = model_dir / "tokenizer.json"
    config = _read_json(model_dir / "tokenizer_config.json")
    if tokenizer_file.is_file():
        source = tokenizer_file.read_bytes()
        try:
            tokenizer = Tokenizer.from_str(source.decode("utf-8"))
        except Exception as exc:  # the Rust side raises plain Exception
            raise TokenizerError(f"tokenizer.json is unusable ({type(exc).__name__})") from None
    elif (model_dir / "vocab.json").is_file() and (model_dir / "merges.txt").is_file():
        # Dream ships vocab.json + merges.txt with a Qwen2-style tokenizer class of its own.
        source = (model_dir / "vocab.json").read_bytes() + (model_dir / "merges.txt").read_bytes()
        try:
            tokenizer = qwen2_tokenizer_from_files(model_dir, config)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TokenizerError(f"vocab.json/merges.txt unusable ({type(exc).__name__})") from None
    else:
        raise TokenizerError("no tokenizer.json (or vocab.json + merges.txt) in model directory")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: take the default one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    jinja_file = model_dir / "chat_template.jinja"
    if template is None and jinja_file.is_file():
        template = jinja_file.read_text(encoding="utf-8")
    special = {
        key: _token_text(config[key])
        for key in ("bos_token", "eos_token", "pad_token", "unk_token", "mask_token")
        if config.get(key) is not None
    }
    fingerprint = hashlib.sha256(source).hexdigest()
    template = template if isinstance(template, str) else None
    descriptions = config.get("tacet_label_descriptions", True)
    if not isinstance(descriptions, bool):
        raise TokenizerError("tokenizer_config.json: tacet_label_descriptions must be a boolean")
    return ModelTokenizer(tokenizer, template, special, fingerprint, descriptions)


def _token_text(value: Any) -> str:
    return value.get("content", "") if isinstance(value, dict) else str(value)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenizerError(f"{path.name} is not readable JSON ({type(exc).__name__})") from None
    return data if isinstance(data, dict) else {}
