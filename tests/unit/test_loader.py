"""engine.load_model: real checkpoint layouts in, clear one-line errors for broken ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine import load_model, load_tokenizer
from engine.errors import (
    ConfigError,
    CorruptCheckpoint,
    MissingTensor,
    ShapeMismatch,
    UnexpectedTensor,
    UnknownModelType,
)
from engine.models import DiffusionTransformer, family_for
from tests.fixtures import (
    FAMILIES,
    REFERENCE_CONFIGS,
    REFERENCE_PARAMETER_COUNTS,
    write_tiny_checkpoint,
)


@pytest.fixture(params=FAMILIES)
def checkpoint(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return write_tiny_checkpoint(request.param, tmp_path / request.param, seed=3)


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint / "model.safetensors")


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


def test_loads_every_tensor_of_the_checkpoint(checkpoint: Path) -> None:
    model = load_model(checkpoint)
    weights = _weights(checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    names = family_for(config).weight_names(model.shape)
    params = dict(model.named_parameters())
    assert set(names) == set(weights)
    for ref, native in names.items():
        assert torch.equal(params[native], weights[ref]), ref


def test_sharded_checkpoint_gives_the_same_logits(tmp_path: Path) -> None:
    for family in FAMILIES:
        plain = load_model(write_tiny_checkpoint(family, tmp_path / f"{family}-1", seed=5))
        sharded_dir = write_tiny_checkpoint(family, tmp_path / f"{family}-2", seed=5, sharded=True)
        assert (sharded_dir / "model.safetensors.index.json").is_file()
        sharded = load_model(sharded_dir)
        ids = torch.randint(0, 200, (2, 9), generator=torch.Generator().manual_seed(0))
        assert torch.equal(plain(ids), sharded(ids))


def test_unknown_model_type_is_named(checkpoint: Path) -> None:
    config = json.loads((checkpoint / "config.json").read_text())
    config["model_type"] = "mamba2"
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnknownModelType) as exc:
        load_model(checkpoint)
    assert "mamba2" in _one_line(exc)


def test_missing_tensor_is_named(checkpoint: Path) -> None:
    weights = _weights(checkpoint)
    victim = sorted(weights)[len(weights) // 2]
    del weights[victim]
    save_file(weights, str(checkpoint / "model.safetensors"))
    with pytest.raises(MissingTensor) as exc:
        load_model(checkpoint)
    assert victim in _one_line(exc)


def test_unexpected_tensor_is_named(checkpoint: Path) -> None:
    weights = _weights(checkpoint)
    weights["model.extra_head.weight"] = torch.zeros(2, 2)
    save_file(weights, str(checkpoint / "model.safetensors"))
    with pytest.raises(UnexpectedTensor) as exc:
        load_model(checkpoint)
    assert "model.extra_head.weight" in _one_line(exc)


def test_wrong_shape_is_named(checkpoint: Path) -> None:
    weights = _weights(checkpoint)
    victim = next(n for n in sorted(weights) if n.endswith("up_proj.weight"))
    rows, cols = weights[victim].shape
    weights[victim] = torch.zeros(rows + 1, cols)
    save_file(weights, str(checkpoint / "model.safetensors"))
    with pytest.raises(ShapeMismatch) as exc:
        load_model(checkpoint)
    message = _one_line(exc)
    assert victim in message and str([rows + 1, cols]) in message


def test_truncated_safetensors_is_named(checkpoint: Path) -> None:
    path = checkpoint / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpoint) as exc:
        load_model(checkpoint)
    assert "model.safetensors" in _one_line(exc)


def test_garbage_file_is_corrupt(checkpoint: Path) -> None:
    (checkpoint / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CorruptCheckpoint):
        load_model(checkpoint)


def test_missing_shard_is_named(tmp_path: Path) -> None:
    directory = write_tiny_checkpoint("llada", tmp_path / "m", sharded=True)
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (directory / shard).unlink()
    with pytest.raises(CorruptCheckpoint) as exc:
        load_model(directory)
    assert shard in _one_line(exc)


def test_unsupported_feature_is_refused(tmp_path: Path) -> None:
    directory = write_tiny_checkpoint("llada", tmp_path / "m")
    config = json.loads((directory / "config.json").read_text())
    config["weight_tying"] = True
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError) as exc:
        load_model(directory)
    assert "weight_tying" in _one_line(exc)


def test_auto_map_code_is_never_imported(checkpoint: Path) -> None:
    """A model directory's Python must never run (no trust_remote_code)."""
    marker = checkpoint / "ran"
    for name in ("modeling_llada.py", "modeling_dream.py", "configuration_llada.py"):
        (checkpoint / name).write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    load_model(checkpoint)
    load_tokenizer(checkpoint)
    assert not marker.exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_full_size_configs_have_reference_parameter_counts(family: str) -> None:
    """LLaDA-8B-Instruct and Dream-v0-Instruct-7B, built on the meta device (no memory)."""
    config = REFERENCE_CONFIGS[family]
    shape = family_for(config).shape_from_config(config)
    with torch.device("meta"):
        model = DiffusionTransformer(shape)
    assert sum(p.numel() for p in model.parameters()) == REFERENCE_PARAMETER_COUNTS[family]
    assert shape.mask_token_id == config["mask_token_id"]


@pytest.mark.parametrize("family", FAMILIES)
def test_default_dtype_is_float32_on_cpu_and_can_be_chosen(family: str, tmp_path: Path) -> None:
    directory = write_tiny_checkpoint(family, tmp_path / family)
    assert next(load_model(directory).parameters()).dtype == torch.float32
    model = load_model(directory, dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert model(torch.tensor([[1, 2, 3]])).dtype == torch.bfloat16


def test_tokenizer_and_chat_template(checkpoint: Path) -> None:
    tokenizer = load_tokenizer(checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    ids = tokenizer.encode("Heart and vascular medicine")
    assert tokenizer.decode(ids) == "Heart and vascular medicine"
    rendered = tokenizer.render_chat(
        [{"role": "user", "content": "hello"}], add_generation_prompt=True
    )
    assert "hello" in rendered
    mask = "<|mdm_mask|>" if config["model_type"] == "llada" else "<|mask|>"
    assert tokenizer.token_id(mask) == config["mask_token_id"]
