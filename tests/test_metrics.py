"""Metrics against slow, obviously correct references written here."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from rdtutorial.metrics import aupro, aupro_per_image, image_auroc, pixel_auroc, pro_curve

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from public_code import public_aupro_per_image  # noqa: E402  (the public code, transcribed once)

SEEDS = [0, 1, 2, 3, 4]


def random_set(seed: int, n: int = 5, size: int = 18, ties: bool = False):
    """Smooth-ish maps and blob masks: several regions per image, some images without defects."""
    rng = np.random.default_rng(seed)
    masks = ndimage.gaussian_filter(rng.normal(size=(n, size, size)), sigma=(0, 2, 2)) > 0.12
    masks[rng.random(n) < 0.3] = False  # defect-free images, at random
    masks[-1] = False  # and at least one
    masks[0, 2:5, 2:5] = True  # at least two regions in image 0
    masks[0, 14:17, 10:12] = True
    maps = rng.normal(size=(n, size, size)) + 1.5 * masks
    if ties:
        maps = np.round(maps, 1)  # many equal scores, shared by normal and defect pixels
    return maps, masks.astype(np.int64)


# --------------------------------------------------------------- AUROC


def pair_counting_auroc(scores, labels):
    """P(score of an anomalous sample > score of a normal one), ties counting one half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum()
    equal = (pos[:, None] == neg[None, :]).sum()
    return (greater + 0.5 * equal) / (pos.size * neg.size)


@pytest.mark.parametrize("seed", SEEDS)
def test_image_auroc_matches_pair_counting(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 40)
    labels[:2] = [0, 1]
    scores = np.round(rng.normal(size=40) + labels, 1)
    expected = pair_counting_auroc(scores, labels)
    assert image_auroc(scores, labels) == pytest.approx(expected, abs=1e-12)
    as_tensors = image_auroc(torch.tensor(scores, dtype=torch.float64), torch.tensor(labels))
    assert as_tensors == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_pixel_auroc_matches_pair_counting(seed):
    maps, masks = random_set(seed, ties=True)
    expected = pair_counting_auroc(maps.ravel(), masks.ravel())
    assert pixel_auroc(maps, masks) == pytest.approx(expected, abs=1e-12)
    as_tensors = pixel_auroc(torch.from_numpy(maps)[:, None], torch.from_numpy(masks)[:, None])
    assert as_tensors == pytest.approx(expected, abs=1e-12)


def test_auroc_names_the_missing_class():
    with pytest.raises(ValueError, match=r"all 3 are normal \(0\)"):
        image_auroc([0.1, 0.2, 0.3], [0, 0, 0])
    with pytest.raises(ValueError, match=r"pixel.*all 8 are anomalous \(1\)"):
        pixel_auroc(np.zeros((2, 2, 2)), np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="only 0"):
        pixel_auroc(np.zeros((1, 2, 2)), np.full((1, 2, 2), 0.5))


# --------------------------------------------------------------- standard AUPRO


def reference_curve(maps, masks):
    """Every distinct threshold, descending: FPR and PRO computed directly from binarised maps."""
    region_masks = []
    for i, mask in enumerate(masks):
        labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
        for r in range(1, count + 1):
            region = np.zeros(masks.shape, dtype=bool)
            region[i] = labels == r
            region_masks.append(region)
    normal = masks == 0
    fpr, pro = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        positive = maps >= t
        fpr.append((positive & normal).sum() / normal.sum())
        pro.append(np.mean([(positive & r).sum() / r.sum() for r in region_masks]))
    return np.array(fpr), np.array(pro)


def distance_to_polyline(points, vertices):
    """Distance of each point [P, 2] to the polyline through vertices [V, 2]."""
    start, end = vertices[:-1], vertices[1:]
    step = end - start
    length2 = np.maximum((step**2).sum(1), 1e-300)
    along = np.clip(((points[:, None] - start[None]) * step[None]).sum(2) / length2, 0, 1)
    nearest = start[None] + along[..., None] * step[None]
    return np.sqrt(((points[:, None] - nearest) ** 2).sum(2)).min(axis=1)


