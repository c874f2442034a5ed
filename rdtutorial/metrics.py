"""Evaluation metrics: image AUROC, pixel AUROC and AUPRO.

AUROC comes from scikit-learn. scikit-learn has no AUPRO, and the common
public implementations are either per-threshold Python loops (slow: the
RD4AD/RD++ code relabels every mask at each of 200 thresholds) or compute a
different, per-image variant. So we write AUPRO ourselves: ``aupro`` is the
standard MVTec AD definition, vectorised, and ``aupro_per_image`` is the
RD4AD/RD++ variant under its own name, so the two can be compared.

Inputs may be torch tensors or numpy arrays. Masks hold 0 (normal) and 1
(defect) only.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch
from scipy import ndimage
from scipy.integrate import trapezoid
from sklearn.metrics import auc, roc_auc_score

__all__ = ["METRICS", "image_auroc", "pixel_auroc", "pro_curve", "aupro", "aupro_per_image", "mean_metrics"]

METRICS = ("image_auroc", "pixel_auroc", "aupro")  # what evaluation reports, by its keys in every result

ArrayLike = Union[torch.Tensor, np.ndarray]

# 8-connectivity inside each image and none across images of an [N, H, W] stack.
_IN_PLANE_8_CONNECTED = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_8_CONNECTED[1] = True


def _numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()  # numpy has no bfloat16
    return np.asarray(x)


def _scores(x: ArrayLike) -> np.ndarray:
    """Scores as float32, or float64 when given float64 (no precision is dropped)."""
    x = _numpy(x)
    return x.astype(np.result_type(x.dtype, np.float32), copy=False)


def _binary(x: ArrayLike, name: str) -> np.ndarray:
    """Ground truth as a bool array; anything but 0 and 1 is an error."""
    x = _numpy(x)
    if x.dtype == bool:
        return x
    nonzero = x != 0
    if not (x[nonzero] == 1).all():
        raise ValueError(f"{name} must contain only 0 (normal) and 1 (anomalous), found {np.unique(x)[:10]}")
    return nonzero


def _maps_and_masks(maps: ArrayLike, masks: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Checked [N, H, W] score maps and bool masks; a singleton channel ([N, 1, H, W]) is dropped."""
    maps, masks = _scores(maps), _binary(masks, "masks")
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} must have the same shape")
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps, masks = maps[:, 0], masks[:, 0]
    if maps.ndim != 3:
        raise ValueError(f"maps and masks must be [N, H, W] (or [N, 1, H, W]), got {maps.shape}")
    return maps, masks


def _auroc(scores: np.ndarray, labels: np.ndarray, what: str) -> float:
    if scores.shape != labels.shape:
        raise ValueError(f"{what} scores {scores.shape} and labels {labels.shape} must have the same shape")
    if labels.all() or not labels.any():
        present = "anomalous (1)" if labels.any() else "normal (0)"
        raise ValueError(f"AUROC needs normal and anomalous {what}s, but all {labels.size} are {present}")
    return float(roc_auc_score(labels.ravel(), scores.ravel()))


def image_auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Image-level AUROC of scores [N] against labels [N] (1 = anomalous)."""
    return _auroc(_scores(scores), _binary(labels, "labels"), "image")


def pixel_auroc(maps: ArrayLike, masks: ArrayLike) -> float:
    """Pixel-level AUROC of all pixels of maps [N, ...] against masks of the same shape."""
    return _auroc(_scores(maps), _binary(masks, "masks"), "pixel")


def pro_curve(maps: ArrayLike, masks: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The PRO curve of a test set: (fpr, pro), two non-decreasing [T] arrays from (0, 0) to (1, 1).

    A threshold t makes a pixel positive when its score >= t. FPR(t) is the
    fraction of all normal pixels of the set that are positive; PRO(t) is the
    mean, over every connected defect region of the set (8-connectivity), of
    the fraction of that region's pixels that are positive. Lowering t
    through every distinct score traces the curve.

    Computed without a loop over thresholds. A defect pixel of region r adds
    1 / (|r| * regions) to PRO, so with the defect scores sorted once
    (descending), PRO at each distinct defect score is a cumulative sum read
    at the end of that score's run. FPR is a count of normal scores >= t: a
    binary search in the normal scores, sorted once. Between two consecutive
    distinct defect scores only normal pixels are crossed, so the curve runs
    horizontally there; it bends only just above and at each defect score
    (diagonally when normal pixels share that score). The curve is returned
    at those two points per distinct defect score: the same polyline as one
    point per distinct score, without its collinear points.
    maps, masks: [N, H, W] (or [N, 1, H, W]).
    """
    maps, masks = _maps_and_masks(maps, masks)
    regions, num_regions = ndimage.label(masks, structure=_IN_PLANE_8_CONNECTED)
    if num_regions == 0:
        raise ValueError("PRO needs at least one defect region, but all masks are empty (normal)")
    normal = maps[~masks]
    if normal.size == 0:
        raise ValueError("PRO needs normal pixels for the false positive rate, but the masks cover every pixel")
    normal.sort()
    defect_regions = regions[masks] - 1
    region_weight = 1.0 / (np.bincount(defect_regions) * float(num_regions))

    defect_scores = maps[masks]
    order = np.argsort(defect_scores)[::-1]
    scores = defect_scores[order]
    run_ends = np.append(np.flatnonzero(scores[1:] != scores[:-1]), scores.size - 1)
    levels = scores[run_ends]
    covered = np.cumsum(region_weight[defect_regions[order]])
    pro_at = covered[run_ends] / covered[-1]  # the total is 1 up to rounding: make it exactly 1
    pro_above = np.concatenate(([0.0], pro_at[:-1]))
    fp_above = normal.size - np.searchsorted(normal, levels, side="right")
    fp_at = normal.size - np.searchsorted(normal, levels, side="left")
    fpr = np.stack([fp_above, fp_at], axis=1).ravel() / normal.size
    pro = np.stack([pro_above, pro_at], axis=1).ravel()
    return np.concatenate(([0.0], fpr, [1.0])), np.concatenate(([0.0], pro, [1.0]))


