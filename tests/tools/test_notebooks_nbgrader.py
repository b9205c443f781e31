"""The nbgrader course folder (`tools/notebooks.py nbgrader`) and the hidden tests (drawn per course
by tools/hidden_cases.py, run by clcourse/checks/_grading.py), without nbgrader itself:
tests/e2e_nbgrader.py runs nbgrader on the result (make test-nbgrader).

The first half tests the tool on small notebooks built here, including the notebooks it refuses
(markers that do not pair, a solution in a raw cell, a checker called with a keyword or inside a
block, a checker with no solution before it, a solution with no checker after it, a grade id used
twice); then the hidden tests: drawn from the course's seed, kept out of the installed package,
refusing a notebook that replaced a checker; the last part runs every course notebook's exercises:
each solution passes its hidden tests (for several seeds), the bare stub fails them, the hidden
tests call the checker on inputs the visible checker never uses, and a planted mistake fails its
exercise alone with the checker's hint."""
import ast
import importlib.util
import json
import logging
import os
import re
import sys
import types
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from repository import CALLS_THE_REFERENCE, NOTEBOOKS, PLANTED, REPO, load_script, memorising
from traitlets.config import Config

import clcourse.checks
from clcourse.checks import ExerciseError, _grading
from clcourse.presets import get_preset

tool = load_script(REPO / "tools" / "notebooks.py")
hidden_cases = tool.hidden_cases()
BEGIN, END = tool.SOLUTION_BEGIN, tool.SOLUTION_END
HIDDEN_CALL = re.compile(r'^_hidden_test\(globals\(\), "(check_\w+)", "(\w+)"')

SOLUTION = f'''def alignment_loss(z1, z2):
    """Alignment."""
    {BEGIN}
    distances = F.normalize(z1, dim=1) - F.normalize(z2, dim=1)
    return distances.pow(2).sum(dim=1).mean()
    {END}'''


def tiny_notebook(*cells):
    nb = new_notebook()
    nb.cells = [new_markdown_cell("# Tiny"),
                new_code_cell("import torch\nimport torch.nn.functional as F"), *cells]
    return nb


def nbgrader_cells(nb):
    return [(cell.cell_type, cell.metadata["nbgrader"]) for cell in nb.cells]


# ---- the tool ------------------------------------------------------------------------------------

def test_an_exercise_becomes_a_solution_cell_and_an_autograded_test_cell_with_hidden_tests():
    nb = tiny_notebook(new_code_cell(f"{SOLUTION}\n\n\ncheck_alignment(alignment_loss)"),
                       new_markdown_cell("## Check your understanding\n\n1. "
                                         f"Why?\n\n{BEGIN}\nBecause.\n{END}"))
    source = tool.nbgrader_source(nb, "tiny.ipynb")
    assert [cell.cell_type for cell in source.cells] == ["markdown", "code", "code", "code",
                                                         "markdown"]
    heading, imports, solution, test, answer = (cell.metadata["nbgrader"] for cell in source.cells)
    for number, read_only in enumerate((heading, imports)):
        assert read_only == {"grade": False, "grade_id": f"cell-{number}", "locked": True,
                             "schema_version": 3, "solution": False}
    assert solution == {"grade": False, "grade_id": "alignment_loss", "locked": False,
                        "schema_version": 3, "solution": True}
    assert test == {"grade": True, "grade_id": "test_alignment_loss", "locked": True, "points": 1,
                    "schema_version": 3, "solution": False}
    assert answer == {"grade": True, "grade_id": "check-your-understanding", "locked": False,
                      "points": 1, "schema_version": 3, "solution": True}
    assert source.cells[2].source == SOLUTION
    cases = hidden_cases.draw(0)["check_alignment"]["cases"]
    assert source.cells[3].source == ("check_alignment(alignment_loss)\n"
                                      f"{tool.HIDDEN_BEGIN}\n"
                                      "from clcourse.checks._grading import hidden_test as "
                                      "_hidden_test\n"
                                      '_hidden_test(globals(), "check_alignment", '
                                      f'"alignment_loss", cases={cases!r})\n'
                                      f"{tool.HIDDEN_END}")
    assert len({cell.id for cell in source.cells}) == len(source.cells)
    nbformat.validate(source)


