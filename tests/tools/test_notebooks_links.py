"""The repository is written in one place, pyproject.toml's [tool.clcourse]: every link to it (Colab
badges, the Colab install cell, the student copies' badges, the README's clone line, CI badge and
Colab cell, CITATION.cff) is generated from it by `tools/notebooks.py links`, which also moves them
all to a fork (--repo, --branch)."""
import re
import shutil
import subprocess

import nbformat
import pytest
from repository import NOTEBOOKS, REPO, load_script

tool = load_script(REPO / "tools" / "notebooks.py")
REPOSITORY = tool.read_repository()
OLD = tool.Repository("clcourse/clcourse", "main")
FORK = tool.Repository("someone/clcourse-fork", "spring-2027")


def links_to(repository, text: str) -> list[str]:
    """The links in `text` to `repository` (GitHub pages, raw files, Pages, Colab),
    each to the end of its URL."""
    owner, name = repository.slug.split("/")
    slug = re.escape(repository.slug)
    pattern = (r"(?:github\.com/|githubusercontent\.com/|colab\.research\.google\.com/github/)"
               rf"{slug}(?![\w-])(?!\.(?!git\b)\w)[^\s)\"'>\]]*"
               rf"|{re.escape(owner)}\.github\.io/{re.escape(name)}\b[^\s)\"'>\]]*")
    return re.findall(pattern, text)


def tracked_files() -> list[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to list the tracked files")
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout
    return [path for path in listed.splitlines() if (REPO / path).is_file()]


def generated(path: str) -> bool:
    """Whether `links` writes the links of this file (the repository's own
    definition is pyproject.toml)."""
    return (path.startswith(("notebooks/", "student/")) and path.endswith(".ipynb")) or any(
        re.fullmatch(pattern.replace(".", r"\.").replace("*", r"[^/]*"), path)
        for pattern in tool.LINKED_TEXT_FILES)


# ---- the definition and what is made of it -------------------------------------------------------

def test_the_definition_is_read_from_pyproject():
    text = (REPO / "pyproject.toml").read_text()
    assert f'repository = "{REPOSITORY.slug}"' in text and f'branch = "{REPOSITORY.branch}"' in text
    assert REPOSITORY.requirement == \
        f"clcourse @ git+https://github.com/{REPOSITORY.slug}@{REPOSITORY.branch}"
    assert REPOSITORY.colab("student/a.ipynb") == \
        (f"https://colab.research.google.com/github/{REPOSITORY.slug}/blob/"
         f"{REPOSITORY.branch}/student/a.ipynb")


@pytest.mark.parametrize("slug, branch, problem", [
    ("clcourse", "main", "repository must be OWNER/NAME"),
    ("https://github.com/a/b", "main", "repository must be OWNER/NAME"),
    ("a/b/c", "main", "repository must be OWNER/NAME"),
    ("a/b", "", "branch must be a git branch name"),
    ("a/b", "a b", "branch must be a git branch name"),
    ("a/b", "x/../y", "branch must be a git branch name"),
])
def test_a_bad_repository_or_branch_is_refused_naming_it(slug, branch, problem):
    with pytest.raises(ValueError,
                       match=problem + ".*" + re.escape(repr(slug if "repository" in problem
                                                             else branch))):
        tool.Repository(slug, branch)


def test_the_command_line_refuses_a_bad_fork_before_writing(capsys):
    with pytest.raises(SystemExit):
        tool.main(["links", "--repo", "not-a-slug"])
    assert "repository must be OWNER/NAME" in capsys.readouterr().err


def test_retarget_moves_every_kind_of_link_and_leaves_other_repositories_alone():
    # Written with {slug} for the repository, so that this file holds no link to it.
    text = ("git clone https://github.com/{slug}.git\n"
            "[![CI](https://github.com/{slug}/actions/workflows/ci.yml/badge.svg?branch=main)]"
            "(https://github.com/{slug}/actions/workflows/ci.yml)\n"
            '!pip install -q "clcourse @ git+https://github.com/{slug}@main"\n'
            "https://colab.research.google.com/github/{slug}/blob/main/student/00_setup_and_tour.ipynb\n"
            "[the solutions](https://github.com/{slug}/tree/main/notebooks). "
            "Issues: https://github.com/{slug}/issues.\n"
            "Also https://github.com/{slug}-data and "
            "https://github.com/facebookresearch/moco/blob/main/x")
    text = text.format(slug=OLD.slug)
    moved = tool.retarget(text, OLD, FORK)
    assert moved == text.replace("clcourse/clcourse.git", "someone/clcourse-fork.git") \
        .replace("clcourse/clcourse/actions", "someone/clcourse-fork/actions") \
        .replace("badge.svg?branch=main", "badge.svg?branch=spring-2027") \
        .replace("clcourse/clcourse@main", "someone/clcourse-fork@spring-2027") \
        .replace("clcourse/clcourse/blob/main", "someone/clcourse-fork/blob/spring-2027") \
        .replace("clcourse/clcourse/tree/main", "someone/clcourse-fork/tree/spring-2027") \
        .replace("clcourse/clcourse/issues", "someone/clcourse-fork/issues")
    assert "clcourse/clcourse-data" in moved and "facebookresearch/moco/blob/main" in moved
    assert tool.retarget(moved, FORK, OLD) == text
    assert tool.retarget(text, OLD, OLD) == text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_each_notebooks_badge_note_and_install_cell_are_generated(path):
    nb = tool.read(path)
    assert tool.with_links(nb, path.name, "solutions", REPOSITORY) == nb, \
        "the badge, its note or the Colab install cell is not what " \
        "`python tools/notebooks.py links` writes"


# ---- no copy anywhere else -----------------------------------------------------------------------

def test_no_file_links_to_the_repository_but_those_generated_from_its_definition():
    copies = {}
    for path in tracked_files():
        if generated(path) or path == "pyproject.toml":
            continue
        try:
            text = (REPO / path).read_text()
        except UnicodeDecodeError:
            continue
        if links_to(REPOSITORY, text) or links_to(OLD, text):
            copies[path] = links_to(REPOSITORY, text) + links_to(OLD, text)
    assert not copies, ("links to the repository written out by hand (generate them from "
                        "pyproject.toml's [tool.clcourse] with tools/notebooks.py, or add the "
                        f"file to LINKED_TEXT_FILES): {copies}")


def test_every_generated_link_names_the_defined_branch_and_links_check_passes(capsys):
    for path in tracked_files():
        if not generated(path):
            continue
        for link in links_to(REPOSITORY, (REPO / path).read_text()):
            named = re.search(r"/(?:blob|tree)/([^/]+)/|@([\w./-]+?)(?:\"|$)|\?branch=([\w./-]+)",
                              link)
            if named:
                assert REPOSITORY.branch in named.groups(), \
                    f"{path}: {link} does not name {REPOSITORY.branch}"
    assert tool.main(["links", "--check"]) == 0, capsys.readouterr().out


# ---- a fork --------------------------------------------------------------------------------------

def fake_checkout(root):
    """The files `links` reads and writes, in a folder of their own: pyproject.toml,
    two notebooks, linked text."""
    (root / "notebooks").mkdir(parents=True)
    for path in NOTEBOOKS[:2]:
        shutil.copy(path, root / "notebooks" / path.name)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / "docs").mkdir()
    readme = (f"git clone {REPOSITORY.github()}.git\n"
              f"[open]({REPOSITORY.colab('student/' + NOTEBOOKS[0].name)})\n"
              '!pip install -q '
              f'"{REPOSITORY.requirement}"\nhttps://github.com/facebookresearch/moco\n')
    (root / "README.md").write_text(readme)
    (root / "docs" / "teaching.md").write_text(
        f"[source]({REPOSITORY.github('tools/notebooks.py')})\n")
    (root / "CITATION.cff").write_text(f'repository-code: "{REPOSITORY.github()}"\n')
    return readme


