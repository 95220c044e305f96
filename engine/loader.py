"""Load a local model directory (Hugging Face layout) into the native implementation.

Nothing here touches the network or executes code from the model directory: config.json is
read as data, weights come from safetensors files, and `auto_map` entries are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from engine.errors import (
    ConfigError,
    CorruptCheckpoint,
    MissingTensor,
    ModelLoadError,
    ShapeMismatch,
    UnexpectedTensor,
)
from engine.models import DiffusionTransformer, family_for
from engine.models._transformer import Rotary

__all__ = ["load_model", "read_config"]

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Buffers some exporters write next to the weights; they are recomputed, never loaded.
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no config.json in model directory {model_dir.name!r}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config.json is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise ConfigError("config.json must hold a JSON object")
    return config


def tensor_files(model_dir: Path) -> dict[str, Path]:
    """Checkpoint tensor name -> the safetensors file that holds it."""
    index = model_dir / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
            raise CorruptCheckpoint(f"{INDEX_FILE} has no readable weight_map") from None
        files = {name: model_dir / shard for name, shard in weight_map.items()}
        for shard in sorted(set(files.values())):
            if not shard.is_file():
                raise CorruptCheckpoint(f"{INDEX_FILE} names missing shard {shard.name!r}")
        declared = files
    elif (model_dir / SINGLE_FILE).is_file():
        declared = {}
    else:
        raise ModelLoadError(f"no {SINGLE_FILE} or {INDEX_FILE} in model directory")
    # The files themselves are the truth: read each header once (also catches truncation).
    found: dict[str, Path] = {}
    for path in sorted(set(declared.values())) or [model_dir / SINGLE_FILE]:
        for name in _header_names(path):
            found[name] = path
    for name, path in declared.items():
        if found.get(name) != path:
            raise MissingTensor(f"{INDEX_FILE} maps {name} to {path.name!r}, which lacks it")
    return found


def _header_names(path: Path) -> list[str]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return list(handle.keys())
    except Exception as exc:  # safetensors raises its own Rust-side error types
        reason = " ".join(str(exc).split())[:160]
        raise CorruptCheckpoint(f"{path.name} is truncated or not safetensors: {reason}") from None


def _resolve_dtype(config: dict[str, Any], device: torch.device, dtype: torch.dtype | None):
    if dtype is not None:
        return dtype
    if device.type == "cpu":
        return torch.float32  # bf16 matmuls are slow on most CPUs; weights are upcast exactly
    return _DTYPES.get(str(config.get("torch_dtype")), torch.bfloat16)


def _read_tensors(files: dict[str, Path]) -> Iterator[tuple[str, torch.Tensor]]:
    by_file: dict[Path, list[str]] = {}
    for name, path in files.items():
        by_file.setdefault(path, []).append(name)
    for path, names in by_file.items():
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                for name in names:
                    yield name, handle.get_tensor(name)
        except Exception as exc:
            reason = " ".join(str(exc).split())[:160]
            raise CorruptCheckpoint(f"{path.name}: cannot read tensor data: {reason}") from None


def load_model(
    path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> DiffusionTransformer:
    """Build the native model for a local checkpoint directory; see DESIGN.md "Model directory".

    `dtype=None` keeps float32 on CPU and uses the checkpoint's `torch_dtype` elsewhere.
    Raises a `ModelLoadError` subclass whose one-line message names the problem.
    """
    model_dir = Path(path)
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir.name!r} does not exist")
    config = read_config(model_dir)
    family = family_for(config)
    try:
        shape = family.shape_from_config(config)
    except ValueError as exc:
        raise ConfigError(f"config.json is inconsistent: {exc}") from None
    device = torch.device(device)
    dtype = _resolve_dtype(config, device, dtype)

    names = family.weight_names(shape)
    files = {n: p for n, p in tensor_files(model_dir).items() if not n.endswith(_IGNORED_SUFFIXES)}
    _check_names(names, files)

    with torch.device("meta"):
        model = DiffusionTransformer(shape)
    model = model.to_empty(device=device).to(dtype)
    params = dict(model.named_parameters())
    for ref_name, tensor in _read_tensors(files):
        param = params[names[ref_name]]
        if tuple(tensor.shape) != tuple(param.shape):
            raise ShapeMismatch(
                f"tensor {ref_name} has shape {list(tensor.shape)}, "
                f"config implies {list(param.shape)}"
            )
        with torch.no_grad():
            param.copy_(tensor.to(dtype))
    model.rotary = Rotary(shape).to(device)  # buffers are derived, never read from disk
    model.requires_grad_(False)
    return model.eval()


def _check_names(expected: dict[str, str], found: dict[str, Path]) -> None:
    missing = sorted(set(expected) - set(found))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MissingTensor(f"checkpoint lacks tensor {missing[0]}{more}")
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise UnexpectedTensor(f"checkpoint has unexpected tensor {unexpected[0]}{more}")
