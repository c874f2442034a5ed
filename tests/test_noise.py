"""Tests for rdtutorial.noise: parity with opensimplex, boxes, masks, per-sample noise, reproducibility."""

import numpy as np
import opensimplex
import pytest
import torch

from rdtutorial import simplex
from rdtutorial.noise import PseudoAnomaly, fractal_noise, noise2, noise3

SEEDS = [0, 3, -12345, 2**40 + 7]


def _random_points(rng: np.random.Generator, dims: int, count: int) -> np.ndarray:
    """[dims, count] coordinates: small, negative, large, and on simple lattice fractions."""
    scales = np.repeat([1.0, 10.0, 1e3, 1e7], count // 4)
    points = rng.uniform(-1, 1, size=(dims, scales.size)) * scales
    points[:, ::7] = np.round(points[:, ::7] * 6) / 6  # exact ties in the region tests
    return points


@pytest.mark.parametrize("seed", SEEDS)
def test_noise3_matches_opensimplex(seed):
    points = _random_points(np.random.default_rng(abs(seed) % 1000), 3, 800)
    simplex = opensimplex.OpenSimplex(seed)
    expected = np.array([simplex.noise3(*p) for p in points.T])
    got = noise3(*torch.from_numpy(points), seed=seed)
    assert got.dtype == torch.float64 and got.shape == (points.shape[1],)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-5)
    assert np.abs(got.numpy() - expected).max() < 1e-12  # the same algorithm, not an approximation


@pytest.mark.parametrize("seed", SEEDS)
def test_noise2_matches_opensimplex(seed):
    points = _random_points(np.random.default_rng(abs(seed) % 1000 + 1), 2, 800)
    simplex = opensimplex.OpenSimplex(seed)
    expected = np.array([simplex.noise2(*p) for p in points.T])
    got = noise2(*torch.from_numpy(points), seed=seed)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-5)


def test_noise3_matches_noise3array_on_a_grid():
    axis = np.arange(-7, 7) / 3  # lattice-aligned coordinates hit the region boundaries exactly
    expected = opensimplex.OpenSimplex(11).noise3array(axis, axis, axis)  # (z, y, x)
    z, y, x = torch.meshgrid(*(torch.from_numpy(axis),) * 3, indexing="ij")
    np.testing.assert_allclose(noise3(x, y, z, seed=11).numpy(), expected, rtol=0, atol=1e-5)


def test_noise_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN or infinite"):
        noise3(torch.tensor([0.0]), torch.tensor([float("nan")]), torch.tensor([0.0]))
    with pytest.raises(TypeError, match="seed"):
        noise2(torch.zeros(2), torch.zeros(2), seed=1.5)


def test_fractal_noise_is_the_public_rdpp_field():
    """fractal_noise on the (channel, row, col) grid == the public code's rand_3d_octaves((3, h, w), 6, 0.6)."""
    simplex = opensimplex.OpenSimplex(5)
    z, y, x = np.arange(3), np.arange(9), np.arange(12)
    expected, frequency, amplitude = np.zeros((3, 9, 12)), 32.0, 1.0
    for _ in range(6):
        expected += amplitude * simplex.noise3array(x / frequency, y / frequency, z / frequency)
        frequency, amplitude = frequency / 2, amplitude * 0.6
    gz, gy, gx = torch.meshgrid(torch.arange(3), torch.arange(9), torch.arange(12), indexing="ij")
    np.testing.assert_allclose(fractal_noise(gx, gy, gz, 5).numpy(), expected, rtol=0, atol=1e-5)


def test_fractal_noise_2d_and_octave_parameters():
    simplex = opensimplex.OpenSimplex(2)
    x, y = np.arange(10) - 4.5, np.arange(7) * 3.0
    expected = simplex.noise2array(x / 8, y / 8) + 0.5 * simplex.noise2array(x / 4, y / 4)  # (y, x)
    gy, gx = torch.meshgrid(torch.from_numpy(y), torch.from_numpy(x), indexing="ij")
    got = fractal_noise(gx, gy, seed=2, octaves=2, persistence=0.5, frequency=1 / 8)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-5)


