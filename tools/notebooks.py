#!/usr/bin/env python3
"""Keep the course notebooks clean, and write their student and nbgrader copies.

Strip their outputs, check that they are stripped, re-execute them, and write the student versions
without the solutions.

The notebooks are committed without outputs, with one exception: a code cell whose source has the
comment line ``# NBVAL_CHECK_OUTPUT`` (or the cell tag ``nbval-check-output``) keeps its stored
output, because that output is the reference ``pytest --nbval-lax`` compares a fresh run against. It
also keeps its execution count: nbval treats a cell whose execution count is empty as never run and
compares nothing, so plain ``nbstripout`` would silently switch every such check off.

    python tools/notebooks.py strip   [NOTEBOOK ...]   # default: every notebooks/*.ipynb
    python tools/notebooks.py check   [NOTEBOOK ...]   # exit 1 if a notebook is not clean
    python tools/notebooks.py execute NOTEBOOK [...]   # run with CLCOURSE_PRESET=smoke, save, strip
    python tools/notebooks.py student [NOTEBOOK ...] [OUT]   # no solutions, into student/ (or OUT)
    python tools/notebooks.py nbgrader OUT [NOTEBOOK ...]    # an nbgrader course folder in OUT
    python tools/notebooks.py links [--repo OWNER/NAME] [--branch B] [--check]
                                                             # every link to the repository
    python tools/notebooks.py timings [--junit DIR] [--check]   # from notebooks/timings.json

``strip`` clears the outputs and execution counts of every other code cell, drops the widget state
(it is large and names widget models that no longer exist), drops per-cell run timings, and sets the
kernelspec to ``python3`` and language_info to just ``{"name": "python"}`` so that saving from
another environment or Python version does not change the file.

``execute`` refreshes the checked outputs: it runs the notebook top to bottom in a kernel of this
Python (as ``pytest --nbval-current-env`` does), in the notebook's folder, with the smoke preset
that CI uses, then saves it stripped. It runs with TWO threads (OMP_NUM_THREADS=2) and records that
in the notebook's metadata: CI then compares at one thread per notebook (two notebooks side by side
on its two cores), which changes the order of floating-point reductions the way another CPU does, so
a checked output that depends on training (and would differ on a student's laptop) fails in CI
first.

``student`` writes the version handed out to students (default: into ``student/``, committed),
following nbgrader's ``ClearSolutions`` convention: every region from a ``### BEGIN SOLUTION`` line
to its ``### END SOLUTION`` line, both included, becomes ``# YOUR CODE HERE`` and ``raise
NotImplementedError()`` in a code cell, ``YOUR ANSWER HERE`` in a markdown cell, indented like the
BEGIN line. Every output is cleared; a checked cell's stored output is written under its code as
comment lines (*Expected output*), as nbval does not run the student versions. The Colab badge
points at the copy in ``student/``, and the line under it says what the copy is.

``links`` writes every link to the repository from its one definition, pyproject.toml's
``[tool.clcourse]`` (``repository = "owner/name"``, ``branch``): the Colab badge and the note under
it in each notebook's first cell, the Colab install cell, the links in README.md, docs/,
CITATION.cff and CONTRIBUTING.md, and the student copies. ``--repo`` and ``--branch`` (a fork) are
written into pyproject.toml first.

``student`` and ``nbgrader`` (and ``links``, for the student copies) record a hash of each file they
write (``.clcourse-written.json`` in the output folder) and stop, naming the file, before
overwriting one that changed since: ``--force`` overwrites it.

``nbgrader`` writes a course folder for nbgrader (``OUT/nbgrader_config.py``,
``OUT/source/<stem>/<stem>.ipynb`` for every notebook with exercises): solution cells, each checker
call split off into an autograded test cell with hidden tests (drawn for the course by
``tools/hidden_cases.py`` from its seed, ``--seed`` or the one recorded in
``OUT/.clcourse-course.json``), everything else read-only; see `nbgrader_source`. The assignments
are made like the student copies (the badge of the student copy, the expected outputs), their note
saying that they are graded. It checks every notebook before it writes anything.
"""
from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import os
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
CHECK_MARKER = "NBVAL_CHECK_OUTPUT"
CHECK_TAG = "nbval-check-output"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python"}
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
# Notebook and cell metadata that only records how and when someone last ran the notebook.
NOISY_NOTEBOOK_METADATA = ("widgets", "signature")
NOISY_CELL_METADATA = ("collapsed", "scrolled", "ExecuteTime", "execution", "heading_collapsed",
                       "hidden")
SOLUTION_BEGIN = "### BEGIN SOLUTION"
SOLUTION_END = "### END SOLUTION"
# What a marker looks like to a reader: any number of '#', BEGIN or END and SOLUTION in any case and
# spacing.
MARKER_LOOKALIKE = re.compile(r"#*\s*(begin|end)[\s_-]*solution", re.IGNORECASE)
# What replaces a solution region in the student version (nbgrader's ClearSolutions stubs).
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
ANSWER_STUB = ("YOUR ANSWER HERE",)
STUDENT_DIR = REPO / "student"
# Checked outputs are recorded with two threads (see `execute`); the notebook's metadata says so.
RECORDING_THREADS = 2
RECORDING_METADATA = "clcourse"


# ---- the repository: written once, in pyproject.toml; every link to it is generated --------------

PYPROJECT = REPO / "pyproject.toml"
REPOSITORY_TABLE = "tool.clcourse"
REPOSITORY_SLUG = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?/[A-Za-z0-9._-]+$")
BRANCH_NAME = re.compile(r"^[A-Za-z0-9._/-]+$")
COLAB_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_START = "[![Open In Colab]"
# The text files whose links to the repository `links` rewrites (the notebooks' badges and install
# cells it writes whole); a link to the repository anywhere else is a copy that would go stale
# (tests/tools/test_notebooks_links.py).
LINKED_TEXT_FILES = ("README.md", "CITATION.cff", "CONTRIBUTING.md", "docs/*.md")


@dataclass(frozen=True)
class Repository:
    """The course's GitHub repository (`owner/name`) and the branch its links point at."""
    slug: str
    branch: str

    def __post_init__(self):
        if not REPOSITORY_SLUG.match(self.slug):
            raise ValueError("repository must be OWNER/NAME as GitHub spells it, "
                             f"got {self.slug!r}")
        if not BRANCH_NAME.match(self.branch) or ".." in self.branch:
            raise ValueError(f"branch must be a git branch name, got {self.branch!r}")

    def github(self, path: str = "") -> str:
        """The page of `path` (a file or folder of the repository) on GitHub; the repository's page
        without one."""
        page = f"https://github.com/{self.slug}"
        return f"{page}/blob/{self.branch}/{path}" if path else page

    def colab(self, path: str) -> str:
        return f"https://colab.research.google.com/github/{self.slug}/blob/{self.branch}/{path}"

    def raw(self, path: str) -> str:
        """The file at `path` itself, as a browser (and Colab, which cannot see the repository's
        other files) loads it: how the notebooks show the method diagrams of notebooks/figures/."""
        return f"https://raw.githubusercontent.com/{self.slug}/{self.branch}/{path}"

    @property
    def requirement(self) -> str:
        """What `pip install` takes to install the course from this repository and branch."""
        return f"clcourse @ git+https://github.com/{self.slug}@{self.branch}"


def _table(text: str, table: str) -> tuple[int, int]:
    """Where the body of the TOML `table` of `text` starts and ends."""
    start = re.search(rf"^\[{re.escape(table)}\]\s*$", text, re.MULTILINE)
    if start is None:
        raise ValueError(f"pyproject.toml has no [{table}] table")
    end = re.search(r"^\[", text[start.end():], re.MULTILINE)
    return start.end(), start.end() + end.start() if end else len(text)


def read_repository(pyproject: Path = PYPROJECT) -> Repository:
    """The repository that pyproject.toml's [tool.clcourse] names (`repository = "owner/name"`,
    `branch`)."""
    text = pyproject.read_text()
    start, end = _table(text, REPOSITORY_TABLE)
    values = dict(re.findall(r'^(repository|branch)\s*=\s*"([^"]*)"', text[start:end],
                             re.MULTILINE))
    missing = {"repository", "branch"} - values.keys()
    if missing:
        raise ValueError(f"{pyproject}: [{REPOSITORY_TABLE}] needs {' and '.join(sorted(missing))} "
                         '(repository = "owner/name", branch = "main")')
    return Repository(values["repository"], values["branch"])


