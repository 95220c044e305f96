"""Golden parity: Tacet's native families against the reference modeling code's logits.

The goldens (tests/data/goldens, README there) were produced by the reference implementations on
the tiny checkpoints that `write_tiny_checkpoint` rebuilds from the recorded seed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine import load_model
from tests.fixtures import FAMILIES, load_goldens, sha256_tensors, write_tiny_checkpoint

CASES = ("unpadded.0", "unpadded.1", "unpadded.2", "right", "left")


@pytest.fixture(scope="module", params=FAMILIES)
def family_goldens(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    family = request.param
    meta, tensors = load_goldens(family)
    directory = write_tiny_checkpoint(family, tmp_path_factory.mktemp(family), seed=meta["seed"])
    return family, meta, tensors, directory


def test_checkpoint_is_the_one_the_goldens_were_made_from(family_goldens) -> None:
    _, meta, _, directory = family_goldens
    expected = meta["checkpoint_sha256"]["tensors"]
    assert sha256_tensors(directory / "model.safetensors") == expected


@pytest.mark.parametrize("case", CASES)
def test_logits_match_reference(family_goldens, case: str) -> None:
    _, meta, tensors, directory = family_goldens
    model = load_model(Path(directory), dtype=torch.float32)
    ids, mask = tensors[f"{case}.input_ids"], tensors[f"{case}.attention_mask"]
    expected = tensors[f"{case}.logits"]
    got = model(ids, None if case.startswith("unpadded") else mask)
    real = mask.bool()
    error = (got[real] - expected[real]).abs().max().item()
    assert error <= meta["tolerance_max_abs"], f"max abs error {error:.3g}"
    assert expected.abs().max() > 1.0  # the goldens are not trivially small