def test_a_checker_in_its_own_cell_tests_the_solution_before_it():
    nb = tiny_notebook(new_code_cell(SOLUTION), new_markdown_cell("Now check it:"),
                       new_code_cell("check_alignment(alignment_loss)"))
    source = tool.nbgrader_source(nb, "tiny.ipynb")
    ids = [cell.metadata["nbgrader"]["grade_id"] for cell in source.cells]
    assert ids == ["cell-0", "cell-1", "alignment_loss", "cell-3", "test_alignment_loss"]
    assert source.cells[4].metadata["nbgrader"]["grade"]


def test_a_checker_run_again_as_a_guard_before_training_is_a_read_only_cell_not_a_second_exercise():
    guard = "check_alignment(alignment_loss)\nhistory = train(alignment_loss)"
    nb = tiny_notebook(new_code_cell(f"{SOLUTION}\n\ncheck_alignment(alignment_loss)"),
                       new_code_cell(guard))
    source = tool.nbgrader_source(nb, "tiny.ipynb")
    assert [cell.metadata["nbgrader"]["grade_id"] for cell in source.cells] == [
        "cell-0", "cell-1", "alignment_loss", "test_alignment_loss", "cell-3"]
    assert source.cells[4].source == guard
    assert source.cells[4].metadata["nbgrader"] == {"grade": False, "grade_id": "cell-3",
                                                    "locked": True, "schema_version": 3,
                                                    "solution": False}


def test_the_command_writes_the_config_and_one_assignment_per_notebook_with_exercises(
        tmp_path, monkeypatch):
    exercise, no_exercise = tmp_path / "01_tiny.ipynb", tmp_path / "00_tour.ipynb"
    nbformat.write(tiny_notebook(new_code_cell(f"{SOLUTION}\n\ncheck_alignment(alignment_loss)")),
                   exercise)
    nbformat.write(tiny_notebook(), no_exercise)
    out = tmp_path / "course"
    assert tool.main(["nbgrader", str(out), str(no_exercise), str(exercise)]) == 0
    written = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    assert written == [tool.COURSE_RECORD, tool.WRITTEN_RECORD, "nbgrader_config.py",
                       "source/01_tiny/01_tiny.ipynb"]
    # nbgrader loads the config with get_config() defined: the grading
    # kernels inherit its environment
    for name in ("CLCOURSE_PRESET", "CLCOURSE_MAX_EPOCHS", "CLCOURSE_MAX_TRAIN_IMAGES",
                 "CLCOURSE_KEEP_GRADING_RUNS", "NBGRADER_EXCHANGE"):
        # so that monkeypatch restores each afterwards, whatever the config sets
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("CLCOURSE_PRESET", "colab")
    config = load_config(out, monkeypatch)
    assert config.CourseDirectory.root == str(out) and config.ExecutePreprocessor.timeout == 600
    assert config.Exchange.root == "/srv/nbgrader/exchange"
    preset = get_preset()
    assert (preset.name, preset.epochs, preset.sweep_epochs,
            preset.train_subset) == ("smoke", 1, 1, 512)
    # the instructor's environment wins over the cap
    monkeypatch.setenv("CLCOURSE_MAX_EPOCHS", "5")
    monkeypatch.setenv("NBGRADER_EXCHANGE", str(tmp_path / "exchange"))
    config = load_config(out, monkeypatch)
    assert get_preset().epochs == 5 and config.Exchange.root == str(tmp_path / "exchange")
    (out / "nbgrader_config.py").write_text("# edited by the instructor\n")
    assert tool.main(["nbgrader", str(out), str(exercise)]) == 0
    assert (out / "nbgrader_config.py").read_text() == "# edited by the instructor\n"


class FakeExecute:
    """Stands in for nbgrader's Execute preprocessor: records the runs folder its
    kernel would get, and trains."""
    seen = []

    def preprocess(self, nb, resources):
        runs = Path(os.environ["CLCOURSE_RUNS"])
        (runs / "simclr").mkdir(parents=True)
        (runs / "simclr" / "last.pt").write_bytes(b"checkpoint")
        FakeExecute.seen.append(runs)
        return nb, resources


