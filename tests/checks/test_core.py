"""What every checker shares (clcourse/checks/_core.py): the package's references answer only the
checker, whatever name the student's function reaches them by; an error in the student's code is
reported as the student's; a function that passes stands for its library function in the run store;
in IPython a failing check shows its message and none of the checker's source."""
import functools
import subprocess
import sys
import textwrap
import time
import types

import pytest
import torch
import torch.nn.functional as F
from repository import REPO

import clcourse.checks as checks
import clcourse.losses
from clcourse.attacks import contrastive_attack, contrastive_objective, project
from clcourse.checks import ExerciseError, _core
from clcourse.checks.cacr import (
    attraction_term_variant,
    attraction_weights_variant,
    equivalent_temperature_and_beta_variant,
    repulsion_term_variant,
    repulsion_weights_variant,
)
from clcourse.checks.geometry import reference_anchor_gradient, reference_top_k_false_negative_rate
from clcourse.checks.hard_negatives import mochi_logits_variant
from clcourse.checks.simclr import reference_positive_mask
from clcourse.cka import hsic_unbiased, linear_cka
from clcourse.evaluate import alignment, uniformity
from clcourse.identity import checked_against, function_record
from clcourse.losses import dcl, hcl, info_nce, moco_logits, sce, sce_target, supcon
from clcourse.methods import clae_objective, moco_step, ring_buffer_enqueue, update_key_encoder

# A one-line call to a reference, for every checker: each passed every checker before the references
# were kept out of the student's reach.
CALLS_A_REFERENCE = {
    "check_positive_mask": lambda b: reference_positive_mask(b),
    "check_info_nce": lambda z1, z2, t: info_nce(z1, z2, t),
    "check_alignment": lambda z1, z2: alignment(z1, z2),
    "check_uniformity": lambda z, t: uniformity(z, t),
    "check_false_negative_rate": lambda s, y, k: reference_top_k_false_negative_rate(s, y, k),
    "check_anchor_gradient": lambda *args: reference_anchor_gradient(*args),
    "check_enqueue": lambda queue, pointer, keys: ring_buffer_enqueue(queue, pointer, keys),
    "check_momentum_update": lambda key, query, m: update_key_encoder(key, query, m),
    "check_moco_logits": lambda q, k, queue, t: moco_logits(q, k, queue, t),
    "check_moco_step": lambda *args: moco_step(*args),
    "check_dcl": lambda *args: dcl(*args),
    "check_hcl": lambda *args: hcl(*args),
    "check_mochi_logits": lambda *args: mochi_logits_variant(*args),
    "check_fgsm_contrastive":
        lambda encode, x, epsilon, loss: contrastive_attack(encode, x, epsilon, loss),
    "check_clae_objective": lambda *args: clae_objective(*args),
    "check_attraction_weights": lambda z, tau: attraction_weights_variant(z, tau),
    "check_repulsion_weights": lambda za, zb, tau: repulsion_weights_variant(za, zb, tau),
    "check_attraction_term": lambda z, tau, alpha: attraction_term_variant(z, tau, alpha),
    "check_repulsion_term": lambda z, tau, beta: repulsion_term_variant(z, tau, beta),
    "check_equivalent_temperature_and_beta":
        lambda k, t: equivalent_temperature_and_beta_variant(k, t),
    "check_soft_target": lambda *args: sce_target(*args),
    "check_sce_loss": lambda *args: sce(*args),
    "check_pgd_step":
        lambda x_adv, x, g, epsilon, step: project(x_adv + step * g.sign(), x, epsilon),
    "check_supcon": lambda *args: supcon(*args),
    "check_threat_model_1_objective": lambda encode, x, t: contrastive_objective(
        encode, x, lambda a, z: info_nce(a, z, t)),
    "check_linear_cka": lambda x, y: linear_cka(x, y),
    "check_hsic_unbiased": lambda k, l: hsic_unbiased(k, l),  # noqa: E741 (K and L, as in HSIC)
}


def test_every_checker_is_an_exercise_with_a_reference_call_to_refuse():
    names = {name for name in checks.__all__ if name.startswith("check_")}
    assert set(CALLS_A_REFERENCE) == names
    assert all(getattr(checks, name).__code__ is checks.check_info_nce.__code__ for name in names)


