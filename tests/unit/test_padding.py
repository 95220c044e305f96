"""Padding: every real token gets the logits its sequence gets alone (left and right)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine import load_model
from tests.fixtures import FAMILIES, write_tiny_checkpoint


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_matches_sequences_alone(family: str, side: str, tmp_path: Path) -> None:
    model = load_model(write_tiny_checkpoint(family, tmp_path / family, seed=11))
    generator = torch.Generator().manual_seed(7)
    lengths = [3, 17, 9, 24, 1]
    seqs = [torch.randint(0, 290, (n,), generator=generator) for n in lengths]
    width = max(lengths)
    ids = torch.full((len(seqs), width), 0, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, seq in enumerate(seqs):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[i, span], mask[i, span] = seq, 1
    batched = model(ids, mask)
    for i, seq in enumerate(seqs):
        alone = model(seq[None])[0]
        real = batched[i][mask[i].bool()]
        torch.testing.assert_close(real, alone, atol=1e-5, rtol=0)


def test_padding_changes_nothing_only_when_masked(tmp_path: Path) -> None:
    """Sanity check that the test above can fail: without the mask, padding leaks in."""
    model = load_model(write_tiny_checkpoint("llada", tmp_path / "m", seed=11))
    seq = torch.arange(5, 15)[None]
    padded = torch.cat([seq, torch.zeros(1, 6, dtype=torch.long)], dim=1)
    unmasked = model(padded)[0, :10]
    assert (unmasked - model(seq)[0]).abs().max() > 1e-3
