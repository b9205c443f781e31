"""The GitHub Actions workflow runs what .ci/run runs, on every pull request, and the README shows
its badge."""
import re

from repository import REPO

WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"


def steps() -> list[str]:
    """The `run:` lines of the workflow, in order."""
    return re.findall(r"^\s+run: (.+)$", WORKFLOW.read_text(), re.MULTILINE)


def test_the_workflow_runs_ci_run_after_making_the_venv_and_downloading_cifar10():
    run = steps()
    assert run[-1] == "bash .ci/run"
    assert run.index("make data") < run.index("bash .ci/run") and run[0].startswith("make venv")
    text = WORKFLOW.read_text()
    assert (re.search(r"^  pull_request:", text, re.MULTILINE)
            and re.search(r"branches: \[main\]", text))
    assert "CLCOURSE_DATA: ${{ github.workspace }}/data" in text


def test_ci_run_installs_and_tests_as_the_readme_says():
    script = (REPO / ".ci" / "run").read_text()
    for phase in ("phase install make venv", "phase test make test",
                  "phase nbgrader make test-nbgrader"):
        assert phase in script


def test_the_readme_shows_the_workflows_badge():
    badge = re.search(r"\[!\[CI\]\((\S+/actions/workflows/(\S+?)/badge\.svg\S*)\)\]",
                      (REPO / "README.md").read_text())
    assert badge and badge.group(2) == WORKFLOW.name
