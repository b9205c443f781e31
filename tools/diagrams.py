#!/usr/bin/env python3
"""Draw the course's method diagrams, one SVG per method family, into notebooks/figures/.

    python tools/diagrams.py                # every diagram, into notebooks/figures/
    python tools/diagrams.py simclr cka     # only these
    python tools/diagrams.py --out DIR      # into another folder
    python tools/diagrams.py --png DIR      # also PNG previews, as wide as a notebook shows them

Matplotlib only. Every diagram has one style (`STYLE`): one font and font size, and one palette in
which each colour means one thing (`BLUE` trained by gradient, `ORANGE` the momentum encoder and no
gradient, `GREEN` positives and attraction, `RED` negatives, repulsion and attacks, `PURPLE` MoCHi's
synthetic points and CKA's chosen layers). The notation is the course's: f the backbone, g the
projector, z = g(f(x)) / ||g(f(x))||, tau the temperature.

The SVG files are committed; tests/tools/test_diagrams.py draws them again and compares. A run
writes the same bytes every time: matplotlib's ids come from a fixed hash salt, there is no date,
nothing is random, and every number drawn is computed from fixed inputs and rounded. Text stays text
(`svg.fonttype: none`): the notebook's font renders it, and the files stay small. Every figure is 9
inches wide, which a notebook shows at about 860 pixels.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Polygon, Rectangle, Wedge

REPO = Path(__file__).resolve().parent.parent
FIGURES = REPO / "notebooks" / "figures"
PREVIEW_DPI = 96    # a browser draws 1 pt as 96/72 px: a preview is as wide as the notebook's image

WIDTH = 9.0         # inches, every diagram
FONT_SIZE = 10      # points, every label
LINE = 0.19         # inches from one line of text to the next

INK = "#222222"
GREY = "#8c8c8c"
LIGHT = "#f4f4f4"
BLUE = "#0072b2"    # online / query encoder: trained by gradient
ORANGE = "#e69f00"  # momentum / key encoder: no gradient
GREEN = "#009e73"   # positives, attraction
RED = "#d55e00"     # negatives, repulsion, attacks
PURPLE = "#aa4499"  # MoCHi's synthetic negatives, CKA's chosen layers
DASHES = (0, (4, 2.5))

STYLE = {
    "font.family": "sans-serif",
    # DejaVu Sans ships with matplotlib, so the layout is the same on every machine; a browser
    # without it takes the next font.
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial"],
    "font.size": FONT_SIZE,
    "mathtext.fontset": "dejavusans",
    "svg.fonttype": "none",
    "svg.hashsalt": "clcourse-diagrams",
    "path.simplify": False,
}

SCENES = {  # one image and its views: the colours an augmentation gives it
    "base": {"sky": "#cfe6f5", "sun": "#f2c14e", "hill": "#5f8f55", "ground": "#b9cf8e"},
    "jitter": {"sky": "#f3dcc4", "sun": "#e58f3c", "hill": "#8a6f3d", "ground": "#d8c28a"},
    "cool": {"sky": "#c9d3f0", "sun": "#f0e08a", "hill": "#3f7a78", "ground": "#9fc2b0"},
    "gray": {"sky": "#dedede", "sun": "#c4c4c4", "hill": "#7a7a7a", "ground": "#b4b4b4"},
    "other": {"sky": "#e9e2f2", "sun": "#d9d9d9", "hill": "#8d6e9e", "ground": "#c9b3d1"},
}


def tint(color: str, amount: float = 0.14) -> str:
    """`color` mixed into white, `amount` of it."""
    return to_hex([1 - amount * (1 - c) for c in to_rgb(color)])


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    weights = [math.exp(v - top) for v in values]
    return [w / sum(weights) for w in weights]


def on_circle(cx, cy, r, degrees):
    return (cx + r * math.cos(math.radians(degrees)), cy + r * math.sin(math.radians(degrees)))


def normalized_mix(a_degrees, b_degrees, weight_a):
    """The angle of normalize(weight_a u_a + (1 - weight_a) u_b), u_a and u_b unit vectors at the
    given angles."""
    a, b = math.radians(a_degrees), math.radians(b_degrees)
    x = weight_a * math.cos(a) + (1 - weight_a) * math.cos(b)
    y = weight_a * math.sin(a) + (1 - weight_a) * math.sin(b)
    return math.degrees(math.atan2(y, x))


@dataclass(frozen=True)
class Box:
    """A rectangle on the canvas, by its centre and size, with the points arrows attach to."""
    x: float
    y: float
    w: float
    h: float

    @property
    def left(self):
        return (self.x - self.w / 2, self.y)

    @property
    def right(self):
        return (self.x + self.w / 2, self.y)

    @property
    def top(self):
        return (self.x, self.y + self.h / 2)

    @property
    def bottom(self):
        return (self.x, self.y - self.h / 2)

    def at(self, dx: float, dy: float):
        """The point (dx, dy) from the centre, in half widths and half heights."""
        return (self.x + dx * self.w / 2, self.y + dy * self.h / 2)


class Canvas:
    """A figure whose coordinates are inches from its bottom left corner."""

    def __init__(self, height: float):
        self.fig = Figure(figsize=(WIDTH, height))  # no pyplot: no backend, nothing global
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(0, WIDTH)
        self.ax.set_ylim(0, height)
        self.ax.set_aspect("equal")
        self.ax.axis("off")

    def text(self, x, y, text, color=INK, bold=False, ha="center", backdrop=False):
        """Text centred on (x, y) (`ha`: or starting or ending there). Each line is a text element
        of its own, so that a browser centres every line in its own font. `backdrop`: on white, over
        whatever it crosses."""
        lines = text.split("\n")
        top = y + (len(lines) - 1) * LINE / 2
        for i, line in enumerate(lines):
            self.ax.text(x, top - i * LINE, line, color=color, ha=ha, va="center",
                         fontweight="bold" if bold else "normal",
                         bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0}
                         if backdrop else None)

    def box(self, x, y, w, h, text="", color=INK, fill=None, dashed=False, title=True) -> Box:
        """A rounded box centred on (x, y), labelled with `text`, its first line bold (`title`)."""
        self.ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h,
                                         boxstyle="round,pad=0,rounding_size=0.08",
                                         facecolor=tint(color) if fill is None else fill,
                                         edgecolor=color, linewidth=1.2,
                                         linestyle="--" if dashed else "-"))
        lines = text.split("\n") if text else []
        top = y + (len(lines) - 1) * LINE / 2
        for i, line in enumerate(lines):
            self.text(x, top - i * LINE, line, bold=title and i == 0)
        return Box(x, y, w, h)

    def arrow(self, start, end, color=INK, label=None, at=0.5, offset=(0.0, 0.14), dashed=False,
              bend=0.0, width=1.3, head=9, label_color=None, ha="center"):
        """An arrow from `start` to `end` (bowed by `bend`), its label at the fraction `at` of the
        way, moved by `offset`."""
        self.ax.add_patch(FancyArrowPatch(start, end,
                                          arrowstyle="-|>,head_length=0.5,head_width=0.25",
                                          mutation_scale=head, shrinkA=0, shrinkB=0, color=color,
                                          linewidth=width, linestyle=DASHES if dashed else "-",
                                          connectionstyle=f"arc3,rad={bend}"))
        if label:
            x = start[0] + at * (end[0] - start[0]) + offset[0]
            y = start[1] + at * (end[1] - start[1]) + offset[1]
            self.text(x, y, label, color=label_color or color, ha=ha)

    def curve(self, start, end, color=INK, width=1.2, dashed=False, bend=0.5):
        """A line from `start` to `end`, bowed to its left by `bend` (to its right if negative)."""
        self.ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-", shrinkA=0, shrinkB=0,
                                          color=color, linewidth=width,
                                          linestyle=DASHES if dashed else "-",
                                          connectionstyle=f"arc3,rad={bend}"))

    def line(self, points, color=INK, width=1.2, dashed=False):
        xs, ys = zip(*points)
        self.ax.plot(xs, ys, color=color, linewidth=width, linestyle=DASHES if dashed else "-",
                     solid_capstyle="round")

    def dot(self, x, y, color, radius=0.06, ring=False, label=None, offset=(0.0, 0.17),
            ha="center"):
        """A point (`ring`: hollow), labelled in its colour."""
        self.ax.add_patch(Circle((x, y), radius, facecolor="white" if ring else color,
                                 edgecolor=color, linewidth=1.4, zorder=3))
        if label:
            self.text(x + offset[0], y + offset[1], label, color=color, ha=ha)

    def swatch(self, x, y, color):
        """A small square of `color` centred on (x, y), for a legend."""
        self.ax.add_patch(Rectangle((x - 0.07, y - 0.07), 0.14, 0.14, facecolor=color,
                                    edgecolor="none"))

    def sphere(self, x, y, r, label=None):
        """The unit sphere of the embeddings z, drawn as a circle."""
        self.ax.add_patch(Circle((x, y), r, facecolor="#f4f6f8", edgecolor=GREY, linewidth=1.0))
        if label:
            self.text(x, y - r - 0.2, label, color=GREY)

    def queue(self, left, y, slots, slot=0.18, height=0.3):
        """A queue of keys, its newest (left) darkest; returns its right end."""
        for i in range(slots):
            self.ax.add_patch(Rectangle((left + i * slot, y - height / 2), slot, height,
                                        facecolor=tint(ORANGE, 0.3 - 0.02 * i), edgecolor=ORANGE,
                                        linewidth=0.8))
        return left + slots * slot

    def picture(self, x, y, size=0.6, scene="base", zoom=1.0, centre=(0.5, 0.5), flip=False,
                noise=False) -> Box:
        """A small image: sky, sun, hills. A view is the same scene cropped (`zoom` about `centre`),
        flipped and recoloured (`scene`); `noise` lays a perturbation's pattern of signs over it."""
        colors = SCENES[scene]
        x0, y0 = x - size / 2, y - size / 2
        frame = Rectangle((x0, y0), size, size, facecolor=colors["sky"], edgecolor=INK,
                          linewidth=1.0)
        self.ax.add_patch(frame)

        def place(u, v):
            u, v = (u - centre[0]) * zoom + 0.5, (v - centre[1]) * zoom + 0.5
            return (x0 + (1 - u if flip else u) * size, y0 + v * size)

        hill = ((-0.2, 0.2), (0.3, 0.72), (0.58, 0.42), (0.78, 0.58), (1.2, 0.2))
        ground = ((-0.2, -0.2), (-0.2, 0.28), (1.2, 0.2), (1.2, -0.2))
        shapes = [
            Circle(place(0.74, 0.74), 0.12 * zoom * size, facecolor=colors["sun"],
                   edgecolor="none"),
            Polygon([place(u, v) for u, v in hill], facecolor=colors["hill"], edgecolor="none"),
            Polygon([place(u, v) for u, v in ground], facecolor=colors["ground"], edgecolor="none"),
        ]
        if noise:  # a fixed pattern: up, down or unchanged, as a signed gradient step leaves pixels
            cell = size / 6
            for i in range(6):
                for j in range(6):
                    sign = (i * 5 + j * 3 + i * j) % 3
                    if sign:
                        shapes.append(Rectangle((x0 + i * cell, y0 + j * cell), cell, cell,
                                                facecolor=RED if sign == 1 else BLUE,
                                                edgecolor="none", alpha=0.22))
        for shape in shapes:
            self.ax.add_patch(shape)
            shape.set_clip_path(frame)
        return Box(x, y, size, size)

    def save(self, path: Path, png_dir: Path | None = None):
        self.fig.savefig(path, format="svg", metadata={"Date": None})
        if png_dir is not None:
            self.fig.savefig(png_dir / f"{path.stem}.png", format="png", dpi=PREVIEW_DPI)


