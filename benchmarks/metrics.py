"""AUPRO speed: our vectorised standard ``aupro`` against the public code's per-image loop.

Data: 100 maps of 256x256 (smooth random fields, raised on the defects) and
random blob masks (80 images with defects, 20 without), fixed seed. Timed
once each, in the same run:

- ``aupro``: ours, standard definition, one sort of all pixels;
- ``public_loop``: the RD4AD/RD++ evaluation as published: ``compute_pro`` on
  each defective image, 200 thresholds, the mask relabelled at every
  threshold (transcribed in ``benchmarks/public_code.py``);
- ``aupro_per_image``: ours, the same per-image definition vectorised
  (checked here to give the public loop's number).

Prints one JSON line. Run: ``python benchmarks/metrics.py``.
"""

import json
import time

import numpy as np
from public_code import public_aupro_per_image
from scipy import ndimage

from rdtutorial.metrics import aupro, aupro_per_image

NUM_IMAGES, SIZE, NUM_DEFECTIVE, SEED = 100, 256, 80, 0


def make_data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """maps float32 [N, H, W], masks int64 [N, H, W]."""
    shape = (NUM_IMAGES, SIZE, SIZE)
    blobs = ndimage.gaussian_filter(rng.normal(size=shape), sigma=(0, 8, 8))
    masks = blobs > 2.2 * blobs.std()
    masks[NUM_DEFECTIVE:] = False
    for i in np.flatnonzero(~masks[:NUM_DEFECTIVE].any(axis=(1, 2))):  # every defective image gets a blob
        r, c = rng.integers(20, SIZE - 20, 2)
        masks[i, r - 6 : r + 6, c - 6 : c + 6] = True
    noise = ndimage.gaussian_filter(rng.normal(size=shape), sigma=(0, 4, 4))
    maps = noise / noise.std() + 2.0 * ndimage.gaussian_filter(masks.astype(float), sigma=(0, 4, 4))
    return maps.astype(np.float32), masks.astype(np.int64)


def timed(fn, *args) -> tuple[float, float]:
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def main() -> None:
    maps, masks = make_data(np.random.default_rng(SEED))
    ours, ours_s = timed(aupro, maps, masks)
    public, public_s = timed(public_aupro_per_image, maps, masks, True)
    per_image, per_image_s = timed(aupro_per_image, maps, masks)
    if abs(per_image - public) > 1e-9:
        raise RuntimeError(f"aupro_per_image {per_image} disagrees with the public loop {public}")
    print(json.dumps({
        "images": NUM_IMAGES, "size": SIZE,
        "aupro_s": round(ours_s, 4), "public_loop_s": round(public_s, 3),
        "speedup_vs_public_loop": round(public_s / ours_s, 1),
        "aupro_per_image_s": round(per_image_s, 4),
        "aupro": round(ours, 4), "aupro_per_image": round(per_image, 4),
    }))


if __name__ == "__main__":
    main()
