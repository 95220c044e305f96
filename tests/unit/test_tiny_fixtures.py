"""The tiny-checkpoint builder: deterministic, faithful to the real layouts, pinned by goldens."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from tests.fixtures import (
    FAMILIES,
    REFERENCE_CONFIGS,
    load_goldens,
    sha256_file,
    sha256_tensors,
    tiny_config,
    write_reference_config,
    write_tiny_checkpoint,
)

# Weight names of the published checkpoints (from their model.safetensors.index.json), with the
# layer index replaced by {i}.
REAL_NAMES = {
    "llada": {
        "model.transformer.wte.weight",
        "model.transformer.ln_f.weight",
        "model.transformer.ff_out.weight",
        *(
            f"model.transformer.blocks.{{i}}.{name}.weight"
            for name in ("attn_norm", "ff_norm", "q_proj", "k_proj", "v_proj", "attn_out",
                         "ff_proj", "up_proj", "ff_out")
        ),
    },
    "dream": {
        "model.embed_tokens.weight",
        "model.norm.weight",
        "lm_head.weight",
        "model.layers.{i}.input_layernorm.weight",
        "model.layers.{i}.post_attention_layernorm.weight",
        "model.layers.{i}.self_attn.o_proj.weight",
        *(f"model.layers.{{i}}.self_attn.{p}_proj.{k}" for p in "qkv" for k in ("weight", "bias")),
        *(f"model.layers.{{i}}.mlp.{p}_proj.weight" for p in ("gate", "up", "down")),
    },
}
# (config key, token) pairs whose ids must agree between config.json and the tokenizer.
CONFIG_TOKENS = {
    "llada": (("mask_token_id", "<|mdm_mask|>"), ("eos_token_id", "<|endoftext|>"),
              ("pad_token_id", "<|endoftext|>")),
    "dream": (("mask_token_id", "<|mask|>"), ("eos_token_id", "<|endoftext|>"),
              ("pad_token_id", "<|endoftext|>"), ("bos_token_id", "<|endoftext|>")),
}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_gives_same_bytes(family: str, tmp_path: Path) -> None:
    first = write_tiny_checkpoint(family, tmp_path / "a", seed=7)
    second = write_tiny_checkpoint(family, tmp_path / "b", seed=7)
    other = write_tiny_checkpoint(family, tmp_path / "c", seed=8)
    for name in sorted(p.name for p in first.iterdir()):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert sha256_file(first / "model.safetensors") != sha256_file(other / "model.safetensors")
    assert (first / "config.json").read_bytes() == (other / "config.json").read_bytes()


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_is_the_one_the_goldens_were_made_from(family: str, tmp_path: Path) -> None:
    meta, goldens = load_goldens(family)
    directory = write_tiny_checkpoint(family, tmp_path / family, seed=meta["seed"])
    # The tensors' digest pins what the builder draws; the file digest is kept in the metadata
    # too but also depends on how the installed safetensors lays out its header.
    assert sha256_tensors(directory / "model.safetensors") == meta["checkpoint_sha256"]["tensors"]
    assert _read_json(directory / "config.json") == meta["tiny_config"]
    golden_file = Path(__file__).resolve().parents[1] / "data" / "goldens" / f"{family}.safetensors"
    assert sha256_file(golden_file) == meta["goldens_sha256"]
    vocab = meta["tiny_config"]["vocab_size"]
    for case in meta["cases"]:
        ids, mask = goldens[f"{case}.input_ids"], goldens[f"{case}.attention_mask"]
        assert goldens[f"{case}.logits"].shape == (*ids.shape, vocab)
        assert goldens[f"{case}.logits"].dtype == torch.float32
        assert mask.sum(-1).tolist() == meta["cases"][case]["lengths"]
        assert bool(torch.isfinite(goldens[f"{case}.logits"][mask.bool()]).all())


@pytest.mark.parametrize("family", FAMILIES)
def test_special_token_ids_agree_with_config(family: str, tmp_path: Path) -> None:
    directory = write_tiny_checkpoint(family, tmp_path / family)
    config = _read_json(directory / "config.json")
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    decoder = _read_json(directory / "tokenizer_config.json")["added_tokens_decoder"]
    for key, token in CONFIG_TOKENS[family]:
        token_id = config[key]
        assert tokenizer.token_to_id(token) == token_id, key
        assert decoder[str(token_id)]["content"] == token, key
        # A special token must encode as itself, not as its bytes.
        assert tokenizer.encode(f"a {token} b").ids.count(token_id) == 1, key
    assert tokenizer.get_vocab_size() <= config["vocab_size"]
    for token_id, entry in decoder.items():
        assert tokenizer.token_to_id(entry["content"]) == int(token_id)
    if family == "dream":
        added = _read_json(directory / "added_tokens.json")
        assert all(tokenizer.token_to_id(token) == i for token, i in added.items())


@pytest.mark.parametrize("family", FAMILIES)
def test_sharded_and_unsharded_hold_the_same_tensors(family: str, tmp_path: Path) -> None:
    plain = write_tiny_checkpoint(family, tmp_path / "plain", seed=3)
    sharded = write_tiny_checkpoint(family, tmp_path / "sharded", seed=3, sharded=True)
    assert not (sharded / "model.safetensors").exists()
    index = _read_json(sharded / "model.safetensors.index.json")
    shards = sorted(set(index["weight_map"].values()))
    assert shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    merged: dict[str, torch.Tensor] = {}
    for shard in shards:
        part = load_file(sharded / shard)
        assert part and all(index["weight_map"][name] == shard for name in part)
        merged.update(part)
    expected = load_file(plain / "model.safetensors")
    assert merged.keys() == expected.keys() == index["weight_map"].keys()
    assert all(torch.equal(merged[name], expected[name]) for name in expected)
    total = sum(t.numel() * t.element_size() for t in expected.values())
    assert index["metadata"]["total_size"] == total


@pytest.mark.parametrize("family", FAMILIES)
def test_weight_names_and_shapes_follow_the_reference_layout(family: str, tmp_path: Path) -> None:
    directory = write_tiny_checkpoint(family, tmp_path / family)
    weights = load_file(directory / "model.safetensors")
    config = _read_json(directory / "config.json")
    layers = config["n_layers" if family == "llada" else "num_hidden_layers"]
    expected = {name.replace("{i}", str(i)) for name in REAL_NAMES[family] for i in range(layers)}
    assert set(weights) == expected
    assert {re.sub(r"\.\d+\.", ".{i}.", name) for name in weights} == REAL_NAMES[family]
    if family == "dream":  # GQA: k/v project to num_key_value_heads * head_dim
        head_dim = config["hidden_size"] // config["num_attention_heads"]
        kv_rows = config["num_key_value_heads"] * head_dim
        k_proj = weights["model.layers.0.self_attn.k_proj.weight"]
        assert k_proj.shape == (kv_rows, config["hidden_size"])
        assert kv_rows < config["hidden_size"]
        assert weights["lm_head.weight"].shape == (config["vocab_size"], config["hidden_size"])
    else:
        assert weights["model.transformer.ff_out.weight"].shape == (
            config["embedding_size"], config["d_model"]
        )
        assert weights["model.transformer.blocks.1.ff_out.weight"].shape == (
            config["d_model"], config["mlp_hidden_size"]
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_config_keeps_every_real_key(family: str, tmp_path: Path) -> None:
    config = tiny_config(family)
    real = REFERENCE_CONFIGS[family]
    assert config.keys() == real.keys()
    for key in ("model_type", "architectures", "auto_map", "rope_theta", "rms_norm_eps"):
        assert config[key] == real[key], key
    written = write_reference_config(family, tmp_path / "full")
    assert _read_json(written) == real


def test_bfloat16_checkpoint_stores_bfloat16(tmp_path: Path) -> None:
    directory = write_tiny_checkpoint("dream", tmp_path / "bf16", dtype=torch.bfloat16)
    weights = load_file(directory / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    assert _read_json(directory / "config.json")["torch_dtype"] == "bfloat16"