def write_repository(repository: Repository, pyproject: Path = PYPROJECT) -> None:
    text = pyproject.read_text()
    start, end = _table(text, REPOSITORY_TABLE)
    body = re.sub(r'^repository\s*=\s*"[^"]*"', f'repository = "{repository.slug}"',
                  text[start:end], flags=re.MULTILINE)
    body = re.sub(r'^branch\s*=\s*"[^"]*"', f'branch = "{repository.branch}"', body,
                  flags=re.MULTILINE)
    pyproject.write_text(text[:start] + body + text[end:])


def retarget(text: str, old: Repository, new: Repository) -> str:
    """`text` with every link to the `old` repository (its GitHub pages, Colab links, clone and pip
    URLs, the CI badge) pointing at the `new` one instead, the branch too where a link names it."""
    hosts = r"(github\.com/|colab\.research\.google\.com/github/)"
    slug = re.escape(old.slug)
    text = re.sub(rf"{hosts}{slug}/(blob|tree)/{re.escape(old.branch)}(?=[/)\s\"'#?]|$)",
                  lambda m: f"{m.group(1)}{new.slug}/{m.group(2)}/{new.branch}", text)
    text = re.sub(rf"github\.com/{slug}(\.git)?@{re.escape(old.branch)}(?![\w./-])",
                  lambda m: f"github.com/{new.slug}{m.group(1) or ''}@{new.branch}", text)
    text = re.sub(rf"(github\.com/{slug}/actions/\S*?\?branch=){re.escape(old.branch)}(?![\w./-])",
                  lambda m: f"{m.group(1)}{new.branch}", text)
    # Not a longer name that starts the same (owner/name-fork, owner/name.io); `.git` and a full
    # stop may follow.
    return re.sub(rf"{hosts}{slug}(?![\w-])(?!\.(?!git\b)\w)", lambda m: f"{m.group(1)}{new.slug}",
                  text)


def colab_badge(repository: Repository, path: str) -> str:
    return f"[![Open In Colab]({COLAB_BADGE_IMAGE})]({repository.colab(path)})"


# The line under each copy's badge that says what the copy is. A notebook is handed out in three
# forms: the course notebook with its solutions (notebooks/), the student copy (student/, `make
# student`), an nbgrader assignment.
COPY_NOTES = {
    "solutions": "**Solutions.** This copy has every exercise solved. To learn, work in the "
                 "student copy, "
                 "[student/{name}]({student}), and check yourself against this one.",
    "student": "**Student copy** of [notebooks/{name}]({solutions}), written by `make student`: "
               "write each exercise "
               "where it says `raise NotImplementedError()` (a written answer where it says YOUR "
               "ANSWER HERE); the "
               "checker after it tells you whether it is right, and a checked cell shows under "
               "*Expected output* "
               "what it prints. The solutions are in notebooks/{name}, to check yourself against.",
    "assignment": "**Assignment.** Write each exercise where it says `raise NotImplementedError()` "
                  "(a written answer "
                  "where it says YOUR ANSWER HERE); the checker after it tells you whether it is "
                  "right, and the "
                  "exercises are graded when you submit the notebook.",
}
# The Colab install cell, the same in every notebook and every copy.
INSTALL_CELL = ('import sys\n'
                '\n'
                '# on Colab: install the course package (JupyterLab users ran `make lab`)\n'
                'if "google.colab" in sys.modules:\n'
                '    !pip install -q "{requirement}"')
INSTALL_CELL_PATTERN = re.compile(r"google\.colab.*\bpip\s+install", re.DOTALL)


def copy_header(repository: Repository, kind: str, name: str) -> str:
    """The first lines of a copy's first cell: its Colab badge (the solutions' in notebooks/, every
    other copy's in student/) and the note saying what the copy is."""
    folder = "notebooks" if kind == "solutions" else "student"
    note = COPY_NOTES[kind].format(name=name, student=repository.github(f"student/{name}"),
                                   solutions=repository.github(f"notebooks/{name}"))
    return f"{colab_badge(repository, f'{folder}/{name}')}\n{note}"


# A diagram of notebooks/figures/ in a markdown cell, written `![...](figures/NAME.svg)` or already
# generated (for any repository and branch): `with_links` points it at the file in the repository,
# so that it shows on Colab and in every copy (student/, nbgrader), wherever the notebook lies.
FIGURE_LINK = re.compile(r"\]\((?:https://raw\.githubusercontent\.com/[^/\s]+/[^/\s]+/[^/\s]+"
                         r"/notebooks/)?figures/"
                         r"([\w.-]+\.svg)\)")


def with_figure_links(source: str, repository: Repository) -> str:
    return FIGURE_LINK.sub(lambda m: f"]({repository.raw(f'notebooks/figures/{m.group(1)}')})",
                           source)


def with_links(nb, name: str, kind: str, repository: Repository):
    """A copy of `nb` whose first markdown cell starts with the `kind` copy's header, whose diagrams
    are shown from `repository` (`with_figure_links`), and whose Colab install cell (if it has one)
    installs from `repository`. The header replaces the first paragraph when that is a badge, and is
    put in front otherwise."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = with_figure_links(cell.source, repository)
    first = next((cell for cell in nb.cells if cell.cell_type == "markdown"), None)
    if first is not None:
        paragraph, blank, rest = first.source.partition("\n\n")
        body = rest if paragraph.startswith(BADGE_START) else first.source
        first.source = copy_header(repository, kind, name) + "\n\n" + body
    install = next((cell for cell in nb.cells
                    if cell.cell_type == "code" and INSTALL_CELL_PATTERN.search(cell.source)), None)
    if install is not None:
        install.source = INSTALL_CELL.format(requirement=repository.requirement)
    return nb


def default_notebooks() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def is_checked(cell) -> bool:
    """Whether nbval compares this cell's output under --nbval-lax.

    Mirrors nbval's own parsing: a comment line that reads exactly ``# NBVAL_CHECK_OUTPUT`` (any
    number of leading ``#``), or the ``nbval-check-output`` tag."""
    if cell.get("cell_type") != "code":
        return False
    for line in cell.get("source", "").splitlines():
        line = line.strip()
        if line.startswith("#") and line.lstrip("#").strip() == CHECK_MARKER:
            return True
    return CHECK_TAG in cell.get("metadata", {}).get("tags", [])


def _clean_checked_outputs(outputs: list) -> list:
    """Checked outputs minus widget views: the widget state they point at is not stored, and nbval
    does not compare them anyway. Their text/plain fallback stays."""
    cleaned = []
    for output in outputs:
        output = copy.deepcopy(output)
        data = output.get("data")
        if data and WIDGET_VIEW_MIME in data:
            del data[WIDGET_VIEW_MIME]
            if not data:
                continue
        cleaned.append(output)
    return cleaned


def strip_notebook(nb):
    """A copy of `nb` with outputs kept only in checked cells and run-specific metadata removed."""
    nb = copy.deepcopy(nb)
    for key in NOISY_NOTEBOOK_METADATA:
        nb.metadata.pop(key, None)
    nb.metadata["kernelspec"] = nbformat.from_dict(KERNELSPEC)
    nb.metadata["language_info"] = nbformat.from_dict(LANGUAGE_INFO)
    colab = nb.metadata.get("colab")
    if isinstance(colab, dict):
        colab.pop("provenance", None)  # Colab's record of who opened the notebook from where
    for cell in nb.cells:
        for key in NOISY_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type != "code":
            continue
        if is_checked(cell):
            cell.outputs = _clean_checked_outputs(cell.outputs)
        else:
            cell.outputs = []
            cell.execution_count = None
    return nb


