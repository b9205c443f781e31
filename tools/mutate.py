#!/usr/bin/env python3
"""Mutation testing: would the tests notice a wrong line?

Each *mutant* is the module with one small edit a slip of the keyboard could make: an arithmetic or comparison
operator swapped, a constant nudged, a boolean flipped, a ``F.normalize(...)``, ``.detach()`` or ``.float()``
dropped. The module's own test file runs against every mutant; a mutant that the tests still pass *survived*,
and each survivor is a line whose behaviour no test pins down (or an equivalent mutant: an edit that changes
nothing observable, e.g. ``<`` to ``<=`` where equality never happens).

    python tools/mutate.py clcourse/losses.py                 # its tests: tests/test_losses.py
    python tools/mutate.py clcourse/train.py --tests tests/test_train.py tests/test_faults.py
    python tools/mutate.py all --jobs 2                       # losses, evaluate, augment, train
    python tools/mutate.py clcourse/augment.py --sample 40    # a random 40 of its mutants (seeded)

Prints the score (killed / all mutants) and every survivor as file:line with the edit, and exits 0; the
scores are a measurement, not a gate (`make mutate` runs all four modules). Each mutant runs in a copy of
the package (the checkout is never modified), in its own pytest process that stops at the first failure,
so a killed mutant costs a few seconds and a survivor the whole test file.
"""
from __future__ import annotations

import argparse
import ast
import os
import random
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The modules the project keeps at a mutation score of at least 90%, and the tests that guard each.
MODULES = {
    "clcourse/losses.py": ["tests/test_losses.py"],
    "clcourse/evaluate.py": ["tests/test_evaluate.py"],
    "clcourse/augment.py": ["tests/test_augment.py"],
    "clcourse/train.py": ["tests/test_train.py", "tests/test_faults.py"],
}
SWAPS = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.MatMult: ast.Mult,
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.And: ast.Or, ast.Or: ast.And, ast.USub: ast.UAdd, ast.Invert: ast.Not,
}
DROPPED_CALLS = ("normalize", "detach", "float", "clamp", "clamp_min", "contiguous")
# Calls whose arguments are messages, not behaviour: mutating them only changes an error text.
MESSAGE_CALLS = ("ValueError", "TypeError", "RuntimeError", "FileNotFoundError", "OSError", "PermissionError",
                 "warn", "print")


@dataclass(frozen=True)
class Mutant:
    line: int
    column: int
    description: str
    source: str


class _Mutator(ast.NodeTransformer):
    """Applies the `target`-th mutation opportunity of a tree (counting in visiting order), or only counts."""

    def __init__(self, target: int | None):
        self.target, self.count, self.applied = target, 0, None

    def _opportunity(self, node, description: str) -> bool:
        hit = self.count == self.target
        self.count += 1
        if hit:
            self.applied = (node.lineno, node.col_offset, description)
        return hit

    def visit_Call(self, node):
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name in MESSAGE_CALLS or name.startswith("require_"):
            return node       # error messages and argument checks have their own tests; their text is not behaviour
        self.generic_visit(node)
        if name in DROPPED_CALLS:
            if name in ("normalize", "clamp", "clamp_min") and node.args:
                if self._opportunity(node, f"{name}(x, ...) -> x"):
                    return node.args[0]
            elif isinstance(node.func, ast.Attribute) and self._opportunity(node, f"x.{name}() -> x"):
                return node.func.value
        return node

    def _swap(self, node, op_attr: str):
        op = getattr(node, op_attr)
        if type(op) in SWAPS and self._opportunity(node, f"{type(op).__name__} -> {SWAPS[type(op)].__name__}"):
            setattr(node, op_attr, SWAPS[type(op)]())
        return node

    def visit_BinOp(self, node):
        self.generic_visit(node)
        return self._swap(node, "op")

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        return self._swap(node, "op")

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, ast.Not) and self._opportunity(node, "not x -> x"):
            return node.operand
        return self._swap(node, "op")

    def visit_Compare(self, node):
        self.generic_visit(node)
        if len(node.ops) == 1 and type(node.ops[0]) in SWAPS:
            old, new = type(node.ops[0]), SWAPS[type(node.ops[0])]
            if self._opportunity(node, f"{old.__name__} -> {new.__name__}"):
                node.ops = [new()]
        return node

    def visit_Constant(self, node):
        value = node.value
        if isinstance(value, bool):
            if self._opportunity(node, f"{value} -> {not value}"):
                return ast.copy_location(ast.Constant(not value), node)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            new = value + 1 if value in (0, 1) or isinstance(value, int) else value * 2
            if self._opportunity(node, f"{value!r} -> {new!r}"):
                return ast.copy_location(ast.Constant(new), node)
        return node

    # Docstrings, type annotations and error messages are not behaviour.
    def visit_Expr(self, node):
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return node
        return self.generic_visit(node)

    def visit_arg(self, node):
        return node

    def visit_AnnAssign(self, node):
        node.value = self.visit(node.value) if node.value is not None else None
        return node

    def visit_FunctionDef(self, node):
        node.body = [self.visit(statement) for statement in node.body]
        node.args.defaults = [self.visit(d) for d in node.args.defaults]
        node.args.kw_defaults = [self.visit(d) if d is not None else None for d in node.args.kw_defaults]
        return node

    def visit_Raise(self, node):
        return node

    def visit_JoinedStr(self, node):
        return node


