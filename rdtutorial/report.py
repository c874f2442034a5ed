"""Pictures and tables for the command line: heat-map overlays, an anomaly-map figure, a metrics table.

An overlay blends a colour-mapped anomaly map ``[H,W]`` over its image
``[3,H,W]`` in [0, 1]; the colour scale ``(vmin, vmax)`` is shared by all
images of one figure or one ``predict`` run, so colours compare across them.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

from .evaluate import predict_maps
from .metrics import METRICS, mean_metrics

METRIC_NAMES = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "aupro": "AUPRO"}
NOT_AVAILABLE_NOTE = "n/a: not available (no pixel masks in the test set: image metrics only)"
CMAP = "jet"


def heat_overlay(image: np.ndarray, amap: np.ndarray, vmin: float, vmax: float, alpha: float = 0.5) -> np.ndarray:
    """``image`` [H,W,3] in [0,1] with ``amap`` [H,W] as a heat map on top -> uint8 [H,W,3].

    Map values are scaled from ``(vmin, vmax)`` to the colour map's range and clipped.
    """
    scaled = np.clip((amap - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    heat = colormaps[CMAP](scaled)[..., :3]
    blended = (1 - alpha) * image + alpha * heat
    return np.round(np.clip(blended, 0.0, 1.0) * 255).astype(np.uint8)


def save_overlay(path: str | os.PathLike, image: np.ndarray, amap: np.ndarray, vmin: float, vmax: float) -> Path:
    """Write :func:`heat_overlay` of ``image`` [H,W,3] and ``amap`` [H,W] as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(heat_overlay(image, amap, vmin, vmax)).save(path, format="PNG")
    return path


def pick_examples(defects: list[str], normal: str, n_defect_types: int = 5) -> list[int]:
    """Indices of the first normal item and of the first item of each defect type (at most ``n_defect_types``)."""
    first: dict[str, int] = {}
    for i, defect in enumerate(defects):
        first.setdefault(defect, i)
    kinds = [d for d in first if d != normal][:n_defect_types]
    return ([first[normal]] if normal in first else []) + [first[d] for d in kinds]


@torch.no_grad()
def anomaly_map_figure(model: nn.Module, dataset, device: str = "cpu", n_defect_types: int = 5) -> Figure:
    """Rows: one normal test image and one image per defect type; columns: image, ground truth, map overlay.

    ``dataset`` is a test set of :class:`rdtutorial.data.AnomalyDataset`
    (MVTec layout, BTAD or ELPV); without masks there is no ground-truth
    column. The maps are computed here for the shown images only and share one
    colour scale (their min to max); titles give the image score (the map's
    maximum).
    """
    defects = [s.defect for s in dataset.samples]
    normal = next((s.defect for s in dataset.samples if s.label == 0), None)
    indices = pick_examples(defects, normal, n_defect_types)
    items = [dataset[i] for i in indices]
    model.eval()
    images = torch.stack([item["image"] for item in items])
    maps = predict_maps(model, images.to(device)).float().cpu()[:, 0].numpy()
    vmin, vmax = float(maps.min()), float(maps.max())
    columns = 3 if dataset.has_masks else 2
    fig = Figure(figsize=(2.4 * columns, 2.4 * len(items)))  # not pyplot's: no GUI backend, nothing to close
    axes = fig.subplots(len(items), columns, squeeze=False)
    for row, (item, amap) in enumerate(zip(items, maps)):
        image = item["image"].permute(1, 2, 0).numpy()
        axes[row, 0].imshow(image)
        axes[row, 0].set_title(f"{item['defect']} ({'anomalous' if item['label'] else 'normal'})", fontsize=8)
        if dataset.has_masks:
            axes[row, 1].imshow(item["mask"][0].numpy(), cmap="gray", vmin=0, vmax=1)
            axes[row, 1].set_title("ground truth", fontsize=8)
        axes[row, -1].imshow(heat_overlay(image, amap, vmin, vmax))
        axes[row, -1].set_title(f"anomaly map, score {amap.max():.3f}", fontsize=8)
        for ax in axes[row]:
            ax.axis("off")
    fig.suptitle(f"colour scale {vmin:.3f} (blue) to {vmax:.3f} (red), shared by the rows", fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG and close it if pyplot holds it (the command line makes many in one process)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def metrics_table(per_category: dict[str, dict]) -> str:
    """A plain-text table of the metrics in percent, one row per category, plus a mean row when there are several;
    a metric that is None (a test set without masks has no pixel metrics) shows as ``n/a``, explained below."""
    rows = dict(per_category)
    if len(rows) > 1:
        rows["mean"] = mean_metrics(per_category)
    width = max(8, *(len(name) for name in rows))
    header = f"{'category':<{width}}" + "".join(f"  {METRIC_NAMES[m] + ' %':>14}" for m in METRICS)
    lines = [header, "-" * len(header)]
    for name, r in rows.items():
        lines.append(f"{name:<{width}}" + "".join(f"  {_percent(r[m]):>14}" for m in METRICS))
    if any(r[m] is None for r in rows.values() for m in METRICS):
        lines.append(NOT_AVAILABLE_NOTE)
    return "\n".join(lines)


def metrics_line(metrics: dict) -> str:
    """``image AUROC 0.9512, pixel AUROC n/a, AUPRO n/a``: the :data:`~rdtutorial.metrics.METRICS` of one run."""
    return ", ".join(f"{METRIC_NAMES[m]} {'n/a' if metrics[m] is None else f'{metrics[m]:.4f}'}" for m in METRICS)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def write_report(model: nn.Module, test_set, out_dir: str | os.PathLike, device: str = "cpu", history=None) -> None:
    """``anomaly_maps.png`` (:func:`anomaly_map_figure`) and, given a training ``history``, ``history.png`` in
    ``out_dir``: the figures of a run folder."""
    save_figure(anomaly_map_figure(model, test_set, device), Path(out_dir) / "anomaly_maps.png")
    if history is not None:
        save_figure(history.plot(), Path(out_dir) / "history.png")
