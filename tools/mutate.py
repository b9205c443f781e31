#!/usr/bin/env python3
"""Mutation testing: would the tests notice a wrong line?

Each *mutant* is the module with one small edit a slip of the keyboard could make: an arithmetic
or comparison operator swapped, a constant nudged (default argument values and the bounds of
argument checks included), a boolean flipped, a ``F.normalize(...)``, ``.detach()`` or
``.float()`` dropped. The module's tests run against every mutant; a mutant that the tests still
pass *survived*, and each survivor is a line whose behaviour no test pins down, or an *equivalent*
mutant: an edit that changes nothing observable (``<`` to ``<=`` where equality never happens).
Equivalent mutants are listed, each with its reason, in tools/mutation_equivalents.txt; they are
not run and are left out of the score.

    # its tests (MODULES): tests/test_losses.py, ...
    python tools/mutate.py clcourse/losses.py
    python tools/mutate.py clcourse/train.py --tests tests/test_runs.py \\
        --pytest-args "-k 'not killed'"
    # losses, evaluate, augment, train
    python tools/mutate.py all --jobs 2
    # a seeded random 80 of its mutants
    python tools/mutate.py clcourse/augment.py --sample 80 --seed 0

Prints every survivor as `file:line  edit  in: code` (add `  # why it changes nothing` and it is an
entry of the equivalents file), then a summary line per module, and exits 0: the scores are a
measurement, not a gate (`make mutate` runs all four modules). Each mutant runs in a copy of the
package (the checkout is never modified), in its own pytest process that stops at the first
failure, so a killed mutant costs a few seconds and a survivor the whole test selection. Measured
on fewer tests than CI runs (--tests, -k), a score is a lower bound.
"""
from __future__ import annotations

import argparse
import ast
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EQUIVALENTS = REPO / "tools" / "mutation_equivalents.txt"
# The modules the project keeps at a mutation score of at least 90%, and the tests that guard each:
# test files, or single tests (path::name) where a module's tests live in another module's file.
MODULES = {
    "clcourse/losses.py": [
        "tests/test_losses.py", "tests/test_losses_cacr.py", "tests/methods/test_sce.py",
        "tests/diagnostics/test_soft_targets.py", "tests/diagnostics/test_queue.py"],
    "clcourse/evaluate.py": ["tests/test_evaluate.py"],
    "clcourse/augment.py": ["tests/test_augment.py"],
    "clcourse/train.py": [
        "tests/test_train.py", "tests/test_runs.py", "tests/test_validation.py",
        "tests/test_distributed.py",
        "tests/methods/test_base.py::test_a_training_step_reads_nothing_on_the_host",
        "tests/methods/test_simclr.py::"
        "test_simclr_with_a_batch_of_one_image_is_refused_before_training",
        "tests/methods/test_moco.py::test_moco_proves_once_that_every_query_keeps_a_negative"],
}
SWAPS = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.MatMult: ast.Mult,
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq, ast.And: ast.Or, ast.Or: ast.And, ast.USub: ast.UAdd, ast.Invert: ast.Not,
}
DROPPED_CALLS = ("normalize", "detach", "float", "clamp", "clamp_min", "contiguous")
# Calls whose arguments are messages, not behaviour: mutating them only changes an error text. (The
# bounds given to the `require_*` checks are behaviour, what a function accepts, and are mutated.)
MESSAGE_CALLS = ("ValueError", "TypeError", "RuntimeError", "FileNotFoundError", "OSError",
                 "PermissionError", "warn", "print")


@dataclass(frozen=True)
class Mutant:
    line: int
    column: int
    description: str    # the edit; " [2]" etc. when the same edit occurs again on the same line
    code: str           # the source line it edits, stripped, without a trailing comment
    source: str

    def key(self, module: str) -> tuple[str, str, str]:
        """What identifies the mutant in the equivalents file: not the line number, which
        other edits shift."""
        return module, self.description, self.code


