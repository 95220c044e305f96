"""Keep the inputs and outputs tables of every Terraform README in sync with the code.

Each module, environment and example README holds a generated section between
``<!-- BEGIN_TF_DOCS -->`` and ``<!-- END_TF_DOCS -->``. This script renders that section from
``variables.tf`` and ``outputs.tf`` (names, descriptions, types, defaults), so a reviewer reads
tables that cannot drift from the code. Standard library only: CI and a fresh clone need
nothing beyond Python.

    python terraform/tools/tfdocs.py            # check; exit 1 and list stale READMEs
    python terraform/tools/tfdocs.py --write    # regenerate the sections

The parser relies on ``terraform fmt`` layout (a block opens at column 0 and closes with ``}``
at column 0; its attributes are indented by two spaces), which the test suite enforces too.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Input", "Output", "check", "render", "root_dirs", "stale_readmes", "write"]

BEGIN = "<!-- BEGIN_TF_DOCS -->"
END = "<!-- END_TF_DOCS -->"
_BLOCK_START = re.compile(r'^(variable|output) "([^"]+)" \{\s*$')
_ATTRIBUTE = re.compile(r"^  ([a-z_]+)\s*=\s*(.*)$")
_NESTED_BLOCK = re.compile(r"^  [a-z_]+ \{\s*$")
_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = {")", "]", "}"}


@dataclass(frozen=True)
class Input:
    """One `variable` block, as the README shows it."""

    name: str
    description: str
    type: str
    default: str | None  # HCL source of the default, on one line; None when required


@dataclass(frozen=True)
class Output:
    """One `output` block, as the README shows it."""

    name: str
    description: str


def _depth_change(line: str) -> int:
    """Net bracket depth of one line, ignoring brackets inside strings and comments."""
    depth, in_string, escaped = 0, False, False
    for i, ch in enumerate(line):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "#" or line.startswith("//", i):
            break
        elif ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            depth -= 1
    return depth


def _blocks(text: str) -> list[tuple[str, str, list[str]]]:
    """Split a file into top-level (kind, name, body lines) of `variable`/`output` blocks."""
    blocks: list[tuple[str, str, list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _BLOCK_START.match(lines[i])
        i += 1
        if not match:
            continue
        body: list[str] = []
        while i < len(lines) and lines[i] != "}":
            body.append(lines[i])
            i += 1
        blocks.append((match.group(1), match.group(2), body))
    return blocks


def _attributes(body: list[str]) -> dict[str, str]:
    """Top-level attributes of a block body, each value joined onto one line."""
    attributes: dict[str, str] = {}
    i = 0
    while i < len(body):
        line = body[i]
        i += 1
        if _NESTED_BLOCK.match(line):  # validation { ... }, precondition { ... }
            depth = _depth_change(line)
            while depth > 0 and i < len(body):
                depth += _depth_change(body[i])
                i += 1
            continue
        match = _ATTRIBUTE.match(line)
        if not match:
            continue
        parts = [match.group(2).strip()]
        depth = _depth_change(line)
        while depth > 0 and i < len(body):
            parts.append(body[i].strip())
            depth += _depth_change(body[i])
            i += 1
        attributes[match.group(1)] = _join(parts)
    return attributes


def _join(parts: list[str]) -> str:
    """Join a multi-line HCL value onto one line: `[\n  "a",\n  "b",\n]` -> `["a", "b"]`."""
    text = " ".join(p for p in parts if p)
    text = re.sub(r"([\[({])\s+", r"\1", text)
    text = re.sub(r",?\s+([\])}])", r"\1", text)
    return text


def _string(value: str) -> str:
    """Decode an HCL quoted string (its escapes are JSON's for the text we write)."""
    try:
        decoded = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"description is not a plain quoted string: {value}") from exc
    if not isinstance(decoded, str):
        raise ValueError(f"description is not a string: {value}")
    return decoded


