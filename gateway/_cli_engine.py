"""`tacet engine`: the engine process as a service of its own (the `tacet-engine` systemd unit).

    tacet engine --socket PATH --model DIR [--device cuda]   (or TACET_DEVICE=cuda)

It is `python -m engine.process --standalone`: the same isolation (private network namespace,
non-dumpable, no core dumps), the same socket rules (directory 0700, socket 0600, peers of our
uid only) and protocol, but it does not die with its parent. The gateway (`tacet serve`) and the
bulk worker (`tacet worker`) connect to it when `TACET_ENGINE_SOCKET` names its socket, instead
of spawning an engine of their own; both are served by one loop, so their documents share
batches on one GPU. A host with N GPUs runs N of them (`tacet-engine@0..N-1`, each with
CUDA_VISIBLE_DEVICES set to its GPU and its own socket), listed in `TACET_ENGINE_SOCKETS`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "engine", help="run the isolated engine process as a service (TACET_ENGINE_SOCKET)"
    )
    parser.add_argument("--socket", required=True, type=Path, help="Unix socket path to serve")
    parser.add_argument("--model", required=True, type=Path, help="model directory")
    parser.add_argument(
        "--device", help="torch device: cpu, cuda, cuda:1 (default: TACET_DEVICE, else cpu)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from engine.process import main

    device = args.device or os.environ.get("TACET_DEVICE") or "cpu"
    argv = ["--socket", str(args.socket), "--model", str(args.model), "--device", device]
    return main([*argv, "--standalone"])
