"""nbgrader end to end: `tools/notebooks.py nbgrader` writes the course folder, nbgrader itself
generates the assignments and autogrades three submissions per notebook, and the scores are read
from its gradebook.

    make test-nbgrader                              # notebook 01 (what CI runs)
    make test-nbgrader NBGRADER_NOTEBOOKS=all       # every notebook with exercises
    make test-nbgrader NBGRADER_NOTEBOOKS="05 07"   # some of them

The submissions: the solutions filled into the released copy (full marks on every exercise), the
released copy untouched (zero on every exercise, and the grader does not crash), the solutions with
one planted mistake (marks lost on that exercise alone; `nbgrader generate_feedback` shows the
checker's hint for it), and three ways to get that exercise's marks without doing it, each of which
gets zero on it: a one-line call to the package's own function (`references`) and a table of the
visible checker's cases (`table`), with full marks on the other exercises, and the planted mistake
with its checker replaced, in the notebook and in the package, by one that does nothing (`rebinds`),
which also loses every exercise graded after it (the package the hidden tests grade with was
changed). Not collected by `pytest tests/` (nbgrader is an instructor extra, and this takes
minutes): run it by path."""
import os
import re
import subprocess
import sys
import time

import nbformat
import pytest
from repository import CALLS_THE_REFERENCE, NOTEBOOKS, PLANTED, REPO, load_script, memorising

nbgrader_api = pytest.importorskip(
    "nbgrader.api", reason="nbgrader is not installed: pip install -e '.[instructor]'")
tool = load_script(REPO / "tools" / "notebooks.py")

SUBMISSIONS = ("solution", "untouched", "planted", "references", "rebinds", "table")
CHEATS = ("references", "rebinds", "table")


def selected_notebooks():
    chosen = os.environ.get("NBGRADER_NOTEBOOKS", "01").split()
    with_exercises = [path for path in NOTEBOOKS
                      if any(tool.SOLUTION_BEGIN in cell.source and cell.cell_type == "code"
                             for cell in tool.read(path).cells)]
    if chosen == ["all"]:
        return with_exercises
    return [path for path in with_exercises if path.name.split("_")[0] in chosen]


def nbgrader(course, *args, timeout=900):
    """Run an nbgrader command in the course folder (with its
    nbgrader_config.py); fail with its log."""
    # nbgrader runs `alembic` (installed beside this Python) to set up its gradebook.
    # The kernels plot with their own inline backend, as when an instructor
    # grades (conftest.py sets Agg here).
    env = dict(os.environ,
               PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    env.pop("MPLBACKEND", None)
    try:
        result = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course,
                                capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"nbgrader {' '.join(args)} took more than {timeout} s (the budget is 2 "
                    "minutes a submission)")
    assert result.returncode == 0, \
        f"nbgrader {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def fill_solutions(released, source, exercise=None, text=None, replacement=None, appended=""):
    """The released notebook with each solution cell's source from the instructor's copy, as a
    student who solved everything would submit it; with `exercise`, `text` in that exercise's
    solution is replaced (when given) and `appended` added to its cell."""
    solutions = {cell.metadata["nbgrader"]["grade_id"]: cell.source for cell in source.cells
                 if cell.metadata.get("nbgrader", {}).get("solution")}
    submission = nbformat.from_dict(released)
    for cell in submission.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = solutions[grade_id]
            if grade_id == exercise and text is not None:
                assert cell.source.count(text) == 1, \
                    f"{text!r} is not once in the solution of {exercise}"
                cell.source = cell.source.replace(text, replacement)
            if grade_id == exercise and appended:
                cell.source += "\n\n" + appended
    return submission


def exercise_checker(source, exercise):
    """The checker that the test cell of `exercise` calls on it."""
    test = next(cell for cell in source.cells
                if cell.metadata.get("nbgrader", {}).get("grade_id") == f"test_{exercise}")
    return next(checker for _, checker, function in tool.checker_calls(test.source)[0]
                if function == exercise)


@pytest.fixture(scope="module", params=selected_notebooks()
                or [pytest.param(None, marks=pytest.mark.skip(
    reason="no notebook with exercises matches NBGRADER_NOTEBOOKS"))], ids=lambda path: path
                and path.stem[:2])
