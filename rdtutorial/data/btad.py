"""BTAD (beanTech Anomaly Detection): three products ``01``, ``02``, ``03``.

``<root>/<product>/train/ok/*``, ``test/ok/*`` (normal), ``test/ko/*``
(defective) and ``ground_truth/ko/<stem>.<png|bmp>``: the mask has the image's
stem with no suffix, and its extension may differ from the image's (the
images of some products are .bmp, their masks .png or .bmp). Without a
``ground_truth/`` folder the product has image labels only (no masks).
"""

from __future__ import annotations

from pathlib import Path

from .folder import GROUND_TRUTH, CategoryDataset, Sample, find_mask
from .io import DatasetError, list_images

NORMAL, ANOMALOUS = "ok", "ko"


class BTAD(CategoryDataset):
    """One BTAD product, one split; items as for :class:`~rdtutorial.data.MVTecAD`
    (``defect`` is the folder name, ``"ok"`` or ``"ko"``)."""

    CATEGORIES = ("01", "02", "03")

    @staticmethod
    def find_samples(folder: Path, split: str, masks: bool) -> list[Sample]:
        return _samples(folder, split, masks)


def _images(folder: Path, required: bool) -> list[Path]:
    if not folder.is_dir():
        if required:
            raise DatasetError(f"folder {folder} does not exist (expected BTAD images there)")
        return []
    images = list_images(folder)
    if required and not images:
        raise DatasetError(f"folder {folder} holds no PNG, BMP or JPEG images")
    return images


def _samples(folder: Path, split: str, masks: bool) -> list[Sample]:
    if split == "train":
        return [Sample(p, None, 0, NORMAL) for p in _images(folder / "train" / NORMAL, required=True)]
    samples = [Sample(p, None, 0, NORMAL) for p in _images(folder / "test" / NORMAL, required=False)]
    for image in _images(folder / "test" / ANOMALOUS, required=False):
        mask = find_mask(folder / GROUND_TRUTH / ANOMALOUS, image.stem, image) if masks else None
        samples.append(Sample(image, mask, 1, ANOMALOUS))
    if not samples:
        raise DatasetError(f"no test images in {folder / 'test' / NORMAL} or {folder / 'test' / ANOMALOUS}")
    return samples