def image_and_two_views(c, y_image, first, second, x_view, size=0.55, second_scene="jitter"):
    """An image x at the left and two views of it (a crop; a flipped, recoloured crop) at the
    heights `first` and `second`; returns the two views' boxes."""
    image = c.picture(0.45 if x_view < 1.8 else 0.55, y_image, 0.7 if x_view < 1.8 else 0.8)
    c.text(image.x, y_image - image.h / 2 - 0.2, "image x")
    view_1 = c.picture(x_view, first, size, zoom=1.6, centre=(0.4, 0.55))
    view_2 = c.picture(x_view, second, size, scene=second_scene, zoom=1.3, centre=(0.6, 0.4),
                       flip=True)
    c.arrow(image.at(1, 0.3), view_1.left)
    c.arrow(image.at(1, -0.3), view_2.left)
    return view_1, view_2


# --------------------------------------------------------------------------------------- 1. SimCLR

def simclr() -> Canvas:
    c = Canvas(4.3)
    view_1, view_2 = image_and_two_views(c, 2.45, 3.5, 1.4, 1.95, size=0.62)
    c.text(1.22, 3.25, "t ~ T", ha="right")
    c.text(1.22, 1.65, "t′ ~ T", ha="right")
    c.text(1.95, 2.45, "two random\naugmentations", color=GREY)
    for view, subscript in ((view_1, "₁"), (view_2, "₂")):
        f = c.box(3.3, view.y, 1.0, 0.62, "f\nbackbone", BLUE)
        g = c.box(4.85, view.y, 1.0, 0.62, "g\nprojector", BLUE)
        c.arrow(view.right, f.left)
        c.arrow(f.right, g.left, label=f"h{subscript}")
    c.line([(3.3, 3.19), (3.3, 1.71)], color=BLUE, dashed=True)
    c.line([(4.85, 3.19), (4.85, 1.71)], color=BLUE, dashed=True)
    c.text(4.07, 2.45, "shared\nweights", color=BLUE)

    cx, cy, r = 7.5, 2.45, 1.2
    c.sphere(cx, cy, r, label="unit sphere: z = g(h) / ‖g(h)‖")
    z_1, z_2 = on_circle(cx, cy, r, 160), on_circle(cx, cy, r, 192)
    c.arrow((5.35, 3.5), z_1, label="normalize", offset=(0.02, 0.22), at=0.35)
    c.arrow((5.35, 1.4), z_2, label="normalize", offset=(0.02, -0.22), at=0.35)
    for angle in (20, 55, 95, 125, 235, 265, 300):
        c.dot(*on_circle(cx, cy, r, angle), RED)
    c.curve(z_2, z_1, color=GREEN, width=2.4, bend=0.5)
    c.dot(*z_1, BLUE, label="z₁", offset=(0.05, 0.2))
    c.dot(*z_2, BLUE, label="z₂", offset=(0.05, -0.22))
    c.text(cx + 0.45, cy - 0.6, "negatives:\nthe other 2B − 2\nviews of the batch", color=RED)
    c.text(6.62, cy + 0.12, "positive pair:\npulled together", color=GREEN, ha="left")
    c.text(0.15, 0.55, "InfoNCE (NT-Xent) over the 2B views of a batch of B images,\n"
           "for each view i with its positive p(i), the other view of its image:", ha="left")
    c.text(5.35, 0.55, r"$\ell_i = -\log \dfrac{\exp(z_i \cdot z_{p(i)} / \tau)}"
           r"{\sum_{k \neq i} \exp(z_i \cdot z_k / \tau)}$", ha="left")
    return c


