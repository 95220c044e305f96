"""`tacet classify IN.jsonl[.gz] -o OUT.jsonl --taxonomy NAME`: the bulk client.

The work is done by `gateway.bulk_client` (streaming requests, retries, resume); this module
parses flags, takes the API key from `TACET_API_KEY` (a flag would land in shell history) and
draws the progress bar (documents, documents/s, ETA) on stderr.

Exit status: 0 when every valid input document has its line in OUT; 1 when the run stopped
(refused, retries exhausted) or input lines were invalid (their line numbers are printed);
2 for usage errors (no key, missing input). Running the same command again resumes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]

_MODES = ("diffusion", "autoregressive", "self_speculative")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "classify",
        help="classify a JSONL file through a gateway (resumable; key from TACET_API_KEY)",
    )
    parser.add_argument("input", type=Path, help="JSONL of {id, text} per line (.gz accepted)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="results JSONL")
    parser.add_argument("--taxonomy", required=True, help="name or name@version")
    parser.add_argument("--server", default="https://127.0.0.1:8443", help="gateway URL")
    parser.add_argument("--task", help="task policy name")
    parser.add_argument("--mode", choices=_MODES, help="decode mode (default: the task's)")
    parser.add_argument("--ca", type=Path, help="CA bundle, e.g. <data-dir>/tls/ca.pem")
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight")
    parser.add_argument("--batch", type=int, default=512, help="documents per request")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gateway.bulk_client import API_KEY_ENV, ClientSettings, api_key_from_env

    key = api_key_from_env()
    if key is None:
        print(f"tacet classify: set {API_KEY_ENV} to the API key", file=sys.stderr)
        return 2
    if not args.input.is_file():
        print(f"tacet classify: {args.input} is not a file", file=sys.stderr)
        return 2
    if args.concurrency < 1 or args.batch < 1:
        print("tacet classify: --concurrency and --batch must be positive", file=sys.stderr)
        return 2
    settings = ClientSettings(
        taxonomy=args.taxonomy,
        server=args.server,
        task=args.task,
        mode=args.mode,
        ca=args.ca,
        concurrency=args.concurrency,
        batch_documents=args.batch,
    )
    return _run_with_progress(args.input, args.output, settings, key, not args.no_progress)


def _run_with_progress(
    source: Path, destination: Path, settings: Any, key: str, show: bool
) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    from gateway.bulk_client import BulkError, run

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed or 0:.1f} docs/s")

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("classify"),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not show,
    )
    task = progress.add_task("classify", total=None)
    try:
        with progress:
            stats = asyncio.run(
                run(
                    source,
                    destination,
                    settings,
                    key,
                    on_start=lambda remaining: progress.update(task, total=remaining),
                    advance=lambda n: progress.advance(task, n),
                )
            )
    except BulkError as exc:
        console.print(f"tacet classify: {exc}; run the same command again to resume")
        return 1
    except KeyboardInterrupt:
        console.print("tacet classify: interrupted; run the same command again to resume")
        return 1
    retries = ", ".join(f"{status or 'connection'}: {n}" for status, n in stats.retries.items())
    console.print(
        f"{stats.written} written ({stats.errors} refused documents), {stats.skipped} already "
        f"done, {stats.duplicates} duplicate ids skipped; retries: {retries or 'none'}"
    )
    if stats.invalid_lines:
        shown = ", ".join(str(n) for n in stats.invalid_lines[:20])
        more = " ..." if len(stats.invalid_lines) > 20 else ""
        console.print(f"invalid input lines (need id and text): {shown}{more}")
        return 1
    return 0
