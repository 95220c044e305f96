"""Tiny random checkpoints in the real LLaDA / Dream layouts, for tests, benches and the demo.

They exercise the loader, tokenizer and model families exactly as a real directory would; their
weights are random, so their labels are noise.
"""

from engine.testing.tiny_models import (
    FAMILIES,
    REFERENCE_CONFIGS,
    REFERENCE_PARAMETER_COUNTS,
    build_tokenizer,
    sha256_file,
    sha256_tensors,
    tiny_config,
    write_reference_config,
    write_tiny_checkpoint,
)

__all__ = [
    "FAMILIES",
    "REFERENCE_CONFIGS",
    "REFERENCE_PARAMETER_COUNTS",
    "build_tokenizer",
    "sha256_file",
    "sha256_tensors",
    "tiny_config",
    "write_reference_config",
    "write_tiny_checkpoint",
]