def notebook_problems(nb) -> list[str]:
    """Why `nb` is not clean, one line per problem; empty when it is clean."""
    problems = []
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    if kernel != "python3":
        problems.append(f"kernelspec is {kernel!r}, must be 'python3' (the kernel CI and Colab "
                        "have)")
    if "widgets" in nb.metadata:
        problems.append("notebook metadata holds widget state")
    recorded = nb.metadata.get(RECORDING_METADATA, {}).get("outputs_recorded_with_threads")
    if any(is_checked(cell) for cell in nb.cells) and recorded != RECORDING_THREADS:
        problems.append("its checked outputs were not recorded by `tools/notebooks.py execute` "
                        "with "
                        f"{RECORDING_THREADS} threads (metadata "
                        f"{RECORDING_METADATA}.outputs_recorded_with_threads is "
                        f"{recorded!r})")
    for number, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        where = f"cell {number} ({_first_line(cell)})"
        if is_checked(cell):
            if not cell.outputs:
                problems.append(f"{where} is marked {CHECK_MARKER} but has no stored output to "
                                "compare with")
            if cell.execution_count is None:
                problems.append(f"{where} is marked {CHECK_MARKER} but has no execution count, "
                                "so nbval would treat it as never run and compare nothing")
            if any(output.get("output_type") == "error" for output in cell.outputs):
                problems.append(f"{where} is marked {CHECK_MARKER} and its stored output is an "
                                "error")
        else:
            if cell.outputs:
                problems.append(f"{where} has outputs")
            if cell.execution_count is not None:
                problems.append(f"{where} has an execution count")
    if not problems and strip_notebook(nb) != nb:
        problems.append("run-specific metadata (language_info, cell timings, Colab provenance...) "
                        "is not stripped")
    return problems


def _first_line(cell) -> str:
    lines = cell.source.strip().splitlines()
    first = lines[0] if lines else "<empty>"
    return first if len(first) <= 50 else first[:47] + "..."


def read(path: Path):
    return nbformat.read(path, as_version=4)


def read_or_report(path: Path):
    """The notebook at `path`, or None after printing one line that names the file and why it cannot
    be read (missing, empty, not JSON, not a notebook), so that a batch goes on with the other
    notebooks."""
    try:
        return read(path)
    except Exception as error:   # nbformat raises many kinds for a file that is not a notebook
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"{path}: cannot read this notebook ({type(error).__name__}: {reason})")
        return None


def write(nb, path: Path) -> None:
    nbformat.write(nb, path)


def strip(paths: list[Path]) -> int:
    status = 0
    for path in paths:
        nb = read_or_report(path)
        if nb is None:
            status = 1
            continue
        stripped = strip_notebook(nb)
        if stripped != nb:
            write(stripped, path)
            print(f"stripped {path}")
    return status


def check(paths: list[Path]) -> int:
    unreadable = unclean = False
    for path in paths:
        nb = read_or_report(path)
        if nb is None:
            unreadable = True
            continue
        problems = notebook_problems(nb)
        for problem in problems:
            print(f"{path}: {problem}")
        unclean = unclean or bool(problems)
    if unclean:
        print("Fix with: python tools/notebooks.py strip (and execute, for checked cells without "
              "output)")
    return int(unreadable or unclean)


class SolutionMarkerError(ValueError):
    """Solution markers that do not pair up, so the student version cannot be written safely."""


def _solution_marker(line: str) -> str | None:
    """SOLUTION_BEGIN or SOLUTION_END when `line` is that marker alone, else None.

    A line that starts like a marker but is not exactly one (``# BEGIN SOLUTION``, ``### begin
    solution``, ``### BEGIN  SOLUTION``, ``### BEGIN SOLUTION here``) raises: taken for ordinary
    code it would hand the solution to students. Prose that mentions the markers inside a sentence
    is left alone."""
    stripped = line.strip()
    if stripped in (SOLUTION_BEGIN, SOLUTION_END):
        return stripped
    if MARKER_LOOKALIKE.match(stripped):
        raise SolutionMarkerError(f"malformed marker {stripped!r}: write {SOLUTION_BEGIN!r} or "
                                  f"{SOLUTION_END!r} exactly, alone on its line")
    return None


def clear_solutions(source: str, stub: tuple[str, ...]) -> tuple[str, int]:
    """`source` with every solution region, markers included, replaced by the `stub` lines indented
    like the region's BEGIN line, and the number of regions replaced. Raises SolutionMarkerError,
    naming the line, on a BEGIN inside an open region, an END without a BEGIN, or a BEGIN never
    closed."""
    kept, begin_line, regions = [], None, 0
    for number, line in enumerate(source.split("\n"), 1):
        try:
            marker = _solution_marker(line)
        except SolutionMarkerError as error:
            raise SolutionMarkerError(f"line {number}: {error}") from None
        if marker == SOLUTION_BEGIN:
            if begin_line is not None:
                raise SolutionMarkerError(f"line {number}: {SOLUTION_BEGIN} inside the region "
                                          "opened on "
                                          f"line {begin_line} (regions cannot nest)")
            begin_line = number
            indent = line[:len(line) - len(line.lstrip())]
            kept.extend(indent + stub_line for stub_line in stub)
        elif marker == SOLUTION_END:
            if begin_line is None:
                raise SolutionMarkerError(f"line {number}: {SOLUTION_END} without a "
                                          f"{SOLUTION_BEGIN} before it")
            begin_line = None
            regions += 1
        elif begin_line is None:
            kept.append(line)
    if begin_line is not None:
        raise SolutionMarkerError(f"line {begin_line}: {SOLUTION_BEGIN} is never closed by "
                                  f"{SOLUTION_END}")
    return "\n".join(kept), regions


EXPECTED_OUTPUT = "# Expected output (recorded in the smoke preset):"
LINE_LIMIT = 100       # ruff's line length, as in the notebooks: Colab wraps near there
CONTINUED = "↳ "       # starts the rest of an output line too long for one comment line


def as_comment_lines(text: str) -> list[str]:
    """`text` as comment lines of at most LINE_LIMIT characters: a longer line is broken at its
    spaces, each further piece starting with CONTINUED."""
    lines = []
    for line in text.split("\n"):
        pieces = [line]
        if len(f"# {line}") > LINE_LIMIT:
            pieces = textwrap.wrap(line, width=LINE_LIMIT - 2, subsequent_indent=CONTINUED,
                                   break_long_words=False, break_on_hyphens=False)
        lines += [f"# {piece}".rstrip() for piece in pieces]
    return lines


