"""The checkers' tests build the student's functions, right and wrong, from the package's own losses
and the checkers' own variants (`debiased_loss_variant(..., mistake)`): the tripwire that keeps the
references from a student's function (clcourse/checks/_core.py) is lifted for them, except in
test_core.py, which tests it."""
import pytest

from clcourse.checks import _core


@pytest.fixture(autouse=True)
def _references_allowed(request, monkeypatch):
    if request.module.__name__.rsplit(".", 1)[-1] != "test_core":
        monkeypatch.setattr(_core, "_cached_reference_codes", dict)
