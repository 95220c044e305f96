"""The report streams: its peak memory does not grow with the number of records in an export.

Two real signed exports in files of 1,000 records, one eight times the other, are rendered by
`tacet audit report` in fresh processes that report their own peak RSS (VmHWM). A report that
loaded the export whole would need ~150 MB more for the larger one; a streamed one needs about
the same for both (one file's records at a time, counts in a bounded number of buckets). The
100,000-record case is measured by bench/bench_audit_report.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fixtures.audit_trail import write_export, write_trail
from tests.fixtures.report_page import read_page

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
START = datetime(2026, 7, 1, tzinfo=UTC)
CHILD = """
import json, sys, time
from pathlib import Path
from gateway.cli import main
began = time.perf_counter()
code = main(sys.argv[1:])
elapsed = time.perf_counter() - began
status = Path("/proc/self/status").read_text().splitlines()
peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"code": code, "seconds": elapsed, "peak_kib": peak}))
"""


def _report(root: Path, records: int) -> dict[str, float]:
    asyncio.run(write_trail(root / "data", records, START, timedelta(days=30)))
    asyncio.run(write_export(root / "data", root / "export", START, START + timedelta(days=31),
                             1000))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "audit", "report", str(root / "export"), "--out",
         str(root / "report.html"), "--data-dir", str(root / "data")],
        env=env, capture_output=True, text=True, timeout=300, check=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    page = read_page((root / "report.html").read_text(encoding="utf-8"))
    assert page.texts["total-records"] == f"{records:,}"
    return result


def test_peak_memory_does_not_grow_with_the_export(tmp_path: Path) -> None:
    small = _report(tmp_path / "small", 3_000)
    large = _report(tmp_path / "large", 24_000)
    grown_mib = (large["peak_kib"] - small["peak_kib"]) / 1024
    assert grown_mib < 30, (small, large)
    assert large["seconds"] < 60  # generous: the bound is 100,000 records in a minute
