"""The method diagrams in notebooks/figures/ are what tools/diagrams.py draws: the test draws them
again and the committed files must match, so a change to the script without its output (or an SVG
edited by hand) fails. The drawing is deterministic, ignores the caller's matplotlib settings and
keeps text as text."""
import html
import re

import matplotlib
import matplotlib.style
import pytest
from repository import REPO, load_script

tool = load_script(REPO / "tools" / "diagrams.py")
FIGURES = REPO / "notebooks" / "figures"
REDRAW = "run python tools/diagrams.py (make diagrams) and commit notebooks/figures/"


def drawn_with(svg: str) -> str | None:
    """The matplotlib version that wrote an SVG file, from its metadata."""
    match = re.search(r"<dc:title>Matplotlib v([^,<]+)", svg)
    return match.group(1) if match else None


def labels(svg: str) -> list[str]:
    """What a diagram says: its labels in drawing order, a formula by its source (matplotlib writes
    it in a comment before the formula's glyphs)."""
    found = []
    for group in re.findall(r'<g id="text_\d+">(.*?)</g>\n', svg, flags=re.DOTALL):
        formula = re.search(r"<!-- (.*?) -->", group, flags=re.DOTALL)
        texts = re.findall(r"<text[^>]*>(.*?)</text>", group)
        found.append(html.unescape(formula.group(1) if formula else " ".join(texts)))
    return found


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    out = tmp_path_factory.mktemp("diagrams")
    tool.draw(list(tool.DIAGRAMS), out)
    return out


def test_the_committed_diagrams_are_the_drawn_ones(drawn):
    """Byte for byte when the committed files come from the installed matplotlib. Another version
    (CI installs the newest) may write the same drawing with other numbers: then the labels must
    still be the same."""
    installed = matplotlib.__version__
    for name in tool.DIAGRAMS:
        path = FIGURES / f"{name}.svg"
        assert path.exists(), f"{path.relative_to(REPO)} is missing: {REDRAW}"
        committed = path.read_text(encoding="utf-8")
        fresh = (drawn / f"{name}.svg").read_text(encoding="utf-8")
        if drawn_with(committed) == installed:
            assert committed == fresh, f"{path.relative_to(REPO)} is out of date: {REDRAW}"
        else:
            assert labels(committed) == labels(fresh), (
                f"{path.relative_to(REPO)} (matplotlib {drawn_with(committed)}) does not say what "
                f"tools/diagrams.py draws (matplotlib {installed}): {REDRAW}")


def test_the_drawing_is_deterministic_whatever_the_callers_settings(drawn, tmp_path):
    """The same bytes again, drawn under another style, font size, font type and hash salt."""
    with matplotlib.rc_context():
        matplotlib.style.use("ggplot")
        matplotlib.rcParams.update({"font.size": 17, "svg.hashsalt": None, "svg.fonttype": "path",
                                    "lines.linewidth": 4.0})
        tool.draw(list(tool.DIAGRAMS), tmp_path)
    for name in tool.DIAGRAMS:
        assert (tmp_path / f"{name}.svg").read_bytes() == (drawn / f"{name}.svg").read_bytes(), name


def test_text_stays_text_and_the_files_stay_small(drawn):
    for name in tool.DIAGRAMS:
        svg = (drawn / f"{name}.svg").read_text(encoding="utf-8")
        assert "<text" in svg and "DejaVuSans-" not in svg, f"{name}: text drawn as glyph outlines"
        assert "<dc:date>" not in svg and "<image" not in svg, name
        assert len(svg.encode()) < 80_000, f"{name}: {len(svg.encode())} bytes"


def test_every_character_is_unicode_a_browser_can_render(drawn):
    """Formulas keep to glyphs with Unicode code points: matplotlib draws some symbols (\\mathcal,
    \\prime) from fonts with their own encodings (Computer Modern, STIX's private use area), which a
    browser renders as a wrong character or an empty box."""
    for name in tool.DIAGRAMS:
        svg = (drawn / f"{name}.svg").read_text(encoding="utf-8")
        families = set(re.findall(r"font-family: '([^']+)'", svg))
        assert not {f for f in families if f.startswith(("cm", "STIXNonUnicode"))}, (name, families)
        assert not re.search("[\ue000-\uf8ff]", svg), f"{name}: a private-use character"


def test_labels_reads_plain_text_and_formulas(drawn):
    said = labels((drawn / "moco_mochi.svg").read_text(encoding="utf-8"))
    assert said[0] == "MoCo v2: a queue of negatives and a momentum encoder"
    assert r"$\theta_k \leftarrow m\,\theta_k + (1 - m)\,\theta_q$" in said
    assert "they are constants (detached, the q in h′ too), never enqueued." in said


def test_the_numbers_drawn_are_the_methods(drawn):
    """SCE's bars: lambda on the key, and the rest of the target and all of the prediction sum to 1.
    CACR's weights: the farthest positive and the nearest negative weigh most."""
    target, prediction = tool.sce_distributions()
    assert target[0] == tool.SCE_LAMBDA
    assert sum(target) == pytest.approx(1, abs=0.01)
    assert sum(prediction) == pytest.approx(1, abs=0.01)
    said = labels((drawn / "cacr.svg").read_text(encoding="utf-8"))
    attraction, repulsion = said[said.index("0.02"):][:4], said[said.index("0.64"):][:4]
    assert attraction == ["0.02", "0.04", "0.16", "0.77"]   # at 25, 55, 95, 150 degrees
    assert repulsion == ["0.64", "0.27", "0.07", "0.03"]    # at 35, 70, 115, 160 degrees


def test_the_command_line_draws_only_the_diagrams_it_is_given(tmp_path, capsys):
    assert tool.main(["sce", "cka", "--out", str(tmp_path)]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cka.svg", "sce.svg"]
    with pytest.raises(SystemExit):
        tool.main(["simclr", "moco", "--out", str(tmp_path)])
    assert "unknown diagram 'moco'" in capsys.readouterr().err
