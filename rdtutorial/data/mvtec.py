"""MVTec AD and any folder in its layout.

``<root>/<category>/train/good/*``, ``test/<defect>/*`` (``good`` = normal) and
``ground_truth/<defect>/<stem>_mask.<ext>``; PNG, BMP or JPEG. Without a
``ground_truth/`` folder the category has image labels only (no masks).
"""

from __future__ import annotations

from pathlib import Path

from .folder import GROUND_TRUTH, CategoryDataset, Sample, find_mask
from .io import DatasetError, list_images

NORMAL = "good"


class MVTecAD(CategoryDataset):
    """One category of an MVTec-layout dataset, one split.

    ``MVTecAD(root, "bottle", split="test", image_size=256)[i]`` ->
    ``{"image": [3,H,W], "mask": [1,H,W], "label": 0|1, "defect": str, "path": str}``
    (no ``"mask"`` without a ``ground_truth/`` folder). Every file is listed (and
    every defect image's mask found) at construction; images are read per item.
    """

    CATEGORIES = (
        "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
        "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
    )

    @staticmethod
    def find_samples(folder: Path, split: str, masks: bool) -> list[Sample]:
        return _train_samples(folder) if split == "train" else _test_samples(folder, masks)


def _train_samples(folder: Path) -> list[Sample]:
    good = folder / "train" / NORMAL
    if not good.is_dir():
        raise DatasetError(f"training folder {good} does not exist (expected normal images in train/{NORMAL}/)")
    images = list_images(good)
    if not images:
        raise DatasetError(f"training folder {good} holds no PNG, BMP or JPEG images")
    return [Sample(p, None, 0, NORMAL) for p in images]


def _test_samples(folder: Path, masks: bool) -> list[Sample]:
    test = folder / "test"
    if not test.is_dir():
        raise DatasetError(f"test folder {test} does not exist (expected test/{NORMAL}/ and test/<defect>/)")
    samples = []
    for defect_dir in sorted(p for p in test.iterdir() if p.is_dir()):
        defect = defect_dir.name
        for image in list_images(defect_dir):
            if defect == NORMAL:
                samples.append(Sample(image, None, 0, defect))
            else:
                mask = find_mask(folder / GROUND_TRUTH / defect, f"{image.stem}_mask", image) if masks else None
                samples.append(Sample(image, mask, 1, defect))
    if not samples:
        raise DatasetError(f"test folder {test} holds no PNG, BMP or JPEG images in its subfolders")
    return samples