class FakeTrait:
    @staticmethod
    def default():
        return ["Sanitize", FakeExecute, "SaveAutoGrades"]


CONFIG_VARIABLES = ("CLCOURSE_PRESET", "CLCOURSE_MAX_EPOCHS", "CLCOURSE_MAX_TRAIN_IMAGES",
                    "CLCOURSE_DATA", "CLCOURSE_RUNS")


def load_config(out, monkeypatch):
    """Execute out/nbgrader_config.py as nbgrader does, with nbgrader's Execute and Autograde stood
    in for (the tests do not need nbgrader installed). Every variable the config sets
    is restored after the test."""
    for name in CONFIG_VARIABLES:
        monkeypatch.setenv(name, os.environ.get(name, ""))
        if not os.environ[name]:
            monkeypatch.delenv(name)
    preprocessors = types.ModuleType("nbgrader.preprocessors")
    preprocessors.Execute = FakeExecute
    converters = types.ModuleType("nbgrader.converters")
    converters.Autograde = types.SimpleNamespace(
        class_traits=lambda: {"autograde_preprocessors": FakeTrait})
    monkeypatch.setitem(sys.modules, "nbgrader", types.ModuleType("nbgrader"))
    monkeypatch.setitem(sys.modules, "nbgrader.preprocessors", preprocessors)
    monkeypatch.setitem(sys.modules, "nbgrader.converters", converters)
    config = Config()
    exec((out / "nbgrader_config.py").read_text(),
         {"get_config": lambda: config, "__file__": str(out / "x.py")})
    return config