def _boxes(masks: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of each mask [B, 1, H, W], asserting it is one filled rectangle."""
    boxes = []
    for mask in masks[:, 0]:
        rows = mask.any(1).nonzero()[:, 0]
        cols = mask.any(0).nonzero()[:, 0]
        top, left = int(rows[0]), int(cols[0])
        h, w = int(rows[-1]) - top + 1, int(cols[-1]) - left + 1
        assert mask.sum() == h * w and mask[top : top + h, left : left + w].all()
        boxes.append((top, left, h, w))
    return boxes


def test_boxes_inside_and_noise_only_in_mask():
    images = torch.full((12, 3, 40, 48), 0.5)
    noisy, masks = PseudoAnomaly(size_range=(10, 31))(images, torch.Generator().manual_seed(0))
    assert noisy.shape == images.shape and masks.shape == (12, 1, 40, 48)
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    for top, left, h, w in _boxes(masks):
        assert 10 <= h <= 31 and 10 <= w <= 31
        assert top >= 0 and left >= 0 and top + h <= 40 and left + w <= 48
    changed = noisy != images
    assert not changed[~masks.bool().expand_as(changed)].any()  # untouched outside the box, exactly
    assert changed[masks.bool().expand_as(changed)].all()  # and noisy everywhere inside it
    assert 0.0 < (noisy - images).abs().max() < 0.2 * 2.5  # amplitude bounded by scale * sum of persistences


def test_box_sizes_span_the_range():
    images = torch.zeros(400, 1, 32, 32)
    draw = PseudoAnomaly(size_range=(10, 12)).draw(images.shape, images.device, torch.Generator().manual_seed(1))
    assert set(draw.height.tolist()) == {10, 11, 12} and set(draw.width.tolist()) == {10, 11, 12}
    assert draw.top.min() == 0 and int((draw.top + draw.height).max()) == 32  # both edges reachable


def test_samples_never_share_noise():
    images = torch.zeros(8, 3, 32, 32)
    anomaly = PseudoAnomaly(size_range=(12, 12))
    noisy, masks = anomaly(images, torch.Generator().manual_seed(2))
    patches = [n[:, m[0].bool()] for n, m in zip(noisy, masks)]  # each [3, 144]
    for i in range(len(patches)):
        for j in range(i + 1, len(patches)):
            assert not torch.allclose(patches[i], patches[j], atol=1e-3)


@pytest.mark.parametrize("correlated", [True, False])
def test_box_holds_fractal_noise_at_its_offset(correlated):
    """Each box is scale * fractal_noise read at the sample's own offset; z is the channel only when correlated."""
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    anomaly = PseudoAnomaly(size_range=(9, 14), correlated_channels=correlated, seed=5)
    draw = anomaly.draw(images.shape, images.device, torch.Generator().manual_seed(3))
    assert draw.offset.shape == (3, 1 if correlated else 3, 3)
    noisy, _ = anomaly.apply(images, draw)
    for b in range(3):
        top, left, h, w = (int(t[b]) for t in (draw.top, draw.left, draw.height, draw.width))
        c, i, j = torch.meshgrid(torch.arange(3), torch.arange(h), torch.arange(w), indexing="ij")
        ox, oy, oz = draw.offset[b].T[:, :, None, None]  # [K, 1, 1] each
        expected = 0.2 * fractal_noise(ox + j, oy + i, oz + c if correlated else oz.expand(3, h, w), seed=5)
        got = noisy[b, :, top : top + h, left : left + w] - images[b, :, top : top + h, left : left + w]
        torch.testing.assert_close(got, expected.float(), rtol=0, atol=1e-6)


def test_clamp_option():
    images = torch.full((4, 3, 24, 24), 0.99)
    noisy, _ = PseudoAnomaly((8, 12), scale=1.0)(images, torch.Generator().manual_seed(4))
    clamped, _ = PseudoAnomaly((8, 12), scale=1.0, clamp=True)(images, torch.Generator().manual_seed(4))
    assert noisy.max() > 1 and clamped.max() <= 1 and clamped.min() >= 0


def test_same_generator_state_same_output():
    images = torch.rand(6, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    anomaly = PseudoAnomaly(size_range=(8, 16))
    a = anomaly(images, torch.Generator().manual_seed(7))
    b = anomaly(images, torch.Generator().manual_seed(7))
    c = anomaly(images, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_lattice_module_is_reexported():
    assert (noise2, noise3) == (simplex.noise2, simplex.noise3)


def test_rejects_bad_input():
    anomaly = PseudoAnomaly()
    with pytest.raises(ValueError, match="does not fit"):
        anomaly(torch.zeros(2, 3, 20, 20))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        anomaly(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="size_range"):
        PseudoAnomaly(size_range=(12, 10))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_agree():
    images = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    anomaly = PseudoAnomaly()
    cpu = anomaly(images, torch.Generator().manual_seed(9))
    cuda = anomaly(images.cuda(), torch.Generator().manual_seed(9))
    torch.testing.assert_close(cuda[1].cpu(), cpu[1], rtol=0, atol=0)
    torch.testing.assert_close(cuda[0].cpu(), cpu[0], rtol=0, atol=1e-6)
    points = torch.randn(3, 5000, dtype=torch.float64) * 100
    torch.testing.assert_close(noise3(*points.cuda(), seed=4).cpu(), noise3(*points, seed=4), rtol=0, atol=1e-12)
