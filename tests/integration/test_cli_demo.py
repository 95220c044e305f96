"""`tacet demo` end to end: the bundled demo model answers the Debian sections taxonomy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not (REPO / "models" / "demo" / "config.json").is_file(),
                    reason="no bundled demo model in this checkout")
def test_demo_classifies_sample_packages_with_the_bundled_model() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--mode", "diffusion"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "the bundled demo model" in done.stdout
    assert "debian-sections on llada" in done.stdout
    rows = [line.split("│") for line in done.stdout.splitlines() if "│ diffusion" in line]
    labels = [row[3].strip() for row in rows]
    # Three descriptions written to be unambiguous: an arcade game, a Python module, fonts.
    assert labels == ["games", "python", "fonts"]
