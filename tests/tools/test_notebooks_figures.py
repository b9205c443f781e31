"""Each method notebook shows its method's diagram where the method is introduced, from
notebooks/figures/ (drawn by tools/diagrams.py), through the link `tools/notebooks.py links`
generates (the file in the repository, so that it shows on Colab and in every copy)."""
import re

import pytest
from repository import NOTEBOOKS, REPO, load_script

tool = load_script(REPO / "tools" / "notebooks.py")
REPOSITORY = tool.read_repository()
DIAGRAMS = {"01": "simclr", "03": "moco_mochi", "04": "moco_mochi", "05": "clae", "06": "cacr",
            "07": "sce", "08": "robustness", "09": "cka"}


def figure_links(path):
    markdown = "\n".join(cell.source for cell in tool.read(path).cells
                         if cell.cell_type == "markdown")
    return [link for link in re.findall(r"!\[[^\]]+\]\(([^)\s]+\.svg)\)", markdown)
            if link != tool.COLAB_BADGE_IMAGE]


@pytest.mark.parametrize("number, diagram", sorted(DIAGRAMS.items()))
def test_each_method_notebook_shows_its_diagram(number, diagram):
    path = next(p for p in NOTEBOOKS if p.name.startswith(f"{number}_"))
    assert REPOSITORY.raw(f"notebooks/figures/{diagram}.svg") in figure_links(path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_diagram_link_is_generated_and_names_a_drawn_file(path):
    for link in figure_links(path):
        name = link.rsplit("/", 1)[-1]
        assert link == REPOSITORY.raw(f"notebooks/figures/{name}"), \
            f"{link}: run python tools/notebooks.py links"
        assert (REPO / "notebooks" / "figures" / name).is_file(), \
            f"{name} is not in notebooks/figures/"


def test_a_relative_or_foreign_figure_link_is_rewritten_for_this_repository():
    fork = tool.Repository("someone/fork", "dev")
    text = "![a](figures/simclr.svg) ![b](https://raw.githubusercontent.com/x/y/main/notebooks/figures/cka.svg)"
    assert tool.with_figure_links(text, fork) == (
        "![a](https://raw.githubusercontent.com/someone/fork/dev/notebooks/figures/simclr.svg) "
        "![b](https://raw.githubusercontent.com/someone/fork/dev/notebooks/figures/cka.svg)")