def test_each_graded_submission_trains_in_a_temporary_runs_folder_deleted_afterwards(
        tmp_path, monkeypatch):
    for name in ("CLCOURSE_RUNS", "CLCOURSE_KEEP_GRADING_RUNS"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    assert tool.main(["nbgrader", str(tmp_path), str(NOTEBOOKS[1])]) == 0
    steps = load_config(tmp_path, monkeypatch).Autograde.autograde_preprocessors
    assert steps[0] == "Sanitize" and steps[2] == "SaveAutoGrades" and \
        issubclass(steps[1], FakeExecute)
    FakeExecute.seen.clear()
    for _ in range(2):
        steps[1]().preprocess({}, {})
    first, second = FakeExecute.seen
    assert first != second and not first.exists() and not second.exists()
    assert "CLCOURSE_RUNS" not in os.environ

    # kept on purpose: runs/ beside each graded notebook
    monkeypatch.setenv("CLCOURSE_KEEP_GRADING_RUNS", "1")
    config = load_config(tmp_path, monkeypatch)
    assert "autograde_preprocessors" not in config.Autograde and os.environ["CLCOURSE_RUNS"] == \
        "runs"


def test_the_hidden_tests_checksum_warning_alone_is_silenced(tmp_path, monkeypatch):
    assert tool.main(["nbgrader", str(tmp_path), str(NOTEBOOKS[1])]) == 0
    logger = logging.getLogger("AutogradeApp")
    monkeypatch.setattr(logger, "filters", [])
    load_config(tmp_path, monkeypatch)

    def shown(message):
        return logger.filter(logger.makeRecord("AutogradeApp", logging.WARNING, __file__, 1,
                                               message, (), None))

    assert not shown("Attribute 'checksum' for cell test_info_nce_loss has changed! (should be: a, "
                     "got: b)")
    assert shown("Attribute 'checksum' for cell cell-12 has changed! (should be: a, got: b)")
    assert shown("No submitted file: x.ipynb")


def test_a_source_notebook_changed_since_it_was_written_is_not_overwritten(tmp_path, capsys):
    assert tool.main(["nbgrader", str(tmp_path), str(NOTEBOOKS[1])]) == 0
    source = tmp_path / "source" / NOTEBOOKS[1].stem / NOTEBOOKS[1].name
    source.write_text(source.read_text().replace("Contrastive learning", "EDITED BY HAND", 1))
    assert tool.main(["nbgrader", str(tmp_path), str(NOTEBOOKS[1])]) == 1
    assert f"{source}: changed since `tools/notebooks.py nbgrader` last wrote it" \
        in capsys.readouterr().out
    assert tool.main(["nbgrader", str(tmp_path), str(NOTEBOOKS[1]), "--force"]) == 0
    assert "EDITED BY HAND" not in source.read_text()


def test_the_assignment_is_the_student_copy_says_what_it_is_and_keeps_expected_outputs():
    path = NOTEBOOKS[1]
    source = tool.nbgrader_source(tool.read(path), str(path))
    repository = tool.read_repository()
    header = source.cells[0].source.split("\n\n")[0]
    assert header == tool.copy_header(repository, "assignment", path.name)
    assert repository.colab(f"student/{path.name}") in header and "solutions" not in header.lower()
    expected = [cell for cell in source.cells if tool.EXPECTED_OUTPUT in cell.source]
    assert expected and all(cell.outputs == [] for cell in source.cells if cell.cell_type == "code")


BAD_NOTEBOOKS = {
    "BEGIN never closed": (
        [new_code_cell(f"def f(x):\n    {BEGIN}\n    return x")],
        r"cell 2, line 2: .*never closed"),
    "END without BEGIN": (
        [new_code_cell(f"def f(x):\n    return x\n    {END}")], r"cell 2, line 3: .*without a"),
    "malformed marker": (
        [new_code_cell("x = 1\n# BEGIN SOLUTION\nx = 2")], r"cell 2, line 2: malformed marker"),
    "checker without a solution": (
        [new_code_cell("def alignment_loss(z):\n    return z @ z.T"),
         new_code_cell("print('checking')\ncheck_alignment(alignment_loss)")],
        r"cell 3, line 2: check_alignment\(alignment_loss\) has no solution cell"),
    "checker of another exercise after a graded one": (
        [new_code_cell(f"{SOLUTION}\n\ncheck_alignment(alignment_loss)"),
         new_code_cell("check_alignment(alignment_loss)\ncheck_uniformity(uniformity_loss)")],
        r"cell 3, line 1: .*no solution cell"),
    "solution after its checker": (
        [new_code_cell(f"check_alignment(alignment_loss)\n{SOLUTION}")],
        r"cell 2, line 4: a solution region after the checker on line 1"),
    "second solution after the checker": (
        [new_code_cell(f"{SOLUTION}\ncheck_alignment(alignment_loss)\n{BEGIN}\nx = 1\n{END}")],
        r"cell 2, line 8: a solution region after the checker on line 7"),
    "duplicate grade id": (
        [new_code_cell(f"{SOLUTION}\n\ncheck_alignment(alignment_loss)"), new_code_cell("x = 1"),
         new_code_cell(SOLUTION)],
        r"cell 4, line 3: grade_id 'alignment_loss' is already used by cell 2"),
    "checker without hidden tests": (
        [new_code_cell(f"{SOLUTION}\n\ncheck_nothing_known(alignment_loss)")],
        r"cell 2, line 8: check_nothing_known has no hidden tests"),
    # what nbgrader would grade wrongly: every student's hidden test a
    # NameError, an exercise never graded
    "checker called with a keyword": (
        [new_code_cell(f"{SOLUTION}\n\ncheck_alignment(fn=alignment_loss)")],
        r"cell 2, line 8: check_alignment\(fn=alignment_loss\): call a checker with your function "
        r"alone"),
    "checker called with a second argument": (
        [new_code_cell(f"{SOLUTION}\n\ncheck_alignment(alignment_loss, cases=((2, 3),))")],
        r"cell 2, line 8: check_alignment\(alignment_loss, cases=.*\): call a checker with your "
        r"function alone"),
    "checker indented under an if": (
        [new_code_cell(f"{SOLUTION}\n\ncheck_alignment(alignment_loss)"),
         new_code_cell(SOLUTION.replace("alignment_loss", "other_loss")
                       + "\n\nif True:\n    check_uniformity(other_loss)")],
        r"cell 3, line 9: check_uniformity\(other_loss\) is inside a block or an expression"),
    "checker inside an expression": (
        [new_code_cell(f"{SOLUTION}\n\nresult = check_alignment(alignment_loss)")],
        r"cell 2, line 8: check_alignment\(alignment_loss\) is inside a block or an expression"),
    "solution with no checker before the next solution": (
        [new_code_cell(SOLUTION), new_code_cell(SOLUTION.replace("alignment_loss", "other_loss")),
         new_code_cell("check_alignment(other_loss)")],
        r"cell 2, line 3: the solution of 'alignment_loss' has no checker after it .* before cell "
        r"3's solution"),
    "solution with no checker at all": (
        [new_code_cell(SOLUTION)],
        r"cell 2, line 3: the solution of 'alignment_loss' has no checker after it .*end of the "
        r"notebook"),
    "solution region in a raw cell": (
        [nbformat.v4.new_raw_cell(f"Answer:\n{BEGIN}\nthe answer\n{END}")],
        r"cell 2, line 2: a solution region in a raw cell"),
}


@pytest.mark.parametrize("cells, message", BAD_NOTEBOOKS.values(), ids=BAD_NOTEBOOKS.keys())
def test_a_bad_notebook_is_refused_with_notebook_cell_and_line_and_nothing_is_written(
        tmp_path, capsys, cells, message):
    good, bad = tmp_path / "01_good.ipynb", tmp_path / "02_bad.ipynb"
    nbformat.write(tiny_notebook(new_code_cell(f"{SOLUTION}\n\ncheck_alignment(alignment_loss)")),
                   good)
    nbformat.write(tiny_notebook(*cells), bad)
    with pytest.raises(tool.NbgraderSourceError, match=message):
        tool.nbgrader_source(tool.read(bad), str(bad))
    out = tmp_path / "course"
    assert tool.main(["nbgrader", str(out), str(good), str(bad)]) == 1
    printed = capsys.readouterr().out
    assert re.search(f"{re.escape(str(bad))}: {message}", printed), printed
    assert "nothing written" in printed
    assert not out.exists()


# ---- the course's exercises and their hidden tests -----------------------------------------------

def test_a_released_cell_keeps_no_metadata_and_no_attachment_its_text_no_longer_shows():
    answer = new_markdown_cell(f"## Why\n\n![figure](attachment:figure.png)\n\n{BEGIN}\n"
                               f"![mine](attachment:answer.png)\nBecause.\n{END}")
    answer.attachments = {"figure.png": {"image/png": "AAAA"}, "answer.png": {"image/png": "BBBB"}}
    answer.metadata = {"tags": ["keep"], "notes": "the grader's notes", "lines_to_next_cell": 2}
    code = new_code_cell(f"{SOLUTION}\n\ncheck_alignment(alignment_loss)",
                         metadata={"secret": "the answer"})
    nb = tiny_notebook(code, answer)
    for copy, _ in ((tool.student_notebook(nb, "tiny.ipynb")[0], None),
                    (tool.nbgrader_source(nb, "tiny.ipynb"), None)):
        released = [cell for cell in copy.cells if "## Why" in cell.source][0]
        assert set(released.attachments) == {"figure.png"}
        assert all(set(cell.metadata) <= {"tags", "nbgrader"} for cell in copy.cells)
        assert released.metadata.get("tags") == ["keep"] and \
            "the answer" not in nbformat.writes(copy)
    answer.source = f"## Why\n\n{BEGIN}\n![mine](attachment:answer.png)\n{END}"
    released = [cell for cell in tool.student_notebook(nb, "tiny.ipynb")[0].cells
                if "## Why" in cell.source][0]
    assert "attachments" not in released


def test_a_raw_cell_with_a_solution_region_stops_the_student_copy_too():
    nb = tiny_notebook(nbformat.v4.new_raw_cell(f"Answer:\n{BEGIN}\nthe answer\n{END}"))
    with pytest.raises(tool.SolutionMarkerError,
                       match=r"cell 2 \(Answer:\), line 2: a solution region in a raw cell"):
        tool.student_notebook(nb, "tiny.ipynb")


# ---- the hidden tests ----------------------------------------------------------------------------

def test_every_checker_has_hidden_tests_and_they_are_not_in_the_installed_package():
    checkers = {name for name in clcourse.checks.__all__ if name.startswith("check_")}
    assert set(hidden_cases.TEMPLATES) == checkers
    assert importlib.util.find_spec("clcourse.checks.hidden") is None
    package = Path(clcourse.__file__).parent
    for path in package.rglob("*.py"):
        text = path.read_text()
        assert "TEMPLATES" not in text and "hidden_cases" not in text, path


def test_the_hidden_cases_are_drawn_per_course_and_the_course_keeps_its_seed(tmp_path, capsys):
    draws = [hidden_cases.draw(seed) for seed in range(6)]
    assert draws[0] == hidden_cases.draw(0)
    assert len({repr(draw) for draw in draws}) == 6
    for checker in hidden_cases.TEMPLATES:   # each checker's cases vary between courses
        assert len({repr(draw[checker]) for draw in draws}) > 1, checker
    notebook = tmp_path / "01_tiny.ipynb"
    nbformat.write(tiny_notebook(new_code_cell(f"{SOLUTION}\n\ncheck_alignment(alignment_loss)")),
                   notebook)
    course = tmp_path / "course"
    source = course / "source" / "01_tiny" / "01_tiny.ipynb"

    def hidden_line():
        return [line for line in source.read_text().split("\\n")
                if "_hidden_test(globals()" in line]

    assert tool.main(["nbgrader", str(course), str(notebook)]) == 0
    seed = json.loads((course / tool.COURSE_RECORD).read_text())["hidden_cases_seed"]
    assert f"course's seed {seed} (new)" in capsys.readouterr().out
    first = hidden_line()
    assert tool.main(["nbgrader", str(course), str(notebook)]) == 0
    assert hidden_line() == first and f"seed {seed} (recorded in" in capsys.readouterr().out
    other = (seed + 1) % 6 if draws[(seed + 1) % 6]["check_alignment"] != \
        hidden_cases.draw(seed)["check_alignment"] \
        else next(s for s in range(6)
                  if draws[s]["check_alignment"] != hidden_cases.draw(seed)["check_alignment"])
    assert tool.main(["nbgrader", str(course), str(notebook), "--seed", str(other)]) == 0
    assert hidden_line() != first
    assert json.loads((course / tool.COURSE_RECORD).read_text())["hidden_cases_seed"] == other


def _alignment_namespace():
    namespace = {}
    exec("import torch\nimport torch.nn.functional as F\nfrom clcourse.checks import "
         "check_alignment\n"
         + SOLUTION.replace(BEGIN, "").replace(END, ""), namespace)
    return namespace


def test_the_hidden_test_grades_with_clcourses_checker_and_refuses_a_replaced_one(capsys):
    namespace = _alignment_namespace()
    _grading.hidden_test(namespace, "check_alignment", "alignment_loss", cases=((3, 4),))
    assert "✓ alignment_loss" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="nothing_here is not defined"):
        _grading.hidden_test(namespace, "check_alignment", "nothing_here", cases=((3, 4),))
    # a solution cell that rebinds the checker's name in the notebook
    exec("def check_alignment(fn, cases=None):\n    pass", namespace)
    with pytest.raises(ExerciseError,
                       match="check_alignment in this notebook is not clcourse's checker"):
        _grading.hidden_test(namespace, "check_alignment", "alignment_loss", cases=((3, 4),))
    with pytest.raises(ExerciseError, match="alignment_loss is not defined|not clcourse's checker"):
        _grading.hidden_test({**namespace, "alignment_loss": 1}, "check_alignment",
                             "alignment_loss")


