"""Reading Debian control-file stanzas (deb822): Packages, Translation-en, debtags vocabulary.

A small parser of our own rather than python-debian: the venv must not depend on a system
Python module, and the three files we read only need fields and continuation lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

__all__ = ["iter_stanzas", "long_description", "parse_tag_field", "synopsis"]

_FIELD = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*):(.*)$")


def iter_stanzas(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """Yield one dict per blank-line-separated stanza; continuation lines keep their newline.

    A field's value is its first line (stripped of the leading space) followed by each
    continuation line verbatim (leading space kept), joined with newlines, so multi-line
    fields such as `Description-en` can be split into synopsis and long part later.
    """
    stanza: dict[str, str] = {}
    field: str | None = None
    for raw in lines:
        line = raw.rstrip("\n").rstrip("\r")
        if not line.strip():
            if stanza:
                yield stanza
            stanza, field = {}, None
            continue
        if line[0] in " \t":
            if field is not None:
                stanza[field] += "\n" + line
            continue
        if line.startswith("#"):
            continue
        match = _FIELD.match(line)
        if match is None:
            continue
        field = match.group(1)
        stanza[field] = match.group(2).strip()
    if stanza:
        yield stanza


def synopsis(description: str) -> str:
    """The one-line synopsis: the first line of a Description field."""
    return description.split("\n", 1)[0].strip()


def long_description(description: str) -> str:
    """The long part of a Description field as plain text.

    Policy 5.6.13: continuation lines start with one space; a line " ." is a paragraph break;
    a line starting with two or more spaces is shown verbatim (lists, code). Ordinary lines of
    one paragraph are joined with spaces, verbatim lines keep their own line, paragraphs are
    separated by one newline. The " ." markers never reach the text.
    """
    out: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            out.append(" ".join(current))
            current.clear()

    for raw in description.split("\n")[1:]:
        line = raw[1:] if raw.startswith(" ") else raw
        if line.strip() == ".":
            flush()
            continue
        if line.startswith((" ", "\t")):
            flush()
            out.append(line.strip())
            continue
        if line.strip():
            current.append(line.strip())
    flush()
    return "\n".join(part for part in out if part)


def parse_tag_field(value: str) -> list[str]:
    """Split a debtags `Tag:` value ("a::b, c::d,\\n e::f") into sorted unique tags."""
    tags = {item.strip() for item in value.replace("\n", " ").split(",")}
    return sorted(tag for tag in tags if "::" in tag)
