"""Student versions of the notebooks (`tools/notebooks.py student`): solutions replaced by
nbgrader's stubs.

The first half tests the tool on a small notebook built here; the second half writes the student
version of every notebooks/*.ipynb in memory and checks that no solution is left, that the code
still compiles, and that each exercise's checker, run on the bare stub, says the
exercise is not implemented yet."""
import ast
import hashlib
import json
import re
import warnings
from pathlib import Path

import nbformat
import pytest
from helpers import notebook_with
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from repository import NOTEBOOKS, REPO, load_script

from clcourse.checks import ExerciseError

tool = load_script(REPO / "tools" / "notebooks.py")
BEGIN, END = tool.SOLUTION_BEGIN, tool.SOLUTION_END

EXERCISE = f'''import math


def softplus(x):
    """log(1 + e^x), elementwise."""
    {BEGIN}
    secret_sauce = torch.logaddexp(x, torch.zeros_like(x))
    return secret_sauce
    {END}


print(softplus(torch.zeros(1)))'''

EXERCISE_STUDENT = '''import math


def softplus(x):
    """log(1 + e^x), elementwise."""
    # YOUR CODE HERE
    raise NotImplementedError()


print(softplus(torch.zeros(1)))'''


def tiny_notebook():
    """Badge, a code exercise inside a function, a top-level one, a written
    answer, and a checked cell."""
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell(tool.colab_badge(tool.read_repository(),
                                           "notebooks/tiny.ipynb") + "\n\n# Tiny"),
        new_code_cell(EXERCISE, execution_count=1,
                      outputs=[new_output("stream", name="stdout", text="0.69\n")]),
        new_code_cell(f"{BEGIN}\nhidden_answer = 42\n{END}\nprint('done')"),
        new_markdown_cell(f"Why does it saturate?\n\n{BEGIN}\nBecause of the secret "
                          f"reason.\n{END}\n\nNext."),
        new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(6 * 7)", execution_count=3,
                      outputs=[new_output("stream", name="stdout", text="42\n")]),
    ]
    return nb


def student_tiny():
    student, regions = tool.student_notebook(tiny_notebook(), "tiny.ipynb")
    return student, regions


# ---- the tool, on a notebook built here ----------------------------------------------------------

def test_solution_text_is_gone_from_the_whole_notebook():
    student, regions = student_tiny()
    text = nbformat.writes(student)
    assert regions == 3
    for solution in ("secret_sauce", "torch.logaddexp", "hidden_answer", "secret reason",
                     "SOLUTION"):
        assert solution not in text


def test_code_stub_is_indented_like_the_begin_marker_and_the_rest_is_untouched():
    student, _ = student_tiny()
    assert student.cells[1].source == EXERCISE_STUDENT
    assert student.cells[2].source == "# YOUR CODE HERE\nraise NotImplementedError()\nprint('done')"
    assert student.cells[4].source.startswith(tiny_notebook().cells[4].source + "\n")


def test_a_checked_cell_keeps_its_stored_output_as_comment_lines_under_its_code():
    nb = tiny_notebook()
    nb.cells[4].outputs = [new_output("stream", name="stdout", text="42\n  indented\n"),
                           new_output("execute_result", data={"text/plain": "'last'"},
                                      execution_count=3)]
    student, _ = tool.student_notebook(nb, "tiny.ipynb")
    assert student.cells[4].source == ("# NBVAL_CHECK_OUTPUT\nprint(6 * 7)\n\n"
                                       + tool.EXPECTED_OUTPUT
                                       + "\n# 42\n#   indented\n# 'last'")
    assert student.cells[1].source == EXERCISE_STUDENT   # an unchecked cell's output is not kept


def test_an_expected_output_line_too_long_for_a_code_line_continues_on_the_next():
    words = " ".join(f"word{i:02d}" for i in range(30))          # 209 characters
    lines = tool.as_comment_lines(f"{words}\n  short, indented")
    assert all(len(line) <= tool.LINE_LIMIT for line in lines) and len(lines) == 4
    assert lines[0].startswith("# word00 ") and lines[1].startswith("# ↳ word")
    assert " ".join(line.removeprefix("# ").removeprefix("↳ ") for line in lines[:3]) == words
    assert lines[3] == "#   short, indented"


