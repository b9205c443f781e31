#!/usr/bin/env python3
"""Every dependency of pyproject.toml pinned to its lower bound, one requirement a line:
the constraints of `make test-oldest`, which runs the unit tests in a virtual environment
at those versions.

    python tools/lower_bounds.py                 # [project] dependencies
    python tools/lower_bounds.py --extra test    # and those of the `test` extra
    python tools/lower_bounds.py --with pytest   # and pytest's, from whichever extra names it

A requirement without a lower bound has none to test and is left out (named on stderr). Standard
library only: it runs with whatever Python makes the environment, 3.10 included
(which has no tomllib).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)(\[[^\]]*\])?\s*(.*)$")
LOWER_BOUND = re.compile(r">=\s*([^,\s;]+)")


def toml_list(text: str, key: str, table: str) -> list[str]:
    """The quoted strings of the list `key = [...]` in the TOML `table` of `text` (one string a line
    or several; comments after them are ignored)."""
    start = re.search(rf"^\[{re.escape(table)}\]\s*$", text, re.MULTILINE)
    if start is None:
        raise ValueError(f"pyproject.toml has no [{table}] table")
    body = text[start.end():]
    end = re.search(r"^\[", body, re.MULTILINE)
    body = body[:end.start()] if end else body
    found = re.search(rf"^{re.escape(key)}\s*=\s*\[(.*?)^\]", body, re.MULTILINE | re.DOTALL)
    if found is None:
        raise ValueError(f"pyproject.toml's [{table}] has no list {key!r}")
    lines = [line.split("#", 1)[0] for line in found.group(1).splitlines()]
    return re.findall(r'"([^"]+)"', "\n".join(lines))


def lower_bound_pins(requirements: list[str]) -> tuple[list[str], list[str]]:
    """(`name==lower bound` for each requirement with a `>=` bound, the
    requirements without one)."""
    pins, unbounded = [], []
    for requirement in requirements:
        match = REQUIREMENT.match(requirement.strip())
        if match is None:
            raise ValueError(f"cannot read the requirement {requirement!r}")
        name, _, specifiers = match.groups()
        bound = LOWER_BOUND.search(specifiers)
        if bound is None:
            unbounded.append(requirement)
        else:
            pins.append(f"{name}=={bound.group(1)}")
    return pins, unbounded


def requirements(text: str, extras: list[str]) -> list[str]:
    """The [project] dependencies and those of `extras` (an extra that names this package, such as
    `clcourse[lab,test]`, is expanded)."""
    found = toml_list(text, "dependencies", "project")
    for extra in extras:
        for requirement in toml_list(text, extra, "project.optional-dependencies"):
            nested = re.match(r"^clcourse\[([^\]]+)\]$", requirement.strip())
            if nested:
                found += [r for r in requirements(text, nested.group(1).split(","))
                          if r not in found]
            elif requirement not in found:
                found.append(requirement)
    return found


def named(text: str, names: list[str]) -> list[str]:
    """The requirements of any extra whose package is one of `names`; a name no extra has
    raises ValueError."""
    start = re.search(r"^\[project\.optional-dependencies\]\s*$", text, re.MULTILINE)
    table = text[start.end():].split("\n[", 1)[0] if start else ""
    extras = re.findall(r"^([A-Za-z0-9_-]+)\s*=\s*\[", table, re.MULTILINE)
    found = {}
    for extra in extras:
        for requirement in toml_list(text, extra, "project.optional-dependencies"):
            name = REQUIREMENT.match(requirement.strip()).group(1).lower()
            found.setdefault(name, requirement)
    missing = [name for name in names if name.lower() not in found]
    if missing:
        raise ValueError(f"no extra of pyproject.toml names {', '.join(missing)}")
    return [found[name.lower()] for name in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--extra", action="append", default=[],
                        help="an optional-dependencies group to add")
    parser.add_argument("--with", dest="names", action="append", default=[], metavar="NAME",
                        help="a requirement of an extra to add by its name (e.g. pytest)")
    parser.add_argument("--pyproject", type=Path, default=PYPROJECT)
    args = parser.parse_args(argv)
    text = args.pyproject.read_text()
    try:
        found = requirements(text, args.extra) + named(text, args.names)
    except ValueError as error:
        parser.error(str(error))
    pins, unbounded = lower_bound_pins(found)
    for requirement in unbounded:
        print(f"lower_bounds.py: {requirement!r} has no lower bound, left out", file=sys.stderr)
    print("\n".join(pins))
    return 0


if __name__ == "__main__":
    sys.exit(main())