# ------------------------------------------------------------------------------- 2. MoCo v2, MoCHi

def moco_mochi() -> Canvas:
    c = Canvas(6.5)
    c.text(0.1, 6.3, "MoCo v2: a queue of negatives and a momentum encoder", bold=True, ha="left")
    query_view, key_view = image_and_two_views(c, 4.75, 5.5, 3.95, 1.65, second_scene="cool")
    query = c.box(3.2, 5.5, 1.9, 0.62, r"query encoder $\theta_q$" "\nf, g: trained by gradient",
                  BLUE)
    key = c.box(3.2, 3.95, 1.9, 0.8,
                r"momentum encoder $\theta_k$" "\nf, g: no gradient,\nshuffle BN", ORANGE,
                dashed=True)
    c.arrow(query_view.right, query.left)
    c.arrow(key_view.right, key.left)
    c.arrow(query.bottom, key.top, color=ORANGE, dashed=True)
    c.text(3.32, 4.86, r"$\theta_k \leftarrow m\,\theta_k + (1 - m)\,\theta_q$", color=ORANGE,
           ha="left")
    c.text(3.32, 4.6, "after each step (EMA)", color=ORANGE, ha="left")

    logits = c.box(6.35, 5.5, 2.2, 0.62,
                   "logits / τ\n" r"$q \cdot k \quad q \cdot n_1 \,\dots\, q \cdot n_K$",
                   fill=LIGHT)
    loss = c.box(8.35, 5.5, 1.0, 0.62, "InfoNCE\ntarget: k", fill=LIGHT)
    c.arrow(query.right, logits.left, label="q", color=BLUE)
    c.arrow(logits.right, loss.left)
    k = (5.6, 3.95)
    c.arrow(key.right, k, label="k", color=ORANGE)
    c.arrow(k, (k[0], logits.bottom[1]), color=GREEN, label="positive", offset=(-0.38, 0.05))
    left, y = 6.1, 3.55
    right = c.queue(left, y, 10)
    middle = (left + right) / 2
    c.arrow(k, (left, y), color=ORANGE)
    c.text(5.35, 3.3, "enqueue the\nB newest keys", color=ORANGE)
    c.arrow((right, y), (right + 0.35, y), color=ORANGE)
    c.text(right + 0.6, y - 0.38, "dequeue the\nB oldest", color=ORANGE)
    c.text(middle, y - 0.42, "queue of K keys\n(past batches)", color=ORANGE)
    c.arrow((middle + 0.3, y + 0.15), logits.at(0.45, -1), color=RED,
            label=r"negatives $n_1 \dots n_K$", offset=(0.12, -0.05), ha="left")

    c.line([(0.1, 2.75), (8.9, 2.75)], color="#dddddd", width=1.0)
    c.text(0.1, 2.5, "MoCHi: synthetic hard negatives, made for each query", bold=True, ha="left")
    cx, cy, r, q = 1.75, 0.35, 1.55, 90
    c.ax.add_patch(Wedge((cx, cy), r, 0, 180, facecolor="#f4f6f8", edgecolor=GREY, linewidth=1.0))
    for angle in (3, 15, 165, 177):
        c.dot(*on_circle(cx, cy, r, angle), GREY, radius=0.05)
    for angle in (35, 60, 120, 145):  # the hardest: nearest to q
        c.dot(*on_circle(cx, cy, r, angle), RED, radius=0.06, ring=True)
    # type 1: two hard negatives mixed (filled); type 2: q mixed into a hard negative (hollow)
    for a, b, weight_a, type_2 in ((35, 60, 0.5, False), (120, 145, 0.4, False),
                                   (q, 60, 0.35, True), (q, 120, 0.3, True)):
        c.line([on_circle(cx, cy, r, a), on_circle(cx, cy, r, b)], color=PURPLE, width=0.9,
               dashed=True)
        c.dot(*on_circle(cx, cy, r, normalized_mix(a, b, weight_a)), PURPLE, radius=0.055,
              ring=type_2)
    c.dot(*on_circle(cx, cy, r, q), BLUE, radius=0.07, label="q", offset=(0, 0.2))
    c.text(cx, cy + 0.3, "unit sphere\n(upper half)", color=GREY)

    marker_x, text_x, rows = 3.85, 4.05, [2.05 - 0.27 * i for i in range(8)]
    c.dot(marker_x, rows[0], GREY, radius=0.05)
    c.text(text_x, rows[0], "queue negatives n (real keys)", ha="left")
    c.dot(marker_x, rows[1], RED, radius=0.06, ring=True)
    c.text(text_x, rows[1], r"the $N_{hard}$ hardest for this query (largest $q \cdot n$)",
           ha="left")
    c.dot(marker_x, rows[2], PURPLE, radius=0.055)
    c.text(text_x, rows[2], "type 1, M₁ per query: two hard negatives mixed", ha="left",
           color=PURPLE)
    c.text(text_x + 0.3, rows[3], r"$h = \mathrm{normalize}(\alpha\, n_a + (1 - \alpha)\, n_b)$,"
           r"   $\alpha \sim U(0, 1)$", ha="left")
    c.dot(marker_x, rows[4], PURPLE, radius=0.055, ring=True)
    c.text(text_x, rows[4], "type 2, M₂ per query: the query mixed into a hard negative",
           ha="left", color=PURPLE)
    c.text(text_x + 0.3, rows[5],
           r"$h′ = \mathrm{normalize}(\beta_{mix}\, q + (1 - \beta_{mix})\, n_c)$,"
           r"   $\beta_{mix} \sim U(0, 0.5)$", ha="left")
    c.text(text_x, rows[6] - 0.05, "Extra logits q·h / τ and q·h′ / τ join MoCo's InfoNCE;",
           ha="left")
    c.text(text_x, rows[7] - 0.05,
           "they are constants (detached, the q in h′ too), never enqueued.", ha="left")
    return c


