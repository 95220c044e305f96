"""The `tacet` command line: one subcommand per module, registered here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tacet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from gateway import (
        _cli_admin,
        _cli_audit,
        _cli_classify,
        _cli_demo,
        _cli_engine,
        _cli_jobs,
        _cli_serve,
        _cli_zdr,
    )

    modules = (
        _cli_serve, _cli_engine, _cli_admin, _cli_audit, _cli_zdr, _cli_demo, _cli_classify,
        _cli_jobs,
    )
    for module in modules:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
