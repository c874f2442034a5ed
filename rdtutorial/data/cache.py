"""A dataset decoded and resized once per run, held as uint8 on the training device.

MVTec AD images are PNGs of up to 1024 x 1024 pixels: decoding and resizing
them every epoch costs more CPU time than a GPU step on a Colab runtime's two
cores. :class:`CachedImages` reads every item once, keeps images as uint8
``[N,3,H,W]`` (a quarter of float32; 79 MB for 400 images at 256 px) and
masks as bool on ``device`` (a data set without masks has none: image labels
only), and hands out batches by index.

Values: an item's image is ``uint8 / 255``. That is exactly the source's value
when the file is 8-bit and already ``image_size`` (the demo set); a resized
image is rounded to the nearest of the 256 levels (an error of at most 1/510).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .io import DatasetError


def to_uint8(item: dict, index: int, source: str = "the dataset") -> Tensor:
    """The item's image in [0, 1] as uint8 levels, or a DatasetError naming the item (its ``index`` in
    ``source``, and its path if it has one): the cast would silently turn NaN and infinities into 0 and
    wrap values outside [0, 1] (-0.5 becomes 128), so they are refused here, before any training."""
    image = item["image"]
    levels = image.mul(255).round_()
    if torch.isnan(levels).any():
        problem = "NaN values"
    elif torch.isinf(levels).any():
        problem = "infinite values"
    elif levels.min() < 0 or levels.max() > 255:
        problem = f"values from {image.min().item():.4g} to {image.max().item():.4g}"
    else:
        return levels.to(torch.uint8)
    path = f" ({item['path']})" if item.get("path") else ""
    raise DatasetError(f"item {index} of {source}{path}: its image has {problem}; "
                       "a dataset must yield images of finite values in [0, 1]")


def mask_of(item: dict, index: int, with_masks: bool, source: str = "the dataset") -> Tensor | None:
    """The item's ``"mask"`` ``[1,H,W]``, or None for a data set without masks (``with_masks`` False: its
    first item had none); an item that breaks the rule "masks for every item or for none" is a
    DatasetError naming it."""
    if ("mask" in item) == with_masks:
        return item.get("mask")
    path = f" ({item['path']})" if item.get("path") else ""
    has = "has no mask but the first item has one" if with_masks else "has a mask but the first item has none"
    raise DatasetError(f"item {index} of {source}{path} {has}: a dataset gives masks for every item or for none")


class CachedImages(Dataset):
    """Every item of ``dataset`` (``{"image", "mask", "label", "defect", "path"}``, ``"mask"`` optional) read once.

    ``cache[i]`` is an item like the source's (image float32 in [0, 1], mask
    float32 in {0, 1}, on ``device``; no mask where the source has none:
    ``has_masks`` False), so :func:`rdtutorial.evaluate.evaluate` takes it as
    it is; :meth:`images` gathers a training batch.
    ``num_workers`` processes decode the files. An image with NaN, infinite
    or out-of-range values is refused (:func:`to_uint8`), naming the item by
    its index in ``name`` (e.g. "the train set") and its path.
    """

    def __init__(
        self, dataset: Dataset, device: str | torch.device = "cpu", num_workers: int = 0, name: str = "the dataset"
    ) -> None:
        if len(dataset) == 0:
            raise DatasetError(f"cannot cache {name}: it is empty")
        images, masks = [], []
        self.labels: list[int] = []
        self.defects: list[str] = []
        self.paths: list[str] = []
        for index, item in enumerate(DataLoader(dataset, batch_size=None, num_workers=num_workers)):
            image = item["image"]
            if images and image.shape != images[0].shape:
                raise DatasetError(
                    f"image {item['path']} is {tuple(image.shape)} but the first one is {tuple(images[0].shape)}: "
                    "caching needs one image size (set image_size)"
                )
            images.append(to_uint8(item, index, name))
            with_masks = "mask" in item if index == 0 else with_masks
            mask = mask_of(item, index, with_masks, name)
            if mask is not None:
                masks.append(mask >= 0.5)
            self.labels.append(int(item["label"]))
            self.defects.append(item["defect"])
            self.paths.append(item["path"])
        self.device = torch.device(device)
        self.uint8 = torch.stack(images).to(self.device)  # [N,3,H,W]
        self.masks = torch.stack(masks).to(self.device) if masks else None  # [N,1,H,W] bool, or None

    def __len__(self) -> int:
        return self.uint8.shape[0]

    @property
    def has_masks(self) -> bool:
        """Whether the items have masks (the source's had)."""
        return self.masks is not None

    def batches(self, batch_size: int, generator: torch.Generator) -> DataLoader:
        """Shuffled index batches ``[batch_size]``, the last incomplete one dropped.

        It is ``DataLoader(..., shuffle=True, drop_last=True, generator=generator)``
        over the indices, so it draws from ``generator`` exactly as that loader
        over the dataset itself does: the same images in the same batches, in
        the same order, epoch after epoch, for the same generator state.
        """
        return DataLoader(range(len(self)), batch_size=batch_size, shuffle=True, drop_last=True, generator=generator)

    def images(self, indices: Tensor) -> Tensor:
        """Images ``[B,3,H,W]`` float32 in [0, 1] on the cache's device, for ``indices [B]``."""
        return self.uint8[indices.to(self.device)].float().div_(255)

    def __getitem__(self, index: int) -> dict:
        item = {"image": self.uint8[index].float().div_(255), "label": self.labels[index],
                "defect": self.defects[index], "path": self.paths[index]}
        return item if self.masks is None else {**item, "mask": self.masks[index].float()}