# ----------------------------------------------------------------------------------------- 3. CLAE

def clae() -> Canvas:
    c = Canvas(4.75)
    view_i, view_j = image_and_two_views(c, 3.3, 2.75, 3.85, 1.6)
    adversarial = c.picture(1.6, 0.95, 0.55, zoom=1.6, centre=(0.4, 0.55), noise=True)
    c.text(1.6, view_j.y + 0.43, r"view $x^{(2)}$")
    c.text(1.6, view_i.y + 0.43, r"view $x^{(1)}$")
    c.text(1.6, adversarial.y - 0.45, r"$x^{adv} = x^{(1)} + \delta$,  ‖δ‖∞ ≤ ε", color=RED)
    c.arrow(view_i.bottom, adversarial.top, color=RED, width=1.6)
    c.text(1.85, 2.1, "attack, no labels", color=RED, ha="left", bold=True)
    c.text(1.85, 1.8,
           r"$\delta = \epsilon\,\mathrm{sign}\,\nabla_{x′} L(\mathrm{sg}[z^{(1)}], z(x′))$",
           color=RED, ha="left")
    c.text(1.85, 1.5, "FGSM: one step; PGD: several", color=RED, ha="left")
    c.text(1.85, 1.25, "forward through the adversarial BN", color=RED, ha="left")

    encoder = c.box(5.2, 2.4, 1.5, 4.4, color=BLUE, fill="white")
    c.text(encoder.x, 4.4, "f, g", bold=True)
    c.text(encoder.x, 4.17, "shared weights")
    clean = c.box(encoder.x, 3.3, 1.2, 1.4, "clean BN\nalso for\nevaluation", BLUE)
    adversarial_bn = c.box(encoder.x, adversarial.y, 1.2, 0.7, "adversarial\nBN", RED)
    c.text(encoder.x, 1.95, "dual BN: each BN\nlayer has a twin", color=GREY)
    for view in (view_j, view_i):
        c.arrow((1.9, view.y), (clean.left[0], view.y))
    c.arrow(adversarial.right, adversarial_bn.left, color=RED)

    cx, cy, r = 7.55, 2.45, 0.9
    c.sphere(cx, cy, r)
    z_j, z_i, z_adv = (on_circle(cx, cy, r, angle) for angle in (138, 180, 201))
    c.arrow((clean.right[0], view_j.y), z_j, color=BLUE)
    c.arrow((clean.right[0], view_i.y), z_i, color=BLUE)
    c.arrow(adversarial_bn.right, z_adv, color=RED)
    for angle in (25, 55, 85, 115, 250, 285, 320):
        c.dot(*on_circle(cx, cy, r, angle), GREY, radius=0.05)
    c.text(cx, cy + r + 0.2, "the other images: negatives", color=GREY)
    c.curve(z_i, z_j, color=GREEN, width=2.2, bend=0.6)
    c.curve(z_i, z_adv, color=GREEN, width=2.2, dashed=True, bend=-0.6)
    c.dot(*z_j, BLUE, label=r"$z^{(2)}$", offset=(0.27, 0.08), ha="left")
    c.dot(*z_i, BLUE, label=r"$z^{(1)}$", offset=(0.33, 0.0), ha="left")
    c.dot(*z_adv, RED, label=r"$z^{adv}$", offset=(0.27, -0.1), ha="left")

    legend = 6.4
    c.line([(legend, 1.3), (legend + 0.3, 1.3)], color=GREEN, width=2.2)
    c.text(legend + 0.4, 1.3, r"positive pair $z^{(1)}, z^{(2)}$", ha="left")
    c.line([(legend, 1.05), (legend + 0.3, 1.05)], color=GREEN, width=2.2, dashed=True)
    c.text(legend + 0.4, 1.05, "second, hard positive", ha="left")
    c.text(legend + 0.4, 0.83, "(a negative of the others)", ha="left", color=GREY)
    c.text(legend + 0.1, 0.47, r"$ℒ = L(z^{(1)}, z^{(2)}) + \alpha\, L(z^{(1)}, z^{adv})$",
           ha="left")
    c.text(legend + 0.1, 0.17, "L: InfoNCE of the batch, τ", ha="left", color=GREY)
    return c


