"""The pages that explain the course cannot go stale silently: the README's package map names every
module of the package and nothing else, every relative link (and anchor) in the documentation
resolves, every link into the repository names a file it has, and every file path the pages name in
backticks exists."""
import pkgutil
import re
from pathlib import Path

import pytest
from repository import REPO, load_script

import clcourse

PAGES = sorted({REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "CHANGELOG.md",
                REPO / "bench" / "README.md", REPO / "data" / "README.md",
                *(REPO / "docs").glob("*.md")})
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<(?:a|img)\s[^>]*(?:href|src)=\"([^\"]+)\"")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
# A path of the repository in backticks: a tracked top-level folder, then path characters, ending in
# a file name with a suffix (`tests/test_losses.py`); `clcourse/ledger/<scale>.json` is a pattern.
FOLDERS = ("clcourse", "tests", "tools", "bench", "notebooks", "student", "docs", ".ci", ".github")
NAMED_FILE = re.compile(rf"^(?:{'|'.join(map(re.escape, FOLDERS))})/[\w./-]*\.\w+$")
PLACEHOLDER = re.compile(r"\bNN_|\.\.\.")


def page_id(page: Path) -> str:
    return page.relative_to(REPO).as_posix()


def prose(page: Path) -> str:
    """The page without its fenced code blocks (code is not checked for links)."""
    return FENCE.sub("", page.read_text())


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", prose(page), re.MULTILINE):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    """The targets of the page's links and images outside code (code shows markdown as text)."""
    return [a or b for a, b in LINK.findall(INLINE_CODE.sub("", prose(page)))]


def test_the_pages_are_found():
    names = {page_id(path) for path in PAGES}
    assert {"README.md", "CONTRIBUTING.md", "docs/teaching.md", "docs/install.md",
            "bench/README.md"} <= names
    assert all(path.is_file() for path in PAGES)


def test_anchors_follow_githubs_rule():
    assert slug("Notebooks, stripped outputs and checked cells") == \
        "notebooks-stripped-outputs-and-checked-cells"
    assert slug("What `make lab` and `make test` install") == "what-make-lab-and-make-test-install"
    assert "three-ways-to-run-a-class" in anchors(REPO / "docs" / "teaching.md")


# ---- the README's package map --------------------------------------------------------------------

def package_map() -> list[str]:
    """The first column of the table in the README's "The package" section."""
    readme = (REPO / "README.md").read_text()
    section = re.search(r"^## The package\n(.*?)(?=^## )", readme, re.MULTILINE | re.DOTALL)
    assert section, "README.md has no '## The package' section"
    return re.findall(r"^\| `(\w+)` \|", section.group(1), re.MULTILINE)


def test_the_package_map_names_every_module_once_and_nothing_else():
    modules = {info.name for info in pkgutil.iter_modules(clcourse.__path__)
               if not info.name.startswith("_")}
    listed = package_map()
    assert len(listed) == len(set(listed)), f"the package map lists a module twice: {listed}"
    missing, unknown = sorted(modules - set(listed)), sorted(set(listed) - modules)
    assert not missing and not unknown, (f"the README's package map misses {missing} and names "
                                         f"{unknown}, which clcourse does not have")


# ---- links ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):          # https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file or folder")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with the anchor #{anchor}")
    assert not broken, f"{page_id(page)}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_link_into_the_repository_names_a_file_it_has(page):
    repository = load_script(REPO / "tools" / "notebooks.py").read_repository()
    prefix = re.escape(f"https://github.com/{repository.slug}/")
    branch = re.escape(repository.branch)
    named = re.findall(rf"{prefix}(?:blob|tree)/{branch}/([^\s)#\"'>]+)", prose(page))
    missing = [path for path in named if not (REPO / path).exists()]
    assert not missing, f"{page_id(page)} links to what the repository lacks: {missing}"


# ---- paths named in the text ---------------------------------------------------------------------

def test_named_file_detection():
    tokens = ("tests/test_losses.py", "clcourse/ledger/<scale>.json", "runs/x/last.pt",
              "notebooks/NN_topic.ipynb", "bench/results/", "tools/notebooks.py links")
    named = [token for token in tokens if NAMED_FILE.match(token) and not PLACEHOLDER.search(token)]
    assert named == ["tests/test_losses.py"]


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_file_the_page_names_exists(page):
    missing = sorted({token for token in INLINE_CODE.findall(prose(page))
                      if NAMED_FILE.match(token) and not PLACEHOLDER.search(token)
                      and not (REPO / token).exists()})
    assert not missing, f"{page_id(page)} names files that do not exist: {missing}"
