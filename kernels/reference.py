"""Plain torch references: materialise the [N, V] logits in float32, then reduce.

These are the test oracle for every implementation, never the engine's path: at LLaDA-8B head
size with 4,096 slots the logits alone take 2 GB (issue 12). Inputs are upcast to float32 first,
so for bf16/fp16 weights the oracle is the exact answer for those weights, not a rounded one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kernels._types import Confidence, SlotScores

__all__ = ["confidence", "slot_logprobs", "slot_scores"]


def _logits(hidden: Tensor, weight: Tensor) -> Tensor:
    return hidden.float() @ weight.float().T  # [N, V]


def _rows(candidate_ids: Tensor, n: int) -> Tensor:
    return candidate_ids.expand(n, -1) if candidate_ids.dim() == 1 else candidate_ids  # [N, K]


def slot_logprobs(hidden: Tensor, weight: Tensor, candidate_ids: Tensor) -> Tensor:
    """matmul -> log_softmax -> gather: the candidates' log-probabilities, [N, K]."""
    logprobs = torch.log_softmax(_logits(hidden, weight), dim=-1)  # [N, V]
    return logprobs.gather(1, _rows(candidate_ids, hidden.shape[0]))


def slot_scores(hidden: Tensor, weight: Tensor, candidate_ids: Tensor) -> SlotScores:
    """matmul -> logsumexp and gather: the two parts the fused ops return."""
    logits = _logits(hidden, weight)  # [N, V]
    ids = _rows(candidate_ids, hidden.shape[0])
    return SlotScores(lse=torch.logsumexp(logits, dim=-1), candidate_logits=logits.gather(1, ids))


def confidence(hidden: Tensor, weight: Tensor) -> Confidence:
    """matmul -> softmax -> max: the largest probability per row and its token id."""
    probs = torch.softmax(_logits(hidden, weight), dim=-1)  # [N, V]
    max_prob, argmax = probs.max(dim=-1)
    return Confidence(max_prob=max_prob, argmax=argmax)