def parse_inputs(text: str) -> list[Input]:
    """Inputs declared in a variables.tf text, in file order."""
    inputs = []
    for kind, name, body in _blocks(text):
        if kind != "variable":
            continue
        attributes = _attributes(body)
        if "description" not in attributes or "type" not in attributes:
            raise ValueError(f'variable "{name}" needs a type and a description')
        inputs.append(
            Input(
                name,
                _string(attributes["description"]),
                attributes["type"],
                attributes.get("default"),
            )
        )
    return inputs


def parse_outputs(text: str) -> list[Output]:
    """Outputs declared in an outputs.tf text, in file order."""
    outputs = []
    for kind, name, body in _blocks(text):
        if kind != "output":
            continue
        attributes = _attributes(body)
        if "description" not in attributes:
            raise ValueError(f'output "{name}" needs a description')
        outputs.append(Output(name, _string(attributes["description"])))
    return outputs


def _cell(text: str) -> str:
    """Escape a value for a Markdown table cell."""
    return text.replace("|", "\\|")


def render(directory: Path) -> str:
    """The generated README section (markers included) of one module directory."""
    variables = directory / "variables.tf"
    outputs = directory / "outputs.tf"
    inputs = parse_inputs(variables.read_text()) if variables.exists() else []
    outs = parse_outputs(outputs.read_text()) if outputs.exists() else []
    lines = [BEGIN, "<!-- generated by terraform/tools/tfdocs.py --write; do not edit -->", ""]
    lines += ["## Inputs", ""]
    if inputs:
        lines += ["| Name | Description | Type | Default |", "|---|---|---|---|"]
        for item in inputs:
            default = "required" if item.default is None else f"`{_cell(item.default)}`"
            lines.append(
                f"| `{item.name}` | {_cell(item.description)} | `{_cell(item.type)}` | {default} |"
            )
    else:
        lines.append("None.")
    lines += ["", "## Outputs", ""]
    if outs:
        lines += ["| Name | Description |", "|---|---|"]
        lines += [f"| `{o.name}` | {_cell(o.description)} |" for o in outs]
    else:
        lines.append("None.")
    lines += ["", END]
    return "\n".join(lines)


def _section(readme: str) -> str | None:
    """The current generated section of a README, or None when its markers are missing."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        return None
    return readme[start : end + len(END)]


def root_dirs(terraform_dir: Path) -> list[Path]:
    """Every module, environment and example directory (each needs a README with tables)."""
    found = []
    for group in ("modules", "envs", "examples"):
        found += sorted(p for p in (terraform_dir / group).glob("*") if list(p.glob("*.tf")))
    return found


def stale_readmes(terraform_dir: Path) -> list[str]:
    """Problems found, one line each: missing README, missing markers, or stale tables."""
    problems = []
    for directory in root_dirs(terraform_dir):
        readme = directory / "README.md"
        name = directory.relative_to(terraform_dir)
        if not readme.exists():
            problems.append(f"{name}: README.md is missing")
            continue
        section = _section(readme.read_text())
        if section is None:
            problems.append(f"{name}: README.md lacks the {BEGIN} ... {END} markers")
        elif section != render(directory):
            problems.append(f"{name}: README.md inputs/outputs tables are stale")
    return problems


def write(terraform_dir: Path) -> list[Path]:
    """Regenerate every README section (appending one where markers are missing)."""
    changed = []
    for directory in root_dirs(terraform_dir):
        readme = directory / "README.md"
        text = readme.read_text() if readme.exists() else f"# {directory.name}\n"
        section = _section(text)
        generated = render(directory)
        if section is None:
            new = text.rstrip("\n") + "\n\n" + generated + "\n"
        else:
            new = text.replace(section, generated)
        if new != text:
            readme.write_text(new)
            changed.append(readme)
    return changed


def check(terraform_dir: Path) -> int:
    """Print problems and return a process exit status."""
    problems = stale_readmes(terraform_dir)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print("run: python terraform/tools/tfdocs.py --write", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="regenerate the README tables")
    args = parser.parse_args(argv)
    terraform_dir = Path(__file__).resolve().parent.parent
    if args.write:
        for readme in write(terraform_dir):
            print(f"updated {readme.relative_to(terraform_dir)}")
        return 0
    return check(terraform_dir)


if __name__ == "__main__":
    sys.exit(main())