class _Mutator(ast.NodeTransformer):
    """Applies the `target`-th mutation opportunity of a tree (counting in visiting
    order), or only counts."""

    def __init__(self, target: int | None):
        self.target, self.count, self.applied = target, 0, None

    def _opportunity(self, node, description: str) -> bool:
        hit = self.count == self.target
        self.count += 1
        if hit:
            self.applied = (node.lineno, node.col_offset, description)
        return hit

    def visit_Call(self, node):
        name = (node.func.attr if isinstance(node.func, ast.Attribute)
                else getattr(node.func, "id", ""))
        if name in MESSAGE_CALLS:
            return node       # error messages have their own tests; their text is not behaviour
        self.generic_visit(node)
        if name in DROPPED_CALLS:
            if name in ("normalize", "clamp", "clamp_min") and node.args:
                if self._opportunity(node, f"{name}(x, ...) -> x"):
                    return node.args[0]
            elif isinstance(node.func, ast.Attribute) and self._opportunity(
                    node, f"x.{name}() -> x"):
                return node.func.value
        return node

    def _swap(self, node, op_attr: str):
        op = getattr(node, op_attr)
        if type(op) in SWAPS and self._opportunity(
                node, f"{type(op).__name__} -> {SWAPS[type(op)].__name__}"):
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
        node.args.kw_defaults = [self.visit(d) if d is not None else None
                                 for d in node.args.kw_defaults]
        return node

    def visit_Raise(self, node):
        return node

    def visit_JoinedStr(self, node):
        return node


def _code(line: str) -> str:
    """A source line as the equivalents file quotes it: stripped, without a trailing comment."""
    return re.sub(r"\s+#.*$", "", line.strip())


def mutants(path: Path) -> list[Mutant]:
    """Every mutant of the module at `path`, in source order."""
    source = path.read_text()
    lines = source.splitlines()
    counter = _Mutator(target=None)
    counter.visit(ast.parse(source))
    result, seen = [], {}
    for target in range(counter.count):
        mutator = _Mutator(target)
        tree = mutator.visit(ast.parse(source))
        line, column, description = mutator.applied
        occurrence = seen[line, description] = seen.get((line, description), 0) + 1
        if occurrence > 1:
            description = f"{description} [{occurrence}]"
        result.append(Mutant(line, column, description, _code(lines[line - 1]),
                             ast.unparse(ast.fix_missing_locations(tree))))
    return sorted(result, key=lambda m: (m.line, m.column))


_ENTRY = re.compile(
    r"^(?P<module>[^\s:]+)(?::\d+)*\s+(?P<edit>.+?)\s+in:\s+(?P<code>.*?)\s+#\s*(?P<reason>.*)$")


def read_equivalents(path: Path) -> dict[tuple[str, str, str], str]:
    """{(module, edit, code): reason} from the equivalents file: one mutant a line, as the
    survivors print, `clcourse/x.py:LINE  EDIT  in: CODE  # REASON` (the line number is optional
    and ignored). Every entry needs its reason; blank lines and lines starting with # are
    skipped."""
    entries = {}
    if not path.is_file():
        return entries
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        match = _ENTRY.match(text.strip())
        if match is None or not match["reason"].strip():
            raise SystemExit(f"{path}:{number}: expected `module[:line]  edit  in: code  # why it "
                             f"changes nothing`, got {text!r}")
        entries[match["module"], match["edit"], match["code"]] = match["reason"].strip()
    return entries


def _run_tests(mutant: Mutant, module: str, tests: list[str], pytest_args: list[str],
               timeout: float) -> bool:
    """True when the tests fail against `mutant` (it is killed)."""
    with tempfile.TemporaryDirectory(prefix="mutant-") as folder:
        shutil.copytree(REPO / "clcourse", Path(folder) / "clcourse")
        (Path(folder) / module).write_text(mutant.source)
        # Run from the copy: `python -m` puts the current folder first on sys.path, so the
        # mutant is imported.
        environment = {**os.environ, "PYTHONPATH": folder, "PYTHONDONTWRITEBYTECODE": "1",
                       "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                   "--no-header", *pytest_args, *(str(REPO / test) for test in tests)]
        try:
            completed = subprocess.run(command, cwd=folder, env=environment, capture_output=True,
                                       timeout=timeout)
        except subprocess.TimeoutExpired:
            return True       # a mutant that hangs the tests is noticed
        return completed.returncode != 0


def baseline_passes(tests: list[str], pytest_args: list[str]) -> bool:
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *pytest_args,
               *tests]
    return subprocess.run(command, cwd=REPO, capture_output=True).returncode == 0


