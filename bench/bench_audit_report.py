"""`tacet audit report` on a large export: wall time and peak memory, against `tacet audit verify`
of the same export as the baseline (the report verifies, then counts and writes the page).

Builds a real signed export of N records (default 100,000, in files of 10,000) from a real
SQLite trail (tests/fixtures/audit_trail.py), then runs each command in a fresh process that
reports its own wall time and peak RSS (VmHWM). Bounded memory shows as peak RSS that does
not grow with N: run with `--records 10000` and `--records 100000` and compare.

    python bench/bench_audit_report.py [--records 100000] [--per-file 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

START = datetime(2026, 7, 1, tzinfo=UTC)


def _peak_kib() -> float:
    """This process's peak RSS: VmHWM belongs to its own address space (ru_maxrss would also
    count the parent's, copied at fork, on Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: best effort


def _child(argv: list[str]) -> None:
    """Run one `tacet` command in this process; print its wall time and peak RSS as JSON."""
    from gateway.cli import main

    began = time.perf_counter()
    code = main(argv)
    elapsed = time.perf_counter() - began
    peak_mib = _peak_kib() / 1024
    print(json.dumps({"code": code, "seconds": elapsed, "peak_mib": peak_mib}))


def measure(argv: list[str]) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def build(root: Path, records: int, per_file: int) -> Path:
    from tests.fixtures.audit_trail import write_export, write_trail

    asyncio.run(write_trail(root / "data", records, START, timedelta(days=90)))
    asyncio.run(write_export(root / "data", root / "export", START, START + timedelta(days=91),
                             per_file))
    return root / "export"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--per-file", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        began = time.perf_counter()
        export = build(root, args.records, args.per_file)
        built = time.perf_counter() - began
        trust = ["--data-dir", str(root / "data")]
        verify = measure(["audit", "verify", str(export), *trust])
        report = measure(["audit", "report", str(export), "--out", str(root / "r.html"), *trust])
        assert verify["code"] == 0 and report["code"] == 0
        size = (root / "r.html").stat().st_size
    table = Table(title=f"audit report, {args.records:,} records ({args.per_file:,} per file)")
    for column in ("command", "seconds", "peak RSS MiB", "ratio to verify"):
        table.add_column(column, justify="right")
    table.add_row("audit verify", f"{verify['seconds']:.1f}", f"{verify['peak_mib']:.0f}", "1.00")
    table.add_row("audit report", f"{report['seconds']:.1f}", f"{report['peak_mib']:.0f}",
                  f"{report['seconds'] / verify['seconds']:.2f}")
    console = Console()
    console.print(table)
    console.print(f"export built in {built:.1f} s; page {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
