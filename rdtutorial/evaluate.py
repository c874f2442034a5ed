"""Evaluation: anomaly maps for a test set and the standard metrics on them.

A test set without masks (image labels only: ELPV, an MVTec-layout folder
without ``ground_truth/``) gets image AUROC only; its pixel AUROC and AUPRO
are None, "not available", never a number computed from made-up masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .anomaly_map import anomaly_map, image_scores
from .data import DatasetError
from .data.cache import mask_of, to_uint8
from .metrics import aupro, image_auroc, pixel_auroc


@dataclass
class Evaluation:
    """Maps ``[N,H,W]``, masks ``[N,H,W]`` (None without masks), labels and image scores ``[N]`` (numpy), and
    the metrics (:data:`~rdtutorial.metrics.METRICS`; a pixel metric is None without masks)."""

    maps: np.ndarray
    masks: np.ndarray | None
    labels: np.ndarray
    scores: np.ndarray
    paths: list[str]
    metrics: dict[str, float | None]


def check_test_set(dataset: Dataset) -> None:
    """Read every item of a test ``dataset`` now, so that a bad file or a set that cannot be scored fails
    before training rather than after it: unreadable images, masks of another size, images with values outside
    [0, 1], masks for some items only, no normal or no defective images, or masks without a defect pixel (a
    ``DatasetError`` naming the file or the folder). A set without masks passes: it gets image metrics only."""
    where = f"{dataset.root}/{dataset.category}/test" if hasattr(dataset, "root") else "the test set"
    labels, defect_pixels, with_masks = set(), 0.0, False
    for i in range(len(dataset)):
        item = dataset[i]
        to_uint8(item, i, "the test set")  # NaN, infinite or out-of-range values: named now, not at scoring
        labels.add(int(item["label"]))
        with_masks = "mask" in item if i == 0 else with_masks
        mask = mask_of(item, i, with_masks, "the test set")
        defect_pixels += 0.0 if mask is None else float(mask.sum())
    if labels != {0, 1}:
        kind = "defective" if 1 not in labels else "normal"
        raise DatasetError(f"{where} has no {kind} images: evaluation needs both normal and defective ones (MVTec "
                         "layout: test/good/ and test/<defect>/ with masks in ground_truth/<defect>/)")
    if with_masks and not defect_pixels:
        raise DatasetError(f"the masks of {where} mark no defect pixel at the image size used: pixel AUROC and "
                         "AUPRO need some; check the ground_truth masks")


@torch.no_grad()
def predict_maps(model: nn.Module, images: torch.Tensor, sigma: float = 4.0) -> torch.Tensor:
    """Anomaly maps ``[B,1,H,W]`` for images ``[B,3,H,W]`` in [0, 1]: teacher vs student, blurred."""
    out = model(images)
    return anomaly_map(out.teacher, out.student, size=tuple(images.shape[-2:]), sigma=sigma)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: bool = True,
    num_workers: int = 0,
) -> Evaluation:
    """Run ``model`` (in eval mode) over a test ``dataset``; image AUROC, pixel AUROC and AUPRO.

    Items without ``"mask"`` (a data set with image labels only) give pixel
    AUROC and AUPRO None. Pixel metrics need at least one defect pixel, and
    image AUROC needs both normal and defective images; a test set without
    them raises ``ValueError`` (:func:`check_test_set` names it first).
    """
    was_training = model.training
    model.eval()
    maps, masks, labels, paths = [], [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
        maps.append(predict_maps(model, batch["image"].to(device)).float().cpu())
        if "mask" in batch:
            masks.append(batch["mask"])
        labels.append(batch["label"])
        paths.extend(batch["path"])
    model.train(was_training)
    maps_t = torch.cat(maps)[:, 0]
    masks_np = torch.cat(masks)[:, 0].numpy().astype(np.uint8) if masks else None
    labels_np = torch.cat(labels).numpy()
    scores = image_scores(maps_t[:, None]).numpy()
    maps_np = maps_t.numpy()
    metrics = {
        "image_auroc": image_auroc(scores, labels_np),
        "pixel_auroc": None if masks_np is None else pixel_auroc(maps_np, masks_np),
        "aupro": None if masks_np is None else aupro(maps_np, masks_np),
    }
    return Evaluation(maps_np, masks_np, labels_np, scores, paths, metrics)