def aupro(maps: ArrayLike, masks: ArrayLike, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve up to ``fpr_limit``, divided by ``fpr_limit``: in [0, 1].

    The standard MVTec AD definition (Bergmann et al.), over the whole test
    set: FPR from all normal pixels of all images (images without defects
    count), PRO averaged over all defect regions of all images, trapezoidal
    integration with the curve linearly interpolated at exactly
    ``fpr_limit``. maps, masks: [N, H, W] (or [N, 1, H, W]).
    """
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    fpr, pro = pro_curve(maps, masks)
    inside = np.searchsorted(fpr, fpr_limit, side="right")
    fpr_cut, pro_cut = fpr[:inside], pro[:inside]
    if fpr_cut[-1] < fpr_limit:
        pro_at_limit = np.interp(fpr_limit, fpr[inside - 1 : inside + 1], pro[inside - 1 : inside + 1])
        fpr_cut, pro_cut = np.append(fpr_cut, fpr_limit), np.append(pro_cut, pro_at_limit)
    return float(trapezoid(pro_cut, fpr_cut) / fpr_limit)


def aupro_per_image(
    maps: ArrayLike, masks: ArrayLike, num_thresholds: int = 200, fpr_limit: float = 0.3
) -> float:
    """The RD4AD/RD++ public code's AUPRO (``compute_pro`` in hq-deng/RD4AD ``test.py``).

    For each image that has a defect (images without one are skipped), on
    that image alone:

    - thresholds ``np.arange(min, max, (max - min) / num_thresholds)`` of its
      own map (float64); a pixel is positive when its score > threshold;
    - FPR = positive normal pixels / normal pixels of that image;
      PRO = mean over that image's regions (8-connectivity) of the positive
      fraction;
    - keep the thresholds with FPR < ``fpr_limit``, divide those FPRs by the
      largest of them, and take the trapezoidal area under PRO.

    The result is the mean of these per-image areas. How it differs from the
    standard ``aupro``: (1) each image has its own curve and thresholds and
    the areas are averaged over images, instead of one curve for the set, so
    every defective image weighs the same whatever its number of regions;
    (2) images without defects never contribute false positives;
    (3) only ``num_thresholds`` thresholds, evenly spaced in score, and
    "positive" means > threshold, not >=; (4) the curve is neither anchored
    at FPR 0 nor interpolated at ``fpr_limit``: its sampled FPRs below the
    limit are divided by the largest of them, rather than by ``fpr_limit``,
    so the value depends on where the thresholds happen to fall and can be
    higher or lower than the standard one. Its numbers
    are therefore not comparable with the standard AUPRO.

    The public loop relabels the mask at every threshold; here each region's
    and the normal pixels' scores are sorted once and counted above every
    threshold with ``searchsorted``: the same counts, so the same result.
    maps, masks: [N, H, W] (or [N, 1, H, W]).
    """
    maps, masks = _maps_and_masks(maps, masks)
    maps = maps.astype(np.float64, copy=False)  # the public code's maps are float64
    regions, _ = ndimage.label(masks, structure=_IN_PLANE_8_CONNECTED)
    areas = []
    for i in np.flatnonzero(masks.any(axis=(1, 2))):
        amap, image_regions = maps[i], regions[i]
        normal = np.sort(amap[image_regions == 0])
        if normal.size == 0:
            raise ValueError(f"image {i}: the mask covers every pixel, so its FPR is undefined")
        low, high = amap.min(), amap.max()
        if low == high:
            raise ValueError(f"image {i}: its map is constant ({low}), so there are no thresholds")
        thresholds = np.arange(low, high, (high - low) / num_thresholds)
        fpr = (normal.size - np.searchsorted(normal, thresholds, side="right")) / normal.size
        labels = np.unique(image_regions[image_regions > 0])
        overlaps = np.empty((labels.size, thresholds.size))
        for row, label in enumerate(labels):
            region = np.sort(amap[image_regions == label])
            overlaps[row] = (region.size - np.searchsorted(region, thresholds, side="right")) / region.size
        pro = overlaps.mean(axis=0)
        keep = fpr < fpr_limit
        if keep.sum() < 2 or fpr[keep].max() == 0:
            raise ValueError(
                f"image {i}: fewer than two thresholds with FPR < {fpr_limit}, or FPR 0 at all of them, "
                f"so the per-image AUPRO is undefined (the public code returns nan or fails here)"
            )
        areas.append(auc(fpr[keep] / fpr[keep].max(), pro[keep]))
    if not areas:
        raise ValueError("aupro_per_image needs at least one image with a defect, but all masks are empty")
    return float(np.mean(areas))


def mean_metrics(per_category: dict[str, dict]) -> dict[str, float | None]:
    """The mean of each of :data:`METRICS` over categories (``{category: {metric: value}}``).

    A metric that some category lacks (None: a test set without masks has no
    pixel metrics) has no mean (None): a mean over only some of the categories
    would read as the mean of all of them.
    """
    values = {m: [r[m] for r in per_category.values()] for m in METRICS}
    return {m: None if None in v else float(np.mean(v)) for m, v in values.items()}
