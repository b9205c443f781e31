"""pytest hooks for the notebooks run under nbval (make test-notebooks): each notebook whose cells
all pass is saved, with the outputs nbval collected and its widgets' state, into
.cache/executed/<preset>/ (CLCOURSE_EXECUTED names another folder), where make site takes it
instead of running the notebook again. tools/course_site.py (ExecutionRecorder) says what the saved
copy holds."""
import importlib.util
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "course_site.py"
_spec = importlib.util.spec_from_file_location("tools_course_site", _SCRIPT)
course_site = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(course_site)

_recorder = course_site.ExecutionRecorder()


def pytest_runtest_setup(item):
    _recorder.watch(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    _recorder.report(item, report)


def pytest_terminal_summary(terminalreporter):
    for line in _recorder.summary():
        terminalreporter.write_line(line)
