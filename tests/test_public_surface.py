"""Every module of the package declares its public surface: `__all__` lists what exists, and every
public function and class defined in the module is listed (a name that is not part of the API starts
with _)."""
import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import clcourse

MODULES = sorted(info.name for info in pkgutil.walk_packages(clcourse.__path__, "clcourse."))


def test_the_modules_are_found():
    assert {"clcourse.methods.simclr", "clcourse.runs", "clcourse.train",
            "clcourse.checks.simclr"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_every_public_definition(name):
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    missing = [entry for entry in module.__all__ if not hasattr(module, entry)]
    assert not missing, f"{name}.__all__ names what the module does not have: {missing}"
    assert len(set(module.__all__)) == len(module.__all__), f"{name}.__all__ lists a name twice"
    tree = ast.parse(Path(module.__file__).read_text())
    defined = [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))
               and not node.name.startswith("_")]
    unlisted = [entry for entry in defined if entry not in module.__all__]
    assert not unlisted, f"{name} defines public names that __all__ does not list: {unlisted}"