@pytest.mark.parametrize("how",
                         ["module attribute", "package attribute", "code swapped",
                          "reference replaced", "tripwire machinery"])
def test_the_hidden_test_refuses_a_notebook_that_changed_the_package(monkeypatch, how):
    namespace = _alignment_namespace()
    import clcourse.checks._core as core
    import clcourse.checks.simclr as simclr
    import clcourse.evaluate as evaluate

    def noop(fn, cases=None):
        return None

    if how == "module attribute":
        monkeypatch.setattr(simclr, "check_alignment", noop)
    elif how == "package attribute":
        monkeypatch.setattr(clcourse.checks, "check_alignment", noop)
        namespace["check_alignment"] = noop
    elif how == "code swapped":
        monkeypatch.setattr(clcourse.checks.check_alignment.__wrapped__, "__code__", noop.__code__)
    elif how == "reference replaced":
        monkeypatch.setattr(evaluate, "alignment", lambda z1, z2: z1.sum() * 0)
    else:
        monkeypatch.setattr(core.Tripwire, "_profile", lambda self, frame, event, arg: None)
    with pytest.raises(ExerciseError,
                       match="this notebook changed what grades it.* was replaced|not clcourse's"):
        _grading.hidden_test(namespace, "check_alignment", "alignment_loss", cases=((3, 4),))