def reference_aupro(maps, masks, limit=0.3):
    fpr, pro = reference_curve(maps, masks)
    xs, ys = [], []
    for i in range(len(fpr)):
        if fpr[i] <= limit:
            xs.append(fpr[i])
            ys.append(pro[i])
        else:  # first point past the limit: interpolate on the segment that crosses it
            if xs[-1] < limit:
                w = (limit - fpr[i - 1]) / (fpr[i] - fpr[i - 1])
                xs.append(limit)
                ys.append(pro[i - 1] + w * (pro[i] - pro[i - 1]))
            break
    area = sum((xs[j + 1] - xs[j]) * (ys[j + 1] + ys[j]) / 2 for j in range(len(xs) - 1))
    return area / limit


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_aupro_matches_threshold_loop(seed, ties):
    maps, masks = random_set(seed, ties=ties)
    assert ndimage.label(masks[0], structure=np.ones((3, 3)))[1] >= 2
    fpr, pro = pro_curve(maps, masks)
    ref_fpr, ref_pro = reference_curve(maps, masks)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0)
    # the same polyline: our points are points of the reference, and every reference point is on ours
    ours, ref = np.stack([fpr, pro], 1), np.stack([ref_fpr, ref_pro], 1)
    assert np.abs(ours[:, None] - ref[None]).max(axis=2).min(axis=1).max() < 1e-12
    assert distance_to_polyline(ref, ours).max() < 1e-12
    for limit in (0.3, 0.05, 1.0):
        assert aupro(maps, masks, fpr_limit=limit) == pytest.approx(reference_aupro(maps, masks, limit), abs=1e-12)


def test_aupro_accepts_tensors_with_channel_and_float32():
    maps, masks = random_set(7)
    expected = aupro(maps.astype(np.float32), masks)
    got = aupro(torch.from_numpy(maps).float()[:, None], torch.from_numpy(masks).bool()[:, None])
    assert got == expected
    assert 0.0 < got < 1.0


def test_aupro_extremes():
    _, masks = random_set(3)
    assert aupro(masks.astype(float), masks) == pytest.approx(1.0)
    assert aupro(1.0 - masks, masks) == pytest.approx(0.0)


def test_aupro_averages_over_regions_of_the_set():
    masks = np.zeros((2, 8, 8), dtype=int)
    masks[0, 1:3, 1:3] = 1  # two separate regions in image 0, none in image 1
    masks[0, 5:7, 5:7] = 1
    maps = np.zeros((2, 8, 8))
    maps[0, 1:3, 1:3] = 1.0  # the first region is found without false positives
    # the second ties with every normal pixel: the curve runs straight from (0, 1/2) to (1, 1),
    # so its mean height over [0, 0.3] is 1/2 + 0.15 / 2
    assert aupro(maps, masks) == pytest.approx(0.575, abs=1e-12)


def test_regions_are_8_connected():
    masks = np.zeros((1, 4, 4), dtype=int)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 1, 2] = 1  # touching at a corner: one 3-pixel region
    maps = np.zeros((1, 4, 4))
    maps[0, 0, 0], maps[0, 1, 1], maps[0, 1, 2] = 0.9, 0.8, 0.7
    _, pro = pro_curve(maps, masks)
    np.testing.assert_allclose(np.unique(pro), [0, 1 / 3, 2 / 3, 1])  # two regions: 0, 1/2, 3/4, 1


def test_aupro_errors():
    with pytest.raises(ValueError, match="at least one defect region"):
        aupro(np.random.rand(2, 4, 4), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="normal pixels"):
        aupro(np.random.rand(2, 4, 4), np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match="same shape"):
        aupro(np.random.rand(2, 4, 4), np.ones((2, 4, 5)))
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(np.random.rand(2, 4, 4), np.ones((2, 4, 4)), fpr_limit=0)


# --------------------------------------------------------------- per-image AUPRO (public code)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", SEEDS[:3])
def test_aupro_per_image_matches_public_loop(seed, ties):
    maps, masks = random_set(seed, n=4, ties=ties)
    expected = public_aupro_per_image(maps, masks)
    assert aupro_per_image(maps, masks) == pytest.approx(expected, abs=1e-12)
    assert aupro_per_image(torch.from_numpy(maps), torch.from_numpy(masks)) == pytest.approx(expected, abs=1e-12)


def test_per_image_variant_differs_from_standard():
    maps, masks = random_set(11)
    assert abs(aupro_per_image(maps, masks) - aupro(maps, masks)) > 1e-3


def test_aupro_per_image_errors():
    with pytest.raises(ValueError, match="at least one image with a defect"):
        aupro_per_image(np.random.rand(2, 4, 4), np.zeros((2, 4, 4)))
    masks = np.zeros((2, 4, 4))
    masks[1] = 1
    with pytest.raises(ValueError, match="image 1: the mask covers every pixel"):
        aupro_per_image(np.random.rand(2, 4, 4), masks)
    masks[1, 0] = 0
    with pytest.raises(ValueError, match="image 1: its map is constant"):
        aupro_per_image(np.ones((2, 4, 4)), masks)
