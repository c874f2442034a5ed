"""The book's three diagrams, drawn from the package's models.

``python book/figures/diagrams.py`` writes ``rd_pipeline.svg``,
``rdpp_pipeline.svg`` and ``rdpp_losses.svg`` beside this file. The per-scale
shapes are read from :class:`rdtutorial.models.RDPlusPlus` (built on the meta
device, so no weights and no compute), for the paper teacher at 256 px and
the demo teacher at 128 px; each SVG's ``<dc:description>`` lists them, and
``tests/test_book.py`` checks that list against the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from rdtutorial.models import RDPlusPlus, build_teacher

HERE = Path(__file__).resolve().parent
PROFILES = (("wide_resnet50_2", 256), ("efficientnet_lite0", 128))
LABELS = {"wide_resnet50_2": "Wide-ResNet-50-2 at 256 px (paper)",
          "efficientnet_lite0": "EfficientNet-Lite0 at 128 px (demo)"}
WIDTH = 7.4  # inches: 710 CSS px, inside the book's text column at scale 1
INK, PAPER_C, DEMO_C, NOISY_C = "#222222", "#1f4e79", "#7f3f00", "#c0392b"
FILL = {"image": "#eeeeee", "teacher": "#cfe2f3", "proj": "#f9cb9c", "ocbe": "#d9ead3",
        "student": "#d9ead3"}
LOSS_C = {"KD": "#1f77b4", "SSOT": "#9467bd", "Recon": "#2ca02c", "Con": "#d62728"}
STYLE = {"svg.fonttype": "path", "svg.hashsalt": "rdtutorial", "font.size": 9,
         "mathtext.fontset": "dejavusans"}


@dataclass(frozen=True)
class Shapes:
    """C x H x W of one image's maps: teacher E_k (= student D_k) and the code z."""

    teacher: tuple[tuple[int, int, int], ...]
    z: tuple[int, int, int]


def model_shapes(teacher: str, size: int) -> Shapes:
    """Shapes of RD++ on ``teacher`` for ``size`` px images, from the package's model."""
    with torch.device("meta"), torch.no_grad():
        model = RDPlusPlus(build_teacher(teacher, weights=None)).eval()
        out = model(torch.zeros(1, 3, size, size))
        z = model.bottleneck(out.projected)
    assert [f.shape for f in out.student] == [f.shape for f in out.teacher]
    return Shapes(tuple(tuple(f.shape[1:]) for f in out.teacher), tuple(z.shape[1:]))


def describe(shapes: dict[str, Shapes]) -> str:
    """One line per teacher: ``name: E1 CxHxW, E2 ..., E3 ..., z CxHxW``."""
    lines = []
    for name, s in shapes.items():
        maps = ", ".join(f"E{k} {fmt(c)}" for k, c in enumerate(s.teacher, 1))
        lines.append(f"{name}: {maps}, z {fmt(s.z)}")
    return "; ".join(lines)


