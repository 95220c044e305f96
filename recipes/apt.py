"""Talking to apt: refresh the lists with English translations, find and read the index files.

Nothing here hard-codes a path: apt reports its own index files (`apt-get indextargets`), and
the decompressing reader (`apt-helper cat-file`) and the debtags vocabulary are located through
dpkg's file lists.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from recipes.errors import AptError, VocabularyError

__all__ = [
    "APT_LANGUAGE_OPTION",
    "IndexFile",
    "download_debtags_vocabulary",
    "find_debtags_vocabulary",
    "list_index_files",
    "read_index_lines",
    "update_lists",
]

# Docker images of Debian set Acquire::Languages "none"; this option asks for English anyway
# for this one call without editing apt's configuration.
APT_LANGUAGE_OPTION = "Acquire::Languages=en"

_FORMAT = "$(IDENTIFIER)\t$(LANGUAGE)\t$(RELEASE)\t$(COMPONENT)\t$(FILENAME)"


@dataclass(frozen=True, slots=True)
class IndexFile:
    """One index file apt keeps: a `Packages` list or a `Translations` (en) list."""

    kind: str  # "Packages" or "Translations"
    release: str  # e.g. "bookworm-security"
    component: str  # e.g. "main"
    path: Path


def _run(argv: list[str], what: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise AptError(f"{argv[0]} is not installed; this recipe needs Debian's apt") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise AptError(f"{what} failed (exit {done.returncode}): {last}")
    return done.stdout


def update_lists() -> None:
    """Refresh apt's package lists with English translations (needs root, like any update)."""
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise AptError("apt-get update needs root; run fetch as root or pass --no-update")
    _run(["apt-get", "update", "-q", "-o", APT_LANGUAGE_OPTION], "apt-get update")


def list_index_files() -> list[IndexFile]:
    """The Packages and English Translation files apt has on disk, in apt's source order."""
    out = _run(
        ["apt-get", "indextargets", "-o", APT_LANGUAGE_OPTION, "--format", _FORMAT],
        "apt-get indextargets",
    )
    files: list[IndexFile] = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) != 5:
            continue
        kind, language, release, component, filename = parts
        if kind not in ("Packages", "Translations"):
            continue
        if kind == "Translations" and language != "en":
            continue
        path = Path(filename)
        if path.is_file():
            files.append(IndexFile(kind, release, component, path))
    kinds = {f.kind for f in files}
    if kinds != {"Packages", "Translations"}:
        raise AptError(
            "apt has no Packages or no Translation-en list on disk; run fetch without --no-update"
        )
    return files


def _apt_helper() -> str | None:
    """apt-helper lives in apt's private libexec dir; ask dpkg where rather than guess."""
    try:
        listing = subprocess.run(
            ["dpkg-query", "-L", "apt"], capture_output=True, text=True, check=False
        ).stdout
    except FileNotFoundError:
        return None
    for line in listing.splitlines():
        if line.endswith("/apt-helper") and os.access(line, os.X_OK):
            return line
    return None


def _open_text(path: Path) -> IO[str]:
    """Open an index file apt kept uncompressed or in a format the stdlib reads."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    if path.suffix in (".xz", ".lzma"):
        return lzma.open(path, "rt", encoding="utf-8")
    if path.suffix == ".bz2":
        return bz2.open(path, "rt", encoding="utf-8")
    if path.suffix in (".lz4", ".zst"):
        raise AptError(f"{path.name} needs apt-helper to decompress; install apt")
    return path.open(encoding="utf-8")


def read_index_lines(path: Path) -> Iterator[str]:
    """Yield the decompressed lines of an index file, whatever compression apt kept.

    apt may keep lists compressed (Acquire::GzipIndexes, lz4/zst on Debian images); apt-helper
    cat-file reads every format apt writes. Without it, the stdlib formats still work.
    """
    helper = _apt_helper()
    if helper is None:
        with _open_text(path) as src:
            yield from src
        return
    with subprocess.Popen(
        [helper, "cat-file", str(path)], stdout=subprocess.PIPE, text=True, encoding="utf-8"
    ) as proc:
        assert proc.stdout is not None
        yield from proc.stdout
    if proc.returncode != 0:
        raise AptError(f"apt-helper cat-file failed on {path.name}")


def find_debtags_vocabulary() -> Path | None:
    """The vocabulary file shipped by an installed `debtags` package, if any."""
    try:
        listing = subprocess.run(
            ["dpkg-query", "-L", "debtags"], capture_output=True, text=True, check=False
        ).stdout
    except FileNotFoundError:
        return None
    for line in listing.splitlines():
        path = Path(line)
        if path.name == "vocabulary" and path.parent.name == "debtags" and path.is_file():
            return path
    return None


def download_debtags_vocabulary(dest: Path) -> Path:
    """Fetch the `debtags` .deb with apt (no install, no root) and extract its vocabulary."""
    if shutil.which("dpkg-deb") is None:
        raise VocabularyError("dpkg-deb is missing; install dpkg or the debtags package")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            ["apt-get", "download", "-q", "debtags"],
            cwd=tmp,
            capture_output=True,
            text=True,
            check=False,
        )
        debs = sorted(Path(tmp).glob("debtags_*.deb"))
        if done.returncode != 0 or not debs:
            raise VocabularyError("apt-get download debtags failed; install debtags with apt")
        root = Path(tmp) / "root"
        _run(["dpkg-deb", "-x", str(debs[0]), str(root)], "dpkg-deb -x debtags")
        found = sorted(p for p in root.rglob("vocabulary") if p.parent.name == "debtags")
        if not found:
            raise VocabularyError("the debtags package ships no vocabulary file")
        shutil.copyfile(found[0], dest)
    return dest