def with_expected_outputs(nb):
    """A copy of `nb` in which every checked cell's stored output is written under its code as
    comment lines (`as_comment_lines`), after an EXPECTED_OUTPUT line, and then cleared: a copy that
    nbval does not compare still shows what it should print."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if not is_checked(cell):
            continue
        text = "".join(output.get("text", "") if output.get("output_type") == "stream"
                       else output.get("data", {}).get("text/plain", "") for output in cell.outputs)
        if text.strip():
            cell.source = "\n".join([cell.source.rstrip("\n"), "", EXPECTED_OUTPUT,
                                     *as_comment_lines(text.rstrip("\n"))])
        cell.outputs = []
        cell.execution_count = None
    return nb


def student_notebook(nb, name: str, repository: Repository | None = None):
    """The student version of notebook `nb`, saved as `name`: solutions replaced by stubs, every
    output cleared (a checked cell's written under it as its expected output), cell metadata and the
    attachments the text no longer shows dropped (`released_cell`), the Colab badge pointing at
    student/`name` with a line saying what the copy is. Returns (notebook, number of solution
    regions). Raises SolutionMarkerError naming the cell whose markers do not pair up, or a raw cell
    with a solution region."""
    repository = repository or read_repository()
    student = with_expected_outputs(with_links(strip_notebook(nb), name, "student", repository))
    regions = 0
    for number, cell in enumerate(student.cells):
        stub = {"code": CODE_STUB, "markdown": ANSWER_STUB}.get(cell.cell_type, ())
        try:
            source, cleared = clear_solutions(cell.source, stub)
        except SolutionMarkerError as error:
            raise SolutionMarkerError(f"cell {number} ({_first_line(cell)}), {error}") from None
        if cleared and not stub:
            begin = next(i for i, line in enumerate(cell.source.split("\n"), 1)
                         if line.strip() == SOLUTION_BEGIN)
            raise SolutionMarkerError(f"cell {number} ({_first_line(cell)}), line {begin}: a "
                                      "solution region in a "
                                      f"{cell.cell_type} cell, which is handed out as it is: put "
                                      "the answer in a "
                                      "markdown or a code cell")
        cell.source = source
        student.cells[number] = released_cell(cell)
        regions += cleared
    return student, regions


# ---- writing generated files without overwriting someone's changes -------------------------------

WRITTEN_RECORD = ".clcourse-written.json"


def notebook_text(nb) -> str:
    """The file nbformat.write makes of `nb`."""
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_generated(files: dict[Path, str], folder: Path, command: str,
                    force: bool = False) -> bool:
    """Write `files` (path in `folder` -> text), and record the hash of each in
    folder/WRITTEN_RECORD. A file that exists, differs from its new text, and is not what the last
    run wrote (someone changed it since, or it was never written by this tool) stops the run before
    anything is written: the message names it. `force` overwrites it. Returns whether the files were
    written."""
    record_path = folder / WRITTEN_RECORD
    try:
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    except ValueError:
        record = {}   # an unreadable record vouches for no file
    changed = []
    for path, text in files.items():
        if path.is_file():
            current = path.read_bytes()
            key = path.relative_to(folder).as_posix()
            if current != text.encode() and _sha256(current) != record.get(key):
                changed.append(path)
    if changed and not force:
        for path in changed:
            print(f"{path}: changed since `{command}` last wrote it (or not written by it): "
                  "nothing written. "
                  "Move it away, or rerun with --force to overwrite it.")
        return False
    written = 0
    for path, text in files.items():
        data = text.encode()
        if not path.is_file() or path.read_bytes() != data:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            partial.write_bytes(data)
            partial.replace(path)
            written += 1
            print(f"wrote {path}")
        record[path.relative_to(folder).as_posix()] = _sha256(data)
    folder.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"{written} written, {len(files) - written} already up to date in {folder}")
    return True


def student_files(paths: list[Path], out_dir: Path, repository: Repository | None = None,
                  notebooks: dict[Path, object] | None = None) -> tuple[dict[Path, str], int]:
    """(target path -> text of the student version, for each notebook that can have one; exit
    status). A notebook that cannot be read or whose markers do not pair up is reported and left
    out, and the status is 1. `notebooks` (path -> notebook) stands in for files not written yet."""
    status, files, repository = 0, {}, repository or read_repository()
    for path in paths:
        target = out_dir / path.name
        if target.resolve() == path.resolve():
            print(f"{path}: refusing to overwrite the notebook with its student version; choose "
                  "another --out")
            status = 1
            continue
        nb = (notebooks or {}).get(path) or read_or_report(path)
        if nb is None:
            status = 1
            continue
        try:
            student, _ = student_notebook(nb, path.name, repository)
        except SolutionMarkerError as error:
            print(f"{path}: {error}")
            status = 1
            continue
        files[target] = notebook_text(student)
    return files, status


def write_students(paths: list[Path], out_dir: Path, force: bool = False) -> int:
    """Write the student version of each notebook into `out_dir`. A notebook whose markers do not
    pair up is reported and skipped, and the exit status is 1; a copy changed since it was written
    stops the run."""
    files, status = student_files(paths, out_dir)
    if not write_generated(files, out_dir, "tools/notebooks.py student", force):
        return 1
    return status


def links(root: Path = REPO, slug: str | None = None, branch: str | None = None,
          check: bool = False, force: bool = False) -> int:
    """Point every link to the repository at the one pyproject.toml names ([tool.clcourse]), or at
    `slug` and `branch` (a fork), written into pyproject.toml first: the notebooks' Colab badges,
    notes and install cells, the links in the LINKED_TEXT_FILES, and the student copies. With
    `check`, write nothing and return 1 when a file is not what this would write."""
    pyproject = root / "pyproject.toml"
    old = read_repository(pyproject)
    new = Repository(slug or old.slug, branch or old.branch)
    files, notebooks = {}, {}
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        nb = read_or_report(path)
        if nb is None:
            return 1
        notebooks[path] = with_links(nb, path.name, "solutions", new)
        files[path] = notebook_text(notebooks[path])
    for pattern in LINKED_TEXT_FILES:
        for path in sorted(root.glob(pattern)):
            files[path] = retarget(path.read_text(), old, new)
    changed = [path for path, text in files.items() if path.read_text() != text]
    student, status = student_files(sorted(notebooks), root / "student", new, notebooks)
    if check:
        stale = [path for path, text in student.items()
                 if not path.is_file() or path.read_text() != text]
        for path in changed + stale:
            print(f"{path}: its links to the repository are not generated from pyproject.toml's "
                  f"[{REPOSITORY_TABLE}]")
        if changed or stale:
            print("Fix with: python tools/notebooks.py links (and make student)")
        return int(bool(changed or stale) or bool(status))
    if not write_generated(student, root / "student", "tools/notebooks.py student", force):
        return 1
    if new != old:
        write_repository(new, pyproject)
        print(f"{pyproject}: [{REPOSITORY_TABLE}] repository = {new.slug!r}, branch = "
              f"{new.branch!r}")
    for path in changed:
        path.write_text(files[path])
        print(f"wrote {path}")
    return status


# ---- the course's run times: one source, notebooks/timings.json ----------------------------------

TIMINGS = NOTEBOOK_DIR / "timings.json"
# A figure written from timings.json: <!-- timings:KEY -->text<!-- /timings -->, on one line, in
# README.md or a notebook's markdown (notebook 00). `timings` rewrites the text between the markers.
TIMING_SPAN = re.compile(r"(<!-- timings:([\w:.-]+) -->)(.*?)(<!-- /timings -->)")
TIMING_FILES = ("README.md", "notebooks/00_setup_and_tour.ipynb")
# A time note's smoke figure, in any notebook's markdown:
# <!-- timings:cell -->about 40 s<!-- /timings --> is the measured time of the code cells that
# follow that markdown cell, up to the next markdown cell (timings.json's smoke "cells":
# notebook -> cell id -> seconds, taken from nbval's JUnit reports). `timings` writes it;
# `cell_note_problems` (and `timings --check`) fail when a note is more than DRIFT times off its
# measurement.
CELL_NOTE = "cell"
DRIFT = 2.0
SHORTEST_NOTE = 5   # seconds: the smallest figure a note gives; a shorter cell is noted "about 5 s"
STATED = re.compile(r"^about (?:(\d+) min)? ?(?:(\d+) s)?$")


def duration(seconds: float) -> str:
    """11 s, 55 s, 2 min, 2 min 55 s."""
    seconds = round(seconds)
    minutes, rest = divmod(seconds, 60)
    if not minutes:
        return f"{rest} s"
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def timing_texts(timings: dict, smoke_train_images: int) -> dict[str, str]:
    """The text of each timing figure (KEY -> text), from timings.json's content."""
    smoke, colab, views = timings["smoke"], timings["colab"], timings["cpu_views_per_second"]
    estimate = "" if colab["measured"] else " (estimated, not yet measured)"
    texts = {}
    for name, seconds in smoke["seconds"].items():
        alone = colab.get("alone_minutes", {}).get(name)
        texts[f"notebook:{name}"] = (f"{duration(seconds)} / ≈ {colab['minutes'][name]} min"
                                     + (f" ({alone} min alone)" if alone else ""))
    texts["smoke-range"] = (f"{duration(min(smoke['seconds'].values()))} to "
                            f"{duration(max(smoke['seconds'].values()))} per notebook on "
                            f"{smoke['machine']}")
    texts["smoke-how"] = f"measured on {smoke['machine']}, {smoke['date']}, by {smoke['how']}"
    texts["colab-range"] = (f"≈ {min(colab['minutes'].values())}–{max(colab['minutes'].values())} "
                            "min per notebook "
                            f"on a T4{estimate}")
    texts["colab-how"] = colab["how"]
    subsets = sorted(colab.get("train_images", {}).items())
    texts["colab-data"] = "all of CIFAR-10" + (
        " (" + "; ".join(f"notebook {name[:2]}: {images:,} training images"
                         for name, images in subsets) + ")"
        if subsets else "")
    epoch = [2 * smoke_train_images / rate for rate in (views["high"], views["low"])]
    texts["cpu-views"] = (f"about {views['low']:,}–{views['high']:,} views/s, "
                          f"{epoch[0]:.0f}–{epoch[1]:.0f} s per "
                          f"epoch of {smoke_train_images:,} images (measured on "
                          f"{views['machine']}, {views['date']})")
    return texts


def with_timings(text: str, texts: dict[str, str], where: str) -> str:
    """`text` with each timing span's text written from `texts`; an unknown KEY raises ValueError
    naming it."""
    def replace(match):
        key = match.group(2)
        if key not in texts:
            raise ValueError(f"{where}: unknown timing figure {key!r} (known: "
                             f"{', '.join(sorted(texts))})")
        return match.group(1) + texts[key] + match.group(4)

    return TIMING_SPAN.sub(replace, text)


def junit_seconds(folder: Path) -> dict[str, float]:
    """Seconds per notebook (its stem) in the JUnit reports of nbval runs in `folder`: the sum of
    its cells' times."""
    import xml.etree.ElementTree as ElementTree

    seconds = {}
    for report in sorted(folder.glob("*.xml")):
        for case in ElementTree.parse(report).getroot().iter("testcase"):
            notebook = re.search(r"([^./]+)\.ipynb$", case.get("classname", ""))
            if notebook:
                name = notebook.group(1)
                seconds[name] = seconds.get(name, 0.0) + float(case.get("time", 0))
    return seconds


def junit_cell_seconds(folder: Path) -> dict[str, dict[int, float]]:
    """Seconds per code cell of each notebook (its stem -> nbval's "Cell N", the N-th code cell,
    -> seconds) in the JUnit reports of nbval runs in `folder`."""
    import xml.etree.ElementTree as ElementTree

    seconds: dict[str, dict[int, float]] = {}
    for report in sorted(folder.glob("*.xml")):
        for case in ElementTree.parse(report).getroot().iter("testcase"):
            notebook = re.search(r"([^./]+)\.ipynb$", case.get("classname", ""))
            cell = re.fullmatch(r"Cell (\d+)", case.get("name", ""))
            if notebook and cell:
                cells = seconds.setdefault(notebook.group(1), {})
                number = int(cell.group(1))
                cells[number] = cells.get(number, 0.0) + float(case.get("time", 0))
    return seconds


def cells_by_id(nb, code_seconds: dict[int, float]) -> dict[str, float]:
    """nbval's per-code-cell seconds (N-th code cell -> seconds) keyed by the cells' ids instead,
    which survive edits to other cells."""
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    return {code[number].id: round(value, 1) for number, value in sorted(code_seconds.items())
            if number < len(code)}


def about(seconds: float) -> str:
    """A time note's figure: about 5 s, about 35 s (to 5 s), about 2 min, about 2 min 30 s (to
    30 s)."""
    step = SHORTEST_NOTE if seconds < 60 else 30
    return "about " + duration(max(SHORTEST_NOTE, step * round(seconds / step)))


def stated_seconds(text: str) -> float | None:
    """The seconds a note's figure states (the inverse of `about`); None when it is not of that
    form."""
    found = STATED.match(text.strip())
    if not found or not any(found.groups()):
        return None
    return 60 * int(found.group(1) or 0) + int(found.group(2) or 0)


def noted_cells(nb) -> list[tuple[int, list[str]]]:
    """(markdown cell number, ids of the code cells it describes) for every markdown cell with a
    time note: the code cells after it up to the next markdown cell."""
    notes = []
    for number, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown" or f"<!-- timings:{CELL_NOTE} -->" not in cell.source:
            continue
        ids = []
        for following in nb.cells[number + 1:]:
            if following.cell_type == "markdown":
                break
            if following.cell_type == "code":
                ids.append(following.id)
        notes.append((number, ids))
    return notes


def measured(cell_seconds: dict[str, float], ids: list[str]) -> float | None:
    """The measured seconds of the cells `ids` together; None when one of them has no
    measurement."""
    if not ids or any(cell_id not in cell_seconds for cell_id in ids):
        return None
    return sum(cell_seconds[cell_id] for cell_id in ids)


def with_cell_notes(nb, cell_seconds: dict[str, float]):
    """`nb` with each time note's smoke figure written from its cells' measurement (a note without
    one is left)."""
    def note(match, figure):
        if match.group(2) != CELL_NOTE:
            return match.group(0)
        return match.group(1) + figure + match.group(4)

    for number, ids in noted_cells(nb):
        seconds = measured(cell_seconds, ids)
        if seconds is not None:
            figure = about(seconds)
            nb.cells[number].source = TIMING_SPAN.sub(
                lambda match, figure=figure: note(match, figure), nb.cells[number].source)
    return nb


def cell_note_problems(nb, name: str, cell_seconds: dict[str, float],
                       drift: float = DRIFT) -> list[str]:
    """Each time note of notebook `name` whose figure is unreadable, has no measurement, or is more
    than `drift` times off its cells' last measured time, one line each."""
    problems = []
    for number, ids in noted_cells(nb):
        for match in TIMING_SPAN.finditer(nb.cells[number].source):
            if match.group(2) != CELL_NOTE:
                continue
            stated, seconds = stated_seconds(match.group(3)), measured(cell_seconds, ids)
            where = f"{name}, cell {number}"
            if seconds is None:
                problems.append(f"{where}: its time note describes cells with no measured time "
                                f"({', '.join(ids) or 'none'}); run the notebooks with JUNIT_DIR "
                                "set, then python tools/notebooks.py timings --junit DIR")
            elif stated is None:
                problems.append(f"{where}: its time note says {match.group(3)!r}, not 'about N s' "
                                "or 'about N min M s'")
            # below the shortest note, every time reads as "about 5 s"
            elif not 1 / drift <= max(stated, SHORTEST_NOTE) / max(seconds, SHORTEST_NOTE) <= drift:
                problems.append(f"{where}: its time note says {match.group(3)!r}, measured "
                                f"{duration(seconds)}: more than {drift:g}x off; run python "
                                "tools/notebooks.py timings")
    return problems


def this_machine() -> str:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        model = f" ({found.group(1).strip()})" if found else ""
    return f"a {os.cpu_count()}-core CPU{model}"


def timing_files(root: Path, timings: dict) -> dict[Path, str]:
    """README.md and every notebook with their timing figures written from `timings` (path -> new
    text): the run times of README.md and notebook 00, and each notebook's time notes."""
    from clcourse.presets import PRESETS

    texts = timing_texts(timings, PRESETS["smoke"].train_subset)
    texts[CELL_NOTE] = None   # written per note, from its cells (with_cell_notes)
    cells = timings["smoke"].get("cells", {})
    files = {}
    for name in TIMING_FILES:
        path = root / name
        if path.suffix != ".ipynb":
            files[path] = with_timings(path.read_text(), texts, str(path))
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        nb = read(path)
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = TIMING_SPAN.sub(
                    lambda match, path=path: match.group(0) if match.group(2) == CELL_NOTE
                    else with_timings(match.group(0), texts, str(path)), cell.source)
        files[path] = notebook_text(with_cell_notes(nb, cells.get(path.stem, {})))
    return files


def update_timings(root: Path = REPO, junit: Path | None = None, how: str | None = None,
                   check: bool = False) -> int:
    """Write the timing figures of README.md and notebook 00, and every notebook's time notes, from
    notebooks/timings.json; with `junit`, first take the smoke times of the notebooks those reports
    ran (nbval's, per notebook and per cell) into timings.json, with this machine and today's date.
    With `check`, write nothing and return 1 when a run time of README.md or notebook 00 differs
    from timings.json, or a time note is unmeasured or more than DRIFT times off its cells'
    measurement."""
    import datetime

    path = root / "notebooks" / "timings.json"
    timings = json.loads(path.read_text())
    if junit is not None:
        seconds = junit_seconds(junit)
        if not seconds:
            print(f"{junit}: no JUnit report of a notebook run (make test-notebooks "
                  f"JUNIT_DIR={junit})")
            return 1
        known = set(timings["smoke"]["seconds"])
        timings["smoke"]["seconds"].update({name: round(value) for name, value in seconds.items()
                                            if name in known})
        for name, code_seconds in junit_cell_seconds(junit).items():
            if name in known and (root / "notebooks" / f"{name}.ipynb").is_file():
                timings["smoke"].setdefault("cells", {})[name] = cells_by_id(
                    read(root / "notebooks" / f"{name}.ipynb"), code_seconds)
        timings["smoke"].update(machine=this_machine(), date=datetime.date.today().isoformat(),
                                how=how or "nbval's time per notebook (JUnit reports of make "
                                           "test-notebooks)",
                                cells_how="nbval's time per code cell, in the same JUnit reports")
        path.write_text(json.dumps(timings, indent=1, ensure_ascii=False) + "\n")
        print(f"{path}: smoke times of {', '.join(sorted(seconds.keys() & known))}")
    files = timing_files(root, timings)
    if check:
        # README's and notebook 00's run times exactly; a time note within DRIFT of its cells'
        # measurement.
        cells = timings["smoke"].get("cells", {})
        problems = [f"{file}: its run times differ from {path}; run python tools/notebooks.py "
                    "timings"
                    for file, text in files.items()
                    if str(file.relative_to(root)) in TIMING_FILES and file.read_text() != text]
        for file in sorted(files):
            if file.suffix == ".ipynb":
                problems += cell_note_problems(read(file), file.stem, cells.get(file.stem, {}))
        print("\n".join(problems)) if problems else None
        return int(bool(problems))
    for file, text in files.items():
        if file.read_text() != text:
            file.write_text(text)
            print(f"wrote {file}")
    return 0


# ---- nbgrader: the course as graded assignments --------------------------------------------------

HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"
HIDDEN_END = "### END HIDDEN TESTS"
HIDDEN_IMPORT = "from clcourse.checks._grading import hidden_test as _hidden_test"
# The course folder's record of its seed: the hidden cases are drawn from it
# (tools/hidden_cases.py).
COURSE_RECORD = ".clcourse-course.json"
FUNCTION_DEF = re.compile(r"^\s*def\s+(\w+)\s*\(")
HEADING = re.compile(r"^#+\s+(.+)$", re.MULTILINE)
EXERCISE_POINTS = 1   # per exercise: its checker and hidden tests, autograded
ANSWER_POINTS = 1     # per written answer (a markdown solution region), graded in formgrader
NBGRADER_CONFIG = '''"""nbgrader's configuration for the clcourse assignments.

Written by tools/notebooks.py nbgrader. Assignments are the notebooks in source/. docs/teaching.md
in the course's repository gives every command, from making this folder to the students'
feedback."""
import logging
import os
import re
import tempfile

c = get_config()  # noqa: F821 (nbgrader's config loader defines it)
c.CourseDirectory.course_id = "clcourse"
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
# Where assignments are handed out and submissions collected: nbgrader's default folder unless
# NBGRADER_EXCHANGE names another. Every student's nbgrader must use the same one (docs/teaching.md
# says how to create it).
c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE", "/srv/nbgrader/exchange")
# Grading runs every notebook in the smoke preset (a small CNN), each training run capped at one
# epoch over 512 images: the exercises' tests depend on neither, and the training cells take seconds
# instead of minutes. (Set CLCOURSE_MAX_EPOCHS and CLCOURSE_MAX_TRAIN_IMAGES in the environment to
# grade with more.)
os.environ["CLCOURSE_PRESET"] = "smoke"
os.environ.setdefault("CLCOURSE_MAX_EPOCHS", "1")
os.environ.setdefault("CLCOURSE_MAX_TRAIN_IMAGES", "512")
os.environ.setdefault("CLCOURSE_DATA", {data_root!r})
c.ExecutePreprocessor.timeout = 600   # seconds per cell; a smoke training cell takes under a minute

# Each submission trains its own runs, in a temporary folder deleted once it is graded: a finished
# run of another submission is never reused, and no checkpoint stays in autograded/ or is copied
# into the students' feedback. CLCOURSE_KEEP_GRADING_RUNS=1 keeps them, in runs/ beside each graded
# notebook (the kernel's working directory).
if os.environ.get("CLCOURSE_KEEP_GRADING_RUNS") == "1":
    os.environ["CLCOURSE_RUNS"] = "runs"
else:
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import Execute

    class ExecuteWithTemporaryRuns(Execute):
        """nbgrader's Execute, with CLCOURSE_RUNS a new temporary folder while the kernel runs."""

        def preprocess(self, nb, resources):
            before = os.environ.get("CLCOURSE_RUNS")
            with tempfile.TemporaryDirectory(prefix="clcourse-grading-runs-") as runs:
                os.environ["CLCOURSE_RUNS"] = runs   # the kernel, started by Execute, inherits it
                try:
                    return super().preprocess(nb, resources)
                finally:
                    if before is None:
                        os.environ.pop("CLCOURSE_RUNS", None)
                    else:
                        os.environ["CLCOURSE_RUNS"] = before

    c.Autograde.autograde_preprocessors = [
        ExecuteWithTemporaryRuns if step is Execute else step
        for step in Autograde.class_traits()["autograde_preprocessors"].default()]


class HiddenTestsChecksum(logging.Filter):
    """Drops nbgrader's "Attribute 'checksum' for cell test_... has changed!" about the autograded
    test cells: the released copy leaves their hidden tests out, so its checksum differs from the
    source's by design, and nbgrader grades with the source's cell anyway. A changed read-only cell
    (cell-N, a student's edit) is still reported."""

    def filter(self, record):
        return not re.match(r"Attribute 'checksum' for cell test_\\w+ has changed",
                            record.getMessage())


logging.getLogger("AutogradeApp").addFilter(HiddenTestsChecksum())
'''


class NbgraderSourceError(ValueError):
    """A notebook that cannot become an nbgrader assignment; the message names the notebook, cell
    and line."""


def _hidden_tests(checker: str, function: str, hidden: dict[str, dict]) -> list[str]:
    """The hidden-test lines of one exercise: clcourse's checker again, through
    `clcourse.checks._grading.hidden_test` (which refuses a replaced checker), on the course's
    hidden cases of it (`hidden`, drawn by tools/hidden_cases.py). KeyError when it has none."""
    arguments = "".join(f", {key}={value!r}" for key, value in hidden[checker].items())
    return [HIDDEN_BEGIN, HIDDEN_IMPORT, f'_hidden_test(globals(), "{checker}", '
                                         f'"{function}"{arguments})',
            HIDDEN_END]


def hidden_cases():
    """tools/hidden_cases.py, loaded by its path (tools/ is not a package)."""
    import importlib.util

    module = sys.modules.get("clcourse_tools_hidden_cases")
    if module is None:
        path = Path(__file__).resolve().parent / "hidden_cases.py"
        spec = importlib.util.spec_from_file_location("clcourse_tools_hidden_cases", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def without_magics(source: str) -> str:
    """A cell's code without IPython's `!command` and `%magic` lines (each replaced by `pass`,
    keeping the blocks)."""
    return "\n".join(re.sub(r"^(\s*)[!%].*", r"\1pass", line) for line in source.split("\n"))


def checker_calls(source: str) -> tuple[list[tuple[int, str, str]], list[tuple[int, str]]]:
    """The checker calls of a code cell that nbgrader can grade, (line, checker, function) for each
    statement ``check_x(function)`` alone at the start of its line; and (line, why) for every other
    call of a `check_*` name: with a keyword or another argument (the hidden test would call the
    checker wrongly), or inside a block or an expression (the test cell would leave it behind, and
    the exercise would not be graded)."""
    try:
        tree = ast.parse(without_magics(source))
    except SyntaxError:
        return [], []
    statements = {id(statement.value) for statement in tree.body
                  if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)}
    calls, misuses = [], []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id.startswith("check_")):
            continue
        text = ast.get_source_segment(without_magics(source), node) or node.func.id
        if node.keywords or len(node.args) != 1 or not isinstance(node.args[0], ast.Name):
            misuses.append((node.lineno, f"{text}: call a checker with your function alone, as "
                                         f"{node.func.id}(function), no keyword or other argument "
                                         "(the hidden "
                                         "test calls it the same way)"))
        elif id(node) not in statements or node.col_offset != 0:
            misuses.append((node.lineno, f"{text} is inside a block or an expression: call a "
                                         "checker alone at the "
                                         "start of its line, outside any if, loop or function, so "
                                         "that its "
                                         "exercise is graded"))
        else:
            calls.append((node.lineno, node.func.id, node.args[0].id))
    return sorted(calls), sorted(misuses)


