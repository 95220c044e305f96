"""Tacet's engine: native diffusion-LM families, checkpoint loading, classification."""

from __future__ import annotations

from engine.loader import load_model
from engine.tokenizer import load_tokenizer

__all__ = ["load_model", "load_tokenizer"]
