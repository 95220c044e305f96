"""One dataclass for the shape and numerics of a diffusion LM trunk."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    """Everything the native transformer needs to know about a checkpoint.

    Both supported families are pre-norm transformers with bidirectional attention, RMSNorm,
    rotate-half RoPE and a SiLU-gated MLP; they differ in weight names, q/k/v biases, GQA and
    the precision in which RoPE is applied.
    """

    family: str
    vocab_size: int  # rows of the embedding and of the LM head (may exceed the tokenizer's)
    hidden: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    rope_theta: float
    norm_eps: float
    qkv_bias: bool
    # LLaDA rotates q/k in float32 and casts back ("rope_full_precision"); Dream computes cos/sin
    # in float32 and casts them to the activation dtype before rotating.
    rope_in_fp32: bool
    max_positions: int
    mask_token_id: int | None
    eos_token_id: int | None  # pads label codes to the facet's slot count (as SFT pads answers)
    # Dream predicts token i from hidden state i-1 (inherited from its AR init). The model returns
    # raw logits; decoding applies the shift.
    shift_logits: bool

    def __post_init__(self) -> None:
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim ({self.head_dim}) must be even for rotate-half RoPE")
