"""The embedded demo dataset: scikit-image textures with synthetic defects, in the MVTec layout.

Three categories, ``brick``, ``grass`` and ``gravel``, cut from the 512x512
grayscale textures that scikit-image ships (no download). Normal images are
random crops (position, a little scale jitter, flips) of the TOP half of a
texture for ``train/good`` and of the BOTTOM half for ``test``, so test images
never repeat training pixels. Each is resized to ``image_size`` and tinted to
3 channels. Defective test images get one synthetic defect and its mask:

- ``scratch``: a thin curved line, darker or lighter than its surroundings;
- ``stain``: a soft low-contrast blob that darkens and discolours (brightness
  and colour only, no new structure; hard for cosine-based maps by design);
- ``smudge``: the texture blurred inside a soft blob (structure removed);
- ``patch``: a piece of another texture pasted with soft edges, shifted to
  the local mean colour (new structure).

Each defective image's clean original is kept too, as
``<category>/clean/<defect>/<i>.png`` (outside the MVTec layout, which
ignores it): :func:`clean_counterpart` finds it, so a measurement can
compare a model's output on a defect with the features of the same image
without it.

Each category mixes visible-structure and subtle defects, so that short RD
training separates them well but not perfectly. Different in kind from the
simplex-noise pseudo-anomalies used in RD++ training.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import data as skdata

from .io import DatasetError

DEMO_CATEGORIES = ("brick", "grass", "gravel")
DEFECTS = {
    "brick": ("scratch", "stain", "smudge"),
    "grass": ("patch", "stain", "smudge"),
    "gravel": ("patch", "stain", "smudge"),
}
PATCH_SOURCE = {"brick": "gravel", "grass": "brick", "gravel": "brick"}  # the texture a ``patch`` comes from
TINTS = {"brick": (1.0, 0.62, 0.48), "grass": (0.62, 0.95, 0.45), "gravel": (0.92, 0.86, 0.74)}
MANIFEST = "demo_manifest.json"
# The generator's own source: a cached folder made by other code is rebuilt, never reused.
_VERSION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
_SOURCE = 512  # scikit-image textures are 512 x 512; train uses rows [0, 256), test rows [256, 512)
_SCALE_JITTER = 0.1


def make_demo_dataset(
    root: str | Path,
    seed: int = 0,
    image_size: int = 128,
    n_train: int = 60,
    n_test_good: int = 20,
    n_test_defect: int = 10,
    crop: int = 192,
    categories: tuple[str, ...] = DEMO_CATEGORIES,
) -> Path:
    """Write the demo dataset under ``root`` (MVTec layout) and return ``root``.

    ``crop`` is the side, in source pixels, of each crop before resizing to
    ``image_size``; ``n_test_defect`` images per defect type. The same
    arguments always give byte-identical files. A ``demo_manifest.json`` with the
    arguments makes a second call with the same ones a no-op; a folder made with
    other arguments is rebuilt, unless it holds files the generator did not
    write, and a non-empty folder without a manifest is refused (neither is
    ours to overwrite).
    """
    root = Path(root)
    params = _params(seed, image_size, n_train, n_test_good, n_test_defect, crop, categories)
    old = _manifest(root)
    if old == params:
        return root
    if root.exists() and old is None and any(root.iterdir()):
        raise DatasetError(
            f"{root} exists, is not empty and has no {MANIFEST}: it was not made by make_demo_dataset; "
            "choose another folder or empty it"
        )
    foreign = _foreign_files(root, old) if old is not None else []
    if foreign:
        raise DatasetError(
            f"{root} holds a demo dataset made with other arguments, to be rebuilt, but also files "
            f"that make_demo_dataset did not write ({len(foreign)}, e.g. {foreign[0]}): move them out, or choose "
            "another folder"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        textures = {name: _texture(name) for name in DEMO_CATEGORIES}
        for name in categories:
            rng = np.random.default_rng([seed, DEMO_CATEGORIES.index(name)])
            _write_category(staging / name, name, textures, rng, params)
        (staging / MANIFEST).write_text(json.dumps(params, indent=1, sort_keys=True) + "\n")
        if _manifest(root) == params:  # made meanwhile by another process
            return root
        if root.exists():
            shutil.rmtree(root)
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _params(seed, image_size, n_train, n_test_good, n_test_defect, crop, categories) -> dict:
    unknown = [c for c in categories if c not in DEMO_CATEGORIES]
    if unknown or not categories:
        raise ValueError(f"categories must be a non-empty subset of {DEMO_CATEGORIES}, got {categories!r}")
    for name, value, least in (("image_size", image_size, 32), ("n_train", n_train, 1), ("crop", crop, 32)):
        if not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    if n_test_good < 0 or n_test_defect < 0 or n_test_good + n_test_defect == 0:
        raise ValueError("n_test_good and n_test_defect must be >= 0 and not both 0")
    if crop * (1 + _SCALE_JITTER) > _SOURCE // 2:
        raise ValueError(f"crop must be at most {int(_SOURCE // 2 / (1 + _SCALE_JITTER))} source pixels, got {crop}")
    return {
        "generator": "rdtutorial.data.demo", "version": _VERSION, "seed": int(seed), "image_size": image_size,
        "n_train": n_train, "n_test_good": n_test_good, "n_test_defect": n_test_defect, "crop": crop,
        "categories": list(categories),
    }


def _written_files(p: dict) -> set[str]:
    """The relative paths that :func:`make_demo_dataset` writes for the parameters ``p`` of a manifest."""
    files = {MANIFEST}
    for name in p["categories"]:
        files.update(f"{name}/train/good/{i:03d}.png" for i in range(p["n_train"]))
        files.update(f"{name}/test/good/{i:03d}.png" for i in range(p["n_test_good"]))
        for defect in DEFECTS[name]:
            files.update(f"{name}/test/{defect}/{i:03d}.png" for i in range(p["n_test_defect"]))
            files.update(f"{name}/ground_truth/{defect}/{i:03d}_mask.png" for i in range(p["n_test_defect"]))
            files.update(f"{name}/clean/{defect}/{i:03d}.png" for i in range(p["n_test_defect"]))
    return files


def _foreign_files(root: Path, old: dict) -> list[str]:
    """Files under ``root`` that the manifest ``old`` does not account for (all of them if it is unreadable)."""
    present = sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())
    try:
        ours = _written_files(old)
    except (KeyError, TypeError):
        return present
    return [f for f in present if f not in ours]


def _manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / MANIFEST).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def _texture(name: str) -> np.ndarray:
    """A scikit-image texture as float32 [512, 512] in [0, 1]."""
    return getattr(skdata, name)().astype(np.float32) / 255.0


def _crop(texture: np.ndarray, rows: tuple[int, int], crop: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of ``texture[rows]`` (scale-jittered, flipped), resized to [size, size]."""
    side = int(round(crop * rng.uniform(1 - _SCALE_JITTER, 1 + _SCALE_JITTER)))
    top = rng.integers(rows[0], rows[1] - side + 1)
    left = rng.integers(0, texture.shape[1] - side + 1)
    patch = texture[top : top + side, left : left + side]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    if rng.random() < 0.5:
        patch = patch[::-1, :]
    img = Image.fromarray(np.ascontiguousarray(patch)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def _tint(gray: np.ndarray, name: str) -> np.ndarray:
    """[S, S] -> [S, S, 3] float in [0, 1]."""
    return np.clip(gray[..., None] * np.asarray(TINTS[name], dtype=np.float32), 0.0, 1.0)


def _blob(size: int, rng: np.random.Generator, radius: tuple[float, float]) -> np.ndarray:
    """A soft random ellipse, float [S, S] in [0, 1] (1 inside, smooth falloff at the rim)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = rng.uniform(*radius, size=2) * size
    cy, cx = rng.uniform(0.2 * size, 0.8 * size, size=2)
    angle = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / r[0]
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / r[1]
    d = np.sqrt(u**2 + v**2)
    return np.clip((1.25 - d) / 0.5, 0.0, 1.0).astype(np.float32)


def _scratch(rgb, rng, size, **_):
    """A thin quadratic-Bezier line, 1.5-3 px wide at 128 px, darker or lighter by 45-65 %."""
    p = rng.uniform(0.15 * size, 0.85 * size, size=(3, 2))
    t = np.linspace(0, 1, 200, dtype=np.float32)[:, None]
    curve = (1 - t) ** 2 * p[0] + 2 * (1 - t) * t * p[1] + t**2 * p[2]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    d = np.min(np.hypot(yy[..., None] - curve[:, 0], xx[..., None] - curve[:, 1]), axis=-1)
    half = rng.uniform(0.75, 1.5) * size / 128
    alpha = np.clip(half + 0.5 - d, 0.0, 1.0)
    change = rng.uniform(0.45, 0.65) * (1 if rng.random() < 0.5 else -1)
    return rgb * (1 + change * alpha[..., None]), alpha


def _stain(rgb, rng, size, **_):
    """A soft blob, 8-16 % of the side in radius: darker by 12-25 % and shifted towards brown."""
    alpha = _blob(size, rng, (0.08, 0.16))
    strength = rng.uniform(0.12, 0.25)
    stain = rgb * np.asarray([0.85, 0.75, 0.6], dtype=np.float32) * (1 - strength)
    return rgb + (stain - rgb) * alpha[..., None], alpha


def _smudge(rgb, rng, size, **_):
    """The texture blurred (Gaussian, sigma 2-4 px at 128 px) inside a soft blob."""
    alpha = _blob(size, rng, (0.08, 0.16))
    sigma = rng.uniform(2.0, 4.0) * size / 128
    blurred = ndimage.gaussian_filter(rgb, sigma=(sigma, sigma, 0), mode="reflect")
    return rgb + (blurred - rgb) * alpha[..., None], alpha


def _patch(rgb, rng, size, other, **_):
    """A soft blob of another texture (tinted like the host, shifted to the host's local mean) pasted in."""
    alpha = _blob(size, rng, (0.08, 0.14))
    inside = alpha > 0.5
    matched = other - other[inside].mean(axis=0) + rgb[inside].mean(axis=0)
    return rgb + (matched - rgb) * alpha[..., None], alpha


_MAKERS = {"scratch": _scratch, "stain": _stain, "smudge": _smudge, "patch": _patch}


def _save_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(path, format="PNG")


def _save_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path, format="PNG")


def _write_category(folder: Path, name: str, textures: dict, rng: np.random.Generator, p: dict) -> None:
    size, crop = p["image_size"], p["crop"]
    texture = textures[name]
    train_rows, test_rows = (0, _SOURCE // 2), (_SOURCE // 2, _SOURCE)
    for i in range(p["n_train"]):
        _save_rgb(folder / "train" / "good" / f"{i:03d}.png", _tint(_crop(texture, train_rows, crop, size, rng), name))
    for i in range(p["n_test_good"]):
        _save_rgb(folder / "test" / "good" / f"{i:03d}.png", _tint(_crop(texture, test_rows, crop, size, rng), name))
    for defect in DEFECTS[name]:
        for i in range(p["n_test_defect"]):
            rgb = _tint(_crop(texture, test_rows, crop, size, rng), name)
            other = _tint(_crop(textures[PATCH_SOURCE[name]], test_rows, crop, size, rng), name)
            out, alpha = _MAKERS[defect](rgb, rng, size, other=other)
            _save_rgb(folder / "test" / defect / f"{i:03d}.png", out)
            _save_mask(folder / "ground_truth" / defect / f"{i:03d}_mask.png", alpha >= 0.5)
            _save_rgb(folder / "clean" / defect / f"{i:03d}.png", rgb)


def clean_counterpart(path: str | Path) -> Path:
    """The clean original of the defective demo test image at ``path`` (``.../test/<defect>/<i>.png``)."""
    path = Path(path)
    if path.parent.parent.name != "test" or path.parent.name == "good":
        raise ValueError(f"{path} is not a defective test image of the demo dataset (.../test/<defect>/<i>.png)")
    clean = path.parent.parent.parent / "clean" / path.parent.name / path.name
    if not clean.is_file():
        raise FileNotFoundError(f"{clean}: no clean original of {path} (made by an older make_demo_dataset? "
                                "delete the demo folder to rebuild it)")
    return clean
