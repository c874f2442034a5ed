"""AUPRO speed: our vectorised standard ``aupro`` against the public code's per-image loop.

Data: 100 maps of 256x256 (smooth random fields, raised on the defects) and
random blob masks (80 images with defects, 20 without), fixed seed. Timed
once each, in the same run:

- ``aupro``: ours, standard definition, one sort of all pixels;
- ``public_loop``: the RD4AD/RD++ evaluation as published: ``compute_pro`` on
  each defective image, 200 thresholds, the mask relabelled at every
  threshold (transcribed below, pandas rows replaced by lists);
- ``aupro_per_image``: ours, the same per-image definition vectorised
  (checked here to give the public loop's number).

Prints one JSON line. Run: ``python benchmarks/metrics.py``.
"""

import json
import time
from statistics import mean

import numpy as np
from scipy import ndimage
from skimage import measure
from sklearn.metrics import auc
from tqdm import tqdm

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


def public_compute_pro(masks: np.ndarray, amaps: np.ndarray, num_th: int = 200) -> float:
    """RD4AD's compute_pro, as published (pandas rows replaced by lists)."""
    rows = []
    binary_amaps = np.zeros_like(amaps, dtype=bool)
    min_th, max_th = amaps.min(), amaps.max()
    delta = (max_th - min_th) / num_th
    for th in np.arange(min_th, max_th, delta):
        binary_amaps[amaps <= th] = 0
        binary_amaps[amaps > th] = 1
        pros = []
        for binary_amap, mask in zip(binary_amaps, masks):
            for region in measure.regionprops(measure.label(mask)):
                tp_pixels = binary_amap[region.coords[:, 0], region.coords[:, 1]].sum()
                pros.append(tp_pixels / region.area)
        inverse_masks = 1 - masks
        fpr = np.logical_and(inverse_masks, binary_amaps).sum() / inverse_masks.sum()
        rows.append((mean(pros), fpr))
    pro, fpr = np.array(rows).T
    keep = fpr < 0.3
    return auc(fpr[keep] / fpr[keep].max(), pro[keep])


def public_loop(maps: np.ndarray, masks: np.ndarray) -> float:
    """The public evaluation: compute_pro per defective image (float64 maps, as there), then the mean."""
    defective = [i for i in range(len(maps)) if masks[i].any()]
    return float(np.mean([
        public_compute_pro(masks[i][None], maps[i][None].astype(np.float64))
        for i in tqdm(defective, desc="public per-image loop")
    ]))


def timed(fn, *args) -> tuple[float, float]:
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def main() -> None:
    maps, masks = make_data(np.random.default_rng(SEED))
    ours, ours_s = timed(aupro, maps, masks)
    public, public_s = timed(public_loop, maps, masks)
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
