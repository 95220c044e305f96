"""Triton implementation of the slot ops; imported only when Triton is installed.

`slot_logprobs` and `confidence` share one kernel, a tiled matmul of the slots' hidden states
against the head weight whose epilogue reduces each [BLOCK_N, BLOCK_V] logits tile to three
numbers per row (tile max, sum of exp below it, first argmax). Only these [N, V / BLOCK_V]
statistics reach memory, a 1/BLOCK_V fraction of the logits; torch folds them into the
log-sum-exp and argmax, as split-softmax does in flash-decoding. The candidates' logits come
from a second, small gather-dot kernel. Products accumulate in float32 whatever the input dtype.

Under TRITON_INTERPRET=1 (set before triton is first imported: Triton decides then whether its
own library functions are interpreted) the same kernels run on CPU tensors through numpy, at
small block sizes and without autotuning; that is how CI checks them without a GPU.
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels._types import Confidence, SlotScores

__all__ = ["TritonOps"]


def _vocab_tile_stats_kernel(
    h_ptr,
    w_ptr,
    max_ptr,
    sum_ptr,
    arg_ptr,
    N,
    V,
    D,
    stride_hn,
    stride_hd,
    stride_wv,
    stride_wd,
    n_tiles,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    # Row blocks vary fastest, so neighbouring programs share one weight tile: the [V, d] weight
    # is read from memory about once, the much smaller [N, d] hidden states many times from L2.
    pid = tl.program_id(0)
    n_row_blocks = tl.cdiv(N, BLOCK_N)
    pid_n = pid % n_row_blocks
    pid_v = pid // n_row_blocks
    rows = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    cols = (pid_v * BLOCK_V + tl.arange(0, BLOCK_V)).to(tl.int64)
    row_ok = rows < N
    col_ok = cols < V
    acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_ok = ds < D
        h = tl.load(
            h_ptr + rows[:, None] * stride_hn + ds[None, :] * stride_hd,
            mask=row_ok[:, None] & d_ok[None, :],
            other=0.0,
        )  # [BLOCK_N, BLOCK_D]
        w = tl.load(
            w_ptr + cols[None, :] * stride_wv + ds[:, None] * stride_wd,
            mask=col_ok[None, :] & d_ok[:, None],
            other=0.0,
        )  # [BLOCK_D, BLOCK_V]
        if UPCAST:  # interpreter only: its bf16 dot multiplies raw bits (triton-lang/triton#11584)
            h = h.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(h, w, acc, input_precision=INPUT_PRECISION)
    logits = tl.where(col_ok[None, :], acc, float("-inf"))  # [BLOCK_N, BLOCK_V]
    tile_max = tl.max(logits, axis=1)
    tile_sum = tl.sum(tl.exp(logits - tile_max[:, None]), axis=1)
    tile_arg = tl.argmax(logits, axis=1) + pid_v * BLOCK_V
    out = rows * n_tiles + pid_v
    tl.store(max_ptr + out, tile_max, mask=row_ok)
    tl.store(sum_ptr + out, tile_sum, mask=row_ok)
    tl.store(arg_ptr + out, tile_arg, mask=row_ok)


def _candidate_logits_kernel(
    h_ptr,
    w_ptr,
    ids_ptr,
    out_ptr,
    K,
    D,
    stride_hn,
    stride_hd,
    stride_wv,
    stride_wd,
    stride_in,
    stride_ik,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # One row and a block of its candidates per program: K is small (label codes), so a dot
    # product per candidate in float32 is cheap next to the vocabulary scan.
    row = tl.program_id(0).to(tl.int64)
    ks = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    k_ok = ks < K
    ids = tl.load(ids_ptr + row * stride_in + ks * stride_ik, mask=k_ok, other=0).to(tl.int64)
    acc = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_ok = ds < D
        h = tl.load(h_ptr + row * stride_hn + ds * stride_hd, mask=d_ok, other=0.0)
        w = tl.load(
            w_ptr + ids[:, None] * stride_wv + ds[None, :] * stride_wd,
            mask=k_ok[:, None] & d_ok[None, :],
            other=0.0,
        )  # [BLOCK_K, BLOCK_D]
        acc += tl.sum(w.to(tl.float32) * h.to(tl.float32)[None, :], axis=1)
    tl.store(out_ptr + row * K + ks, acc, mask=k_ok)


_BLOCK_V = 128  # fixed, not tuned: the statistics buffers are sized by it before launch
_INTERPRET_BLOCKS = {"BLOCK_N": 16, "BLOCK_V": 32, "BLOCK_D": 32}  # small: numpy runs each program
_CANDIDATE_BLOCK_D = 128


def _tuning_configs() -> list[Any]:
    """A few tile shapes for the compiled kernel; autotuned once per (d, dtype) on first call."""
    shapes = [(128, 64, 8, 3), (128, 32, 4, 4), (64, 64, 4, 4), (256, 64, 8, 3), (64, 32, 4, 5)]
    return [
        triton.Config({"BLOCK_N": bn, "BLOCK_D": bd}, num_warps=warps, num_stages=stages)
        for bn, bd, warps, stages in shapes
    ]


class _Kernels(NamedTuple):
    tile_stats: Any
    candidates: Any
    block_v: int
    fixed_blocks: dict[str, int]  # launch-time block sizes; empty when the autotuner picks them
    interpreted: bool


def interpreting() -> bool:
    """Triton's own switch: kernels run under the interpreter when TRITON_INTERPRET=1."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def _kernels(interpreted: bool) -> _Kernels:
    """Build the kernels once per mode: autotuned when compiled, small fixed tiles when not."""
    if interpreted:
        blocks = dict(_INTERPRET_BLOCKS)
        block_v = blocks.pop("BLOCK_V")
        stats = triton.jit(_vocab_tile_stats_kernel)
        return _Kernels(stats, triton.jit(_candidate_logits_kernel), block_v, blocks, True)
    stats = triton.autotune(configs=_tuning_configs(), key=["D"])(
        triton.jit(_vocab_tile_stats_kernel)
    )
    return _Kernels(stats, triton.jit(_candidate_logits_kernel), _BLOCK_V, {}, False)


