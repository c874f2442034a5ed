"""The record of a training run: losses per epoch, metrics when evaluated, and a plot."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt


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

    def plot(self, title: str = "") -> plt.Figure:
        """Loss curves (one panel per term, log scale) and, if any, metrics over epochs."""
        terms = [k for k in ("total", "kd", "ssot", "recon", "con") if any(e.get(k) for e in self.epochs)]
        panels = len(terms) + (1 if self.evals else 0)
        fig, axes = plt.subplots(1, max(panels, 1), figsize=(3.2 * max(panels, 1), 2.8), squeeze=False)
        epochs = [e["epoch"] for e in self.epochs]
        for ax, term in zip(axes[0], terms):
            ax.plot(epochs, [e[term] for e in self.epochs], marker=".")
            ax.set_yscale("log")
            ax.set_title(f"L_{term}" if term != "total" else "total loss")
            ax.set_xlabel("epoch")
        if self.evals:
            ax = axes[0][-1]
            for metric in ("image_auroc", "pixel_auroc", "aupro"):
                ax.plot([e["epoch"] for e in self.evals], [e[metric] for e in self.evals], marker="o", label=metric)
            ax.set_title("test metrics")
            ax.set_xlabel("epoch")
            ax.legend(fontsize=7)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return fig