# ----------------------------------------------------------------------------------------- 4. CACR

CACR_TAU_POS, CACR_TAU_NEG = 1.0, 0.9  # kappa+ and kappa- (paper: tau+, tau-), its CIFAR-10 setting


def weighted_panel(c, cx, cy, r, others, concentration, color, caption, toward):
    """A query z^a_i on a circle and `others` (their angles from it, in degrees), each with its
    weight softmax(concentration * d^2) among them: an arrow towards the query (attraction) or away
    from it (repulsion), as long and thick as the weight."""
    query_angle = 90
    weights = softmax([concentration * (2 - 2 * math.cos(math.radians(a))) for a in others])
    query = on_circle(cx, cy, r, query_angle)
    c.sphere(cx, cy, r)
    for angle, weight in zip(others, (round(w, 2) for w in weights)):
        point = on_circle(cx, cy, r, query_angle + angle)
        ux, uy = query[0] - point[0], query[1] - point[1]
        step = (0.15 + 0.5 * weight) * (1 if toward else -1) / math.hypot(ux, uy)
        c.arrow(point, (point[0] + step * ux, point[1] + step * uy), color=color,
                width=0.8 + 3.5 * weight, head=8 + 6 * weight)
        label = on_circle(cx, cy, r + 0.3, query_angle + angle + (6 if angle > 0 else -6))
        c.text(*label, f"{weight:.2f}", color=color)
        c.dot(*point, color)
    c.dot(*query, BLUE, radius=0.07, label="zᵃᵢ", offset=(0, 0.22))
    c.text(cx, cy - 0.1, caption, color=color)


def cacr() -> Canvas:
    c = Canvas(5.35)
    image = c.picture(0.45, 3.5, 0.7)
    c.text(image.x, 2.95, "image x")
    views = [{"zoom": 1.6, "centre": (0.4, 0.55)},
             {"scene": "jitter", "zoom": 1.3, "centre": (0.6, 0.4), "flip": True},
             {"scene": "gray", "zoom": 1.1},
             {"scene": "cool", "zoom": 2.2, "centre": (0.75, 0.7)},
             {"zoom": 1.8, "centre": (0.3, 0.25), "flip": True}]
    for i, view in enumerate(views):
        c.arrow(image.right, c.picture(1.55, 4.8 - 0.64 * i, 0.5, **view).left, width=0.9)
    c.text(1.55, 5.2, "V = M + 1 views")
    c.text(1.55, 1.6, "f, g, normalize:\nz¹ᵢ … zⱽᵢ")
    c.text(1.55, 0.75, "numbers: the\nweights of the\npoints drawn", color=GREY)

    c.text(4.05, 5.2, "contrastive attraction: positives", bold=True, color=GREEN)
    c.text(7.2, 5.2, "contrastive repulsion: negatives", bold=True, color=RED)
    weighted_panel(c, 4.05, 3.35, 1.05, (25, -55, 95, -150), CACR_TAU_POS, GREEN,
                   "the M other views\nzᵇᵢ of image i", toward=True)
    weighted_panel(c, 7.2, 3.35, 1.05, (-35, 70, -115, 160), -CACR_TAU_NEG, RED,
                   "views zᵇⱼ of the\nother images j ≠ i", toward=False)
    c.text(4.05, 1.85, f"far views pulled harder (κ⁺ = {CACR_TAU_POS:g})", color=GREEN)
    c.text(7.2, 1.85, f"near negatives pushed harder (κ⁻ = {CACR_TAU_NEG:g})", color=RED)
    c.text(4.05, 1.4, r"$w^+_{i,ab} = \mathrm{softmax}_{b \neq a}\,(\kappa^+ d^2(z^a_i, z^b_i))$")
    c.text(7.2, 1.4, r"$w^-_{i,j} = \mathrm{softmax}_{j \neq i}\,(-\kappa^- d^2(z^a_i, z^b_j))$")
    c.text(4.05, 0.95,
           r"$ℒ_{CA}$: mean of $\sum_b w^+_{i,ab}\, \gamma^+\, d^2(z^a_i, z^b_i)$")
    c.text(7.2, 0.95,
           r"$ℒ_{CR}$: mean of $\sum_j w^-_{i,j}\,(-\gamma^-\, d^2(z^a_i, z^b_j))$")
    c.text(5.6, 0.5, r"$ℒ = ℒ_{CA} + ℒ_{CR}$,   "
           r"$d^2(u, v) = \|u - v\|^2 = 2 - 2\, u \cdot v$")
    c.text(5.6, 0.15, "w⁺, w⁻: conditional distributions given the query zᵃᵢ", color=GREY)
    return c


# ------------------------------------------------------------------------------------------ 5. SCE