@pytest.mark.parametrize("checker", sorted(CALLS_A_REFERENCE))
def test_a_function_that_calls_a_reference_fails_every_checker(checker):
    with pytest.raises(ExerciseError, match="^write it yourself: .* calls clcourse's "):
        getattr(checks, checker)(CALLS_A_REFERENCE[checker])


def info_nce_by(how):
    """A student's info_nce that reaches clcourse's through `how`."""
    import clcourse.losses as losses_module
    copy = types.FunctionType(info_nce.__code__, info_nce.__globals__, "my_copy",
                              info_nce.__defaults__)

    def caught(z1, z2, t):
        try:
            return info_nce(z1, z2, t)
        except BaseException:   # noqa: B036 (what a student might write to hide the tripwire)
            return F.cross_entropy(z1 @ z2.T / t, torch.arange(len(z1)))

    return {
        "a module attribute": lambda z1, z2, t: clcourse.losses.info_nce(z1, z2, t),
        "an alias": lambda z1, z2, t: losses_module.info_nce(z1, z2, t),
        "the function itself": info_nce,
        "a partial": functools.partial(info_nce),
        "a copy of the function object": copy,
        "a helper of the student's": lambda z1, z2, t: (lambda *a: info_nce(*a))(z1, z2, t),
        "an exception caught": caught,
        "a method of the checker's module":
            lambda z1, z2, t: checks.simclr._info_nce_mistakes(z1, z2, t).popitem()[1],
    }[how]


@pytest.mark.parametrize("how",
                         ["a module attribute", "an alias", "the function itself", "a partial",
                          "a copy of the function object", "a helper of the student's",
                          "an exception caught", "a method of the checker's module"])
def test_the_reference_is_out_of_reach_whatever_name_reaches_it(how):
    with pytest.raises(ExerciseError,
                       match="write it yourself: .*clcourse's (info_nce|_info_nce_mistakes)"):
        checks.check_info_nce(info_nce_by(how))


def test_the_students_function_is_named_and_the_reference_keeps_its_name():
    def calls_the_reference(z1, z2, temperature):
        return info_nce(z1, z2, temperature)

    with pytest.raises(ExerciseError) as raised:
        checks.check_info_nce(calls_the_reference)
    assert str(raised.value).startswith("write it yourself: calls_the_reference calls clcourse's "
                                        "info_nce (clcourse.losses.info_nce)")


def test_a_function_the_exercise_may_use_is_allowed_and_the_references_work_outside_a_check(capsys):
    """Threat model I's objective is InfoNCE with constant anchors: the exercise gives InfoNCE."""
    def objective(encode, x, temperature):
        with torch.no_grad():
            anchors = encode(x)
        return lambda x_prime: info_nce(anchors, encode(x_prime), temperature)

    checks.check_threat_model_1_objective(objective)
    assert "✓ objective: " in capsys.readouterr().out
    z = torch.randn(4, 3)
    assert torch.isfinite(info_nce(z, z, 0.5)) and sys.getprofile() is None


def test_an_error_in_the_students_code_is_reported_with_the_students_lines_only():
    def info_nce_loss(z1, z2, temperature):
        logits = z1 @ z2   # the mistake: z2 is not transposed
        return logits.mean()

    with pytest.raises(ExerciseError) as error:
        checks.check_info_nce(info_nce_loss)
    message = str(error.value)
    assert message.startswith("info_nce_loss raised RuntimeError: ")
    assert "logits = z1 @ z2   # the mistake" in message and "test_core.py" in message
    assert "clcourse/checks" not in message and "reference" not in message


class NoGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, gradient):
        raise ValueError("no gradient here")


def test_what_the_checker_cannot_use_is_an_exercise_error_not_the_checkers_traceback():
    with pytest.raises(ExerciseError, match=r"check_info_nce could not use what your function "
                                            r"returned \(ValueError: no gradient here\)"):
        checks.check_info_nce(lambda z1, z2, t: NoGradient.apply(correct_info_nce(z1, z2, t)))
    with pytest.raises(ExerciseError, match="check_info_nce takes your function itself"):
        checks.check_info_nce(3.0)