def test_a_fork_moves_every_link_with_one_command(tmp_path):
    readme = fake_checkout(tmp_path)
    assert tool.links(tmp_path, FORK.slug, FORK.branch) == 0
    assert tool.read_repository(tmp_path / "pyproject.toml") == FORK
    everything = "\n".join(path.read_text() for path in tmp_path.rglob("*") if path.is_file())
    assert not links_to(REPOSITORY, everything)
    assert (tmp_path / "README.md").read_text() == tool.retarget(readme, REPOSITORY, FORK)
    assert FORK.requirement in (tmp_path / "README.md").read_text()
    for path in NOTEBOOKS[:2]:
        solutions = tool.read(tmp_path / "notebooks" / path.name)
        student = tool.read(tmp_path / "student" / path.name)
        assert FORK.colab(f"notebooks/{path.name}") in solutions.cells[0].source
        assert FORK.colab(f"student/{path.name}") in student.cells[0].source
        install = [cell.source for cell in student.cells + solutions.cells
                   if FORK.requirement in cell.source]
        assert len(install) == 2
        original = tool.read(path)   # nothing but the links changed
        assert [cell.source for cell in solutions.cells[1:]] == [
            cell.source for cell in tool.with_links(original, path.name, "solutions",
                                                    FORK).cells[1:]]
    assert tool.links(tmp_path, check=True) == 0
    assert tool.links(tmp_path, OLD.slug, OLD.branch) == 0   # and back
    assert (tmp_path / "README.md").read_text() == readme


def test_links_check_names_a_stale_file(tmp_path, capsys):
    fake_checkout(tmp_path)
    assert tool.links(tmp_path) == 0
    nb = tool.read(tmp_path / "notebooks" / NOTEBOOKS[0].name)
    nb.cells[0].source = nb.cells[0].source.replace(REPOSITORY.slug, "elsewhere/copy")
    nbformat.write(nb, tmp_path / "notebooks" / NOTEBOOKS[0].name)
    capsys.readouterr()
    assert tool.links(tmp_path, check=True) == 1
    assert f"{tmp_path / 'notebooks' / NOTEBOOKS[0].name}: its links" in capsys.readouterr().out
