"""Dream family (Dream-v0-7B and fine-tunes): Qwen2 layout with GQA and q/k/v biases."""

from __future__ import annotations

from typing import Any

from engine.models._config import need, refuse, refuse_unless
from engine.models._shape import ModelShape

__all__ = ["shape_from_config", "weight_names"]


def shape_from_config(config: dict[str, Any]) -> ModelShape:
    refuse_unless(config, "hidden_act", ("silu",), "only the SiLU-gated MLP is implemented")
    refuse_unless(config, "rope_scaling", (None,), "RoPE scaling is not implemented")
    refuse(config, "use_sliding_window", True, "sliding-window attention is not implemented")
    refuse(config, "tie_word_embeddings", True, "a tied LM head is not implemented")
    hidden = need(config, "hidden_size")
    n_heads = need(config, "num_attention_heads")
    return ModelShape(
        family="dream",
        vocab_size=need(config, "vocab_size"),
        hidden=hidden,
        n_layers=need(config, "num_hidden_layers"),
        n_heads=n_heads,
        n_kv_heads=config.get("num_key_value_heads") or n_heads,
        head_dim=config.get("head_dim") or hidden // n_heads,
        intermediate=need(config, "intermediate_size"),
        rope_theta=float(config.get("rope_theta", 10_000.0)),
        norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        qkv_bias=True,
        rope_in_fp32=False,
        max_positions=int(config.get("max_position_embeddings", 2048)),
        mask_token_id=config.get("mask_token_id"),
        eos_token_id=config.get("eos_token_id"),
        shift_logits=True,
    )


_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "q.weight",
    "self_attn.q_proj.bias": "q.bias",
    "self_attn.k_proj.weight": "k.weight",
    "self_attn.k_proj.bias": "k.bias",
    "self_attn.v_proj.weight": "v.weight",
    "self_attn.v_proj.bias": "v.bias",
    "self_attn.o_proj.weight": "o.weight",
    "post_attention_layernorm.weight": "mlp_norm.weight",
    "mlp.gate_proj.weight": "gate.weight",
    "mlp.up_proj.weight": "up.weight",
    "mlp.down_proj.weight": "down.weight",
}


def weight_names(shape: ModelShape) -> dict[str, str]:
    """Checkpoint tensor name -> native parameter name."""
    names = {
        "model.embed_tokens.weight": "embed.weight",
        "model.norm.weight": "norm.weight",
        "lm_head.weight": "head.weight",
    }
    for i in range(shape.n_layers):
        for ref, native in _LAYER.items():
            names[f"model.layers.{i}.{ref}"] = f"layers.{i}.{native}"
    return names
