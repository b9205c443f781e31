"""The instructors' and the students' commands of docs/teaching.md, run as written on notebook 01 in
a fresh copy of the repository: the course folder, the exchange, fetch and submit, collect,
autograde, feedback, grades.

    make test-nbgrader        # this and tests/e2e_nbgrader.py (CI runs it)

The blocks that docs/teaching.md marks `<!-- tested: NAME -->` run in bash, each from where the page
says: the instructor's from the root of a copy of this checkout (its tracked and untracked, not
ignored, files: what a fresh clone of it holds), the student's in a folder of their own. Two things
differ from a new machine, both said here: `make` and `.venv/` name the environment running this
test (VENV=...), which has the course and nbgrader already (a fresh clone's `make nbgrader` would
install them there), and the exchange is a temporary folder, made as the page says to make
/srv/nbgrader/exchange (NBGRADER_EXCHANGE for the instructor, `c.Exchange.root` for the student).
Between fetching and submitting, the student fills in the solutions.
Not collected by `pytest tests/` (nbgrader is an instructor extra, and this takes a few minutes):
run it by path."""
import csv
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from repository import REPO, load_script

pytest.importorskip("nbgrader", reason="nbgrader is not installed: pip install -e '.[instructor]'")
from e2e_nbgrader import fill_solutions  # noqa: E402

tool = load_script(REPO / "tools" / "notebooks.py")
PAGE = REPO / "docs" / "teaching.md"
ASSIGNMENT = "01_simclr_from_scratch"
VENV = Path(sys.prefix)
BLOCK = re.compile(r"<!-- tested: (\w+)[^>]*-->\n```bash\n(.*?)```", re.DOTALL)


def documented_blocks() -> dict[str, str]:
    return dict(BLOCK.findall(PAGE.read_text()))


def as_run_here(block: str) -> str:
    """The block with `make TARGET` and `.venv/` naming this test's environment."""
    block = re.sub(r"^make (\S+)", rf"make \1 VENV={VENV}", block, flags=re.MULTILINE)
    return block.replace(".venv/", f"{VENV}/")


def run(block: str, cwd: Path, env: dict) -> str:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"in {cwd}:\n{block}\nfailed:\n{output[-6000:]}"
    return output


def fresh_copy(destination: Path) -> Path:
    """The files a clone of this checkout would hold (tracked, and untracked
    but not ignored), times kept."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    return destination


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """Every documented block run in order; returns the folders and what the commands printed."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to copy")
    for stamp in (".clcourse-installed", ".clcourse-instructor"):
        if not (VENV / stamp).is_file():
            pytest.skip(f"needs the environment `make nbgrader` makes ({VENV / stamp} is missing)")
    blocks = documented_blocks()
    assert set(blocks) == {"instructor", "student", "grading", "feedback"}, sorted(blocks)
    root = tmp_path_factory.mktemp("teaching")
    clone, student = fresh_copy(root / "clcourse"), root / "student"
    exchange, student_config = root / "exchange", root / "student-jupyter"
    student.mkdir()
    student_config.mkdir()
    # the page's setup, elsewhere
    subprocess.run(["install", "-d", "-m", "1777", str(exchange)], check=True)
    (student_config / "nbgrader_config.py").write_text("c = get_config()\nc.Exchange.root = "
                                                       f"{str(exchange)!r}\n")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("CLCOURSE_", "NBGRADER_"))}
    env.pop("MPLBACKEND", None)        # the grading kernels plot as students' do
    env.pop("VIRTUAL_ENV", None)
    env.update(CLCOURSE_DATA=os.environ.get("CLCOURSE_DATA") or str(REPO / "data"))
    instructor_env = dict(env, NBGRADER_EXCHANGE=str(exchange))
    student_env = dict(env, JUPYTER_CONFIG_DIR=str(student_config),
                       PATH=f"{VENV / 'bin'}{os.pathsep}{env['PATH']}")

    printed = {"instructor": run(as_run_here(blocks["instructor"]), clone, instructor_env)}
    fetch, *rest = [line for line in blocks["student"].splitlines() if line.strip()
                    and not line.startswith("#")]
    printed["student"] = run(fetch, student, student_env)
    fetched = student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    source = nbformat.read(clone / "classroom" / "source" / ASSIGNMENT / fetched.name, as_version=4)
    nbformat.write(fill_solutions(nbformat.read(fetched, as_version=4), source), fetched)
    printed["student"] += run("\n".join(rest), student, student_env)
    printed["grading"] = run(as_run_here(blocks["grading"]), clone, instructor_env)
    printed["feedback"] = run(blocks["feedback"], student, student_env)
    return dict(clone=clone, classroom=clone / "classroom", student=student, exchange=exchange,
                printed=printed, source=source)


def test_the_commands_run_and_the_solutions_get_every_autograded_point(course):
    rows = list(csv.DictReader((course["classroom"] / "grades.csv").open()))
    tests = [cell for cell in course["source"].cells
             if cell.metadata.get("nbgrader", {}).get("grade")
             and not cell.metadata["nbgrader"].get("solution")]
    assert len(rows) == 1 and rows[0]["assignment"] == ASSIGNMENT
    assert float(rows[0]["raw_score"]) == len(tests) * tool.EXERCISE_POINTS > 0


def test_the_student_got_their_feedback(course):
    feedback = list((course["student"] / ASSIGNMENT / "feedback").rglob(f"{ASSIGNMENT}.html"))
    assert len(feedback) == 1 and "test_info_nce_loss" in feedback[0].read_text()


def test_no_training_run_stays_in_autograded_or_feedback(course):
    graded = [path for folder in ("autograded", "feedback")
              for path in (course["classroom"] / folder).rglob("*")]
    assert graded and not [path for path in graded if path.name in ("runs", "last.pt")]


def test_the_exchange_keeps_its_permissions_and_the_hidden_tests_raise_no_warning(course):
    mode = stat.S_IMODE(course["exchange"].stat().st_mode)
    assert mode == 0o1777, oct(mode)
    printed = "\n".join(course["printed"].values())
    assert "Creating exchange directory" not in printed
    assert not re.search(r"Attribute 'checksum' for cell test_", printed)
