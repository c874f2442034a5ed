"""A lazily loading anomaly-detection dataset over a list of (image, mask, label, defect) files.

MVTecAD and BTAD only differ in how they find the files of a category folder
(:meth:`CategoryDataset.find_samples`); :class:`AnomalyDataset` reads one item
per ``__getitem__`` from the list of :class:`Sample` (so it pickles cheaply
into DataLoader workers).

A category folder without a ``ground_truth/`` folder has no masks at all: its
items have no ``"mask"`` key (``has_masks`` is False) and it is scored with
image metrics only, never with masks made up for it. A ``ground_truth/`` folder
that lacks some defect image's mask is an error naming that image.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .io import DatasetError, is_image_file, load_image, load_mask, normalize_size, resize_image, resize_mask

SPLITS = ("train", "test")
GROUND_TRUTH = "ground_truth"  # the folder of a category's masks


@dataclass(frozen=True)
class Sample:
    """One image file, its mask file (None for a normal image), label 0|1 and defect type."""

    image: Path
    mask: Path | None
    label: int
    defect: str


def list_categories(root: str | Path) -> list[str]:
    """Sorted names of the folders in ``root`` that hold a ``train`` or ``test`` folder."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir()))


def category_dir(root: str | Path, category: str) -> Path:
    """``root/category``, or a DatasetError that lists the categories present."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist (expected a folder with one subfolder per category)")
    folder = root / category
    if not folder.is_dir():
        present = list_categories(root)
        raise DatasetError(
            f"category {category!r} not found: {folder} does not exist. "
            f"Categories present in {root}: {present if present else 'none'}"
        )
    return folder


def find_mask(folder: Path, stem: str, image: Path) -> Path:
    """The mask ``folder/<stem>.<png|bmp|jpg|jpeg>`` for ``image``, or a DatasetError naming what was looked for."""
    candidates = sorted(p for p in folder.iterdir() if p.stem == stem and is_image_file(p)) if folder.is_dir() else []
    if not candidates:
        raise DatasetError(
            f"defect image {image} has no mask: expected {folder / stem}.png (or .bmp/.jpg/.jpeg)"
        )
    return candidates[0]


def check_split(split: str) -> str:
    """``split`` if it is 'train' or 'test', else a ValueError."""
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    return split


class AnomalyDataset(Dataset):
    """Items ``{"image": [3,H,W] float32 in [0,1], "mask": [1,H,W] float32 in {0,1}, "label": 0|1,
    "defect": str, "path": str}``, read lazily from ``samples`` and resized to ``image_size``
    (int, (H, W), or None for each file's own size). Where ``has_masks`` is False the items have
    no ``"mask"``: the data set has image labels only.
    """

    has_masks: bool = True

    def __init__(self, samples: list[Sample], image_size: int | tuple[int, int] | None = 256) -> None:
        self.samples = list(samples)
        self.image_size = normalize_size(image_size)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        """Labels of all items, without reading any image."""
        return [s.label for s in self.samples]

    @property
    def defects(self) -> list[str]:
        """Sorted defect types present (normal ones included)."""
        return sorted({s.defect for s in self.samples})

    def subset(self, n: int) -> "AnomalyDataset":
        """A copy with at most ``n`` items, normal and defective ones alternating (defective ones
        spread over the defect types), so that a small test split still has both labels."""
        normal = [s for s in self.samples if s.label == 0]
        defective = [s for s in self.samples if s.label == 1]
        if defective:
            step = max(len(defective) // max(n // 2, 1), 1)
            defective = defective[::step]
        order = [s for pair in zip(normal, defective) for s in pair]
        longer = normal if len(normal) > len(defective) else defective
        order += longer[min(len(normal), len(defective)):]
        chosen = {id(s) for s in order[:n]}
        small = copy.copy(self)
        small.samples = [s for s in self.samples if id(s) in chosen]
        return small

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        image = load_image(s.image)
        item = {"image": resize_image(image, self.image_size), "label": s.label, "defect": s.defect,
                "path": str(s.image)}
        if not self.has_masks:
            return item
        if s.mask is None:
            mask = torch.zeros(1, *image.shape[-2:])
        else:
            mask = load_mask(s.mask)
            if mask.shape[-2:] != image.shape[-2:]:
                raise DatasetError(
                    f"mask {s.mask} is {tuple(mask.shape[-2:])} (H, W) but its image {s.image} is "
                    f"{tuple(image.shape[-2:])}: a mask must have its image's size"
                )
        return {**item, "mask": resize_mask(mask, self.image_size)}


class CategoryDataset(AnomalyDataset):
    """One category of a dataset laid out as ``<root>/<category>/``, one split.

    Subclasses name their ``CATEGORIES`` and list a category folder's files in
    :meth:`find_samples`; every file (and every defect image's mask) is found at
    construction, so a missing folder or mask fails here, naming the path. A
    folder without ``ground_truth/`` has no masks (``has_masks`` False); its test
    split says so once, with a warning.
    """

    CATEGORIES: tuple[str, ...] = ()

    def __init__(
        self,
        root: str | Path,
        category: str,
        split: str = "train",
        image_size: int | tuple[int, int] | None = 256,
    ) -> None:
        self.root = Path(root)
        self.category = category
        self.split = check_split(split)
        folder = category_dir(self.root, category)
        self.has_masks = (folder / GROUND_TRUTH).is_dir()
        super().__init__(self.find_samples(folder, self.split, self.has_masks), image_size)
        if not self.has_masks and any(self.labels):
            warnings.warn(f"{folder} has no {GROUND_TRUTH}/ folder, so no masks: image metrics only (pixel AUROC "
                          "and AUPRO not available)", stacklevel=2)

    @staticmethod
    def find_samples(folder: Path, split: str, masks: bool) -> list[Sample]:
        """The samples of ``split`` in the category folder ``folder``; with ``masks``, every defect image's
        mask in ``folder/ground_truth`` (else their ``mask`` is None)."""
        raise NotImplementedError