class _TileStats(NamedTuple):
    tile_max: Tensor  # [N, T] float32
    tile_sum: Tensor  # [N, T] float32, sum of exp(logit - tile_max) over the tile
    tile_arg: Tensor  # [N, T] int32, vocabulary index of the tile's first max


class TritonOps:
    """The slot ops as Triton kernels: compiled on CUDA, or interpreted on CPU for tests."""

    name = "triton"

    def __init__(self) -> None:
        self._k = _kernels(interpreting())
        self.interpret = self._k.interpreted

    def _tile_stats(self, hidden: Tensor, weight: Tensor) -> _TileStats:
        n, d = hidden.shape
        vocab = weight.shape[0]
        n_tiles = triton.cdiv(vocab, self._k.block_v)
        dev = hidden.device
        stats = _TileStats(
            torch.empty(n, n_tiles, dtype=torch.float32, device=dev),
            torch.empty(n, n_tiles, dtype=torch.float32, device=dev),
            torch.empty(n, n_tiles, dtype=torch.int32, device=dev),
        )

        def grid(meta: dict[str, Any]) -> tuple[int]:
            return (triton.cdiv(n, meta["BLOCK_N"]) * n_tiles,)

        # fp32 inputs keep fp32 products: TF32 would cost ~1e-3 relative error in the logits.
        precision = "ieee" if hidden.dtype == torch.float32 else "tf32"
        self._k.tile_stats[grid](
            hidden, weight, *stats, n, vocab, d,
            hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1), n_tiles,
            BLOCK_V=self._k.block_v, INPUT_PRECISION=precision,
            UPCAST=self._k.interpreted and hidden.dtype == torch.bfloat16, **self._k.fixed_blocks,
        )  # fmt: skip
        return stats

    def _candidate_logits(self, hidden: Tensor, weight: Tensor, ids: Tensor) -> Tensor:
        n, d = hidden.shape
        k = ids.shape[1]
        out = torch.empty(n, k, dtype=torch.float32, device=hidden.device)
        block_k = min(64, triton.next_power_of_2(k))
        self._k.candidates[(n, triton.cdiv(k, block_k))](
            hidden, weight, ids, out, k, d,
            hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
            ids.stride(0), ids.stride(1),
            BLOCK_K=block_k, BLOCK_D=min(_CANDIDATE_BLOCK_D, triton.next_power_of_2(d)),
        )  # fmt: skip
        return out

    def slot_logprobs(self, hidden: Tensor, weight: Tensor, candidate_ids: Tensor) -> SlotScores:
        """Full-vocabulary log-sum-exp and candidate logits; inputs validated, ids [N, K], N > 0."""
        lse, _, _ = _fold(self._tile_stats(hidden, weight))
        return SlotScores(lse, self._candidate_logits(hidden, weight, candidate_ids))

    def confidence(self, hidden: Tensor, weight: Tensor) -> Confidence:
        """Largest softmax probability and its token id per row; inputs validated, N > 0."""
        lse, best, argmax = _fold(self._tile_stats(hidden, weight))
        return Confidence(max_prob=torch.exp(best - lse), argmax=argmax)


def _fold(stats: _TileStats) -> tuple[Tensor, Tensor, Tensor]:
    """Per-tile statistics -> per-row log-sum-exp, max logit and first argmax."""
    best, tile = stats.tile_max.max(dim=1)  # [N]; the first tile on ties
    scaled = stats.tile_sum * torch.exp(stats.tile_max - best[:, None])  # [N, T]
    lse = best + torch.log(scaled.sum(dim=1))
    argmax = stats.tile_arg.gather(1, tile[:, None]).squeeze(1).long()
    return lse, best, argmax