def test_markdown_answer_is_replaced():
    student, _ = student_tiny()
    assert student.cells[3].source == "Why does it saturate?\n\nYOUR ANSWER HERE\n\nNext."


def test_several_regions_in_one_cell():
    source = f"a = 1\n{BEGIN}\nb = 2\n{END}\nc = 3\n  {BEGIN}\n  d = 4\n  {END}"
    cleared, regions = tool.clear_solutions(source, tool.CODE_STUB)
    assert regions == 2
    assert cleared == ("a = 1\n# YOUR CODE HERE\nraise NotImplementedError()\nc = 3\n"
                       "  # YOUR CODE HERE\n  raise NotImplementedError()")


def test_every_output_is_cleared_checked_cells_included_and_metadata_stripped():
    student, _ = student_tiny()
    for cell in student.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert student.metadata["kernelspec"]["name"] == "python3"


def test_colab_badge_points_at_the_student_copy_and_says_what_the_copy_is():
    student, _ = student_tiny()
    repository = tool.read_repository()
    badge, note, rest = student.cells[0].source.split("\n", 2)
    assert badge == tool.colab_badge(repository, "student/tiny.ipynb")
    assert note.startswith("**Student copy** of [notebooks/tiny.ipynb]("
                           + repository.github("notebooks/tiny.ipynb"))
    assert rest == "\n# Tiny"


def test_a_notebook_without_a_badge_gets_the_header_in_front_of_its_first_cell():
    nb = tiny_notebook()
    nb.cells[0].source = "# Tiny\n\nSome text."
    student, _ = tool.student_notebook(nb, "tiny.ipynb")
    assert student.cells[0].source.startswith(tool.BADGE_START)
    assert student.cells[0].source.endswith("\n\n# Tiny\n\nSome text.")


def test_prose_that_mentions_the_markers_is_left_alone():
    prose = f"Exercises sit between `{BEGIN}` and `{END}`."
    assert tool.clear_solutions(prose, tool.ANSWER_STUB) == (prose, 0)


def test_the_solution_notebook_is_not_modified():
    nb = tiny_notebook()
    before = nbformat.writes(nb)
    tool.student_notebook(nb, "tiny.ipynb")
    assert nbformat.writes(nb) == before


@pytest.mark.parametrize("source, problem", [
    (f"x = 1\n{BEGIN}\ny = 2", f"line 2: {BEGIN} is never closed"),
    (f"x = 1\n{END}", f"line 2: {END} without"),
    (f"{BEGIN}\n{BEGIN}\n{END}\n{END}", "line 2: .* inside the region opened on line 1"),
    ("# BEGIN SOLUTION\ny = 2\n# END SOLUTION", "line 1: malformed marker '# BEGIN SOLUTION'"),
    (f"{BEGIN} here\ny = 2\n{END}", "line 1: malformed marker"),
])
def test_unbalanced_or_malformed_markers_raise_naming_the_cell_and_line(source, problem):
    nb = tiny_notebook()
    nb.cells[2].source = source
    with pytest.raises(tool.SolutionMarkerError, match=r"cell 2 \(.*\), " + problem):
        tool.student_notebook(nb, "tiny.ipynb")


def test_student_command_writes_the_copies_and_reports_bad_notebooks(tmp_path, capsys):
    good, bad = tmp_path / "good.ipynb", tmp_path / "bad.ipynb"
    nbformat.write(tiny_notebook(), good)
    broken = tiny_notebook()
    broken.cells[1].source = f"{BEGIN}\nx = 1"
    nbformat.write(broken, bad)
    out = tmp_path / "student"

    assert tool.main(["student", str(good), "--out", str(out)]) == 0
    assert nbformat.read(out / "good.ipynb", as_version=4).cells[1].source == EXERCISE_STUDENT

    assert tool.main(["student", str(bad), str(good), "--out", str(out)]) == 1
    assert "bad.ipynb: cell 1" in capsys.readouterr().out
    assert not (out / "bad.ipynb").exists()