@dataclass
class Score:
    module: str
    mutants: int          # tested or listed as equivalent (the sample, when sampling)
    equivalent: int
    killed: int

    @property
    def percent(self) -> float:
        return 100 * self.killed / max(self.mutants - self.equivalent, 1)

    def summary(self) -> str:
        return (f"{self.module}: {self.killed}/{self.mutants - self.equivalent} killed, score "
                f"{self.percent:.1f}% ({self.mutants} mutants, {self.equivalent} equivalent)")


def mutate(module: str, tests: list[str], jobs: int, sample: int | None, seed: int, timeout: float,
           pytest_args: list[str] = (), equivalents: dict | None = None) -> Score:
    """Run the mutation pass of one module; print survivors and the summary line."""
    pytest_args = list(pytest_args)
    if not baseline_passes(tests, pytest_args):
        raise SystemExit(f"{module}: its tests {tests} fail on the unmutated code; fix them first")
    equivalents = read_equivalents(EQUIVALENTS) if equivalents is None else equivalents
    candidates = mutants(REPO / module)
    stale = (set(key for key in equivalents if key[0] == module)
             - {m.key(module) for m in candidates})
    for key in sorted(stale):
        print(f"  warning: no such mutant, stale equivalents entry: {key[0]}  "
              f"{key[1]}  in: {key[2]}")
    if sample is not None and sample < len(candidates):
        candidates = sorted(random.Random(seed).sample(candidates, sample),
                            key=lambda m: (m.line, m.column))
    equivalent = [m for m in candidates if m.key(module) in equivalents]
    tested = [m for m in candidates if m.key(module) not in equivalents]
    print(f"{module}: {len(candidates)} mutants ({len(equivalent)} equivalent, not run), "
          f"tests {' '.join(tests)}"
          + (f" {' '.join(pytest_args)}" if pytest_args else ""), flush=True)
    killed = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        # Survivors are printed as their turn comes (a long run interrupted still
        # shows what it found).
        for mutant, was_killed in zip(tested, pool.map(
                lambda m: _run_tests(m, module, tests, pytest_args, timeout), tested)):
            killed.append(was_killed)
            if not was_killed:
                print(
                    f"  survived  {module}:{mutant.line}  {mutant.description}  in: {mutant.code}",
                    flush=True)
    score = Score(module, len(candidates), len(equivalent), sum(killed))
    print(score.summary() + "\n", flush=True)
    return score


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("module", help=f"a module path, or 'all' ({', '.join(MODULES)})")
    parser.add_argument("--tests", nargs="+", help="test files to run (default: the "
                                                   "module's own, see MODULES)")
    parser.add_argument("--pytest-args", default="",
                        help="more pytest arguments, e.g. \"-k 'not killed'\"")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="mutants tested at once")
    parser.add_argument("--sample", type=int, default=None,
                        help="test a random sample of this many mutants")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds before a mutant's tests count as killed")
    parser.add_argument("--list", action="store_true", help="only list the mutants")
    args = parser.parse_args(argv)
    modules = list(MODULES) if args.module == "all" else [args.module]
    scores = []
    for module in modules:
        if not (REPO / module).is_file():
            parser.error(f"module must be a file of this repository or 'all', got {module!r}")
        if args.list:
            for mutant in mutants(REPO / module):
                print(f"{module}:{mutant.line}  {mutant.description}  in: {mutant.code}")
            continue
        tests = args.tests or MODULES.get(module) or parser.error(f"--tests is needed for {module}")
        scores.append(mutate(module, tests, args.jobs, args.sample, args.seed, args.timeout,
                             shlex.split(args.pytest_args)))
    if len(scores) > 1:
        print("summary")
        for score in scores:
            print(f"  {score.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