def mutants(path: Path) -> list[Mutant]:
    """Every mutant of the module at `path`, in source order."""
    source = path.read_text()
    counter = _Mutator(target=None)
    counter.visit(ast.parse(source))
    result = []
    for target in range(counter.count):
        mutator = _Mutator(target)
        tree = mutator.visit(ast.parse(source))
        line, column, description = mutator.applied
        result.append(Mutant(line, column, description, ast.unparse(ast.fix_missing_locations(tree))))
    return result


def _run_tests(mutant: Mutant, module: str, tests: list[str], timeout: float) -> bool:
    """True when the tests fail against `mutant` (it is killed)."""
    with tempfile.TemporaryDirectory(prefix="mutant-") as folder:
        shutil.copytree(REPO / "clcourse", Path(folder) / "clcourse")
        (Path(folder) / module).write_text(mutant.source)
        # Run from the copy: `python -m` puts the current folder first on sys.path, so the mutant is imported.
        environment = {**os.environ, "PYTHONPATH": folder, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header",
                   *(str(REPO / test) for test in tests)]
        try:
            completed = subprocess.run(command, cwd=folder, env=environment, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return True       # a mutant that hangs the tests is noticed
        return completed.returncode != 0


def baseline_passes(module: str, tests: list[str]) -> bool:
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    return subprocess.run(command, cwd=REPO, capture_output=True).returncode == 0


def mutate(module: str, tests: list[str], jobs: int, sample: int | None, seed: int, timeout: float) -> tuple[int, int]:
    """Run the mutation pass of one module; print survivors; return (killed, total)."""
    if not baseline_passes(module, tests):
        raise SystemExit(f"{module}: its tests {tests} fail on the unmutated code; fix them first")
    candidates = mutants(REPO / module)
    if sample is not None and sample < len(candidates):
        candidates = sorted(random.Random(seed).sample(candidates, sample), key=lambda m: (m.line, m.column))
    print(f"{module}: {len(candidates)} mutants, tests {' '.join(tests)}", flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        killed = list(pool.map(lambda m: _run_tests(m, module, tests, timeout), candidates))
    for mutant, was_killed in zip(candidates, killed):
        if not was_killed:
            print(f"  survived  {module}:{mutant.line}:{mutant.column}  {mutant.description}")
    score = sum(killed)
    print(f"{module}: {score}/{len(candidates)} killed, score {100 * score / max(len(candidates), 1):.1f}%\n", flush=True)
    return score, len(candidates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("module", help=f"a module path, or 'all' ({', '.join(MODULES)})")
    parser.add_argument("--tests", nargs="+", help="test files to run (default: the module's own, see MODULES)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants tested at once")
    parser.add_argument("--sample", type=int, default=None, help="test a random sample of this many mutants")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before a mutant's tests count as killed")
    parser.add_argument("--list", action="store_true", help="only list the mutants")
    args = parser.parse_args(argv)
    modules = list(MODULES) if args.module == "all" else [args.module]
    for module in modules:
        if not (REPO / module).is_file():
            parser.error(f"module must be a file of this repository or 'all', got {module!r}")
        if args.list:
            for mutant in mutants(REPO / module):
                print(f"{module}:{mutant.line}:{mutant.column}  {mutant.description}")
            continue
        tests = args.tests or MODULES.get(module) or parser.error(f"--tests is needed for {module}")
        mutate(module, tests, args.jobs, args.sample, args.seed, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
