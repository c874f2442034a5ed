"""The record of a training run: losses per epoch, metrics when evaluated, and a plot."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt

from .metrics import METRICS


@dataclass
class History:
    """``epochs``: one dict per epoch (mean losses, seconds); ``evals``: one dict per evaluation."""

    epochs: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, "evals": self.evals}

    @classmethod
    def from_dict(cls, data: dict) -> "History":
        return cls(epochs=list(data.get("epochs", [])), evals=list(data.get("evals", [])))

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "History":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def plot(self, title: str = "", ncols: int = 3, diagnostics: bool = True) -> plt.Figure:
        """Loss curves (one panel per term), metrics over epochs (a metric that is not available, None, is
        left out) and, with ``diagnostics``, the measurements of :mod:`rdtutorial.diagnostics` (three
        panels), ``ncols`` panels a row.

        A loss term whose values span more than a factor of 10 gets a log scale, so that its
        late epochs stay readable; the others keep a linear one. Gradient norms are always
        on a log scale: the weighted terms differ by orders of magnitude.
        """
        terms = [k for k in ("total", "kd", "ssot", "recon", "con") if any(e.get(k) for e in self.epochs)]
        grads = [k for k in ("kd", "ssot", "recon", "con") if any(f"grad_{k}" in e for e in self.epochs)]
        shown = diagnostics and any("sample_cos" in e for e in self.epochs)
        panels = max(len(terms) + (1 if self.evals else 0) + (3 if shown else 0), 1)
        ncols = min(ncols, panels)
        nrows = -(-panels // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.8 * nrows), squeeze=False)
        axes = list(axes.flat)
        epochs = [e["epoch"] for e in self.epochs]
        for ax, term in zip(axes, terms):
            values = [e[term] for e in self.epochs]
            ax.plot(epochs, values, marker=".")
            positive = [v for v in values if v > 0]
            if positive and max(positive) > 10 * min(positive):
                ax.set_yscale("log")
            ax.set_title(f"L_{term}" if term != "total" else "total loss")
            ax.set_xlabel("epoch")
        used = len(terms)
        if self.evals:
            ax = axes[used]
            for metric in METRICS:  # None: not available (a test set without masks has no pixel metrics)
                points = [(e["epoch"], e[metric]) for e in self.evals if e.get(metric) is not None]
                if points:
                    ax.plot(*zip(*points), marker="o", label=metric)
            ax.set_title("test metrics")
            ax.set_xlabel("epoch")
            ax.legend(fontsize=7)
            used += 1
        if shown:
            self._plot_diagnostics(axes[used : used + 3], grads)
        for ax in axes[panels:]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return fig

    def _plot_diagnostics(self, axes: list[plt.Axes], grads: list[str]) -> None:
        rows = [e for e in self.epochs if "sample_cos" in e]
        x = [e["epoch"] for e in rows]
        label = {"kd": "L_KD", "ssot": "a*L_SSOT", "recon": "b*L_Recon", "con": "g*L_Con"}
        for term in grads:  # a weight of 0, or L_Con at exactly 0, gives no line
            values = [e.get(f"grad_{term}", 0.0) for e in rows]
            if any(v > 0 for v in values):
                axes[0].plot(x, values, marker=".", label=label[term])
        axes[0].set_yscale("log")
        axes[0].set_title("weighted gradient on P")
        for ax, title, fields in (
            (axes[1], "cos between samples", {"P E": "sample_cos", "E": "teacher_sample_cos"}),
            (axes[2], "cos(noisy, clean) in boxes", {"P E": "box_cos_proj", "E": "box_cos_teacher"}),
        ):
            for name, key in fields.items():
                if any(key in e for e in rows):
                    ax.plot(x, [e.get(key, float("nan")) for e in rows], marker=".", label=name)
            ax.set_title(title)
        for ax in axes:
            ax.set_xlabel("epoch")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
