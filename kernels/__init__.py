"""Hot ops on the LM head at answer slots, each a Triton kernel with a chunked torch twin.

    ops = SlotOps.for_device("cuda")          # chosen once: ops.name is "triton" or "torch-chunked"
    scores = ops.slot_logprobs(hidden, weight, candidate_ids)
    logprobs = scores.logprobs()              # [N, K], normalised over the whole vocabulary
    conf = ops.confidence(hidden, weight)     # max_prob [N], argmax [N]

Neither op materialises the [N, V] logits (issue 12). Triton is optional: without it the
package imports and every op runs the torch twin. `kernels.reference` holds the plain torch
versions the tests compare against.
"""

from kernels._dispatch import (
    Prefer,
    SlotOps,
    confidence,
    default_ops,
    slot_logprobs,
    triton_available,
)
from kernels._types import Confidence, SlotScores
from kernels.errors import InvalidSlotInput, KernelError, KernelUnavailable

__all__ = [
    "Confidence",
    "InvalidSlotInput",
    "KernelError",
    "KernelUnavailable",
    "Prefer",
    "SlotOps",
    "SlotScores",
    "confidence",
    "default_ops",
    "slot_logprobs",
    "triton_available",
]
