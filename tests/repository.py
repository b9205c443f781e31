"""Paths of this repository, and its scripts (tools/, bench/) loaded as modules for the tests."""
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def load_script(path: Path):
    """The script at `path` as a module (scripts are not part of the installed package)."""
    spec = importlib.util.spec_from_file_location(f"{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses (and pickle) look a class's module up by name
    spec.loader.exec_module(module)
    return module
