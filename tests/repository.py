"""Paths of this repository, its scripts (tools/, bench/) loaded as modules for the tests, a dry run
of its Makefile, and the mistakes planted in its notebooks' exercises."""
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def load_script(path: Path):
    """The script at `path` as a module (scripts are not part of the installed package)."""
    spec = importlib.util.spec_from_file_location(f"{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses (and pickle) look a class's module up by name
    spec.loader.exec_module(module)
    return module


def load_bench(name: str):
    """bench/<name>.py as a module."""
    return load_script(REPO / "bench" / f"{name}.py")


def make_dry_run(*arguments):
    """What `make -n -B ARGUMENTS` would run (the test is skipped without make)."""
    if shutil.which("make") is None:
        pytest.skip("needs make")
    done = subprocess.run(["make", "-n", "-B", *arguments], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


# The planted mistakes (tests/tools/test_notebooks_nbgrader.py and tests/e2e_nbgrader.py). Per
# notebook (its number): the exercise to get wrong, a text in its solution, what replaces it, and a
# piece of the hint the checker gives for that mistake. The last exercise of a notebook is picked
# where later exercises call earlier ones, so that the mistake costs it alone.
PLANTED = {
    "01": ("info_nce_loss", "/ temperature", "* temperature", "Divide the similarities by the temperature"),
    "02": ("anchor_gradient", "(1 - p[0]) * u_positive", "p[0] * u_positive",
           "The positive's weight is 1 - p+"),
    "03": ("moco_step", 'masked_fill(own_image, float("-inf"))', "masked_fill(own_image, 0.0)",
           "Mask with -inf, not 0"),
    "04": ("dcl_loss", "return -torch.log(pos / (pos + ng)).mean()",
           "return -torch.log(pos / (pos + ng)).sum()",
           "Average over the anchors (mean), not a sum."),
    "05": ("fgsm_contrastive", "gradient.sign()", "gradient", "steps along the"),
    "06": ("repulsion_term", "torch.stack(pair_terms).mean()", "torch.stack(pair_terms).sum()",
           "Average over the V(V − 1)/2 pairs of views, don't sum them."),
    "07": ("sce_loss", ".sum(dim=1).mean()", ".sum(dim=1).sum()",
           "Average over the queries (mean), not a sum."),
    "08": ("threat_model_1_objective", "encode(x_prime), temperature)", "encode(x_prime), 1.0)",
           "Use the temperature you are given."),
    "09": ("hsic_unbiased", "/ (b * (b - 3))", "/ (b * (b - 1))", "not by n (n - 1)"),
}
