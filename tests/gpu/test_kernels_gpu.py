"""Slot ops on CUDA (issue 12): the compiled Triton kernels and the chunked twin against the
float32 reference, at shapes too large for the interpreter.

Tolerances: bf16/fp16 products are exact in float32 and both sides accumulate in float32, so
differences come from summation order over d (up to 1024 here) on logits of a few units:
about 1e-5. float32 inputs go through tl.dot with input_precision="ieee" (no TF32), and the
reference's matmul does not use TF32 either (torch's default). 1e-3 absolute leaves headroom.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import kernels
from kernels import SlotOps, reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

TOL = {"atol": 1e-3, "rtol": 1e-4}
SHAPES = [  # (N, V, d, K, shared ids)
    (1, 129, 64, 1, False),
    (300, 5003, 256, 8, False),
    (257, 32_000, 1024, 16, True),
]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def make_inputs(n: int, vocab: int, dim: int, k: int, shared: bool, dtype: torch.dtype, seed=0):
    """Logits of a few units, as from a trained head: weight rows scaled by 3/sqrt(d)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    hidden = torch.randn(n, dim, device="cuda", generator=g).to(dtype)
    weight = (torch.randn(vocab, dim, device="cuda", generator=g) * 3 / dim**0.5).to(dtype)
    ids = torch.randint(0, vocab, (k,) if shared else (n, k), device="cuda", generator=g)
    ids[..., 0] = vocab - 1
    return hidden, weight, ids


def implementations() -> list[SlotOps]:
    ops = [SlotOps.for_device("cuda", prefer="torch")]
    if kernels.triton_available():
        ops.append(SlotOps.for_device("cuda", prefer="triton"))
    return ops


def test_auto_picks_triton_on_cuda():
    if not kernels.triton_available():
        pytest.skip("triton is not installed (the gpu extra installs it)")
    assert SlotOps.for_device("cuda").name == "triton"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "n{}-v{}-d{}-k{}-{}".format(*s))
def test_slot_logprobs_match_reference(shape, dtype):
    hidden, weight, ids = make_inputs(*shape, dtype)
    want = reference.slot_scores(hidden, weight, ids)
    want_logprobs = reference.slot_logprobs(hidden, weight, ids)
    for ops in implementations():
        got = ops.slot_logprobs(hidden, weight, ids)
        assert got.lse.dtype == torch.float32, ops.name
        torch.testing.assert_close(got.lse, want.lse, **TOL, msg=ops.name)
        torch.testing.assert_close(got.candidate_logits, want.candidate_logits, **TOL)
        torch.testing.assert_close(got.logprobs(), want_logprobs, **TOL)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "n{}-v{}-d{}-k{}-{}".format(*s))
def test_confidence_matches_reference(shape, dtype):
    hidden, weight, _ = make_inputs(*shape, dtype)
    want = reference.confidence(hidden, weight)
    for ops in implementations():
        got = ops.confidence(hidden, weight)
        assert got.argmax.dtype == torch.int64, ops.name
        torch.testing.assert_close(got.max_prob, want.max_prob, **TOL, msg=ops.name)
        prob_at_got = reference.slot_logprobs(hidden, weight, got.argmax[:, None]).exp()[:, 0]
        near_tie = (prob_at_got - want.max_prob).abs() <= TOL["atol"]
        assert bool(((got.argmax == want.argmax) | near_tie).all()), ops.name


def _peak_extra_bytes(fn, *args: Tensor) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn(*args)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def test_triton_never_materialises_the_logits():
    if not kernels.triton_available():
        pytest.skip("triton is not installed (the gpu extra installs it)")
    n, vocab = 2048, 32_768
    hidden, weight, ids = make_inputs(n, vocab, 256, 8, False, torch.bfloat16)
    ops = SlotOps.for_device("cuda", prefer="triton")
    ops.slot_logprobs(hidden, weight, ids)  # autotune and compile outside the measurement
    logits_bytes = n * vocab * 4
    assert _peak_extra_bytes(ops.slot_logprobs, hidden, weight, ids) < logits_bytes / 10
    assert _peak_extra_bytes(ops.confidence, hidden, weight) < logits_bytes / 10
