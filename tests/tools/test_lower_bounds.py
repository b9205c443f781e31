"""The lower bounds `make test-oldest` pins (tools/lower_bounds.py): every one pinned and an
unbounded requirement named, the course's own read, and the Makefile's use of them in a venv of its
own."""
from repository import REPO, load_script, make_dry_run

bounds = load_script(REPO / "tools" / "lower_bounds.py")


def test_make_test_oldest_pins_every_lower_bound_in_its_own_venv(tmp_path):
    venv = tmp_path / "oldest"
    lines = make_dry_run("test-oldest", f"OLDEST_VENV={venv}")
    assert f"tools/lower_bounds.py --with pytest > {venv}/lower-bounds.txt" in lines
    assert f"{venv}/bin/python -m pip install -c {venv}/lower-bounds.txt torch torchvision" in lines
    assert f"{venv}/bin/python -m pip install -c {venv}/lower-bounds.txt -e . pytest" in lines
    tests = next(line for line in lines.splitlines() if "-m pytest" in line)
    assert "tests/test_losses.py" in tests and "tests/tools/test_notebooks.py" not in tests


PYPROJECT = '''[project]
name = "x"
dependencies = [
    "torch>=2.3",            # a comment
    "numpy >= 1.23, != 1.24.0",
    "tqdm",
]

[project.optional-dependencies]
test = [
    "pytest>=7.4",
    "nbval>=0.11",
]
dev = [
    "clcourse[test]",
    "jupytext>=1.16",
]

[tool.other]
dependencies = ["ignored>=1"]
'''


def test_every_lower_bound_is_pinned_and_an_unbounded_requirement_named(tmp_path, capsys):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(PYPROJECT)
    assert bounds.main(["--pyproject", str(pyproject), "--with", "pytest"]) == 0
    printed = capsys.readouterr()
    assert printed.out.split() == ["torch==2.3", "numpy==1.23", "pytest==7.4"]
    assert "'tqdm' has no lower bound" in printed.err
    assert bounds.main(["--pyproject", str(pyproject), "--extra", "dev"]) == 0
    assert capsys.readouterr().out.split() == ["torch==2.3", "numpy==1.23", "pytest==7.4",
                                               "nbval==0.11", "jupytext==1.16"]


def test_the_courses_own_lower_bounds_are_read(capsys):
    assert bounds.main([]) == 0
    pins = dict(line.split("==") for line in capsys.readouterr().out.split())
    assert pins["umap-learn"] == "0.5.8" and pins["matplotlib"] == "3.8.4" and pins["torch"] == \
        "2.4"
