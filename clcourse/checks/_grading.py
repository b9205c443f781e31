"""The hidden test of a graded exercise, as the instructor's nbgrader copy runs it:

    from clcourse.checks._grading import hidden_test as _hidden_test
    _hidden_test(globals(), "check_info_nce", "info_nce_loss", cases=((2, 4, 0.5), ...))

It grades with clcourse's own checker, not with whatever the notebook's name `check_info_nce` holds,
and fails loudly when a solution cell replaced a checker or any function of the package (rebound the
name, assigned a module attribute, swapped a function's code): every function of the loaded clcourse
modules must be the one compiled from its file. It then runs the checker on the hidden cases under a
tripwire built afresh (clcourse/checks/_core.py), so that the references answer only the checker.

What this cannot stop, in a kernel where the student's code runs first: a solution that replaces the
grading machinery itself or the libraries below it (torch, builtins), or that reads its answers out
of the checker's frames. docs/teaching.md says what an instructor should still review.
"""
from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

from ._core import ExerciseError, _code_objects, _is_library_code, reference_codes, tripwire

__all__ = ["hidden_test", "tampering"]

_PACKAGE = Path(sys._getframe().f_code.co_filename).resolve().parent.parent


def _compiled(path: Path) -> tuple[ast.Module, set[types.CodeType]]:
    """The syntax tree of the module at `path` and every code object compiled from it."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, str(path))
    code = compile(source, str(path), "exec", dont_inherit=True)
    return tree, set(_code_objects(code))


class _Package:
    """The loaded clcourse modules and the code compiled from their files."""

    def __init__(self):
        self.modules = {name: module for name, module in list(sys.modules.items())
                        if name == "clcourse" or name.startswith("clcourse.")}
        self.trees: dict[str, ast.Module] = {}
        self.codes: dict[str, set[types.CodeType]] = {}
        self.problems: list[str] = []
        for name, module in sorted(self.modules.items()):
            file = getattr(module, "__file__", None)
            path = Path(file).resolve() if file else None
            if path is None or not path.is_relative_to(_PACKAGE) or path.suffix != ".py":
                self.problems.append(f"{name} is not the package's module (its file: {file})")
                continue
            self.trees[name], self.codes[str(path)] = _compiled(path)

    def genuine(self, value, seen=None) -> bool:
        """Whether the function `value` (or what a static/class method or property holds) is one
        compiled from clcourse's files (or an installed library's wrapper around one), and so are
        the functions its closure holds."""
        seen = seen if seen is not None else set()
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            return all(self.genuine(f, seen) for f in (value.fget, value.fset, value.fdel)
                       if f is not None)
        if not isinstance(value, types.FunctionType):
            return False
        if id(value) in seen:
            return True
        seen.add(id(value))
        code = value.__code__
        codes = self.codes.get(str(Path(code.co_filename).resolve()))
        if codes is None:
            # another library's wrapper (functools.wraps, torch.no_grad) around one of ours
            wrapped = getattr(value, "__wrapped__", None)
            if not _is_library_code(code) or code.co_filename.startswith(str(_PACKAGE)):
                return False
            if wrapped is not None and not self.genuine(wrapped, seen):
                return False
        elif code not in codes:
            return False
        for cell in value.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:
                continue
            if isinstance(contents, types.FunctionType) and not self.genuine(contents, seen):
                return False
        return True

    def check_module(self, name: str) -> None:
        module, tree = self.modules[name], self.trees[name]
        namespace = vars(module)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                value = namespace.get(node.name)
                if not self.genuine(value) or getattr(value, "__name__", None) != node.name:
                    self.problems.append(f"{name}.{node.name} was replaced ({_what(value)})")
            elif isinstance(node, ast.ClassDef) and isinstance(namespace.get(node.name), type):
                cls = namespace[node.name]
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        value = vars(cls).get(item.name)
                        if value is not None and not self.genuine(value):
                            self.problems.append(f"{name}.{node.name}.{item.name} was replaced "
                                                 f"({_what(value)})")
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(name, node, module)
                if source is None or not source.startswith("clcourse"):
                    continue
                for alias in node.names:
                    if alias.name == "*":
                        continue
                    expected = getattr(self.modules.get(source), alias.name,
                                       self.modules.get(f"{source}.{alias.name}"))
                    bound = alias.asname or alias.name
                    if namespace.get(bound) is not expected:
                        self.problems.append(f"{name}.{bound} was replaced "
                                             f"({_what(namespace.get(bound))})")


def _resolve(name: str, node: ast.ImportFrom, module) -> str | None:
    """The absolute name of the module an ImportFrom in module `name` imports from."""
    if node.level == 0:
        return node.module
    package = name if hasattr(module, "__path__") else name.rsplit(".", 1)[0]
    parts = package.split(".")
    if node.level > 1:
        parts = parts[:len(parts) - node.level + 1]
    return ".".join(parts + ([node.module] if node.module else []))


def _what(value) -> str:
    if isinstance(value, types.FunctionType):
        return f"now {value.__module__}.{value.__qualname__}"
    return f"now {type(value).__name__} {value!r}"[:120]


def tampering(namespace: dict, checker: str) -> list[str]:
    """What a notebook's code changed that grading depends on: the notebook's name `checker` not
    clcourse's checker, and every function of the loaded clcourse modules not the one compiled from
    its file. Empty when nothing was."""
    package = _Package()
    for name in sorted(package.trees):
        package.check_module(name)
    problems = package.problems
    checks = package.modules.get("clcourse.checks")
    real = getattr(checks, checker, None)
    if real is None:
        problems.append(f"clcourse.checks has no {checker}")
    elif namespace.get(checker) is not real:
        problems.append(f"{checker} in this notebook is not clcourse's checker "
                        f"({_what(namespace.get(checker))})")
    return problems


def hidden_test(namespace: dict, checker: str, function: str, **arguments) -> None:
    """Run clcourse's `checker` on the notebook's function `function` (names in `namespace`, the
    notebook's globals()) with `arguments` (the hidden cases). Fails with an ExerciseError when
    the notebook replaced the checker or any of the package's functions (`tampering`), when the
    function is not defined, or when the check fails."""
    problems = tampering(namespace, checker)
    if problems:
        raise ExerciseError("this notebook changed what grades it, so the exercise is not graded: "
                            + "; ".join(problems)
                            + ". Remove that code and run the notebook again.")
    if not callable(namespace.get(function)):
        raise ExerciseError(f"{function} is not defined in this notebook: run the cell that "
                            f"defines it (the exercise checked by {checker}).")
    real = getattr(sys.modules["clcourse.checks"], checker)
    with tripwire(references=reference_codes()):
        real(namespace[function], **arguments)