ATTACHMENT_LINK = re.compile(r"attachment:([^\s)\"'>]+)")


def released_cell(cell):
    """A copy of `cell` as handed out: no cell metadata but its tags (a notebook's metadata may
    carry anything: notes, an extension's state), and only the attachments its text shows outside
    its solution regions (an answer's pasted images go with the answer)."""
    cell = copy.deepcopy(cell)
    tags = cell.metadata.get("tags")
    cell.metadata = nbformat.from_dict({"tags": tags} if tags else {})
    if "attachments" in cell:
        try:
            text, _ = clear_solutions(cell.source, ANSWER_STUB)
        except SolutionMarkerError:
            text = ""   # reported where the markers are read; nothing is shown for sure
        shown = set(ATTACHMENT_LINK.findall(text))
        kept = {name: data for name, data in cell.attachments.items() if name in shown}
        if kept:
            cell.attachments = nbformat.from_dict(kept)
        else:
            del cell["attachments"]
    return cell


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _nbgrader_metadata(grade_id: str, *, solution=False, grade=False, locked=False,
                       points=None) -> dict:
    metadata = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3,
                "solution": solution}
    if points is not None:
        metadata["points"] = points
    return metadata


def nbgrader_source(nb, name: str, hidden: dict[str, dict] | None = None):
    """The nbgrader source version of notebook `nb` (file name `name`): every cell with a solution
    region a solution cell, each checker call (a line ``check_*(function)``) split off into an
    autograded test cell with EXERCISE_POINTS points and the exercise's hidden tests (`hidden`: the
    course's, drawn by tools/hidden_cases.py; default: those of seed 0), every other cell read-only
    (a checker run again later, as a guard before training with an exercise already graded, too).
    Markdown answers are manually graded answer cells (nbgrader has no other kind of markdown
    solution). The header and the expected outputs are the student copy's (`with_links`,
    `with_expected_outputs`), the header saying that this is an assignment; cell metadata and
    attachments that the released text no longer shows are dropped (`released_cell`).

    Grade ids are names, stable while the notebook changes around them: the exercise's function
    (`info_nce_loss`, its test `test_info_nce_loss`), a written answer's heading
    (`check-your-understanding`), `cell-N` for a read-only cell. Raises NbgraderSourceError
    (notebook, cell and line) on what would be graded wrongly: markers that do not pair up, a
    solution region in a raw cell, a checker called otherwise than alone on its line
    (`checker_calls`), a checker with no solution before it, a solution with no checker after it, a
    checker without hidden tests, and a grade id used twice."""
    hidden = hidden if hidden is not None else hidden_cases().draw(0)
    source = with_expected_outputs(with_links(strip_notebook(nb), Path(name).name, "assignment",
                                              read_repository()))
    cells, used = [], {}
    pending = None   # the solution whose checker has not come yet: (grade id, cell number, line)
    graded = set()   # the functions an autograded test cell already checks

    def fail(number, line, message):
        raise NbgraderSourceError(f"{name}: cell {number}, line {line}: {message}")

    def claim(grade_id, number, line):
        if grade_id in used:
            fail(number, line, f"grade_id {grade_id!r} is already used by cell {used[grade_id]}: "
                               "give the exercise "
                               "(its function, or the answer's heading) another name")
        used[grade_id] = number

    def read_only(cell, number):
        claim(f"cell-{number}", number, 1)
        cell.metadata["nbgrader"] = _nbgrader_metadata(f"cell-{number}", locked=True)
        cells.append(cell)

    def unchecked(number):
        fail(pending[1], pending[2], f"the solution of {pending[0]!r} has no checker after it (a "
                                     "line "
                                     f"`check_...({pending[0]})` before cell {number}'s solution), "
                                     "so it would "
                                     "never be graded")

    for number, cell in enumerate(source.cells):
        cell = released_cell(cell)
        lines = cell.source.split("\n")
        try:
            _, regions = clear_solutions(cell.source, CODE_STUB)
        except SolutionMarkerError as error:
            line = re.match(r"line (\d+)", str(error))
            fail(number, line.group(1) if line else "?", str(error).split(": ", 1)[-1])
        begins = [i for i, line in enumerate(lines, 1) if line.strip() == SOLUTION_BEGIN]
        begin = begins[0] if begins else None
        if cell.cell_type == "raw" and regions:
            fail(number, begin, "a solution region in a raw cell, which is handed out as it is: "
                                "put the answer in a "
                                "markdown or a code cell")
        if cell.cell_type == "markdown" and regions:
            heading = HEADING.search(cell.source)
            grade_id = _slug(heading.group(1)) if heading else f"answer-cell-{number}"
            claim(grade_id, number, begin)
            cell.metadata["nbgrader"] = _nbgrader_metadata(grade_id, solution=True, grade=True,
                                                           points=ANSWER_POINTS)
            cells.append(cell)
            continue
        if cell.cell_type != "code":
            read_only(cell, number)
            continue
        checks, misuses = checker_calls(cell.source)
        if misuses:
            fail(number, *misuses[0])
        first_check = checks[0][0] if checks else len(lines) + 1
        if begins and begins[-1] > first_check:
            fail(number, begins[-1], f"a solution region after the checker on line {first_check}: "
                                     "the checker must "
                                     "come after the code it checks")
        if regions:
            if pending is not None:
                unchecked(number)
            defs = [FUNCTION_DEF.match(line).group(1) for line in lines[:begin]
                    if FUNCTION_DEF.match(line)]
            grade_id = checks[0][2] if checks else (defs[-1] if defs else f"cell-{number}")
            claim(grade_id, number, begin)
            solution = copy.deepcopy(cell)
            solution.source = "\n".join(lines[:first_check - 1]).rstrip("\n")
            solution.metadata["nbgrader"] = _nbgrader_metadata(grade_id, solution=True)
            cells.append(solution)
            pending = (grade_id, number, begin)
        if not checks:
            if not regions:
                read_only(cell, number)
            continue
        line = checks[0][0]
        if pending is None and not regions and all(function in graded for _, _, function in checks):
            # a checker run again as a guard (before training with the function): not graded
            read_only(cell, number)
            continue
        if pending is None:
            fail(number, line, f"{lines[line - 1].strip()} has no solution cell ({SOLUTION_BEGIN} "
                               "... "
                               f"{SOLUTION_END}) before it to check")
        grade_id = f"test_{pending[0]}"
        claim(grade_id, number, line)
        tests = []
        for line, checker, function in checks:
            try:
                tests += _hidden_tests(checker, function, hidden)
            except KeyError:
                fail(number, line, f"{checker} has no hidden tests: add its template to TEMPLATES "
                                   "in "
                                   "tools/hidden_cases.py")
        test = copy.deepcopy(cell)
        if "id" in test:   # nbformat 4.5 cell ids are unique; the solution half keeps its own
            test.id = f"{test.id}-test"[-64:]
        test.source = "\n".join(lines[first_check - 1:] + tests)
        test.metadata["nbgrader"] = _nbgrader_metadata(grade_id, grade=True, locked=True,
                                                       points=EXERCISE_POINTS)
        cells.append(test)
        graded.update(function for _, _, function in checks)
        pending = None
    if pending is not None:
        unchecked("(the end of the notebook)")
    source.cells = cells
    return source


