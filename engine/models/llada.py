"""LLaDA family (LLaDA-8B and fine-tunes): OLMo-style config keys and weight names."""

from __future__ import annotations

from typing import Any

from engine.models._config import need, refuse, refuse_unless
from engine.models._shape import ModelShape

__all__ = ["shape_from_config", "weight_names"]

_NOT_LLAMA = "only the LLaDA 'llama' block (RMSNorm, SiLU-gated MLP, RoPE) is implemented"


def shape_from_config(config: dict[str, Any]) -> ModelShape:
    refuse_unless(config, "block_type", ("llama",), _NOT_LLAMA)
    refuse_unless(config, "activation_type", ("silu",), _NOT_LLAMA)
    refuse_unless(config, "layer_norm_type", ("rms",), _NOT_LLAMA)
    refuse(config, "rope", False, _NOT_LLAMA)
    refuse(config, "alibi", True, "ALiBi is not implemented")
    refuse(config, "weight_tying", True, "a tied LM head is not implemented (LLaDA unties it)")
    refuse(config, "include_bias", True, "linear-layer biases are not implemented for LLaDA")
    refuse(config, "attention_layer_norm", True, "q/k layer norm is not implemented")
    refuse(config, "input_emb_norm", True, "input-embedding norm is not implemented")
    refuse(config, "scale_logits", True, "logit scaling is not implemented")
    refuse_unless(config, "clip_qkv", (None,), "q/k/v clipping is not implemented")
    d_model = need(config, "d_model")
    n_heads = need(config, "n_heads")
    n_kv_heads = config.get("n_kv_heads") or n_heads
    intermediate = config.get("mlp_hidden_size") or need(config, "mlp_ratio") * d_model
    vocab = config.get("embedding_size") or need(config, "vocab_size")
    return ModelShape(
        family="llada",
        vocab_size=vocab,
        hidden=d_model,
        n_layers=need(config, "n_layers"),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=d_model // n_heads,
        intermediate=intermediate,
        rope_theta=float(config.get("rope_theta", 10_000.0)),
        norm_eps=float(config.get("rms_norm_eps", 1e-5)),
        qkv_bias=bool(config.get("include_qkv_bias", False)),
        rope_in_fp32=bool(config.get("rope_full_precision", True)),
        max_positions=int(config.get("max_sequence_length", 4096)),
        mask_token_id=config.get("mask_token_id"),
        eos_token_id=config.get("eos_token_id"),
        shift_logits=False,
    )


_BLOCK = {
    "attn_norm.weight": "attn_norm.weight",
    "q_proj.weight": "q.weight",
    "k_proj.weight": "k.weight",
    "v_proj.weight": "v.weight",
    "attn_out.weight": "o.weight",
    "ff_norm.weight": "mlp_norm.weight",
    "ff_proj.weight": "gate.weight",
    "up_proj.weight": "up.weight",
    "ff_out.weight": "down.weight",
}


def weight_names(shape: ModelShape) -> dict[str, str]:
    """Checkpoint tensor name -> native parameter name."""
    names = {
        "model.transformer.wte.weight": "embed.weight",
        "model.transformer.ln_f.weight": "norm.weight",
        "model.transformer.ff_out.weight": "head.weight",
    }
    block = dict(_BLOCK)
    if shape.qkv_bias:
        block.update({f"{p}_proj.bias": f"{p}.bias" for p in "qkv"})
    for i in range(shape.n_layers):
        for ref, native in block.items():
            names[f"model.transformer.blocks.{i}.{ref}"] = f"layers.{i}.{native}"
    return names