def correct_info_nce(z1, z2, temperature):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    n = len(z1)
    return F.cross_entropy(logits, torch.cat([torch.arange(n, 2 * n), torch.arange(n)]))


def test_a_function_that_passes_stands_for_its_library_function_until_its_code_changes(capsys):
    def info_nce_loss(z1, z2, temperature):
        return correct_info_nce(z1, z2, temperature)

    assert checked_against(info_nce_loss) == []
    checks.check_info_nce(info_nce_loss)
    assert checked_against(info_nce_loss) == ["clcourse.losses.info_nce"]
    assert function_record(info_nce_loss)["checked"] == ["clcourse.losses.info_nce"]
    with pytest.raises(ExerciseError):
        checks.check_info_nce(lambda z1, z2, t: correct_info_nce(z1, z2, t) * 2)
    global correct_info_nce
    original = correct_info_nce
    try:
        # a helper it calls, redefined
        correct_info_nce = lambda z1, z2, t: original(z1, z2, t)   # noqa: E731
        assert checked_against(info_nce_loss) == []
    finally:
        correct_info_nce = original


def test_the_tripwire_costs_little(capsys):
    """The profile hook watches every Python call while a check runs; it
    must not make checking slow."""
    def timed(runs=3):
        best = float("inf")
        for _ in range(runs):
            start = time.perf_counter()
            checks.check_info_nce(correct_info_nce)
            checks.check_supcon(lambda *args: supcon_by_hand(*args))
            best = min(best, time.perf_counter() - start)
        return best

    with_tripwire = timed()
    original = _core.tripwire
    _core.tripwire = lambda **_: _no_tripwire()
    try:
        without = timed()
    finally:
        _core.tripwire = original
    assert with_tripwire < 3 * without + 0.05, (with_tripwire, without)


class _Nothing:
    hit = None
    references = {}

    def fail_if_hit(self, name):
        pass


@__import__("contextlib").contextmanager
def _no_tripwire():
    yield _Nothing()


def supcon_by_hand(z1, z2, labels, temperature):
    u = F.normalize(torch.cat([z1, z2]), dim=1)
    y = torch.cat([labels, labels])
    self_pairs = torch.eye(len(u), dtype=torch.bool)
    positives = (y[:, None] == y[None, :]) & ~self_pairs
    log_prob = torch.log_softmax((u @ u.T / temperature).masked_fill(self_pairs, float("-inf")),
                                 dim=1)
    return (-log_prob.masked_fill(~positives, 0.0).sum(1) / positives.sum(1)).mean()


IPYTHON_SESSION = textwrap.dedent('''
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.run_cell("from clcourse.checks import check_info_nce, _core\\nimport torch")
    shell.run_cell("def info_nce_loss(z1, z2, temperature):\\n    return (z1 * z2).sum() * 0\\n\\n"
                   "check_info_nce(info_nce_loss)")
    print("=== a student's error")
    shell.run_cell("def broken(z1, z2, temperature):\\n"
                   "    return z1 @ z2   # shapes do not fit\\n\\n"
                   "check_info_nce(broken)")
    print("=== without the handler")
    shell.set_custom_exc((), None)
    shell.run_cell("check_info_nce(info_nce_loss)")
''')


def test_in_ipython_a_failing_check_shows_its_message_and_none_of_the_checkers_source():
    done = subprocess.run([sys.executable, "-c", IPYTHON_SESSION], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    handled, student_error, unhandled = done.stdout.split("===")
    assert "ExerciseError" in handled and \
        "info_nce_loss (B=4, D=8, temperature=0.5) does not match" in handled
    assert "return z1 @ z2   # shapes do not fit" in student_error and \
        "broken raised RuntimeError" in student_error
    for shown in (handled, student_error):
        assert "reference = info_nce(" not in shown and "_info_nce_mistakes" not in shown
        assert "clcourse/checks/" not in shown, shown
    # what the handler hides: the checker's source around each frame, its references included
    assert "reference = info_nce(" in unhandled