def _notebook_exercises(path, planted=None, seed=0):
    """Exec the notebook's imports and function definitions, solutions included (nothing that loads
    data or trains), and return the namespace and its exercises: (function name, visible checker
    code, hidden code). `planted`: (exercise, text, replacement), a mistake planted in that
    exercise's solution."""
    source = tool.nbgrader_source(tool.read(path), str(path), hidden_cases.draw(seed))
    namespace, exercises = {}, []
    for cell in source.cells:
        metadata = cell.metadata["nbgrader"]
        if cell.cell_type != "code":
            continue
        if planted and metadata["solution"] and metadata["grade_id"] == planted[0]:
            assert cell.source.count(planted[1]) == 1, \
                f"{planted[1]!r} is not once in the solution of {planted[0]}"
            cell.source = cell.source.replace(*planted[1:])
        if metadata["grade"]:
            visible, hidden = cell.source.split(tool.HIDDEN_BEGIN, 1)
            exercises.append((metadata["grade_id"].removeprefix("test_"), visible,
                              hidden.replace(tool.HIDDEN_BEGIN, "").replace(tool.HIDDEN_END, "")))
            continue
        tree = ast.parse(tool.without_magics(cell.source))
        definitions = [node for node in tree.body
                       if isinstance(node,
                                     (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef))]
        exec(compile(ast.Module(body=definitions, type_ignores=[]), path.name, "exec"), namespace)
    return namespace, exercises


