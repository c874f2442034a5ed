"""A grid of dataset samples with their ground-truth masks drawn on top (for the book)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def show_samples(
    dataset,
    n: int = 8,
    indices: Sequence[int] | None = None,
    ncols: int = 4,
    size: float = 2.2,
):
    """Show ``n`` items of ``dataset`` (evenly spaced, or ``indices``) with masks in translucent red
    and a red contour (none for a data set without masks); titles give the defect type. Returns the
    matplotlib Figure."""
    import matplotlib.pyplot as plt

    if indices is None:
        if len(dataset) == 0:
            raise ValueError("the dataset is empty: nothing to show")
        indices = np.unique(np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).round().astype(int)).tolist()
    indices = list(indices)
    ncols = max(1, min(ncols, len(indices)))
    nrows = -(-len(indices) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, indices):
        item = dataset[index]
        image = item["image"].permute(1, 2, 0).numpy()
        mask = item["mask"][0].numpy() if "mask" in item else None
        ax.imshow(image)
        if mask is not None and mask.any():
            overlay = np.zeros((*mask.shape, 4), dtype=np.float32)
            overlay[..., 0], overlay[..., 3] = 1.0, 0.35 * mask
            ax.imshow(overlay)
            ax.contour(mask, levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(f"{item['defect']} ({'anomalous' if item['label'] else 'normal'})", fontsize=8)
    fig.tight_layout()
    return fig