SCE_LAMBDA, SCE_TAU, SCE_TAU_M = 0.5, 0.1, 0.05  # the authors' CIFAR-10 setting
# A toy query: its similarity to its key and to 8 queue entries, and the key's to the same entries.
SCE_QUERY_KEY = 0.8
SCE_QUERY_QUEUE = (0.62, 0.58, 0.3, 0.4, 0.1, 0.2, -0.1, 0.0)
SCE_KEY_QUEUE = (0.72, 0.66, 0.55, 0.35, 0.3, 0.1, 0.0, -0.2)


def sce_distributions() -> tuple[list[float], list[float]]:
    """The toy query's target w and prediction p over its candidates [k, n_1, ..., n_8], rounded."""
    prediction = softmax([s / SCE_TAU for s in (SCE_QUERY_KEY, *SCE_QUERY_QUEUE)])
    relation = softmax([s / SCE_TAU_M for s in SCE_KEY_QUEUE])
    target = [SCE_LAMBDA] + [(1 - SCE_LAMBDA) * r for r in relation]
    return [round(t, 3) for t in target], [round(p, 3) for p in prediction]


def sce() -> Canvas:
    c = Canvas(4.7)
    weak, strong = image_and_two_views(c, 2.9, 1.75, 4.0, 1.65)
    c.text(1.65, strong.y + 0.43, "strong view")
    c.text(1.65, weak.y - 0.45, "weak view (crop, flip)")
    online = c.box(3.25, 4.0, 1.7, 0.62, "online encoder\nf, g: gradient", BLUE)
    momentum = c.box(3.25, 1.75, 1.7, 0.62, "momentum encoder\nEMA, no gradient", ORANGE,
                     dashed=True)
    c.arrow(strong.right, online.left)
    c.arrow(weak.right, momentum.left)
    c.arrow(online.bottom, momentum.top, color=ORANGE, dashed=True, label="EMA", offset=(0.25, 0))

    prediction_box = c.box(5.75, 4.0, 1.95, 0.62, "prediction p\n"
                           r"softmax$([q \cdot k,\, q \cdot n_j] / \tau)$", BLUE)
    target_box = c.box(5.75, 1.6, 1.95, 0.85, "soft target w\nλ on k, (1 − λ) rⱼ on nⱼ\n"
                       r"$r = $softmax$(k \cdot n_j / \tau_m)$", ORANGE)
    c.text(5.75, 0.85, "computed without gradient", color=ORANGE)
    c.arrow(online.right, prediction_box.left, label="q", color=BLUE)
    trunk = 4.45  # k goes to the prediction, the target and the queue
    c.line([momentum.right, (trunk, momentum.y), (trunk, 3.8)], color=ORANGE, width=1.3)
    c.arrow((trunk, 3.8), prediction_box.at(-1, -0.65), color=ORANGE)
    c.arrow((trunk, momentum.y), target_box.at(-1, 0.35), color=ORANGE)
    c.text(4.2, momentum.y + 0.14, "k", color=ORANGE)
    c.text(trunk - 0.12, 3.6, "k", color=ORANGE)
    slots, y = 8, 2.8
    left = prediction_box.x - slots * 0.18 / 2
    right = c.queue(left, y, slots, height=0.26)
    c.arrow((trunk, y), (left, y), color=ORANGE)
    c.text(trunk + 0.05, y + 0.28, "enqueue k", color=ORANGE, ha="left")
    c.text(right + 0.08, y, "queue\n" r"$n_1 \dots n_K$", color=ORANGE, ha="left")
    c.arrow((prediction_box.x, y + 0.13), prediction_box.bottom, color=ORANGE)
    c.arrow((prediction_box.x, y - 0.13), target_box.top, color=ORANGE)

    target, prediction = sce_distributions()
    x0, base, height, bar = 7.0, 1.2, 2.2, 0.09
    for i, (t, p) in enumerate(zip(target, prediction)):
        x = x0 + i * 0.22
        c.ax.add_patch(Rectangle((x, base), bar, t * height, facecolor=ORANGE, edgecolor="none"))
        c.ax.add_patch(Rectangle((x + bar, base), bar, p * height, facecolor=BLUE,
                                 edgecolor="none"))
        c.text(x + bar, base - 0.15, "k" if i == 0 else "n" + "₁₂₃₄₅₆₇₈"[i - 1])
    c.line([(x0 - 0.05, base), (x0 + 9 * 0.22, base)], color=INK, width=0.8)
    c.arrow(prediction_box.right, (x0 + 0.3, base + prediction[0] * height + 0.15), color=BLUE)
    c.arrow(target_box.right, (x0 - 0.08, base + 0.3), color=ORANGE)
    centre = x0 + 0.95
    c.text(centre, 4.5, "cross-entropy", bold=True)
    c.text(centre, 4.2, r"$\ell = -\sum_c\, w_c \log p_c$")
    for y, color, name in ((3.85, ORANGE, "target w"), (3.6, BLUE, "prediction p")):
        c.swatch(x0 + 0.32, y, color)
        c.text(x0 + 0.47, y, name, ha="left")
    c.text(centre, 0.6, f"λ = {SCE_LAMBDA}, τ = {SCE_TAU}, τₘ = {SCE_TAU_M}", color=GREY)
    c.text(centre, 0.3, "λ = 1: MoCo's InfoNCE", color=GREY)
    return c


# ------------------------------------------------------- 6. CL, SupCon, supervised; threat models

