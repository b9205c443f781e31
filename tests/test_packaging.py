"""Dependencies have lower bounds only (Colab and other hosted notebooks bring their own torch, and
a pin would make pip replace it), and the lower bounds admit what Colab ships. The version is
written once, and the licences are stated."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REQUIREMENT = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$")


def pyproject_requirements() -> list[str]:
    """Every quoted requirement of [project] dependencies and [project.optional-dependencies]."""
    text = (REPO / "pyproject.toml").read_text()
    requirements = text[text.index("\ndependencies = ["):text.index("\n[tool.")]
    return re.findall(r'^\s*"([^"]+)",', requirements, flags=re.MULTILINE)


def environment_requirements() -> list[str]:
    text = (REPO / "environment.yml").read_text()
    lines = text[text.index("\ndependencies:"):].splitlines()
    return [line.split("- ", 1)[1].strip() for line in lines
            if line.strip().startswith("- ") and not line.strip().startswith(("- -", "- pip:"))]


def bounds(requirement: str) -> tuple[str, list[tuple[str, str]]]:
    name, _, specifiers = REQUIREMENT.match(requirement).groups()
    return name.lower(), re.findall(r"(<=|>=|==|!=|~=|<|>|=)\s*([^,\s]+)", specifiers)


@pytest.mark.parametrize("requirement", pyproject_requirements() + environment_requirements())
def test_lower_bounds_only(requirement):
    name, specifiers = bounds(requirement)
    assert all(operator == ">=" for operator, _ in specifiers), (
        f"{requirement}: use lower bounds (>=) only")


def test_requirements_are_found():
    names = {bounds(r)[0] for r in pyproject_requirements()}
    assert {"torch", "torchvision", "ipywidgets", "umap-learn", "tqdm", "matplotlib", "nbval",
            "jupyterlab"} <= names


def test_ipywidgets_admits_colabs_7_7():
    (name, specifiers), = [bounds(r) for r in pyproject_requirements()
                           if bounds(r)[0] == "ipywidgets"]
    version = tuple(int(part) for part in specifiers[0][1].split("."))
    assert version <= (7, 7), "Colab ships ipywidgets 7.7; the widgets are written for 7.7 and 8.x"


def test_the_version_is_written_once_and_repeated_where_a_release_needs_it():
    import clcourse

    version = clcourse.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert ('dynamic = ["version"]' in pyproject
            and 'version = { attr = "clcourse.__version__" }' in pyproject)
    assert not re.search(r'^version\s*=\s*"', pyproject, re.MULTILINE), (
        "pyproject.toml writes a version of its own")
    citation = (REPO / "CITATION.cff").read_text()
    assert re.search(rf"^version: {re.escape(version)}$", citation, re.MULTILINE), (
        "CITATION.cff's version differs")
    changelog = (REPO / "CHANGELOG.md").read_text()
    sections = re.findall(r"^## \[(?:Unreleased\]: )?(\d+\.\d+\.\d+)", changelog, re.MULTILINE)
    assert version in sections, f"CHANGELOG.md has no section for {version}"


def test_the_licences_are_there_and_stated():
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    assert "Creative Commons Attribution 4.0" in (REPO / "LICENSE-text.md").read_text()
    readme = (REPO / "README.md").read_text()
    assert "[MIT licence](LICENSE)" in readme and "(CC BY 4.0)" in readme
