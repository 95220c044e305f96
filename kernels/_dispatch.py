"""SlotOps: the implementation of the slot ops, chosen once per device and then reused.

Choosing at construction (not per call) keeps the hot path free of capability checks and makes
the choice a single visible fact (`SlotOps.name`) for the engine's startup log and
`tacet zdr report`, in the manner of vLLM's CustomOp.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Literal, Protocol

import torch
from torch import Tensor

from kernels._chunked import DEFAULT_BUDGET_BYTES, ChunkedTorchOps
from kernels._types import Confidence, SlotScores
from kernels.errors import InvalidSlotInput, KernelUnavailable

__all__ = ["Prefer", "SlotOps", "confidence", "default_ops", "slot_logprobs", "triton_available"]

Prefer = Literal["auto", "torch", "triton"]
_PREFER: tuple[str, ...] = ("auto", "torch", "triton")


class _Backend(Protocol):
    name: str

    def slot_logprobs(self, hidden: Tensor, weight: Tensor, candidate_ids: Tensor) -> SlotScores:
        """Inputs already validated: ids [N, K] in range, N > 0."""
        ...

    def confidence(self, hidden: Tensor, weight: Tensor) -> Confidence:
        """Inputs already validated: N > 0."""
        ...


def triton_available() -> bool:
    """True when the `triton` package can be imported (the `gpu` or `dev` extra)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # a None entry in sys.modules, a broken install
        return False


