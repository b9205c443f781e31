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
    done = subprocess.run(["make", "-n", "-B", *arguments], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


# The planted mistakes (tests/tools/test_notebooks_nbgrader.py and tests/e2e_nbgrader.py). Per
# notebook (its number): the exercise to get wrong, a text in its solution, what replaces it, and a
# piece of the hint the checker gives for that mistake. The last exercise of a notebook is picked
# where later exercises call earlier ones, so that the mistake costs it alone.
PLANTED = {
    "01": ("info_nce_loss", "/ temperature", "* temperature",
           "Divide the similarities by the temperature"),
    "02": ("anchor_gradient", "(1 - p[0]) * u_positive", "p[0] * u_positive",
           "The positive's weight is 1 - p+"),
    "03": ("moco_step", 'masked_fill(own_image, float("-inf"))', "masked_fill(own_image, 0.0)",
           "Mask with -inf, not 0"),
    "04": ("dcl_loss", "return -torch.log(pos / (pos + ng)).mean()",
           "return -torch.log(pos / (pos + ng)).sum()",
           "Average over the anchors (mean), not a sum."),
    "05": ("fgsm_contrastive", "x.detach(), gradient,", "x.detach(), -gradient,",
           "Step *up* the loss"),
    "06": ("repulsion_term", "torch.stack(pair_terms).mean()", "torch.stack(pair_terms).sum()",
           "Average over the V(V − 1)/2 pairs of views, don't sum them."),
    "07": ("sce_loss", ".sum(dim=1).mean()", ".sum(dim=1).sum()",
           "Average over the queries (mean), not a sum."),
    "08": ("threat_model_1_objective", "encode(x_prime), temperature)", "encode(x_prime), 1.0)",
           "Use the temperature you are given."),
    "09": ("hsic_unbiased", "/ (b * (b - 3))", "/ (b * (b - 1))", "not by n (n - 1)"),
}


# Per notebook: the exercise of its planted mistake written as one call to the package's own
# reference (or the checker's), the way a student who does not write it would: the code appended to
# that exercise's solution cell. Each computes the right answer
# (tests/tools/test_notebooks_nbgrader.py checks it with the references allowed), and fails its
# checker, visible and hidden, once they are not.
CALLS_THE_REFERENCE = {
    "01": "def info_nce_loss(z1, z2, temperature):\n"
          "    from clcourse.losses import info_nce as reference\n"
          "    return reference(z1, z2, temperature)",
    "02": "def anchor_gradient(u, u_positive, u_negatives, temperature):\n"
          "    import clcourse.checks.geometry\n"
          "    return clcourse.checks.geometry.reference_anchor_gradient(u, u_positive, "
          "u_negatives, temperature)",
    "03": "def moco_step(moco, query_views, key_views, index):\n"
          "    from clcourse.methods import moco_step as step\n"
          "    return step(moco, query_views, key_views, index)",
    "04": "def dcl_loss(z1, z2, temperature, tau_plus):\n"
          "    import clcourse.losses as L\n"
          "    return L.dcl(z1, z2, temperature, tau_plus)",
    "05": "def fgsm_contrastive(encode, x, epsilon, loss):\n"
          "    from clcourse.attacks import contrastive_attack\n"
          "    return contrastive_attack(encode, x, epsilon, loss, steps=1, step_size=epsilon)",
    "06": "def repulsion_term(z, tau_neg, beta):\n"
          "    from clcourse.checks.cacr import repulsion_term_variant\n"
          "    return repulsion_term_variant(z, tau_neg, beta)",
    "07": "from clcourse.losses import sce\n\n\n"
          "def sce_loss(q, k, queue, temperature, temperature_momentum, lam, queue_mask=None):\n"
          "    return sce(q, k, queue, temperature, temperature_momentum, lam, queue_mask)",
    "08": "def threat_model_1_objective(encode, x, temperature):\n"
          "    from clcourse.attacks import contrastive_objective\n"
          "    return contrastive_objective(encode, x, lambda a, z: info_nce(a, z, temperature))",
    "09": "def hsic_unbiased(k, l):\n"
          "    from clcourse import cka\n"
          "    return cka.hsic_unbiased(k, l)",
}


def memorising(function: str, checker: str) -> str:
    """Code that replaces the student's `function` by a table of the visible cases: it runs
    `checker` once to learn its inputs, answers those with the real function (renamed
    _real_<function>) and refuses any other."""
    return f'''
_real_{function} = {function}
_table, _learning = set(), True


def _key(args):
    return repr([(tuple(a.shape), round(float(a.detach().double().sum()), 6)) if isinstance(a, torch.Tensor)
                 else type(a).__name__ if callable(a) else repr(a) for a in args])


def {function}(*args):
    if _learning:
        _table.add(_key(args))
    elif _key(args) not in _table:
        raise LookupError("not one of the cases the checker showed")
    return _real_{function}(*args)


{checker}({function})
_learning = False'''  # noqa: E501 (a line of the code this writes, which the tests compare as it is)
