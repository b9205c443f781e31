"""What a function computes, for a run's identity (clcourse/identity.py): the code fingerprint
changes with what the function computes (its code, constants, defaults, closure, the globals and
helpers it reads) and with nothing else (its name, comments, layout); the functions that passed a
checker are remembered by their fingerprint."""
import functools

import torch
import torch.nn.functional as F

from clcourse.identity import (
    checked_against,
    code_fingerprint,
    function_record,
    is_library_function,
    mark_checked,
)
from clcourse.losses import info_nce


def define(source, **namespace):
    """The function a notebook cell `source` defines (its last one), in a namespace of its own."""
    namespace = {"torch": torch, "F": F, "__name__": "__main__", **namespace}
    exec(source, namespace)
    return [value for value in namespace.values() if callable(value)
            and getattr(value, "__module__", "") == "__main__"
            and value.__code__.co_filename == "<string>"][-1]


BASE = "def loss(z, t=0.5):\n    return F.normalize(z, dim=1).sum() / t\n"


def test_the_fingerprint_ignores_the_name_comments_and_layout():
    base = code_fingerprint(define(BASE))
    assert code_fingerprint(define(BASE.replace("loss", "my_loss"))) == base
    assert code_fingerprint(define("def loss(z, t=0.5):\n    # a comment\n\n"
                                   "    return F.normalize(z,  dim=1).sum() / t\n")) == base
    assert len(base) == 16 and code_fingerprint(define(BASE)) == base


def test_the_fingerprint_follows_what_the_function_computes():
    base = code_fingerprint(define(BASE))
    different = {
        "an operation": BASE.replace("/ t", "* t"),
        "a constant": BASE.replace("dim=1", "dim=0"),
        "a default": BASE.replace("t=0.5", "t=0.2"),
        "a global value": "SCALE = 2\n" + BASE.replace("/ t", "/ t * SCALE"),
    }
    prints = {what: code_fingerprint(define(source)) for what, source in different.items()}
    assert base not in prints.values() and len(set(prints.values())) == len(prints)
    assert (code_fingerprint(define("SCALE = 3\n" + BASE.replace("/ t", "/ t * SCALE"))) !=
            prints["a global value"])


def test_a_helper_it_calls_or_closes_over_counts_and_recursion_ends():
    helper = "def helper(z):\n    return z.sum()\n"
    caller = "def loss(z, t):\n    return helper(z) / t\n"
    first = code_fingerprint(define(helper + caller))
    assert code_fingerprint(define(helper.replace("sum", "mean") + caller)) != first

    def closing(power):
        def inner(z):
            return z.pow(power).sum()
        return lambda z, t: inner(z) / t

    assert code_fingerprint(closing(2)) != code_fingerprint(closing(3))
    assert code_fingerprint(closing(2)) == code_fingerprint(closing(2))
    recursive = define("def walk(n):\n    return 0 if n == 0 else walk(n - 1) + other(n)\n\n"
                       "def other(n):\n    return walk(n - 1) if n > 1 else n\n")
    assert len(code_fingerprint(recursive)) == 16


def test_partials_methods_tensors_and_installed_functions():
    assert code_fingerprint(functools.partial(info_nce, temperature=0.5)) != \
        code_fingerprint(functools.partial(info_nce, temperature=0.2))
    weights = torch.ones(3)
    scaled = define("def loss(z):\n    return (z * WEIGHTS).sum()\n", WEIGHTS=weights)
    before = code_fingerprint(scaled)
    weights[0] = 2.0
    assert code_fingerprint(scaled) != before
    huge = define("def loss(z):\n    return (z * BIG).sum()\n", BIG=torch.zeros(2 ** 21))
    assert len(code_fingerprint(huge)) == 16   # a large tensor counts by shape and dtype
    # torch's own functions count by name: their code is the installed torch's
    assert code_fingerprint(define("def f(z):\n    return F.normalize(z)\n")) != \
        code_fingerprint(define("def f(z):\n    return F.softmax(z)\n"))
    assert (is_library_function(info_nce) and not is_library_function(scaled)
            and not is_library_function(F.normalize))


def test_the_record_names_the_function_and_what_it_passed():
    assert function_record(None) is None
    loss = define("def info_nce_loss(z1, z2, t):\n    return (z1 * z2).sum() / t\n")
    record = function_record(loss)
    assert record == {"name": "__main__.info_nce_loss", "code": code_fingerprint(loss)}
    assert function_record(info_nce)["name"] == "clcourse.losses.info_nce"
    mark_checked(loss, info_nce)
    assert checked_against(loss) == ["clcourse.losses.info_nce"]
    assert function_record(loss)["checked"] == ["clcourse.losses.info_nce"]
    edited = define("def info_nce_loss(z1, z2, t):\n    return (z1 * z2).mean() / t\n")
    assert checked_against(edited) == [] and "checked" not in function_record(edited)
