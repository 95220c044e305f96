"""Fused answer-slot ops against the plain matmul + log_softmax + gather (issue 12).

Default size is the LLaDA-8B head (V=126,464, d=4,096) with 4,096 slots and 8 candidates each.
The baseline is what one writes without the fused op, in the input dtype:

    slot:        torch.log_softmax(hidden @ weight.T, dim=-1, dtype=float32).gather(1, ids)
    confidence:  torch.softmax(hidden @ weight.T, dim=-1, dtype=float32).max(dim=-1)

On CPU it races the chunked torch twin; on CUDA (when present) also the Triton kernel.

Peak memory, CPU: every variant runs in a fresh child process that builds the inputs, resets
the kernel's resident-set high-water mark (`5 > /proc/self/clear_refs`), runs the op, and
reports VmHWM minus the VmRSS it had just before: the extra resident memory the op needed at
its worst moment, inputs excluded. torch's CPU tensors live in plain malloc/mmap memory, so RSS
sees them (tracemalloc would not). Without clear_refs it falls back to the ru_maxrss delta,
which can only under-count and is flagged in the table. Peak memory, CUDA: max_memory_allocated
minus memory_allocated before the op, after a warm-up call (Triton autotunes on its first).

    python bench/bench_kernels.py                          # full size; several minutes on CPU
    python bench/bench_kernels.py --slots 512 --vocab 32000 --dim 1024   # a quick look
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor

from kernels import SlotOps, reference

OPS = ("slot", "confidence")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def make_inputs(args: argparse.Namespace, device: str) -> tuple[Tensor, Tensor, Tensor]:
    """Seeded inputs; weight rows scaled by 3/sqrt(d) so the logits have a few units of spread."""
    dtype = DTYPES[args.dtype]
    g = torch.Generator(device=device).manual_seed(0)
    hidden = torch.randn(args.slots, args.dim, generator=g, device=device, dtype=dtype)
    weight = torch.randn(args.vocab, args.dim, generator=g, device=device, dtype=dtype)
    weight.mul_(3 / args.dim**0.5)
    ids = torch.randint(0, args.vocab, (args.slots, args.candidates), generator=g, device=device)
    return hidden, weight, ids


def plain(op: str) -> Callable[[Tensor, Tensor, Tensor], tuple[Tensor, ...]]:
    """The baseline: materialise [N, V] logits, normalise in float32, reduce."""
    if op == "slot":
        return lambda h, w, ids: (torch.log_softmax(h @ w.T, dim=-1, dtype=torch.float32)
                                  .gather(1, ids),)  # fmt: skip

    def conf(h: Tensor, w: Tensor, ids: Tensor) -> tuple[Tensor, ...]:
        best, arg = torch.softmax(h @ w.T, dim=-1, dtype=torch.float32).max(dim=-1)
        return best, arg

    return conf


def fused(ops: SlotOps, op: str) -> Callable[[Tensor, Tensor, Tensor], tuple[Tensor, ...]]:
    if op == "slot":
        return lambda h, w, ids: (ops.slot_logprobs(h, w, ids).logprobs(),)
    return lambda h, w, ids: tuple(ops.confidence(h, w))


def runner(variant: str, op: str, device: str, args: argparse.Namespace):
    if variant == "plain":
        return plain(op)
    prefer = "torch" if variant == "torch-chunked" else "triton"
    budget = args.budget_mib * 2**20
    return fused(SlotOps.for_device(device, prefer=prefer, budget_bytes=budget), op)


# -- CPU: one child process per variant ------------------------------------------------------


def _proc_status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_child(args: argparse.Namespace) -> None:
    """Measure one variant in this fresh process; print a JSON line, save outputs for checks."""
    hidden, weight, ids = make_inputs(args, "cpu")
    fn = runner(args.child_variant, args.child_op, "cpu", args)
    small = min(256, args.vocab)
    fn(hidden[:4], weight[:small], ids[:4] % small)  # load the BLAS paths outside the measurement
    seconds, peaks, exact, out = [], [], True, ()
    for _ in range(args.repeats):
        out = ()  # drop the previous result before measuring again
        exact = _reset_hwm()
        base_rss = _proc_status("VmRSS") if exact else 0
        base_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        start = time.perf_counter()
        out = fn(hidden, weight, ids)
        seconds.append(time.perf_counter() - start)
        if exact:
            peaks.append(_proc_status("VmHWM") - base_rss)
        else:
            peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_max)
    torch.save(out, args.child_out)
    print(json.dumps({"seconds": min(seconds), "peak": max(peaks), "exact_peak": exact}))


def run_cpu(args: argparse.Namespace, op: str, variant: str, out: Path) -> dict:
    cmd = [sys.executable, __file__, *sys.argv[1:], "--child-variant", variant, "--child-op", op]
    cmd += ["--child-out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{variant}/{op} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- CUDA: in process, allocator statistics --------------------------------------------------


def run_cuda(args: argparse.Namespace, op: str, variant: str, out: Path) -> dict:
    hidden, weight, ids = make_inputs(args, "cuda")
    fn = runner(variant, op, "cuda", args)
    fn(hidden, weight, ids)  # warm-up: compile and autotune
    seconds, peaks, result = [], [], ()
    for _ in range(max(args.repeats, 3)):
        result = ()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        start = time.perf_counter()
        result = fn(hidden, weight, ids)
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        peaks.append(torch.cuda.max_memory_allocated() - before)
    torch.save(tuple(t.cpu() for t in result), out)
    return {"seconds": min(seconds), "peak": max(peaks), "exact_peak": True}


# -- report ----------------------------------------------------------------------------------


def reference_outputs(args: argparse.Namespace, op: str, device: str) -> tuple[Tensor, ...]:
    """float32 oracle (kernels.reference) for 16-bit runs, where the plain baseline rounds its
    logits to the input dtype and so is no yardstick for the float32-accumulating variants."""
    hidden, weight, ids = make_inputs(args, device)
    if op == "slot":
        return (reference.slot_logprobs(hidden, weight, ids).cpu(),)
    return tuple(t.cpu() for t in reference.confidence(hidden, weight))


def max_diff(op: str, got: tuple[Tensor, ...], want: tuple[Tensor, ...]) -> tuple[float, str]:
    """Largest absolute difference of the float outputs, and argmax agreement for confidence."""
    diff = (got[0].float() - want[0].float()).abs().max().item()
    if op == "slot":
        return diff, "-"
    agree = (got[1] == want[1]).float().mean().item()
    return diff, f"{agree:.2%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=126_464)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="default: float32 on CPU, bfloat16 on CUDA")  # fmt: skip
    parser.add_argument("--ops", default=",".join(OPS), help="comma list of slot,confidence")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--budget-mib", type=int, default=64, help="chunked twin's logits block")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="max |diff| accepted")
    parser.add_argument("--child-variant", help=argparse.SUPPRESS)
    parser.add_argument("--child-op", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.dtype is None:
        args.dtype = "float32" if device == "cpu" else "bfloat16"
        sys.argv += ["--dtype", args.dtype]
    if args.child_variant:
        return cpu_child(args)
    report(args, device)


def report(args: argparse.Namespace, device: str) -> None:
    variants = ["plain", "torch-chunked"] + (["triton"] if device == "cuda" else [])
    console = Console(width=150)
    table = Table(title=f"slot ops: N={args.slots} V={args.vocab} d={args.dim} "
                  f"K={args.candidates} {args.dtype} on {device}")  # fmt: skip
    for col in ("op", "variant", "time s", "peak MiB", "speed-up", "memory ratio", "max |diff|",
                "argmax agree", "within tol"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("op", "variant") else "right")
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for op in args.ops.split(","):
            rows = {}
            for variant in variants:
                out = Path(tmp) / f"{op}-{variant}.pt"
                measure = run_cuda if device == "cuda" else run_cpu
                rows[variant] = measure(args, op, variant, out) | {"out": out}
            base = rows["plain"]
            exact = args.dtype == "float32"  # then plain is the float32 reference itself
            want = torch.load(base["out"]) if exact else reference_outputs(args, op, device)
            for variant, row in rows.items():
                diff, agree = max_diff(op, torch.load(row["out"]), want)
                ok = diff <= args.tolerance
                failures += [] if ok else [f"{op}/{variant}"]
                peak = row["peak"] / 2**20
                flag = "" if row["exact_peak"] else " (ru_maxrss, lower bound)"
                table.add_row(
                    op, variant, f"{row['seconds']:.3f}", f"{peak:,.1f}{flag}",
                    f"{base['seconds'] / row['seconds']:.2f}x",
                    f"{base['peak'] / max(row['peak'], 1):.1f}x", f"{diff:.2e}", agree,
                    "yes" if ok else "NO",
                )  # fmt: skip
    console.print(table)
    yardstick = "plain" if args.dtype == "float32" else "kernels.reference (float32 upcast)"
    console.print(
        "speed-up = plain time / variant time; memory ratio = plain peak / variant peak.\n"
        f"max |diff| and argmax agreement against {yardstick}.\n"
        + (
            "peak = extra resident memory during the op (VmHWM - VmRSS, fresh process per "
            "variant, high-water mark reset through /proc/self/clear_refs); inputs excluded."
            if device == "cpu"
            else "peak = torch.cuda.max_memory_allocated - memory_allocated before the op."
        )
    )
    if failures:
        raise SystemExit(f"results differ beyond {args.tolerance}: {', '.join(failures)}")


if __name__ == "__main__":
    main()