def course_seed(out_dir: Path, seed: int | None = None) -> tuple[int, str]:
    """The seed the course folder `out_dir` draws its hidden cases from, and where it comes from:
    `seed` when given, else the one recorded in out_dir/COURSE_RECORD by the first run, else a new
    random one."""
    record = out_dir / COURSE_RECORD
    try:
        recorded = json.loads(record.read_text())["hidden_cases_seed"] if record.is_file() else None
    except (ValueError, KeyError, TypeError):
        recorded = None
    if seed is not None:
        return seed, "given" if recorded in (None, seed) else f"given; the course's was {recorded}"
    if isinstance(recorded, int):
        return recorded, f"recorded in {record}"
    import secrets

    return secrets.randbelow(2 ** 31), "new"


def write_nbgrader(paths: list[Path], out_dir: Path, force: bool = False,
                   seed: int | None = None) -> int:
    """Write the nbgrader course folder `out_dir`: nbgrader_config.py (kept when it exists, as an
    instructor may have edited it) and source/<stem>/<stem>.ipynb for every notebook with exercises,
    whose hidden tests are drawn from the course's seed (`course_seed`, recorded in
    out_dir/COURSE_RECORD). Checks every notebook first and writes nothing when one is not usable,
    or when a source notebook was changed since it was written (`force` overwrites it)."""
    seed, origin = course_seed(out_dir, seed)
    hidden = hidden_cases().draw(seed)
    sources = {}
    for path in paths:
        nb = read_or_report(path)
        if nb is None:
            return 1
        try:
            source = nbgrader_source(nb, str(path), hidden)
        except NbgraderSourceError as error:
            print(f"{error}\nnothing written")
            return 1
        exercises = sum(bool(cell.metadata["nbgrader"]["grade"]) for cell in source.cells
                        if cell.cell_type == "code")
        if exercises:
            sources[out_dir / "source" / path.stem / path.name] = notebook_text(source)
            print(f"{path.stem}: {exercises} autograded exercises")
        else:
            print(f"{path}: no exercises, not an assignment")
    from clcourse.data import DATA_ENV_VAR
    from clcourse.presets import course_root

    if not write_generated(sources, out_dir, "tools/notebooks.py nbgrader", force):
        return 1
    (out_dir / COURSE_RECORD).write_text(json.dumps({"hidden_cases_seed": seed}) + "\n")
    print(f"hidden tests drawn with the course's seed {seed} ({origin})")
    config = out_dir / "nbgrader_config.py"
    if config.exists():
        print(f"kept {config}")
    else:
        config.write_text(NBGRADER_CONFIG.format(
            data_root=str(Path(os.environ.get(DATA_ENV_VAR) or course_root() / "data").resolve())))
        print(f"wrote {config}")
    return 0


