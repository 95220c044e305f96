"""`tacet zdr report`: the effective retention posture, as a table or JSON, failing when unsafe.

The report is a list of sections (host, engine, then the gateway configuration: engines (each
engine socket, or the processes serve spawns), logging, tracing, metrics, storage, TLS; more
plug in through `SECTION_BUILDERS`). Each section is a list of `compliance.host.Check`
results. The command exits 1 when an enforced section holds an `unsafe` check, so it can gate
a deployment; `unknown` (a setting that could not be read, e.g. in a container) fails only
with `--strict`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from compliance.host import Check, Verdict, check_host
from gateway._zdr_config import CONFIG_SECTIONS, config_checks

__all__ = ["SECTION_BUILDERS", "Section", "build_report", "exit_code", "register"]


@dataclass(frozen=True)
class Section:
    """One part of the posture. `enforced=False` still shows problems but does not fail on them."""

    name: str
    checks: Sequence[Check]
    enforced: bool = True
    notes: Sequence[str] = field(default_factory=tuple)


def host_section(args: argparse.Namespace) -> Section:
    """Swap, core dumps, journal, /tmp, ptrace, kdump, hibernation on this host (or --root)."""
    notes = ("--warn-host: host findings do not fail the report",) if args.warn_host else ()
    return Section("host", check_host(Path(args.root)), not args.warn_host, notes)


def engine_section(args: argparse.Namespace) -> Section:
    """Which answer-slot scoring implementation the engine would choose on this host."""
    import torch

    from kernels import SlotOps

    device = "cuda" if torch.cuda.is_available() else "cpu"
    ops = SlotOps.for_device(device)
    reason = f"{ops.name} on {device}; neither path materialises [slots, vocab] logits"
    return Section("engine", (Check("slot_scoring", Verdict.OK, reason),), enforced=False)


def config_section(name: str) -> Callable[[argparse.Namespace], Section]:
    """Logging, tracing, metrics, storage or TLS, from the environment `tacet serve` reads."""
    return lambda _args: Section(name, config_checks(name))


# Builders run in order; each takes the parsed arguments and returns one section.
SECTION_BUILDERS: list[Callable[[argparse.Namespace], Section]] = [
    host_section,
    engine_section,
    *(config_section(name) for name, _ in CONFIG_SECTIONS),
]


def build_report(args: argparse.Namespace) -> list[Section]:
    """Every section, in builder order."""
    return [build(args) for build in SECTION_BUILDERS]


def exit_code(sections: Sequence[Section], *, strict: bool = False) -> int:
    """1 when an enforced section has an unsafe check (or an unknown one under --strict)."""
    failing = {Verdict.UNSAFE, Verdict.UNKNOWN} if strict else {Verdict.UNSAFE}
    for section in sections:
        if section.enforced and any(check.verdict in failing for check in section.checks):
            return 1
    return 0


def report_json(sections: Sequence[Section], code: int) -> dict[str, Any]:
    """The machine-readable report: stable keys, verdicts as strings."""
    return {
        "ok": code == 0,
        "sections": [
            {
                "name": s.name,
                "enforced": s.enforced,
                "notes": list(s.notes),
                "checks": [
                    {"name": c.name, "verdict": str(c.verdict), "reason": c.reason}
                    for c in s.checks
                ],
            }
            for s in sections
        ],
    }


def write_table(sections: Sequence[Section], code: int, out: TextIO) -> None:
    """A plain aligned table per section; plain text so it survives logs and pipes."""
    rows = [c for s in sections for c in s.checks]
    name_width = max([len(c.name) for c in rows] + [len("check")])
    for section in sections:
        suffix = "" if section.enforced else " (not enforced)"
        out.write(f"[{section.name}]{suffix}\n")
        out.write(f"  {'check':<{name_width}}  {'verdict':<7}  reason\n")
        for check in section.checks:
            out.write(f"  {check.name:<{name_width}}  {check.verdict!s:<7}  {check.reason}\n")
        for note in section.notes:
            out.write(f"  note: {note}\n")
    out.write("result: " + ("ok" if code == 0 else "UNSAFE") + "\n")


def run_report(args: argparse.Namespace) -> int:
    """Entry point of `tacet zdr report`."""
    sections = build_report(args)
    code = exit_code(sections, strict=args.strict)
    if args.json:
        json.dump(report_json(sections, code), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        write_table(sections, code, sys.stdout)
    return code


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `tacet zdr report` to the top-level parser."""
    zdr = subparsers.add_parser("zdr", help="zero-data-retention posture")
    zdr_sub = zdr.add_subparsers(dest="zdr_command", required=True)
    report = zdr_sub.add_parser(
        "report",
        help="print the retention posture; exit 1 on an unsafe setting",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    report.add_argument(
        "--strict", action="store_true", help="also fail when a setting cannot be read (unknown)"
    )
    report.add_argument(
        "--warn-host",
        action="store_true",
        help="show host findings without failing on them (a developer machine is no ZDR host)",
    )
    report.add_argument(
        "--root",
        default="/",
        metavar="PATH",
        help="read host settings below PATH instead of / (a mounted image or a test tree)",
    )
    report.set_defaults(func=run_report)