def graded(request, tmp_path_factory):
    """Generate one notebook's assignment, autograde its three submissions;
    returns what the tests read."""
    path = request.param
    number, assignment = path.name.split("_")[0], path.stem
    assert number in PLANTED, f"add a planted mistake for {path.name} to PLANTED"
    exercise, text, replacement, hint = PLANTED[number]
    course = tmp_path_factory.mktemp(f"course{number}")
    assert tool.main(["nbgrader", str(course), str(path)]) == 0
    timings = {}
    start = time.perf_counter()
    nbgrader(course, "generate_assignment", assignment, "--force")
    timings["generate_assignment"] = time.perf_counter() - start
    released = nbformat.read(course / "release" / assignment / path.name, as_version=4)
    source = nbformat.read(course / "source" / assignment / path.name, as_version=4)
    checker = exercise_checker(source, exercise)
    rebinding = (f"{checker} = lambda *args, **kwargs: None   # a checker that does nothing\n"
                 f"import clcourse.checks\nclcourse.checks.{checker} = {checker}")
    submissions = {
        "solution": fill_solutions(released, source),
        "untouched": released,
        "planted": fill_solutions(released, source, exercise, text, replacement),
        "references": fill_solutions(released, source, exercise,
                                     appended=CALLS_THE_REFERENCE[number]),
        "rebinds": fill_solutions(released, source, exercise, text, replacement,
                                  appended=rebinding),
        "table": fill_solutions(released, source, exercise, appended=memorising(exercise, checker)),
    }
    for student, notebook in submissions.items():
        folder = course / "submitted" / student / assignment
        folder.mkdir(parents=True)
        nbformat.write(notebook, folder / path.name)
    for student in SUBMISSIONS:
        start = time.perf_counter()
        nbgrader(course, "autograde", assignment, "--student", student, "--create")
        timings[f"autograde {student}"] = time.perf_counter() - start
    start = time.perf_counter()
    nbgrader(course, "generate_feedback", assignment)
    timings["generate_feedback"] = time.perf_counter() - start
    print(f"{path.name}: " + ", ".join(f"{step} {seconds:.0f} s"
                                       for step, seconds in timings.items()))
    tests = [cell.metadata["nbgrader"]["grade_id"] for cell in source.cells
             if cell.metadata.get("nbgrader", {}).get("grade")
             and not cell.metadata["nbgrader"].get("solution")]
    with nbgrader_api.Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        scores = {student: {grade_id: gradebook.find_grade(grade_id, path.stem, assignment,
                                                           student).score
                            for grade_id in tests} for student in SUBMISSIONS}
    feedback = {student: (course / "feedback" / student / assignment / f"{path.stem}.html")
                .read_text()
                for student in SUBMISSIONS}
    return dict(path=path, course=course, assignment=assignment, released=released, source=source,
                tests=tests,
                scores=scores, exercise=exercise, hint=hint, feedback=feedback, timings=timings)


def feedback_text(graded, student):
    return re.sub(r"<[^>]+>", "", graded["feedback"][student]).replace("&#39;", "'") \
        .replace("&#x27;", "'")


def test_the_release_keeps_no_solution_and_no_hidden_test(graded):
    released = "\n".join(cell.source for cell in graded["released"].cells)
    assert tool.SOLUTION_BEGIN not in released and "raise NotImplementedError()" in released
    assert tool.HIDDEN_BEGIN not in released and "cases=" not in released
    tests = [cell.source for cell in graded["source"].cells
             if cell.metadata.get("nbgrader", {}).get("grade_id") in graded["tests"]]
    assert len(tests) == len(graded["tests"]) > 0 and all(tool.HIDDEN_BEGIN in test
                                                          for test in tests)


def test_the_solutions_get_full_marks(graded):
    points = tool.EXERCISE_POINTS
    assert graded["scores"]["solution"] == {grade_id: points for grade_id in graded["tests"]}


def test_the_untouched_copy_gets_zero_on_every_exercise(graded):
    assert graded["scores"]["untouched"] == {grade_id: 0 for grade_id in graded["tests"]}


def test_a_planted_mistake_costs_its_exercise_alone(graded):
    wrong = f"test_{graded['exercise']}"
    expected = {grade_id: 0 if grade_id == wrong else tool.EXERCISE_POINTS
                for grade_id in graded["tests"]}
    assert graded["scores"]["planted"] == expected


@pytest.mark.parametrize("cheat", CHEATS)
def test_marks_without_the_work_are_zero_on_that_exercise(graded, cheat):
    """A call to the package's reference and a table of the visible cases each lose the exercise,
    and that one alone; a checker replaced in the package loses every
    exercise graded from there on."""
    tests = graded["tests"]   # in the notebook's order
    first = tests.index(f"test_{graded['exercise']}")
    wrong = tests[first:] if cheat == "rebinds" else [tests[first]]
    expected = {grade_id: 0 if grade_id in wrong else tool.EXERCISE_POINTS for grade_id in tests}
    assert graded["scores"][cheat] == expected
    reason = {"references": "write it yourself", "rebinds": "changed what grades it",
              "table": "not one of the cases the checker showed"}[cheat]
    assert reason in feedback_text(graded, cheat)


def test_the_feedback_shows_the_checkers_hint_and_none_of_its_source(graded):
    text = feedback_text(graded, "planted")
    assert graded["hint"] in text
    for student in SUBMISSIONS:   # no frame of a checker, whose source shows its references
        assert "clcourse/checks/" not in feedback_text(graded, student), student


def test_grading_is_quick(graded):
    """The issue's budget: under 2 minutes per submission on 2 cores (a loaded machine gets 3)."""
    slowest = max(seconds for step, seconds in graded["timings"].items()
                  if step.startswith("autograde"))
    assert slowest < 180, graded["timings"]
