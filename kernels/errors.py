"""The kernels' exception tree. Messages name shapes and dtypes, never tensor values.

    KernelError
    ├── KernelUnavailable      the requested implementation cannot run here (no Triton, no CUDA)
    └── InvalidSlotInput       shapes, dtypes, devices or candidate ids do not fit together
"""

from __future__ import annotations

__all__ = ["InvalidSlotInput", "KernelError", "KernelUnavailable"]


class KernelError(Exception):
    """Root of every error the kernels raise on purpose."""


class KernelUnavailable(KernelError):
    """An implementation was asked for explicitly but cannot run on this machine."""


class InvalidSlotInput(KernelError, ValueError):
    """The inputs of an op are inconsistent; a ValueError so plain callers can catch it."""