def _signature(value):
    """What a call's argument looks like to a function that memorised the checker's calls."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), round(value.double().sum().item(), 6))
    if isinstance(value, torch.nn.Module):
        return ("module", tuple(_signature(p) for p in value.parameters()))
    if callable(value):
        return ("callable",)
    return ("value", repr(value))


def _recording(function, calls):
    def recorded(*args):
        calls.append(tuple(_signature(arg) for arg in args))
        return function(*args)
    return recorded


notebooks_with_exercises = [path for path in NOTEBOOKS
                            if any(BEGIN in cell.source for cell in tool.read(path).cells
                                   if cell.cell_type == "code")]


@pytest.fixture
def quick_hidden_tests(monkeypatch):
    """The hidden tests without their check that nothing of the package was replaced (a second or
    two each, tested above and on a whole notebook below)."""
    monkeypatch.setattr(_grading, "tampering", lambda namespace, checker: [])


def _checked_functions(visible):
    return [function for _, _, function in tool.checker_calls(visible)[0]]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("path", notebooks_with_exercises, ids=lambda path: path.stem[:2])
def test_each_solution_passes_its_hidden_tests_on_inputs_the_visible_checker_never_uses(path, seed,
                                                                                        quick_hidden_tests):
    namespace, exercises = _notebook_exercises(path, seed=seed)
    assert exercises
    for _, visible, hidden in exercises:
        # every function the test cell checks (one cell may check two,
        # e.g. alignment and uniformity)
        names = _checked_functions(visible)
        assert names
        for name in names:
            seen = {}
            for part, code in (("visible", visible), ("hidden", hidden)):
                calls = seen[part] = []
                exec(code, {**namespace, name: _recording(namespace[name], calls)})
            assert len(seen["hidden"]) >= 2, name
            # a function that memorised the visible checker's calls (and raises on
            # others) fails the hidden tests
            assert set(seen["hidden"]) - set(seen["visible"]), \
                f"{name}: the hidden tests repeat the visible inputs"
            # some argument (a shape, a size, a hyperparameter) takes a value
            # the visible checker never gave it
            visible_values = {(i, arg[:2]) for call in seen["visible"]
                              for i, arg in enumerate(call)}
            assert any((i, arg[:2]) not in visible_values for call in seen["hidden"]
                       for i, arg in enumerate(call)), \
                name


def test_the_hidden_tests_of_a_whole_notebook_find_nothing_replaced_in_a_genuine_one(capsys):
    namespace, exercises = _notebook_exercises(NOTEBOOKS[1])
    for _, visible, hidden in exercises:
        exec(visible + hidden, dict(namespace))
    assert capsys.readouterr().out.count("✓") == 2 * sum(len(_checked_functions(visible))
                                                         for _, visible, _ in exercises)


@pytest.mark.parametrize("path", notebooks_with_exercises, ids=lambda path: path.stem[:2])
def test_the_bare_stub_fails_the_hidden_tests_as_not_implemented(path, quick_hidden_tests):
    namespace, exercises = _notebook_exercises(path)
    def stub(*args):
        raise NotImplementedError()

    for _, _, hidden in exercises:
        calls = [HIDDEN_CALL.match(line) for line in hidden.strip().split("\n")
                 if HIDDEN_CALL.match(line)]
        assert calls
        for call in calls:
            with pytest.raises(ExerciseError, match="not implemented yet"):
                exec(f"{tool.HIDDEN_IMPORT}\n{call.string}", {**namespace, call.group(2): stub})


@pytest.mark.parametrize("path", notebooks_with_exercises, ids=lambda path: path.stem[:2])
def test_a_planted_mistake_fails_its_exercise_alone_with_the_checkers_hint(
        path, quick_hidden_tests):
    """What tests/e2e_nbgrader.py then checks through nbgrader's gradebook and feedback."""
    exercise, text, replacement, hint = PLANTED[path.name.split("_")[0]]
    namespace, exercises = _notebook_exercises(path, planted=(exercise, text, replacement))
    for name, visible, hidden in exercises:
        if name != exercise:
            exec(visible + hidden, dict(namespace))
            continue
        with pytest.raises(ExerciseError) as error:
            exec(visible + hidden, dict(namespace))
        assert hint in str(error.value)


