"""Tests of clcourse.widgets, one module per explorer. A package, so that pytest imports its modules
as widgets.test_cka, ... and they may share a name with a module elsewhere under tests/ (such as
tests/test_cka.py, the tests of clcourse.cka)."""
