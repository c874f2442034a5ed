"""Reading images and masks from disk into tensors, with errors that name the file.

Images become float32 [3, H, W] in [0, 1] (grayscale, palette, RGBA and 16-bit
sources are converted), masks float32 [1, H, W] in {0, 1}. Both are resized with
the same antialiased bilinear filter (torch); the mask is then thresholded at 0.5.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..errors import InputError

IMAGE_EXTENSIONS = (".png", ".bmp", ".jpg", ".jpeg")


class DatasetError(InputError, ValueError):
    """A dataset file or folder is missing, unreadable or not what was expected."""


def normalize_size(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """Return ``image_size`` as ``(H, W)``; ``None`` keeps each file's own size."""
    if image_size is None:
        return None
    if isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"image_size must be a positive int or (H, W) of positive ints, got {image_size!r}")
    return size


def is_image_file(path: Path) -> bool:
    """True for a regular file with a PNG, BMP or JPEG extension (any case)."""
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def _open(path: Path) -> Image.Image:
    """Open and fully decode ``path``; PIL errors (unknown format, truncated data, too many pixels) become
    DatasetError. Every image and mask the package reads is decoded here."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except FileNotFoundError:
        raise DatasetError(f"image file not found: {path}") from None
    except Image.DecompressionBombError as err:
        raise DatasetError(_bomb_message(path, err)) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DatasetError(
            f"cannot read image {path}: {err}. Expected a complete PNG, BMP or JPEG file; "
            "re-copy or re-download it."
        ) from err


def _bomb_message(path: Path, err: Image.DecompressionBombError) -> str:
    """Name the file and its pixel count: Pillow refuses images over twice ``Image.MAX_IMAGE_PIXELS``
    (a tiny PNG can decode to gigabytes), and its own message names neither file nor remedy."""
    pixels = re.search(r"\((\d+) pixels\)", str(err))
    size = f"{pixels.group(1)} pixels" if pixels else f"too many pixels ({err})"
    return (f"image {path} has {size}, more than Pillow allows ({2 * Image.MAX_IMAGE_PIXELS}; a possible "
            "decompression bomb): shrink it, or raise PIL.Image.MAX_IMAGE_PIXELS if it is genuine")


def _to_array(img: Image.Image) -> np.ndarray:
    """PIL image -> float32 [H, W, C] in [0, 1]; 16-bit and float modes are scaled by their range."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return (np.asarray(img, dtype=np.float32) / 65535.0)[..., None].clip(0.0, 1.0)
    if img.mode == "F":
        return np.asarray(img, dtype=np.float32)[..., None].clip(0.0, 1.0)
    if img.mode in ("1", "L"):
        return np.asarray(img.convert("L"), dtype=np.float32)[..., None] / 255.0
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def resize_image(x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """[C, H, W] in [0, 1] -> [C, *size], antialiased bilinear (a no-op when the size already agrees)."""
    if size is None or tuple(x.shape[-2:]) == size:
        return x
    y = F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    return y.clamp_(0.0, 1.0)


def resize_mask(m: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """[1, H, W] in {0, 1} -> [1, *size] in {0, 1}: antialiased resize, then threshold at 0.5."""
    return (resize_image(m, size) >= 0.5).float()


def load_image(path: str | Path) -> torch.Tensor:
    """Read ``path`` at its own size as float32 [3, H, W] in [0, 1]."""
    arr = _to_array(_open(Path(path)))
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def load_mask(path: str | Path) -> torch.Tensor:
    """Read a binary mask at its own size as float32 [1, H, W] in {0, 1}.

    A pixel is anomalous where the mask's first channel exceeds half of the
    mask's maximum, so 0/255 and 0/1 masks both work and an all-zero mask stays
    empty.
    """
    arr = _to_array(_open(Path(path)))[..., 0]
    binary = (arr > arr.max() / 2).astype(np.float32) if arr.max() > 0 else np.zeros_like(arr)
    return torch.from_numpy(binary)[None]
