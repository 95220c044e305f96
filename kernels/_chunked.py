"""Chunked torch twin of the fused slot ops: the CPU path and the reference-shaped fallback.

The vocabulary is scanned in column chunks, keeping an online log-sum-exp, a running max and
argmax, and picking the candidates' logits out of whichever chunk holds them, so no more than
one [rows, chunk] float32 block exists at a time. Same idea as the fused linear cross-entropy
of Liger-Kernel and Apple's Cut Cross-Entropy, without the backward pass.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from kernels._types import Confidence, SlotScores

__all__ = ["DEFAULT_BUDGET_BYTES", "ChunkedTorchOps", "vocab_chunk"]

DEFAULT_BUDGET_BYTES = 64 * 2**20
"""Bytes one float32 logits block may take; a few of these are the op's whole working set."""

_MIN_CHUNK = 128  # below this the matmuls get too thin to run at speed
_MAX_ROWS = 8192  # rows per block, so a huge batch does not force the chunk to _MIN_CHUNK


def vocab_chunk(rows: int, vocab: int, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> int:
    """Columns per chunk so that a [rows, chunk] float32 block stays within the budget."""
    return max(1, min(vocab, max(_MIN_CHUNK, budget_bytes // (4 * max(rows, 1)))))


class _Scan(NamedTuple):
    lse: Tensor  # [R] float32
    candidate_logits: Tensor | None  # [R, K] float32
    best: Tensor | None  # [R] float32, the largest logit
    argmax: Tensor | None  # [R] int64


def _scan_vocab(
    hidden: Tensor, weight: Tensor, ids: Tensor | None, want_argmax: bool, chunk: int
) -> _Scan:
    """One pass over the vocabulary for a block of rows; every statistic is float32."""
    rows, vocab = hidden.shape[0], weight.shape[0]
    h = hidden.float()  # [R, d]; no copy when already float32
    f32, dev = torch.float32, hidden.device
    lse = torch.full((rows,), float("-inf"), dtype=f32, device=dev)
    cand = None if ids is None else torch.zeros(ids.shape, dtype=f32, device=dev)
    best = torch.full((rows,), float("-inf"), dtype=f32, device=dev) if want_argmax else None
    arg = torch.zeros(rows, dtype=torch.long, device=dev) if want_argmax else None
    for v0 in range(0, vocab, chunk):
        logits = h @ weight[v0 : v0 + chunk].float().T  # [R, C]
        if ids is not None and cand is not None:
            cand = _pick_candidates(logits, ids, v0, cand)
        if best is not None and arg is not None:
            chunk_max, chunk_arg = logits.max(dim=1)  # [R]
            best, arg = _update_argmax(chunk_max, chunk_arg + v0, best, arg)
        else:
            chunk_max = logits.amax(dim=1)
        lse = torch.logaddexp(lse, _chunk_lse_(logits, chunk_max))
        del logits  # else the next chunk's matmul allocates while this one is still alive
    return _Scan(lse, cand, best, arg)


def _chunk_lse_(logits: Tensor, chunk_max: Tensor) -> Tensor:
    """log-sum-exp of each row, computed in place: the chunk is dead after this, and reusing
    its memory halves the working set (torch.logsumexp would allocate a second [R, C])."""
    return logits.sub_(chunk_max[:, None]).exp_().sum(dim=1).log_().add_(chunk_max)


def _pick_candidates(logits: Tensor, ids: Tensor, v0: int, cand: Tensor) -> Tensor:
    """Take the logits of the candidate ids that fall inside this chunk."""
    local = ids - v0  # [R, K]
    inside = (local >= 0) & (local < logits.shape[1])
    picked = logits.gather(1, local.clamp(0, logits.shape[1] - 1))  # [R, K]
    return torch.where(inside, picked, cand)


def _update_argmax(
    chunk_max: Tensor, chunk_arg: Tensor, best: Tensor, arg: Tensor
) -> tuple[Tensor, Tensor]:
    """Strictly greater only, so the first index wins a tie across chunks, as in torch.argmax."""
    better = chunk_max > best
    return torch.where(better, chunk_max, best), torch.where(better, chunk_arg, arg)


class ChunkedTorchOps:
    """The slot ops in plain torch, with bounded working memory; runs on any device."""

    name = "torch-chunked"

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES, chunk: int | None = None):
        self.budget_bytes = budget_bytes
        self.chunk = chunk  # fixed column chunk (tests use it to force ragged chunks)

    def _chunk(self, rows: int, vocab: int) -> int:
        return self.chunk or vocab_chunk(rows, vocab, self.budget_bytes)

    def slot_logprobs(self, hidden: Tensor, weight: Tensor, candidate_ids: Tensor) -> SlotScores:
        """Full-vocabulary log-sum-exp and candidate logits; inputs validated, ids [N, K], N > 0."""
        lses, cands = [], []
        for r0 in range(0, hidden.shape[0], _MAX_ROWS):
            h, ids = hidden[r0 : r0 + _MAX_ROWS], candidate_ids[r0 : r0 + _MAX_ROWS]
            scan = _scan_vocab(h, weight, ids, False, self._chunk(h.shape[0], weight.shape[0]))
            assert scan.candidate_logits is not None
            lses.append(scan.lse)
            cands.append(scan.candidate_logits)
        return SlotScores(lse=torch.cat(lses), candidate_logits=torch.cat(cands))

    def confidence(self, hidden: Tensor, weight: Tensor) -> Confidence:
        """Largest softmax probability and its token id per row; inputs validated, N > 0."""
        probs, args = [], []
        for r0 in range(0, hidden.shape[0], _MAX_ROWS):
            h = hidden[r0 : r0 + _MAX_ROWS]
            scan = _scan_vocab(h, weight, None, True, self._chunk(h.shape[0], weight.shape[0]))
            assert scan.best is not None and scan.argmax is not None
            probs.append(torch.exp(scan.best - scan.lse))
            args.append(scan.argmax)
        return Confidence(max_prob=torch.cat(probs), argmax=torch.cat(args))
