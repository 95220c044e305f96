"""Result types of the slot ops: small named tuples of float32 tensors."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["Confidence", "SlotScores"]


class SlotScores(NamedTuple):
    """What scoring needs from the LM head at answer slots, without the [N, V] logits.

    The full-vocabulary log-sum-exp is kept (not only the candidates' softmax) so that the mass
    outside the label set stays measurable for abstention and calibration.
    """

    lse: Tensor  # [N] float32: log-sum-exp over the vocabulary of hidden @ weight.T
    candidate_logits: Tensor  # [N, K] float32: logits of the requested token ids

    def logprobs(self) -> Tensor:
        """Log-probabilities of the candidates under the full-vocabulary softmax, [N, K]."""
        return self.candidate_logits - self.lse[:, None]


class Confidence(NamedTuple):
    """Per-position confidence: the largest softmax probability and the token that has it."""

    max_prob: Tensor  # [N] float32
    argmax: Tensor  # [N] int64; the first index on ties, as torch.argmax