def test_student_command_takes_the_output_folder_as_its_last_argument_too(tmp_path, capsys):
    good = tmp_path / "good.ipynb"
    nbformat.write(tiny_notebook(), good)
    assert tool.main(["student", str(good), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "good.ipynb").is_file()
    for arguments in ([str(good), str(tmp_path / "a"), str(tmp_path / "b")],
                      [str(good), str(tmp_path / "a"), "--out", str(tmp_path / "b")]):
        with pytest.raises(SystemExit):
            tool.main(["student", *arguments])
        assert "student [NOTEBOOK.ipynb ...] [OUT], or --out OUT" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_copy_changed_since_it_was_written_stops_the_run_until_forced(tmp_path, capsys):
    first, second = tmp_path / "first.ipynb", tmp_path / "second.ipynb"
    for path in (first, second):
        nbformat.write(tiny_notebook(), path)
    out = tmp_path / "student"
    assert tool.main(["student", str(first), str(second), "--out", str(out)]) == 0
    # unchanged: rewritten freely
    assert tool.main(["student", str(first), str(second), "--out", str(out)]) == 0
    edited = (out / "second.ipynb").read_text().replace("Why does it saturate?", "My own notes")
    (out / "second.ipynb").write_text(edited)
    nb = tiny_notebook()
    nb.cells[3].source = "A changed question."
    nbformat.write(nb, first)
    capsys.readouterr()
    assert tool.main(["student", str(first), str(second), "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"{out / 'second.ipynb'}: changed since `tools/notebooks.py student` last wrote it" \
        in printed
    assert "--force" in printed
    # nothing written, not even the others
    assert "A changed question" not in (out / "first.ipynb").read_text()
    assert (out / "second.ipynb").read_text() == edited
    assert tool.main(["student", str(first), str(second), "--out", str(out), "--force"]) == 0
    assert "A changed question" in (out / "first.ipynb").read_text()
    assert "My own notes" not in (out / "second.ipynb").read_text()


def test_a_file_the_tool_never_wrote_is_not_overwritten(tmp_path, capsys):
    notebook, out = tmp_path / "tiny.ipynb", tmp_path / "student"
    nbformat.write(tiny_notebook(), notebook)
    out.mkdir()
    (out / "tiny.ipynb").write_text("someone else's file")
    assert tool.main(["student", str(notebook), "--out", str(out)]) == 1
    assert (out / "tiny.ipynb").read_text() == "someone else's file"
    assert "not written by it" in capsys.readouterr().out


def test_student_command_refuses_to_overwrite_the_solutions(tmp_path, capsys):
    notebook = tmp_path / "tiny.ipynb"
    nbformat.write(tiny_notebook(), notebook)
    assert tool.main(["student", str(notebook), "--out", str(tmp_path)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().out
    assert "secret_sauce" in notebook.read_text()


@pytest.mark.parametrize("marker",
                         ["### begin solution", "### Begin Solution", "### BEGIN  SOLUTION",
                          "## BEGIN SOLUTION", "#### BEGIN SOLUTION", "#BEGIN SOLUTION",
                          "BEGIN SOLUTION", "### BEGIN_SOLUTION", "### BEGINSOLUTION",
                          "### end solution"])
def test_near_miss_solution_markers_are_errors_naming_notebook_cell_and_line(
        tmp_path, capsys, marker):
    bad, good = tmp_path / "bad.ipynb", tmp_path / "good.ipynb"
    nbformat.write(notebook_with(f"y = 0\n{marker}\nsecret = 42\n### END SOLUTION"), bad)
    nbformat.write(notebook_with(f"{tool.SOLUTION_BEGIN}\nsecret = 42\n{tool.SOLUTION_END}"), good)
    out = tmp_path / "student"
    assert tool.main(["student", str(bad), str(good), "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"{bad}: cell 2 (y = 0), line 2: malformed marker {marker!r}" in printed
    assert not (out / "bad.ipynb").exists()
    # the rest of the batch is still written
    assert "secret" not in (out / "good.ipynb").read_text()


# ---- the course notebooks ------------------------------------------------------------------------

course_notebooks = pytest.mark.parametrize(
    "path", NOTEBOOKS or [pytest.param(None,
                               marks=pytest.mark.skip(reason="no notebooks in notebooks/ yet"))],
    ids=lambda path: path.name if path else "none")

STUB = tool.CODE_STUB[-1]  # raise NotImplementedError()
CHECKER_CALL = re.compile(r"^check_\w+\(", re.MULTILINE)
IPYTHON_LINE = re.compile(r"^(\s*)[!%].*$", re.MULTILINE)
# What every exercise may use without running the notebook; the
# notebook's checker imports are added.
PREAMBLE = "import math\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"


def solution_lines(source: str) -> set[str]:
    """The non-blank lines inside the solution regions of `source`, stripped."""
    lines, inside = set(), False
    for line in source.split("\n"):
        if line.strip() in (BEGIN, END):
            inside = line.strip() == BEGIN
        elif inside and line.strip():
            lines.add(line.strip())
    return lines


def as_python(source: str) -> str:
    """Cell source with IPython's `!shell` and `%magic` lines turned into
    `pass`, keeping the indentation."""
    return IPYTHON_LINE.sub(r"\1pass", source)


def checker_imports(cells) -> str:
    """The notebook's `from clcourse.checks import ...` statements."""
    statements = []
    for cell in cells:
        if cell.cell_type != "code":
            continue
        for node in ast.parse(as_python(cell.source)).body:
            if isinstance(node, ast.ImportFrom) and node.module == "clcourse.checks":
                statements.append(ast.unparse(node))
    return "\n".join(statements)


def student_version(path: Path):
    solution = tool.read(path)
    student, _ = tool.student_notebook(solution, path.name)
    return solution, student


@course_notebooks
def test_student_notebook_has_no_solution_left(path):
    solution, student = student_version(path)
    for number, (original, cell) in enumerate(zip(solution.cells, student.cells)):
        kept = {line.strip() for line in cell.source.split("\n")}
        leaked = solution_lines(original.source) & kept
        assert not leaked, f"cell {number} still has solution lines: {sorted(leaked)}"
        assert BEGIN not in kept and END not in kept, f"cell {number} still has a marker"


@course_notebooks
def test_student_notebook_code_still_compiles(path):
    _, student = student_version(path)
    for number, cell in enumerate(student.cells):
        if cell.cell_type == "code":
            compile(as_python(cell.source), f"{path.name}, cell {number}", "exec")


@course_notebooks
def test_student_notebook_badge_points_at_its_student_copy(path):
    _, student = student_version(path)
    first = next(cell for cell in student.cells if cell.cell_type == "markdown")
    colab = re.findall(r"colab\.research\.google\.com/github/\S+?\.ipynb", first.source)
    assert colab == [f"colab.research.google.com/github/{tool.read_repository().slug}/blob/"
                     f"{tool.read_repository().branch}/student/{path.name}"]
    assert "**Student copy**" in first.source and "holds the solutions" not in first.source


def test_the_committed_student_copies_are_current():
    """student/ is what `make student` writes from notebooks/ now (regenerated in memory), and its
    record of what was written matches the files, so that the next `make student`
    overwrites them without complaint."""
    folder = REPO / "student"
    expected, status = tool.student_files(NOTEBOOKS, folder)
    assert status == 0
    stale = [path.name for path, text in expected.items() if not path.is_file()
             or path.read_text() != text]
    assert not stale, \
        f"student/ is out of date with notebooks/ for {stale}: run make student and commit student/"
    extra = {path.name for path in folder.iterdir()} - {path.name for path in expected} \
        - {tool.WRITTEN_RECORD}
    assert not extra, f"student/ holds files that no notebook makes: {sorted(extra)}"
    record = json.loads((folder / tool.WRITTEN_RECORD).read_text())
    assert record == {path.name: hashlib.sha256(text.encode()).hexdigest()
                      for path, text in expected.items()}


def exercises_with_checkers(cells) -> list[tuple[int, list[str]]]:
    """(cell number, sources to run) for each stubbed code cell whose checker is called in that cell
    or in the next code cell."""
    code = [(number, cell.source) for number, cell in enumerate(cells) if cell.cell_type == "code"]
    exercises = []
    for position, (number, source) in enumerate(code):
        if STUB not in source:
            continue
        if CHECKER_CALL.search(source):
            exercises.append((number, [source]))
        elif position + 1 < len(code) and CHECKER_CALL.search(code[position + 1][1]):
            exercises.append((number, [source, code[position + 1][1]]))
    return exercises


def run_unsolved_exercises(name: str, cells) -> tuple[list[int], list[str]]:
    """Run each unsolved exercise with its checker, in one namespace holding PREAMBLE and the
    notebook's checker imports, as a student would before writing anything. Returns the cell numbers
    whose checker said "not implemented" and, for the cells that need variables from earlier cells
    (NameError), why they were skipped. Fails when a checker says anything else or passes."""
    namespace = {}
    exec(PREAMBLE + checker_imports(cells), namespace)
    verified, skipped = [], []
    for number, sources in exercises_with_checkers(cells):
        try:
            for source in sources:
                exec(compile(as_python(source), f"{name}, cell {number}", "exec"), namespace)
        except ExerciseError as error:
            assert "not implemented" in str(error), f"cell {number}: {error}"
            verified.append(number)
        except NameError as error:
            skipped.append(f"cell {number}: {error}")
        else:
            pytest.fail(f"cell {number}: the checker passed on an unsolved exercise")
    return verified, skipped


def test_unsolved_exercises_are_found_with_their_checker_in_the_same_or_the_next_cell():
    exercise = f"def info_nce_loss(z1, z2, temperature):\n    {BEGIN}\n    return z1\n    {END}"
    nb = new_notebook()
    nb.cells = [
        new_code_cell("from clcourse.checks import check_info_nce"),
        new_code_cell(exercise + "\n\n\ncheck_info_nce(info_nce_loss)"),
        new_code_cell(exercise),
        new_markdown_cell("Now check it."),
        new_code_cell("check_info_nce(info_nce_loss)"),
        new_code_cell(f"scale = preset.temperature\n{BEGIN}\nloss = "
                      f"1\n{END}\ncheck_info_nce(lambda *a: loss)"),
        new_code_cell(exercise),  # no checker after it: not an exercise this test can run
    ]
    student, _ = tool.student_notebook(nb, "tiny.ipynb")
    assert [number for number, _ in exercises_with_checkers(student.cells)] == [1, 2, 5]
    verified, skipped = run_unsolved_exercises("tiny.ipynb", student.cells)
    assert verified == [1, 2]
    assert len(skipped) == 1 and skipped[0].startswith("cell 5: name 'preset'")


@course_notebooks
def test_each_unsolved_exercise_fails_its_checker_as_not_implemented(path):
    """The checker of every exercise, run on the bare stub, says "not implemented" rather than
    crashing. Exercises that need earlier cells are skipped with a warning; at
    least one per notebook must run."""
    _, student = student_version(path)
    if not any(cell.cell_type == "code" and STUB in cell.source for cell in student.cells):
        pytest.skip("no exercises in this notebook")
    assert exercises_with_checkers(student.cells), \
        "exercise cells, but no checker call in them or in the code cell after them"
    verified, skipped = run_unsolved_exercises(path.name, student.cells)
    for reason in skipped:
        warnings.warn(f"{path.name}: exercise not verified, it needs earlier cells: {reason}",
                      stacklevel=1)
    assert verified, f"no exercise could be verified on its own: {skipped}"