def scheme_panel(c, cx, cy, r, title, caption, positives):
    """A small embedding: an anchor, its other view, two images of its class, four of another.
    `positives`: "view" (SimCLR), "class" (SupCon) or None (supervised: a linear boundary)."""
    c.text(cx, cy + r + 0.3, title, bold=True)
    c.sphere(cx, cy, r)
    anchor, view = on_circle(cx, cy, r, 95), on_circle(cx, cy, r, 120)
    same_class = [on_circle(cx, cy, r, a) for a in (55, 160)]
    other_class = [on_circle(cx, cy, r, a) for a in (215, 260, 305, 350)]
    if positives is None:
        c.line([on_circle(cx, cy, r, 190), on_circle(cx, cy, r, 10)], dashed=True)
        c.text(cx + 0.05, cy + 0.22, "W")
    else:
        by_class = positives == "class"
        for point in [view] + (same_class if by_class else []):
            c.line([anchor, point], color=GREEN, width=2.0)
        for point in ([] if by_class else same_class) + other_class:
            c.line([anchor, point], color=RED, width=0.8, dashed=True)
    for point in same_class:
        c.ax.plot(*point, marker="^", markersize=7, color=BLUE, zorder=3)
    for point in other_class:
        c.ax.plot(*point, marker="s", markersize=6, color=GREY, zorder=3)
    c.dot(*view, BLUE, ring=True)
    c.dot(*anchor, BLUE, radius=0.07)
    c.text(cx, cy - r - 0.22, caption)


def robustness() -> Canvas:
    c = Canvas(6.75)
    c.text(0.1, 6.55, "Attacking a pretrained encoder f and its linear classifier W: "
           "two threat models", bold=True, ha="left")
    x = c.picture(0.55, 5.15, 0.62, noise=True)
    c.text(0.55, 4.62, "x + δ")
    f = c.box(1.95, 5.15, 1.0, 0.6, "f\nbackbone", BLUE)
    g = c.box(3.5, 5.7, 1.1, 0.5, "g projector", BLUE, title=False)
    w = c.box(3.5, 4.6, 1.1, 0.5, "W linear head", fill=LIGHT, title=False)
    loss_1 = c.box(5.85, 5.7, 2.5, 0.5, r"SupCon$_{0.07}(\mathrm{sg}[z(x)],\, z(x + \delta);\, y)$",
                   RED, title=False)
    loss_2 = c.box(5.85, 4.6, 2.5, 0.5, r"CE$(W f(x + \delta) / \Vert W f(x + \delta) \Vert,\, y)$",
                   RED, title=False)
    c.arrow(x.right, f.left)
    c.arrow(f.at(1, 0.4), g.left, label="h", offset=(-0.05, 0.12))
    c.arrow(f.at(1, -0.4), w.left, label="h", offset=(-0.05, -0.14))
    c.arrow(g.right, loss_1.left, label="z", offset=(0, 0.12))
    c.arrow(w.right, loss_2.left, label="logits", offset=(0, -0.14), at=0.45)
    c.arrow(loss_1.top, x.top, color=RED, dashed=True, bend=0.25)
    c.arrow(loss_2.bottom, x.bottom, color=RED, dashed=True, bend=-0.25)
    c.text(4.2, 6.27, "threat model I: PGD on the contrastive loss, no classifier; "
           "labels y for SCL only (CL: none, InfoNCE)", color=RED, backdrop=True)
    c.text(4.2, 4.03, "threat model II: PGD on the cross-entropy of the normalised logits, "
           "end to end, with the labels y", color=RED, backdrop=True)
    c.text(8.05, 5.15, "then W f\nclassifies\nx + δ*:\nrobust accuracy", color=GREY)

    c.line([(0.1, 3.75), (8.9, 3.75)], color="#dddddd", width=1.0)
    c.text(0.1, 3.55, "Three schemes pretrain f", bold=True, ha="left")
    for x, label, style in ((2.35, "anchor", {"marker": "o", "markersize": 7}),
                            (3.2, "its other view", {"marker": "o", "markersize": 7,
                                                     "markerfacecolor": "white"}),
                            (4.55, "same class", {"marker": "^", "markersize": 7}),
                            (5.65, "other class", {"marker": "s", "markersize": 6, "color": GREY})):
        c.ax.plot(x, 3.55, **{"color": BLUE, **style})
        c.text(x + 0.12, 3.55, label, ha="left")
    for x, label, color, dashed in ((6.75, "positive", GREEN, False),
                                    (7.85, "negative", RED, True)):
        c.line([(x, 3.55), (x + 0.3, 3.55)], color=color, width=1.6, dashed=dashed)
        c.text(x + 0.38, 3.55, label, ha="left")
    scheme_panel(c, 1.55, 2.55, 0.5, "CL: SimCLR", "positive: the other view", "view")
    scheme_panel(c, 4.5, 2.55, 0.5, "SCL: SupCon", "positives: all of its class", "class")
    scheme_panel(c, 7.45, 2.55, 0.5, "SL: supervised", "cross-entropy on labels", None)
    c.text(7.45, 1.58, "threat model I: the course's extension", color=GREY)
    c.text(3.0, 1.58, "each standard, or adversarial: L(x⁰, x⁰ + δ*) + L(x¹, x²), δ* from PGD",
           color=GREY)

    c.line([(0.1, 1.3), (8.9, 1.3)], color="#dddddd", width=1.0)
    rows = [
        ("scenario", "pretraining",
         "fine-tuning of the linear head W (δ: PGD on the cross-entropy)"),
        ("ST", "standard", "standard: CE(W f(x)), f frozen"),
        ("AT", "adversarial", "standard: CE(W f(x)), f frozen"),
        ("Partial-AT", "adversarial", "partial: CE(W f(x)) + CE(W f(x + δ)), f frozen"),
        ("Full-AT", "adversarial", "full: CE(W f(x)) + CE(W f(x + δ)), f trained too"),
    ]
    for i, row in enumerate(rows):
        for column, cell in zip((0.25, 1.35, 2.55), row):
            adversarial = i > 0 and ("adversarial" in cell or "+" in cell)
            c.text(column, 1.1 - 0.23 * i, cell, ha="left", bold=i == 0,
                   color=RED if adversarial else INK)
    return c


# --------------------------------------------------------------------------- 7. CKA across layers

CKA_LAYERS = 4


def illustrative_cka(i: int, j: int) -> float:
    """An illustration of the usual pattern, not a measurement: high near the diagonal, falling
    with the distance between the layers, lower deep in the networks."""
    return round(0.35 + 0.6 * math.exp(-0.9 * abs(i - j)) * (1 - 0.08 * max(i, j)), 2)