def _interpreting() -> bool:
    """Triton's own switch: kernels run under its interpreter when TRITON_INTERPRET=1."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


class SlotOps:
    """The two fused LM-head ops at answer slots, bound to one implementation."""

    def __init__(self, backend: _Backend):
        self._backend = backend

    @property
    def name(self) -> str:
        """'triton' or 'torch-chunked': which implementation runs the ops."""
        return self._backend.name

    @property
    def interpreted(self) -> bool:
        """True when Triton kernels run under the interpreter (CPU tests), never in serving."""
        return bool(getattr(self._backend, "interpret", False))

    def __repr__(self) -> str:
        return f"SlotOps(name={self.name!r}, interpreted={self.interpreted})"

    @classmethod
    def for_device(
        cls,
        device: torch.device | str,
        *,
        prefer: Prefer = "auto",
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        chunk: int | None = None,
    ) -> SlotOps:
        """Pick the implementation for tensors on `device`.

        auto: Triton on CUDA when it is installed (and not interpreted), else the chunked torch
        twin. triton: Triton or KernelUnavailable; off CUDA only under TRITON_INTERPRET=1, the
        CI path. torch: the chunked twin, whose working set is a few times `budget_bytes` (or
        whose vocabulary chunk is `chunk` columns, when given).
        """
        if prefer not in _PREFER:
            raise ValueError(f"prefer must be one of {_PREFER}, got {prefer!r}")
        on_cuda = torch.device(device).type == "cuda"
        if prefer == "torch":
            return cls(ChunkedTorchOps(budget_bytes=budget_bytes, chunk=chunk))
        if prefer == "auto":
            if on_cuda and triton_available() and not _interpreting():
                return cls(_triton_backend())
            return cls(ChunkedTorchOps(budget_bytes=budget_bytes, chunk=chunk))
        if not triton_available():
            raise KernelUnavailable("prefer='triton' but the triton package is not installed")
        if not on_cuda and not _interpreting():
            raise KernelUnavailable(
                f"prefer='triton' on device {str(device)!r} needs CUDA or TRITON_INTERPRET=1"
            )
        return cls(_triton_backend())

    def slot_logprobs(self, hidden: Tensor, weight: Tensor, candidate_ids: Tensor) -> SlotScores:
        """Full-vocabulary log-sum-exp [N] and candidate logits [N, K], float32, no [N, V].

        hidden [N, d] and weight [V, d] share dtype and device; candidate_ids is [N, K] or
        [K] (the same candidates for every row), integer, each id in [0, V).
        """
        _check_head(hidden, weight)
        ids = _candidate_rows(candidate_ids, hidden, weight.shape[0])
        if hidden.shape[0] == 0:
            k = ids.shape[1]
            return SlotScores(_f32(0, device=hidden.device), _f32(0, k, device=hidden.device))
        return self._backend.slot_logprobs(hidden, weight, ids)

    def confidence(self, hidden: Tensor, weight: Tensor) -> Confidence:
        """Largest softmax probability [N] float32 and its token id [N] int64, no [N, V]."""
        _check_head(hidden, weight)
        if hidden.shape[0] == 0:
            argmax = torch.empty(0, dtype=torch.long, device=hidden.device)
            return Confidence(_f32(0, device=hidden.device), argmax)
        return self._backend.confidence(hidden, weight)


def _f32(*shape: int, device: torch.device) -> Tensor:
    return torch.empty(shape, dtype=torch.float32, device=device)


def _triton_backend() -> _Backend:
    from kernels._triton import TritonOps  # triton is optional: import only when chosen

    return TritonOps()


def _check_head(hidden: Tensor, weight: Tensor) -> None:
    """Reject inputs that would silently broadcast, overflow or read out of bounds."""
    if hidden.dim() != 2 or weight.dim() != 2:
        raise InvalidSlotInput(
            f"hidden must be [N, d] and weight [V, d], got {tuple(hidden.shape)} "
            f"and {tuple(weight.shape)}"
        )
    if hidden.shape[1] != weight.shape[1]:
        raise InvalidSlotInput(f"hidden has d={hidden.shape[1]}, weight has d={weight.shape[1]}")
    if weight.shape[0] == 0 or weight.shape[1] == 0:
        raise InvalidSlotInput(f"empty vocabulary or hidden size: weight {tuple(weight.shape)}")
    if hidden.dtype != weight.dtype or not hidden.dtype.is_floating_point:
        raise InvalidSlotInput(
            f"hidden and weight need one floating dtype, got {hidden.dtype} and {weight.dtype}"
        )
    if hidden.device != weight.device:
        raise InvalidSlotInput(f"hidden is on {hidden.device}, weight on {weight.device}")


def _candidate_rows(candidate_ids: Tensor, hidden: Tensor, vocab: int) -> Tensor:
    """Candidate ids as an [N, K] int64 view (no copy for a shared [K] list), checked against V."""
    dtype = candidate_ids.dtype
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        raise InvalidSlotInput(f"candidate_ids must be integer, got {dtype}")
    if candidate_ids.device != hidden.device:
        raise InvalidSlotInput(f"candidate_ids on {candidate_ids.device}, hidden {hidden.device}")
    n = hidden.shape[0]
    rows = candidate_ids.expand(n, -1) if candidate_ids.dim() == 1 else candidate_ids
    if rows.dim() != 2 or rows.shape[0] != n or rows.shape[1] == 0:
        raise InvalidSlotInput(
            f"candidate_ids must be [N, K] or [K] with K >= 1 and N={n}, "
            f"got {tuple(candidate_ids.shape)}"
        )
    # One device sync per batch buys a clear error instead of an out-of-bounds read.
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= vocab):
        raise InvalidSlotInput(f"candidate_ids must lie in [0, {vocab})")
    return rows.long()


@functools.cache
def default_ops(device_type: str) -> SlotOps:
    """The process-wide SlotOps for a device type, built on first use with prefer='auto'."""
    return SlotOps.for_device(device_type)


def slot_logprobs(hidden: Tensor, weight: Tensor, candidate_ids: Tensor) -> SlotScores:
    """`SlotOps.slot_logprobs` through the default implementation for hidden's device."""
    return default_ops(hidden.device.type).slot_logprobs(hidden, weight, candidate_ids)


def confidence(hidden: Tensor, weight: Tensor) -> Confidence:
    """`SlotOps.confidence` through the default implementation for hidden's device."""
    return default_ops(hidden.device.type).confidence(hidden, weight)
