"""The native bidirectional transformer shared by the LLaDA and Dream families.

Numerics follow the reference implementations, because logits must match them within 1e-4 in
float32: RMSNorm normalises in float32, casts back, then scales by the weight; RoPE is
rotate-half (NeoX) style with the family's precision rule (see `ModelShape.rope_in_fp32`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.models._shape import ModelShape

__all__ = ["DiffusionTransformer", "positions_from_mask"]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def positions_from_mask(attention_mask: Tensor) -> Tensor:
    """Position of each token counted over real tokens only: left padding keeps positions 0..n-1.

    RoPE makes attention scores depend on relative positions only, so this gives every real
    token the same logits as its unpadded sequence (up to float rounding).
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)  # [B, T]


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Rotary(nn.Module):
    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        exponents = torch.arange(0, shape.head_dim, 2, dtype=torch.float32) / shape.head_dim
        self.register_buffer("inv_freq", 1.0 / (shape.rope_theta**exponents), persistent=False)
        self.in_fp32 = shape.rope_in_fp32

    def cos_sin(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        freqs = positions.float()[..., None] * self.inv_freq  # [B, T, hd/2]
        angles = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, T, hd]
        return angles.cos(), angles.sin()

    def apply(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        if self.in_fp32:
            x32 = x.float()
            return (x32 * cos + _rotate_half(x32) * sin).to(x.dtype)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        return x * cos + _rotate_half(x) * sin


class Block(nn.Module):
    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        d, hd = shape.hidden, shape.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = shape.n_heads, shape.n_kv_heads, hd
        self.attn_norm = RMSNorm(d, shape.norm_eps)
        self.q = nn.Linear(d, shape.n_heads * hd, bias=shape.qkv_bias)
        self.k = nn.Linear(d, shape.n_kv_heads * hd, bias=shape.qkv_bias)
        self.v = nn.Linear(d, shape.n_kv_heads * hd, bias=shape.qkv_bias)
        self.o = nn.Linear(shape.n_heads * hd, d, bias=False)
        self.mlp_norm = RMSNorm(d, shape.norm_eps)
        self.gate = nn.Linear(d, shape.intermediate, bias=False)
        self.up = nn.Linear(d, shape.intermediate, bias=False)
        self.down = nn.Linear(shape.intermediate, d, bias=False)

    def attend(self, x: Tensor, rotary: Rotary, cos: Tensor, sin: Tensor, mask: Tensor | None):
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, T, hd]
        k = self.k(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, T, hd]
        v = self.v(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = rotary.apply(q, cos, sin), rotary.apply(k, cos, sin)
        if self.n_kv_heads != self.n_heads:
            repeat = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False)
        return self.o(out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))

    def forward(self, x: Tensor, rotary: Rotary, cos: Tensor, sin: Tensor, mask: Tensor | None):
        x = x + self.attend(self.attn_norm(x), rotary, cos, sin, mask)
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class DiffusionTransformer(nn.Module):
    """Embedding -> N bidirectional blocks -> final RMSNorm -> untied LM head."""

    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.shape = shape
        self.embed = nn.Embedding(shape.vocab_size, shape.hidden)
        self.rotary = Rotary(shape)
        self.layers = nn.ModuleList(Block(shape) for _ in range(shape.n_layers))
        self.norm = RMSNorm(shape.hidden, shape.norm_eps)
        self.head = nn.Linear(shape.hidden, shape.vocab_size, bias=False)

    def trunk(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Hidden states before the final norm, [B, T, d]: gather answer slots from these."""
        b, t = input_ids.shape
        if attention_mask is None:
            positions = torch.arange(t, device=input_ids.device).expand(b, t)
            key_mask = None
        else:
            attention_mask = attention_mask.to(device=input_ids.device, dtype=torch.bool)
            positions = positions_from_mask(attention_mask)
            key_mask = attention_mask[:, None, None, :]  # [B, 1, 1, T]: padding keys are ignored
        cos, sin = self.rotary.cos_sin(positions)
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x, self.rotary, cos, sin, key_mask)
        return x

    def logits_from_hidden(self, hidden: Tensor) -> Tensor:
        """Final norm and LM head on any [..., d] selection of trunk outputs."""
        return self.head(self.norm(hidden))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Raw logits [B, T, V], as the reference forward returns them (no shift for Dream)."""
        return self.logits_from_hidden(self.trunk(input_ids, attention_mask))