def fmt(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


# --------------------------------------------------------------------------- drawing helpers


def canvas(height: float) -> tuple[plt.Figure, Axes]:
    """A figure WIDTH x ``height`` inches whose data units are inches."""
    fig = plt.figure(figsize=(WIDTH, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set(xlim=(0, WIDTH), ylim=(0, height))
    ax.axis("off")
    return fig, ax


def box(ax: Axes, x: float, y: float, w: float, h: float, text: str, kind: str, **kw) -> None:
    """A rounded box centred at (x, y) with ``text`` in it."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.06",
                                fc=FILL[kind], ec=kw.pop("ec", INK), lw=kw.pop("lw", 0.9), **kw))
    ax.text(x, y, text, ha="center", va="center", color=INK)


def arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], color: str = INK, **kw) -> None:
    kw = {"shrinkA": 0, "shrinkB": 0, **kw}
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=kw.pop("style", "-|>"), mutation_scale=9,
                                 color=color, lw=kw.pop("lw", 1.0), **kw))


def shape_lines(ax: Axes, x: float, y: float, shapes: list[tuple[int, int, int]], **kw) -> None:
    """Paper and demo shapes under each other, in their two colours."""
    for dy, shape, color in ((0, shapes[0], PAPER_C), (-0.15, shapes[1], DEMO_C)):
        ax.text(x, y + dy, "\u00d7".join(map(str, shape)), ha="center", va="center", color=color,
                fontsize=8, **kw)


def shape_legend(ax: Axes, x: float, y: float) -> None:
    ax.text(x, y, "shapes C\u00d7H\u00d7W of one image:", fontsize=8, color=INK, va="center")
    ax.text(x + 1.85, y, LABELS["wide_resnet50_2"], fontsize=8, color=PAPER_C, va="center")
    ax.text(x + 4.05, y, LABELS["efficientnet_lite0"], fontsize=8, color=DEMO_C, va="center")


def save(fig: plt.Figure, name: str, title: str, shapes: dict[str, Shapes]) -> Path:
    path = HERE / name
    fig.savefig(path, metadata={"Title": title, "Description": describe(shapes), "Date": None})
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- the diagrams


ROWS = (2.75, 1.95, 1.15)  # y of scale k = 1, 2, 3


def stage(ax: Axes, x: float, y: float, name: str, shapes: list[tuple[int, int, int]], kind: str,
          noisy: bool = False) -> None:
    """A network stage: its name over the paper and demo shapes of its output."""
    if noisy:  # the noisy branch passes the same stage: a red card behind it
        box(ax, x + 0.07, y + 0.05, 0.95, 0.58, "", kind, ec=NOISY_C, ls="--")
    box(ax, x, y, 0.95, 0.58, "", kind)
    ax.text(x, y + 0.15, name, ha="center", va="center", color=INK)
    shape_lines(ax, x, y - 0.04, shapes)


def pipeline(shapes: dict[str, Shapes], projections: bool) -> plt.Figure:
    """RD (``projections=False``) or RD++: teacher stages, [P_k,] OCBE, student, comparison."""
    per_scale = [[s.teacher[k] for s in shapes.values()] for k in range(3)]
    fig, ax = canvas(3.6)
    xe, xp, xo, xd = 1.45, 2.85, 4.3, 6.1
    box(ax, 0.4, ROWS[0], 0.6, 0.5, "image\n$x$", "image")
    arrow(ax, (0.7, ROWS[0]), (xe - 0.48, ROWS[0]))
    if projections:
        box(ax, 0.4, ROWS[1], 0.6, 0.5, "noisy\n$\\tilde{x}$", "image", ec=NOISY_C, ls="--")
        arrow(ax, (0.7, ROWS[1] + 0.1), (xe - 0.48, ROWS[0] - 0.2), color=NOISY_C, ls="--")
        ax.text(xp + 0.1, 3.4, "red, dashed: the noisy $\\tilde{x}$, in training only; $E(\\tilde{x})$ and "
                "$P\\,E(\\tilde{x})$\nfeed $\\mathcal{L}_{Recon}$ and $\\mathcal{L}_{Con}$, never the OCBE",
                ha="left", va="center", fontsize=8, color=NOISY_C)
    ax.text(xe, 3.3, "teacher $E$ (frozen)", ha="center", va="center", color=INK)
    ax.text(xd, 3.3, "student $D$", ha="center", va="center", color=INK)
    for k, y in enumerate(ROWS):
        stage(ax, xe, y, f"$E_{k + 1}$ (stride {4 * 2**k})", per_scale[k], "teacher", noisy=projections)
        stage(ax, xd, y, f"$D_{k + 1}$", per_scale[k], "student")
        if k < 2:
            arrow(ax, (xe, y - 0.29), (xe, ROWS[k + 1] + 0.29), zorder=3)
            arrow(ax, (xd, ROWS[k + 1] + 0.29), (xd, y - 0.29), zorder=3)
        target = (xo - 0.5, 1.95 + 0.2 * (1 - k))
        if projections:
            box(ax, xp + 0.05, y + 0.05, 0.55, 0.34, "", "proj", ec=NOISY_C, ls="--")
            box(ax, xp, y, 0.55, 0.34, f"$P_{k + 1}$", "proj")
            arrow(ax, (xe + 0.48, y), (xp - 0.28, y))
            arrow(ax, (xp + 0.28, y), target)
        else:
            arrow(ax, (xe + 0.48, y), target)
    box(ax, xo, 1.95, 1.0, 0.75, "OCBE\n(MFF + OCE)", "ocbe")
    arrow(ax, (xo + 0.5, 1.95), (xd - 0.48, ROWS[2]))
    ax.text(xo + 0.4, 1.3, "code $z$", ha="center", va="center", color=INK)
    shape_lines(ax, xo + 0.4, 1.13, [s.z for s in shapes.values()])
    # the comparison: every E_k(x) against D_k(z)
    low = 0.66
    ax.plot([xe, xe, xd, xd], [ROWS[2] - 0.3, low, low, ROWS[2] - 0.3], color=LOSS_C["KD"], lw=1.2, ls="--")
    ax.text((xe + xd) / 2, low - 0.16, "compare $E_k(x)$ with $D_k(z)$ at every scale $k$: $\\mathcal{L}_{KD}$ in training,"
            " $1 - \\cos_c$ anomaly map at test time", ha="center", va="center", color=LOSS_C["KD"], fontsize=8)
    shape_legend(ax, 0.1, 0.18)
    return fig


def losses_figure() -> plt.Figure:
    """The five tensors of an RD++ step and the loss that connects each pair."""
    fig, ax = canvas(3.5)
    top, bottom = 2.25, 0.85
    xs = (0.55, 2.2, 3.85, 5.5)
    box(ax, xs[0], top, 0.6, 0.45, "$x$", "image")
    box(ax, xs[0], bottom, 0.6, 0.45, "$\\tilde{x}$", "image", ec=NOISY_C, ls="--")
    nodes = {"Ex": (xs[1], top), "PEx": (xs[2], top), "Dz": (xs[3], top),
             "Exn": (xs[1], bottom), "PExn": (xs[2], bottom)}
    names = {"Ex": "$E(x)$", "PEx": "$P\\,E(x)$", "Dz": "$D(z)$", "Exn": "$E(\\tilde{x})$", "PExn": "$P\\,E(\\tilde{x})$"}
    kinds = {"Ex": "teacher", "PEx": "proj", "Dz": "student", "Exn": "teacher", "PExn": "proj"}
    for key, (x, y) in nodes.items():
        box(ax, x, y, 0.85, 0.42, names[key], kinds[key], ec=NOISY_C if key.endswith("n") else INK)
    for y in (top, bottom):
        arrow(ax, (xs[0] + 0.3, y), (xs[1] - 0.43, y))
        ax.text((xs[0] + xs[1]) / 2 - 0.05, y + 0.1, "$E$", ha="center", color="#555555")
        arrow(ax, (xs[1] + 0.43, y), (xs[2] - 0.43, y))
        ax.text((xs[1] + xs[2]) / 2, y + 0.1, "$P$", ha="center", color="#555555")
    arrow(ax, (xs[2] + 0.43, top), (xs[3] - 0.43, top))
    ax.text((xs[2] + xs[3]) / 2, top + 0.1, "OCBE, $D$", ha="center", color="#555555")

    def link(a, b, loss, label, rad, where):
        arrow(ax, nodes[a], nodes[b], color=LOSS_C[loss], style="<->", lw=1.6,
              connectionstyle=f"arc3,rad={rad}", shrinkA=16, shrinkB=16)
        ax.text(*where, label, color=LOSS_C[loss], ha="center", va="center", fontsize=8.5,
                bbox=dict(fc="white", ec="none", pad=0.5))

    link("Ex", "Dz", "KD", "$\\mathcal{L}_{KD}$: $1 - \\cos$ per sample", -0.45, (xs[2], 3.22))
    link("PExn", "PEx", "Recon", "$\\mathcal{L}_{Recon}$:\n$1 - \\cos_c$ per pixel", 0.0, (xs[2] + 0.5, 1.57))
    link("Exn", "PEx", "Con", "$\\mathcal{L}_{Con}$: push apart,\n$\\max(0, \\cos - 0.5)$", 0.0, (xs[1] + 0.3, 1.57))
    ax.add_patch(FancyArrowPatch((xs[2] - 0.2, top + 0.21), (xs[2] + 0.2, top + 0.21), arrowstyle="<->",
                                 connectionstyle="arc3,rad=-1.6", mutation_scale=9, color=LOSS_C["SSOT"], lw=1.6))
    ax.text(xs[2] + 0.3, top + 0.38, "$\\mathcal{L}_{SSOT}$: $i$ against $\\pi(i)$",
            color=LOSS_C["SSOT"], ha="left", va="center", fontsize=8.5)

    table = [("KD", "$\\mathcal{L}_{KD}$", "P, OCBE, D", "1"),
             ("SSOT", "$\\mathcal{L}_{SSOT}$", "P", "$\\alpha = 0.2/1.11$"),
             ("Recon", "$\\mathcal{L}_{Recon}$", "P", "$\\beta = 0.002/1.11$"),
             ("Con", "$\\mathcal{L}_{Con}$", "P", "$\\gamma = 0.02/1.11$")]
    x0, cols = 5.15, (0, 0.55, 1.3)
    for i, head in enumerate(("loss", "trains", "weight")):
        ax.text(x0 + cols[i], 1.65, head, fontsize=8, weight="bold", va="center")
    for i, (key, name, trains, weight) in enumerate(table):
        y = 1.4 - 0.24 * i
        ax.text(x0, y, name, color=LOSS_C[key], fontsize=8.5, va="center")
        ax.text(x0 + cols[1], y, trains, fontsize=8, va="center")
        ax.text(x0 + cols[2], y, weight, fontsize=8, va="center")
    ax.text(0.1, 0.18, "$E$ frozen (no gradient). Only $P\\,E(x)$ reaches the OCBE and the student; "
            "the noisy branch $\\tilde{x}$ (red, dashed) exists only in training.", fontsize=8, color=INK)
    return fig


def main() -> list[Path]:
    """Write the three SVGs beside this file; returns their paths."""
    shapes = {name: model_shapes(name, size) for name, size in PROFILES}
    with plt.rc_context(STYLE):
        return [
            save(pipeline(shapes, projections=False), "rd_pipeline.svg", "Reverse distillation (RD4AD)", shapes),
            save(pipeline(shapes, projections=True), "rdpp_pipeline.svg", "RD++: projections and the noisy branch",
                 shapes),
            save(losses_figure(), "rdpp_losses.svg", "Which RD++ loss connects which tensors", shapes),
        ]


if __name__ == "__main__":
    for written in main():
        print(written.relative_to(HERE.parents[1]), f"{written.stat().st_size / 1024:.0f} KiB")