def _current_python_kernel_manager():
    """A kernel manager whose 'python3' kernel runs this very Python, whatever kernelspecs are
    installed (the same thing `pytest --nbval-current-env` does)."""
    import ipykernel.kernelspec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    class CurrentPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return self.kernel_spec_class(resource_dir=ipykernel.kernelspec.RESOURCES,
                                          **ipykernel.kernelspec.get_kernel_dict())

    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=CurrentPython())


def _execution_failure(nb, error: Exception) -> str:
    """One line for a notebook whose execution stopped: the cell (its number and first line) and the
    error, instead of nbclient's whole traceback."""
    errors = [any(out.get("output_type") == "error" for out in cell.get("outputs", ()))
              for cell in nb.cells]
    failed = errors.index(True) if True in errors else None
    where = f"cell {failed} ({_first_line(nb.cells[failed])})" if failed is not None else "a cell"
    name = getattr(error, "ename", None) or type(error).__name__
    value = getattr(error, "evalue", None)
    if value is None:
        value = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{where} failed: {name}: {value}"


def execute(paths: list[Path], cell_timeout: int) -> int:
    from nbclient import NotebookClient

    # The same environment as `make test`: the smoke preset, and the kernel's own inline plotting
    # backend.
    os.environ["CLCOURSE_PRESET"] = "smoke"
    os.environ.pop("MPLBACKEND", None)
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[variable] = str(RECORDING_THREADS)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache" / "numba"))
    status = 0
    for path in paths:
        nb = read_or_report(path)
        if nb is None:
            status = 1
            continue
        print(f"executing {path} ...", flush=True)
        client = NotebookClient(nb, km=_current_python_kernel_manager(), timeout=cell_timeout,
                                resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
        except Exception as error:   # a cell's error, a timeout, a dead kernel: nbclient's kinds
            print(f"{path}: {_execution_failure(nb, error)}; the notebook is left as it was")
            status = 1
            continue
        nb.metadata[RECORDING_METADATA] = {"outputs_recorded_with_threads": RECORDING_THREADS}
        write(strip_notebook(nb), path)
        checked = sum(is_checked(cell) for cell in nb.cells)
        print(f"saved {path} ({checked} checked cells keep their outputs)")
    return status


def _student_out(parser, args) -> Path:
    """The student copies' folder: --out, or the one argument that is not a notebook (`student
    OUT`)."""
    folders = [path for path in args.notebooks if path.suffix != ".ipynb"]
    args.notebooks = [path for path in args.notebooks if path.suffix == ".ipynb"]
    if not folders:
        return args.out or STUDENT_DIR
    if len(folders) > 1 or args.out is not None:
        parser.error(f"{str(folders[-1])!r} is not a notebook (.ipynb), and the output folder is "
                     "given once: "
                     "tools/notebooks.py student [NOTEBOOK.ipynb ...] [OUT], or --out OUT")
    return folders[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("strip", "clear outputs except in checked cells"),
                       ("check", "exit 1 if a notebook is not stripped")):
        command = commands.add_parser(name, help=text)
        command.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    command = commands.add_parser("execute", help="run notebooks with the smoke preset, save them "
                                                  "stripped")
    command.add_argument("notebooks", nargs="+", type=Path)
    command.add_argument("--cell-timeout", type=int, default=1800, help="seconds per cell (default "
                                                                        "1800)")
    force = "overwrite a file changed since this command last wrote it"
    command = commands.add_parser("student", help="write the notebooks without their solutions")
    command.add_argument("notebooks", nargs="*", type=Path,
                         help="default: notebooks/*.ipynb; an argument that is not a .ipynb file "
                              "is the output folder")
    command.add_argument("--out", type=Path, default=None,
                         help=f"output folder (default: {STUDENT_DIR.relative_to(REPO)}/)")
    command.add_argument("--force", action="store_true", help=force)
    command = commands.add_parser("nbgrader", help="write an nbgrader course folder: the notebooks "
                                                   "as assignments")
    command.add_argument("out", type=Path, help="the course folder (nbgrader_config.py, source/)")
    command.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    command.add_argument("--force", action="store_true", help=force)
    command.add_argument("--seed", type=int, default=None,
                         help="draw the hidden tests with this seed (default: the course's, in "
                              f"OUT/{COURSE_RECORD}, "
                              "drawn at random by the first run)")
    command = commands.add_parser("links", help="point the badges, install cells and links at the "
                                                "repository "
                                                f"of pyproject.toml's [{REPOSITORY_TABLE}], or at "
                                                "a fork's")
    command.add_argument("--repo", help="OWNER/NAME of the repository (a fork), written into "
                                        "pyproject.toml")
    command.add_argument("--branch", help="the branch the links point at, written into "
                                          "pyproject.toml")
    command.add_argument("--check", action="store_true", help="write nothing; exit 1 if a link is "
                                                              "not generated")
    command.add_argument("--force", action="store_true", help=force + " (the student copies)")
    command = commands.add_parser("timings", help="write README's and notebook 00's run times from "
                                                  "notebooks/timings.json")
    command.add_argument("--junit", type=Path, help="first take the smoke times from the JUnit "
                                                    "reports in this folder")
    command.add_argument("--how",
                         help="how the JUnit reports were made (written into timings.json)")
    command.add_argument("--check", action="store_true", help="write nothing; exit 1 if a figure "
                                                              "differs")
    args = parser.parse_args(argv)

    if args.command == "timings":
        return update_timings(REPO, args.junit, args.how, args.check)
    if args.command == "links":
        try:
            return links(REPO, args.repo, args.branch, args.check, args.force)
        except ValueError as error:
            parser.error(str(error))
    out = _student_out(parser, args) if args.command == "student" else None
    paths = args.notebooks or default_notebooks()
    if not paths:
        print(f"no notebooks in {NOTEBOOK_DIR}")
        return 0
    if args.command == "strip":
        return strip(paths)
    if args.command == "check":
        return check(paths)
    if args.command == "student":
        return write_students(paths, out, args.force)
    if args.command == "nbgrader":
        return write_nbgrader(paths, args.out, args.force, args.seed)
    return execute(paths, args.cell_timeout)


if __name__ == "__main__":
    sys.exit(main())