def _run_exercise(namespace, exercises, exercise, appended):
    """Exec `appended` (code a submission adds to the exercise's solution cell), then that
    exercise's test cell."""
    namespace = dict(namespace)
    visible, hidden = next((visible, hidden) for name, visible, hidden in exercises
                           if name == exercise)
    checker = next(checker for _, checker, function in tool.checker_calls(visible)[0]
                   if function == exercise)
    exec(appended(checker) if callable(appended) else appended, namespace)
    exec(visible + hidden, namespace)


@pytest.mark.parametrize("path", notebooks_with_exercises, ids=lambda path: path.stem[:2])
def test_a_solution_that_calls_the_package_is_right_and_scores_nothing(
        path, quick_hidden_tests, monkeypatch, capsys):
    """What tests/e2e_nbgrader.py's `references` submission gets graded with: a
    right answer, without the work."""
    from clcourse.checks import _core

    number = path.name.split("_")[0]
    exercise = PLANTED[number][0]
    namespace, exercises = _notebook_exercises(path)
    with pytest.raises(ExerciseError, match="write it yourself"):
        _run_exercise(namespace, exercises, exercise, CALLS_THE_REFERENCE[number])
    with monkeypatch.context() as references_allowed:
        references_allowed.setattr(_core, "_cached_reference_codes", dict)
        references_allowed.setattr(_grading, "reference_codes", dict)
        _run_exercise(namespace, exercises, exercise, CALLS_THE_REFERENCE[number])


@pytest.mark.parametrize("path", notebooks_with_exercises, ids=lambda path: path.stem[:2])
def test_a_table_of_the_visible_cases_passes_the_visible_check_and_fails_the_hidden_one(
        path, quick_hidden_tests):
    exercise = PLANTED[path.name.split("_")[0]][0]
    namespace, exercises = _notebook_exercises(path)
    with pytest.raises(ExerciseError, match="LookupError: not one of the cases the checker showed"):
        _run_exercise(namespace, exercises, exercise, lambda checker: memorising(exercise, checker))
    visible_only = [(name, visible, "") for name, visible, _ in exercises]
    _run_exercise(namespace, visible_only, exercise, lambda checker: memorising(exercise, checker))
