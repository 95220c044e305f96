"""Forward throughput of the native families on CPU, as model FLOP utilisation (MFU).

The baseline is a dense matmul of exactly the model's linear-layer shapes, timed in the same
run: MFU = (model FLOPs / forward time) / (matmul FLOPs / matmul time). A ratio near 1 means the
forward spends its time in matmuls; norms, RoPE, attention and the framework take the rest.

    python bench/bench_forward.py [--hidden 512 --layers 4 --seq 256 --batches 1,4,16]
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from engine.models import DiffusionTransformer, ModelShape


def bench_shape(family: str, args: argparse.Namespace) -> ModelShape:
    heads = args.hidden // 64
    return ModelShape(
        family=family,
        vocab_size=args.vocab,
        hidden=args.hidden,
        n_layers=args.layers,
        n_heads=heads,
        n_kv_heads=heads if family == "llada" else max(1, heads // 4),
        head_dim=64,
        intermediate=args.hidden * 3,
        rope_theta=500_000.0 if family == "llada" else 1e6,
        norm_eps=1e-5,
        qkv_bias=family == "dream",
        rope_in_fp32=family == "llada",
        max_positions=4096,
        mask_token_id=None,
        eos_token_id=None,
        shift_logits=family == "dream",
    )


def linear_shapes(shape: ModelShape) -> list[tuple[int, int]]:
    """(in, out) of every matmul in one forward, head included."""
    d, hd = shape.hidden, shape.head_dim
    per_layer = [
        (d, shape.n_heads * hd),
        (d, shape.n_kv_heads * hd),
        (d, shape.n_kv_heads * hd),
        (shape.n_heads * hd, d),
        (d, shape.intermediate),
        (d, shape.intermediate),
        (shape.intermediate, d),
    ]
    return per_layer * shape.n_layers + [(d, shape.vocab_size)]


def model_flops(shape: ModelShape, batch: int, seq: int) -> float:
    tokens = batch * seq
    dense = sum(2 * i * o for i, o in linear_shapes(shape)) * tokens
    attention = 4 * batch * seq * seq * shape.n_heads * shape.head_dim * shape.n_layers
    return float(dense + attention)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def run(args: argparse.Namespace) -> Table:
    torch.manual_seed(0)
    table = Table(title=f"forward on CPU ({torch.get_num_threads()} threads), T={args.seq}")
    for col in ("family", "batch", "tokens/s", "model GFLOP/s", "matmul GFLOP/s", "MFU"):
        table.add_column(col, justify="right")
    for family in ("llada", "dream"):
        shape = bench_shape(family, args)
        model = DiffusionTransformer(shape).eval().requires_grad_(False)
        weights = [torch.randn(o, i) * 0.02 for i, o in linear_shapes(shape)]
        for batch in args.batches:
            ids = torch.randint(0, shape.vocab_size, (batch, args.seq))
            mask = torch.ones_like(ids)
            inputs = {w.shape[1]: torch.randn(batch * args.seq, w.shape[1]) for w in weights}

            def matmuls(weights=weights, inputs=inputs) -> None:
                for w in weights:
                    torch.matmul(inputs[w.shape[1]], w.t())

            with torch.inference_mode():
                t_model = timed(lambda ids=ids, mask=mask, m=model: m(ids, mask), args.repeats)
                t_mm = timed(matmuls, args.repeats)
            flops = model_flops(shape, batch, args.seq)
            mm_flops = sum(2 * w.numel() for w in weights) * batch * args.seq
            achieved, peak = flops / t_model, mm_flops / t_mm
            table.add_row(
                family,
                str(batch),
                f"{batch * args.seq / t_model:,.0f}",
                f"{achieved / 1e9:.1f}",
                f"{peak / 1e9:.1f}",
                f"{achieved / peak:.2f}",
            )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--batches", type=lambda s: [int(b) for b in s.split(",")], default=[1, 4, 16]
    )
    Console().print(run(parser.parse_args()))


if __name__ == "__main__":
    main()
