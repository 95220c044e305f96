"""Documents/s through the bulk paths, against the engine alone, in one run on the same documents.

Rows (same model, taxonomy and documents; each path warmed up first):
- engine direct: `EngineCore.classify` in this process, every document in one call (the
  baseline: no IPC, no HTTP, the scheduler batches as it likes);
- engine process: `SupervisedEngine.classify` over the Unix socket (IPC, no HTTP);
- POST /v1/classify: batches of `--batch` documents, `--concurrency` requests at a time;
- POST /v1/classify/stream: one NDJSON request with every document;
- tacet classify: `gateway.bulk_client.run` (stream requests, resumable OUT file).

The HTTP rows go through a real `tacet serve --dev` (granian, TLS 1.3, audit trail in SQLite,
its own engine process). The engine rows run first and are stopped before the server starts, so
no two engines share the CPU or GPU.

    python bench/bench_bulk.py [--docs 256 --words 48 --labels 8 --batch 64 --repeat 3]
                               [--model DIR --device cpu]

Each row is the best of `--repeat` timed runs (the machine may be shared; the best run is the
least disturbed one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine import load_model, load_tokenizer  # noqa: E402
from engine.core import EngineCore  # noqa: E402
from engine.testing import write_tiny_checkpoint  # noqa: E402
from gateway.bulk_client import ClientSettings, run  # noqa: E402
from gateway.engine_client import SupervisedEngine  # noqa: E402

WORDS = [
    "kernel", "driver", "module", "python", "library", "perl", "script", "mail", "server",
    "game", "puzzle", "network", "database", "editor", "compiler", "shell", "graphics",
    "audio", "video", "font", "science",
]


def bench_taxonomy(n_labels: int) -> dict:
    labels = [
        {"id": f"l{i}", "name": f"Section {i}", "description": WORDS[i % len(WORDS)]}
        for i in range(n_labels)
    ]
    return {"name": "bulkbench", "version": "1", "facets": [{"name": "section", "labels": labels}]}


def bench_documents(n: int, words: int) -> list[dict[str, str]]:
    import random

    rng = random.Random(0)
    return [
        {"id": f"d{i}", "text": " ".join(rng.choice(WORDS) for _ in range(words))}
        for i in range(n)
    ]


REPEAT = 3  # set from --repeat


def timed(label: str, count: int, work: Callable[[], object]) -> tuple[str, int, float]:
    """The best of REPEAT runs of `work`."""
    best = float("inf")
    for _ in range(REPEAT):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return label, count, best


# ---- the engine alone -------------------------------------------------------------------------


def engine_direct(model: Path, device: str, taxonomy: dict, texts: list[str]) -> tuple:
    """Set up as the engine process does: model loaded and first used on the main thread,
    steps in a worker thread (`asyncio.to_thread`). On a shared 2-core CPU host, timing the
    forward on the main thread instead measured ~10x slower, which would flatter every other
    row."""
    core = EngineCore(load_model(model, device=device), load_tokenizer(model))
    core.classify(taxonomy, texts[:8])  # warm-up: compile the taxonomy, first kernels
    with ThreadPoolExecutor(1) as pool:
        return timed(
            "engine direct (EngineCore)",
            len(texts),
            lambda: pool.submit(core.classify, taxonomy, texts).result(),
        )


def engine_process(model: Path, device: str, taxonomy: dict, texts: list[str]) -> tuple:
    runtime = Path(tempfile.mkdtemp(prefix="tacet-bench-"))

    async def go() -> tuple:
        engine = SupervisedEngine(
            model_dir=model, runtime_dir=runtime / "run", device=device,
            max_queued_documents=max(256, len(texts)),
        )
        await engine.start()
        try:
            if not await engine.wait_ready(300):
                raise RuntimeError("the engine process did not start")
            await engine.classify(taxonomy, texts[:8])
            best = float("inf")
            for _ in range(REPEAT):
                started = time.perf_counter()
                await engine.classify(taxonomy, texts)
                best = min(best, time.perf_counter() - started)
            return "engine process (IPC)", len(texts), best
        finally:
            await engine.stop()

    try:
        return asyncio.run(go())
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


# ---- through the gateway ----------------------------------------------------------------------


class Gateway:
    """`tacet serve --dev` in a subprocess, for the length of the HTTP measurements."""

    def __init__(self, root: Path, model: Path, taxonomy: dict, device: str) -> None:
        (root / "taxonomies").mkdir(parents=True)
        (root / "taxonomies" / "bench.json").write_text(json.dumps(taxonomy))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.data_dir = root / "data"
        env = {**os.environ, "PYTHONPATH": str(REPO), "TACET_DEVICE": device}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--dev", "--data-dir",
             str(self.data_dir), "--port", str(self.port), "--model", str(model),
             "--taxonomy-dir", str(root / "taxonomies")],
            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.url = f"https://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 300
        while self._ready() != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("tacet serve did not become ready")
            time.sleep(0.25)
        self.ca = self.data_dir / "tls" / "ca.pem"
        self.key = (self.data_dir / "dev-api-key").read_text().strip()

    def _ready(self) -> int:
        try:
            context = ssl.create_default_context(cafile=str(self.data_dir / "tls" / "ca.pem"))
            return httpx.get(self.url + "/readyz", verify=context, timeout=2).status_code
        except (httpx.HTTPError, OSError):
            return 0

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            verify=ssl.create_default_context(cafile=str(self.ca)),
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=httpx.Timeout(600, connect=30),
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def classify_batched(
    gateway: Gateway, taxonomy: str, documents: list[dict], batch: int, concurrency: int
) -> None:
    chunks = [documents[i : i + batch] for i in range(0, len(documents), batch)]
    queue: asyncio.Queue[list[dict]] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)

    async with gateway.client() as client:

        async def worker() -> None:
            while not queue.empty():
                chunk = queue.get_nowait()
                response = await client.post(
                    "/v1/classify", json={"taxonomy": taxonomy, "documents": chunk}
                )
                if response.status_code != 200 or len(response.json()["results"]) != len(chunk):
                    raise RuntimeError(f"/v1/classify answered {response.status_code}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def classify_stream(gateway: Gateway, taxonomy: str, documents: list[dict]) -> None:
    lines = [json.dumps({"taxonomy": taxonomy}), *(json.dumps(d) for d in documents)]
    body = ("\n".join(lines) + "\n").encode()
    results = 0
    async with gateway.client() as client, client.stream(
        "POST", "/v1/classify/stream", content=body,
        headers={"Content-Type": "application/x-ndjson"},
    ) as response:
        if response.status_code != 200:
            raise RuntimeError(f"/v1/classify/stream answered {response.status_code}")
        async for line in response.aiter_lines():
            if line and "labels" in json.loads(line):
                results += 1
    if results != len(documents):
        raise RuntimeError(f"the stream returned {results} of {len(documents)} results")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=256)
    parser.add_argument("--words", type=int, default=48, help="words per document")
    parser.add_argument("--labels", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64, help="documents per /v1/classify call")
    parser.add_argument("--concurrency", type=int, default=2, help="HTTP requests in flight")
    parser.add_argument("--model", type=Path, help="model directory (default: tiny LLaDA)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per row (best kept)")
    args = parser.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)

    root = Path(tempfile.mkdtemp(prefix="tacet-bench-bulk-"))
    try:
        model = args.model or write_tiny_checkpoint("llada", root / "tiny-llada")
        taxonomy = bench_taxonomy(args.labels)
        documents = bench_documents(args.docs, args.words)
        texts = [d["text"] for d in documents]
        rows = [
            engine_direct(model, args.device, taxonomy, texts),
            engine_process(model, args.device, taxonomy, texts),
        ]
        gateway = Gateway(root / "gateway", model, taxonomy, args.device)
        try:
            name = taxonomy["name"]
            warm = documents[:8]
            asyncio.run(classify_batched(gateway, name, warm, args.batch, 1))
            asyncio.run(classify_stream(gateway, name, warm))
            rows.append(timed(
                f"POST /v1/classify (batches of {args.batch}, {args.concurrency} in flight)",
                len(documents),
                lambda: asyncio.run(
                    classify_batched(gateway, name, documents, args.batch, args.concurrency)
                ),
            ))
            rows.append(timed(
                "POST /v1/classify/stream (one request)", len(documents),
                lambda: asyncio.run(classify_stream(gateway, name, documents)),
            ))
            source, out = root / "in.jsonl", root / "out.jsonl"
            source.write_text("".join(json.dumps(d) + "\n" for d in documents))
            settings = ClientSettings(
                taxonomy=name, server=gateway.url, ca=gateway.ca,
                concurrency=args.concurrency, batch_documents=max(args.batch, 256),
            )

            def client_run() -> None:
                out.unlink(missing_ok=True)  # a full run each time, not a resume
                stats = asyncio.run(run(source, out, settings, gateway.key))
                if stats.written != len(documents):
                    raise RuntimeError("the client did not write every result")

            rows.append(timed(
                f"tacet classify (client, {args.concurrency} streams)", len(documents), client_run
            ))
        finally:
            gateway.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    baseline = rows[0][1] / rows[0][2]
    table = Table(title=f"bulk paths: {args.docs} documents of {args.words} words, "
                        f"{args.labels} labels, {args.device}")
    for column in ("path", "documents", "seconds", "documents/s", "vs engine direct"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for label, count, seconds in rows:
        rate = count / seconds
        table.add_row(label, str(count), f"{seconds:.2f}", f"{rate:.1f}", f"{rate / baseline:.2f}x")
    Console(width=max(Console().width, 110)).print(table)


if __name__ == "__main__":
    main()