def heatmap(c, x0, y0, cell, values, top_down=False):
    """values[row][column] as cells from (x0, y0), row 0 at the bottom (`top_down`: at the top, as a
    matrix is written), in the course's CKA colours (magma: 0 dark, 1 bright)."""
    colormap = matplotlib.colormaps["magma"]
    for i, row in enumerate(values):
        y = y0 + (len(values) - 1 - i if top_down else i) * cell
        for j, value in enumerate(row):
            c.ax.add_patch(Rectangle((x0 + j * cell, y), cell, cell,
                                     facecolor=to_hex(colormap(value)), edgecolor="white",
                                     linewidth=0.5))


def cka() -> Canvas:
    c = Canvas(4.2)
    for i, scene in enumerate(("other", "cool", "base")):
        c.picture(0.35 + 0.09 * i, 2.2 - 0.09 * i, 0.5, scene=scene)
    c.text(0.53, 1.5, "the same\nn images")
    c.text(3.0, 2.2, f"layers 1 … {CKA_LAYERS}, input to output", color=GREY)
    # network: (its row, the layer compared, its outputs, their Gram matrix, width, the Gram's row)
    networks = {"A": (3.45, 2, "X", "K = XXᵀ", "p", 2.95), "B": (0.8, 3, "Y", "L = YYᵀ", "q", 1.45)}
    gram_x, n, gram_cell = 5.0, 6, 0.1
    for name, (y, chosen, features, gram, width, gram_y) in networks.items():
        c.text(1.5, y + 0.42, f"network {name}", ha="left", bold=True)
        for layer in range(1, CKA_LAYERS + 1):
            x = 1.5 + (layer - 1) * 0.75
            c.box(x + 0.28, y, 0.56, 0.4, f"{layer}", PURPLE if layer == chosen else BLUE,
                  title=False)
            if layer < CKA_LAYERS:
                c.arrow((x + 0.56, y), (x + 0.75, y), width=1.0)
        side = -1 if name == "A" else 1
        c.arrow((0.9, 2.2 - 0.25 * side), (1.5, y), width=1.0)
        layer_x = 1.5 + (chosen - 1) * 0.75 + 0.28
        c.line([(layer_x, y + side * 0.2), (layer_x, gram_y)], color=PURPLE, width=1.0)
        c.arrow((layer_x, gram_y), (gram_x - 0.05, gram_y), color=PURPLE, width=1.0,
                label=f"{features}: n × {width}, its outputs", offset=(0.0, 0.15 * side),
                label_color=INK)
        decay = 0.7 if name == "A" else 1.2
        values = [[round(0.2 + 0.8 * math.exp(-abs(a - b) * decay), 2) for b in range(n)]
                  for a in range(n)]
        heatmap(c, gram_x, gram_y - n * gram_cell / 2, gram_cell, values, top_down=True)
        c.text(gram_x + n * gram_cell + 0.1, gram_y, gram, ha="left")

    c.text(6.05, 2.2, r"$\mathrm{CKA}(K, L) = \dfrac{\mathrm{HSIC}(K, L)}"
           r"{(\mathrm{HSIC}(K, K)\,\mathrm{HSIC}(L, L))^{1/2}}$")
    c.text(6.0, 0.45, r"$\mathrm{HSIC}(K, L) \propto \mathrm{tr}(KHLH)$,  "
           r"$H = I_n - \frac{1}{n}\mathbf{1}\mathbf{1}^\top$", color=GREY)

    x0, y0, cell = 7.65, 2.3, 0.3
    row, column = networks["A"][1] - 1, networks["B"][1] - 1
    heatmap(c, x0, y0, cell,
            [[illustrative_cka(i, j) for j in range(CKA_LAYERS)] for i in range(CKA_LAYERS)])
    c.ax.add_patch(Rectangle((x0 + column * cell, y0 + row * cell), cell, cell, facecolor="none",
                             edgecolor=PURPLE, linewidth=2.0))
    for k in range(CKA_LAYERS):
        c.text(x0 - 0.12, y0 + (k + 0.5) * cell, f"{k + 1}", color=GREY)
        c.text(x0 + (k + 0.5) * cell, y0 - 0.14, f"{k + 1}", color=GREY)
    c.text(x0 - 0.33, y0 + 2 * cell, "A", bold=True)
    c.text(x0 + 2 * cell, y0 - 0.36, "B", bold=True)
    c.text(x0 + 2 * cell, y0 + 4 * cell + 0.38, "layer × layer CKA", bold=True)
    c.text(x0 + 2 * cell, y0 + 4 * cell + 0.15, "(illustration)", color=GREY)
    c.arrow((7.2, 2.45), (x0 + (column + 0.5) * cell, y0 + (row + 0.5) * cell), color=PURPLE,
            bend=-0.3, width=1.0)
    c.text(x0 + 0.5, 1.15, "CKA is in [0, 1], 1 for\na layer with itself,\ninvariant to rotations\n"
           "and isotropic scaling", color=GREY)
    return c


DIAGRAMS = {"simclr": simclr, "moco_mochi": moco_mochi, "clae": clae, "cacr": cacr, "sce": sce,
            "robustness": robustness, "cka": cka}


def draw(names, out: Path = FIGURES, png_dir: Path | None = None):
    """Draw the diagrams `names` as out/<name>.svg (and png_dir/<name>.png) in the course's style,
    whatever the caller's matplotlib settings."""
    out.mkdir(parents=True, exist_ok=True)
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(STYLE)
        for name in names:
            DIAGRAMS[name]().save(out / f"{name}.svg", png_dir)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"the diagrams to draw (default: all): {', '.join(DIAGRAMS)}")
    parser.add_argument("--out", type=Path, default=FIGURES, help="folder for the SVG files")
    parser.add_argument("--png", type=Path, help="also write PNG previews into this folder")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in DIAGRAMS]
    if unknown:
        parser.error(f"unknown diagram {unknown[0]!r}: expected one of {', '.join(DIAGRAMS)}")
    draw(args.names or list(DIAGRAMS), args.out, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
