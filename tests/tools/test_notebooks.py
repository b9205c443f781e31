"""Notebook hygiene: the committed notebooks are stripped the way nbval needs (tools/notebooks.py),
open in Colab from a badge, install the course there, and mark their exercises' solutions in pairs.

The first half tests tools/notebooks.py itself on small notebooks built here, including a real nbval
run showing that the cells it keeps are still compared; the second half
checks every notebooks/*.ipynb."""
import copy
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from helpers import notebook_with
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from repository import NOTEBOOKS, REPO, load_script

tool = load_script(REPO / "tools" / "notebooks.py")


def stream(text):
    return new_output("stream", name="stdout", text=text)


def executed_notebook():
    """A notebook as Jupyter saves it after a run: every cell has outputs and counts, plus noise."""
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell("# Title"),
        new_code_cell("x = 6 * 7\nprint('working...')", execution_count=1,
                      outputs=[stream("working...\n")]),
        new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(x)", execution_count=2,
                      outputs=[stream("42\n")]),
        new_code_cell("print(x + 1)", execution_count=3, outputs=[stream("43\n")],
                      metadata={"tags": ["nbval-check-output"],
                                "execution": {"iopub.status.idle": "2025"}}),
    ]
    nb.metadata["kernelspec"] = {"name": "conda-env-ssl-py", "display_name": "ssl",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    # as `tools/notebooks.py execute` records
    nb.metadata["clcourse"] = {"outputs_recorded_with_threads": 2}
    return nb


# ---- tools/notebooks.py --------------------------------------------------------------------------

def test_strip_keeps_outputs_and_counts_of_checked_cells_only():
    stripped = tool.strip_notebook(executed_notebook())
    plain, by_comment, by_tag = stripped.cells[1:]
    assert plain.outputs == [] and plain.execution_count is None
    assert by_comment.outputs[0]["text"] == "42\n" and by_comment.execution_count == 2
    assert by_tag.outputs[0]["text"] == "43\n" and by_tag.execution_count == 3


def test_strip_drops_run_metadata_and_sets_python3_kernel():
    stripped = tool.strip_notebook(executed_notebook())
    assert "widgets" not in stripped.metadata
    assert stripped.metadata["kernelspec"]["name"] == "python3"
    assert stripped.metadata["language_info"] == {"name": "python"}
    assert "execution" not in stripped.cells[3].metadata
    assert stripped.cells[3].metadata["tags"] == ["nbval-check-output"]


def test_strip_removes_widget_views_from_checked_outputs_but_keeps_their_text():
    nb = new_notebook()
    widget = new_output("display_data", data={"text/plain": "IntSlider(value=3)",
                                              tool.WIDGET_VIEW_MIME: {"model_id": "abc"}})
    only_widget = new_output("display_data", data={tool.WIDGET_VIEW_MIME: {"model_id": "def"}})
    nb.cells = [new_code_cell("# NBVAL_CHECK_OUTPUT\nslider", execution_count=1,
                              outputs=[widget, only_widget])]
    (output,) = tool.strip_notebook(nb).cells[0].outputs
    assert output["data"] == {"text/plain": "IntSlider(value=3)"}


def test_strip_is_idempotent_and_leaves_a_clean_notebook():
    once = tool.strip_notebook(executed_notebook())
    assert tool.strip_notebook(once) == once
    assert tool.notebook_problems(once) == []


def test_strip_does_not_modify_its_argument():
    nb = executed_notebook()
    before = copy.deepcopy(nb)
    tool.strip_notebook(nb)
    assert nb == before


@pytest.mark.parametrize("source", [
    "# NBVAL_CHECK_OUTPUT\nprint(1)",
    "print(1)\n  ## NBVAL_CHECK_OUTPUT  ",
    "#NBVAL_CHECK_OUTPUT",
    "print(1)  # NBVAL_CHECK_OUTPUT",
    "# NBVAL_CHECK_OUTPUT please",
    "# NBVAL_IGNORE_OUTPUT\nprint(1)",
    "s = '# NBVAL_CHECK_OUTPUT'",
])
def test_is_checked_agrees_with_nbval(source):
    from nbval.plugin import find_comment_markers

    nbval_checks = dict(find_comment_markers(source)).get("check", False)
    assert tool.is_checked(new_code_cell(source)) == nbval_checks


def test_markdown_cells_are_never_checked():
    assert not tool.is_checked(new_markdown_cell("# NBVAL_CHECK_OUTPUT"))


def _problems_after(change):
    nb = tool.strip_notebook(executed_notebook())
    change(nb)
    return "\n".join(tool.notebook_problems(nb))


@pytest.mark.parametrize("change, expected", [
    (lambda nb: nb.cells[1].outputs.append(stream("hi\n")), "cell 1 .* has outputs"),
    (lambda nb: setattr(nb.cells[1], "execution_count", 5), "cell 1 .* has an execution count"),
    (lambda nb: nb.cells[2].outputs.clear(), "cell 2 .* no stored output"),
    (lambda nb: setattr(nb.cells[2], "execution_count", None), "cell 2 .* compare nothing"),
    (lambda nb: nb.cells[2].outputs.append(new_output("error", ename="E", evalue="", traceback=[])),
     "cell 2 .* is an error"),
    (lambda nb: nb.metadata["kernelspec"].update(name="python"), "kernelspec is 'python'"),
    (lambda nb: nb.metadata.update(widgets={}), "widget state"),
    (lambda nb: nb.metadata["language_info"].update(version="3.12"), "not stripped"),
    (lambda nb: nb.metadata.pop("clcourse"), "checked outputs were not recorded .* with 2 threads"),
    (lambda nb: nb.metadata.update(clcourse={"outputs_recorded_with_threads": 1}),
     "recorded_with_threads is 1"),
])
def test_check_reports_each_kind_of_problem(change, expected):
    assert re.search(expected, _problems_after(change))


def test_check_command_exit_status(tmp_path, capsys):
    clean, dirty = tmp_path / "clean.ipynb", tmp_path / "dirty.ipynb"
    nbformat.write(tool.strip_notebook(executed_notebook()), clean)
    nbformat.write(executed_notebook(), dirty)
    assert tool.main(["check", str(clean)]) == 0
    assert tool.main(["check", str(clean), str(dirty)]) == 1
    assert "dirty.ipynb: cell 1" in capsys.readouterr().out
    assert tool.main(["strip", str(dirty)]) == 0
    assert tool.main(["check", str(dirty)]) == 0


@pytest.mark.slow
def test_execute_records_checked_outputs_with_two_threads(tmp_path, monkeypatch):
    # execute changes the process environment for its kernel: let monkeypatch restore it afterwards.
    for variable in ("CLCOURSE_PRESET", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        monkeypatch.setenv(variable, "")
    nb = new_notebook()
    nb.cells = [new_code_cell("# NBVAL_CHECK_OUTPUT\nimport os, torch\n"
                              "print(os.environ['CLCOURSE_PRESET'], os.environ['OMP_NUM_THREADS'], "
                              "torch.get_num_threads())")]
    path = tmp_path / "threads.ipynb"
    nbformat.write(nb, path)
    assert tool.main(["execute", str(path)]) == 0
    saved = nbformat.read(path, as_version=4)
    assert saved.cells[0].outputs[0]["text"] == "smoke 2 2\n"
    assert saved.metadata["clcourse"] == {"outputs_recorded_with_threads": 2}
    assert tool.notebook_problems(saved) == []


@pytest.mark.slow
def test_execute_reports_a_failing_cell_in_one_line_and_leaves_the_notebook_alone(
        tmp_path, monkeypatch, capsys):
    for variable in ("CLCOURSE_PRESET", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        monkeypatch.setenv(variable, "")
    nb = new_notebook()
    nb.cells = [new_code_cell("x = 1"), new_code_cell("ratio = x / 0\nprint(ratio)")]
    path, fine = tmp_path / "failing.ipynb", tmp_path / "fine.ipynb"
    nbformat.write(nb, path)
    nbformat.write(executed_notebook(), fine)
    before = path.read_text()
    assert tool.main(["execute", str(path), str(fine)]) == 1
    printed = capsys.readouterr().out
    assert (f"{path}: cell 1 (ratio = x / 0) failed: ZeroDivisionError: division by zero; the "
            "notebook is left as it was") in printed
    assert "Traceback" not in printed and "nbclient" not in printed and path.read_text() == before
    assert f"saved {fine}" in printed   # the other notebooks still run


def _nbval(notebook: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "--nbval-lax",
                           "--nbval-current-env", notebook.name], cwd=notebook.parent,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_nbval_still_compares_checked_cells_after_strip(tmp_path):
    """nbval skips the comparison for cells with no execution count; the stripped checked cell keeps
    its count, so a wrong stored value must fail the run and the right one pass."""
    notebook = tmp_path / "tiny.ipynb"
    stripped = tool.strip_notebook(executed_notebook())
    nbformat.write(stripped, notebook)
    run = _nbval(notebook)
    assert run.returncode == 0, run.stdout + run.stderr

    stripped.cells[2].outputs[0]["text"] = "41\n"
    nbformat.write(stripped, notebook)
    run = _nbval(notebook)
    assert run.returncode == 1 and "Cell outputs differ" in run.stdout, run.stdout + run.stderr


@pytest.mark.parametrize("command", ["student", "check", "strip"])
def test_unreadable_notebooks_are_one_line_each_and_the_rest_is_processed(
        tmp_path, capsys, command):
    missing, empty, not_json = (tmp_path / "missing.ipynb", tmp_path / "empty.ipynb",
                                tmp_path / "not_json.ipynb")
    empty.write_text("")
    not_json.write_text("{ not json")
    good = tmp_path / "good.ipynb"
    nbformat.write(tool.strip_notebook(notebook_with("x = 2")), good)
    out = ["--out", str(tmp_path / "student")] if command == "student" else []
    assert tool.main([command, str(missing), str(empty), str(good), str(not_json), *out]) == 1
    printed = capsys.readouterr().out.splitlines()
    for path in (missing, empty, not_json):
        lines = [line for line in printed if line.startswith(f"{path}: cannot read this notebook")]
        assert len(lines) == 1, printed
    if command == "student":
        assert (tmp_path / "student" / "good.ipynb").is_file()
    assert not any(line.startswith(str(good)) for line in printed)   # read, clean, processed


# ---- the course notebooks ------------------------------------------------------------------------

course_notebooks = pytest.mark.parametrize(
    "path", NOTEBOOKS or [pytest.param(None,
                               marks=pytest.mark.skip(reason="no notebooks in notebooks/ yet"))],
    ids=lambda path: path.name if path else "none")

COLAB_GUARD = re.compile(r"""["']google\.colab["']\s+in\s+sys\.modules""")
COLAB_IMPORT = re.compile(r"^(\s+)(import google\.colab\b|from google\.colab import|from google "
                          r"import colab\b)", re.MULTILINE)
PIP_INSTALL = re.compile(r"\bpip\b.*\binstall\b")
IMPORTS_COURSE = re.compile(r"^\s*(import|from)\s+clcourse\b", re.MULTILINE)
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


def guarded_by_colab_check(source: str) -> bool:
    """`"google.colab" in sys.modules`, or `import google.colab`
    indented under an earlier `try:`."""
    if COLAB_GUARD.search(source):
        return True
    colab_import = COLAB_IMPORT.search(source)
    return bool(colab_import) and re.search(r"^\s*try\s*:", source[:colab_import.start()],
                                            re.MULTILINE) is not None


def solution_marker_errors(source: str) -> list[str]:
    errors, open_line = [], None
    for number, line in enumerate(source.splitlines(), 1):
        marker = line.strip()
        if marker == BEGIN:
            if open_line is not None:
                errors.append(f"line {number}: {BEGIN} inside the block opened on line {open_line}")
            open_line = number
        elif marker == END:
            if open_line is None:
                errors.append(f"line {number}: {END} without {BEGIN}")
            open_line = None
        elif "BEGIN SOLUTION" in marker or "END SOLUTION" in marker:
            errors.append(f"line {number}: malformed marker {marker!r}, write {BEGIN!r} or {END!r} "
                          "alone")
    if open_line is not None:
        errors.append(f"line {open_line}: {BEGIN} never closed in this cell")
    return errors


@pytest.mark.parametrize("source, ok", [
    ("import sys\nif 'google.colab' in sys.modules:\n    %pip install -q clcourse", True),
    ("try:\n    import google.colab\n    IN_COLAB = True\n"
     "except ImportError:\n    IN_COLAB = False", True),
    ("import google.colab\n%pip install clcourse", False),
    ("%pip install clcourse", False),
])
def test_colab_guard_detection(source, ok):
    assert guarded_by_colab_check(source) == ok


@pytest.mark.parametrize("source, errors", [
    (f"a = 1\n    {BEGIN}\n    b = 2\n    {END}\n{BEGIN}\n{END}", 0),
    (f"{BEGIN}\nb = 2", 1),
    (f"{END}", 1),
    (f"{BEGIN}\n{BEGIN}\n{END}", 1),
    ("# BEGIN SOLUTION\nb = 2\n# END SOLUTION", 2),
])
def test_solution_marker_detection(source, errors):
    assert len(solution_marker_errors(source)) == errors


@course_notebooks
def test_notebook_is_stripped_for_nbval(path):
    problems = tool.notebook_problems(tool.read(path))
    assert not problems, \
        "\n".join(problems) + "\nFix with: python tools/notebooks.py strip (or execute)"


@course_notebooks
def test_first_markdown_cell_has_colab_badge_for_this_notebook(path):
    nb = tool.read(path)
    first = next((cell for cell in nb.cells if cell.cell_type == "markdown"), None)
    assert first is not None, "no markdown cell"
    assert "colab.research.google.com/assets/colab-badge.svg" in first.source, \
        "no Colab badge image"
    link = re.search(r"https://colab\.research\.google\.com/github/\S+?/notebooks/"
                     + re.escape(path.name), first.source)
    assert link, \
        f"the badge must link to colab.research.google.com/github/.../notebooks/{path.name}"


@course_notebooks
def test_install_cell_runs_only_on_colab_and_before_the_course_is_imported(path):
    code = [cell.source for cell in tool.read(path).cells if cell.cell_type == "code"]
    install = next((i for i, source in enumerate(code)
                    if PIP_INSTALL.search(source) and guarded_by_colab_check(source)), None)
    assert install is not None, "no `pip install` cell guarded by a Colab check"
    first_import = next((i for i, source in enumerate(code) if IMPORTS_COURSE.search(source)),
                        len(code))
    assert install <= first_import, "the Colab install cell must come before `import clcourse`"


@course_notebooks
def test_solution_markers_come_in_pairs(path):
    errors = [f"cell {number}, {error}" for number, cell in enumerate(tool.read(path).cells)
              for error in solution_marker_errors(cell.source)]
    assert not errors, "\n".join(errors)


# ---- the teaching pattern every notebook follows -------------------------------------------------

TRAINING_CALL = re.compile(r"\btrain\([^)]*\brun=", re.DOTALL)


@course_notebooks
def test_a_time_note_for_smoke_and_colab_precedes_every_training_cell(path):
    """A cell that trains a named run is preceded by a markdown cell with a
    **Time:** note for both presets."""
    cells = tool.read(path).cells
    for number, cell in enumerate(cells):
        if cell.cell_type != "code" or not TRAINING_CALL.search(cell.source):
            continue
        note = next(c.source for c in reversed(cells[:number]) if c.cell_type == "markdown")
        assert "**Time:**" in note and "smoke" in note and "colab" in note, \
            f"cell {number} trains, but the markdown cell before it has no **Time:** note for " \
            "smoke and colab"


@course_notebooks
def test_check_your_understanding_questions_with_hidden_answers(path):
    cells = tool.read(path).cells
    questions = [c.source for c in cells if c.cell_type == "markdown"
                 and "## Check your understanding" in c.source]
    assert len(questions) == 1, "one markdown cell headed '## Check your understanding'"
    before, _, after = questions[0].partition(tool.SOLUTION_BEGIN)
    assert tool.SOLUTION_END in after, \
        "the answers sit between solution markers, hidden in the student copy"
    assert 2 <= len(re.findall(r"^\d\. ", before, re.MULTILINE)) <= 3, \
        "two or three numbered questions"


@course_notebooks
def test_notebook_ends_with_a_summary_and_its_papers(path):
    last = tool.read(path).cells[-1]
    assert last.cell_type == "markdown" and "## Summary" in last.source, \
        "the last cell is a '## Summary'"
    assert re.search(r"\(https://arxiv\.org/abs/\d{4}\.\d{4,5}\)", last.source), \
        "the summary links its papers on arXiv"


def prose_words(markdown: str) -> int:
    """The words a reader reads in a markdown cell: maths, link targets, HTML tags and comments, and
    table rows left out."""
    text = re.sub(r"\$\$.*?\$\$", " x ", markdown, flags=re.S)
    text = re.sub(r"\$[^$\n]*\$", " x ", text)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"<[^>]+>", " ", text)
    return len(" ".join(line for line in text.splitlines()
                        if not line.lstrip().startswith("|")).split())


def test_prose_words_count_what_a_reader_reads():
    assert prose_words("One [link](https://example.org/a b) and $x^2 + y^2$ <!-- timings:cell "
                       "-->here") == 5
    assert prose_words("| a | b |\n|---|---|\n| c | d |\nSix words after the table here.") == 6


@course_notebooks
def test_narrative_markdown_cells_stay_under_250_words(path):
    """A reader takes a notebook in short steps: each markdown cell of narrative holds at most 250
    words (the model answers, hidden in the student copy, and the closing summary may be longer)."""
    cells = tool.read(path).cells
    long = [(number, prose_words(cell.source)) for number, cell in enumerate(cells[:-1])
            if cell.cell_type == "markdown" and tool.SOLUTION_BEGIN not in cell.source
            and prose_words(cell.source) > 250]
    assert not long, \
        f"markdown cells over 250 words (cell, words): {long}; split them at a paragraph"
