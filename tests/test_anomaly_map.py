"""Anomaly maps, the scipy-exact blur and image scores."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from rdtutorial.anomaly_map import anomaly_map, gaussian_blur, image_scores


def features(seed: int, sizes=(17, 9, 5), channels=(8, 16, 32), batch: int = 2, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, s, s, generator=g, dtype=dtype) for c, s in zip(channels, sizes)]


def scipy_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack([np.stack([gaussian_filter(c, sigma) for c in image]) for image in x])


@pytest.mark.parametrize("shape", [(2, 1, 40, 50), (1, 3, 12, 9), (1, 1, 64, 64)])
@pytest.mark.parametrize("sigma", [4.0, 1.5])
def test_blur_matches_scipy(shape, sigma):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = scipy_blur(x.numpy(), sigma)
    np.testing.assert_allclose(gaussian_blur(x, sigma).numpy(), expected, atol=1e-12)
    blurred32 = gaussian_blur(x.float(), sigma)
    assert blurred32.dtype == torch.float32
    np.testing.assert_allclose(blurred32.numpy(), expected, atol=1e-5)


def test_blur_kernel_has_33_taps_for_sigma_4():
    impulse = torch.zeros(1, 1, 1, 101, dtype=torch.float64)
    impulse[..., 50] = 1
    response = gaussian_blur(impulse, 4.0)[0, 0].sum(dim=0)  # the 1-row axis reflects onto itself
    assert torch.count_nonzero(response).item() == 33
    assert gaussian_blur(impulse, 0.0) is impulse
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(impulse, -1.0)


def test_identical_features_give_zero_map():
    t = features(0)
    amap = anomaly_map(t, [f.clone() for f in t], 64)
    assert amap.shape == (2, 1, 64, 64)
    assert amap.abs().max().item() < 1e-5


def test_shapes_dtype_and_no_grad():
    t, s = features(0, dtype=torch.float64), features(1, dtype=torch.float64)
    with torch.no_grad():
        amap = anomaly_map(t, s, (48, 80))
    assert amap.shape == (2, 1, 48, 80)
    assert amap.dtype == torch.float64 and amap.device == t[0].device
    assert not amap.requires_grad
    scores = image_scores(amap)
    assert scores.shape == (2,)
    torch.testing.assert_close(scores, amap.amax(dim=(1, 2, 3)))


def test_single_scale_is_cosine_distance():
    t, s = features(2, sizes=(16,), channels=(8,)), features(3, sizes=(16,), channels=(8,))
    tn, sn = t[0].double().numpy(), s[0].double().numpy()
    cosine = (tn * sn).sum(1) / np.linalg.norm(tn, axis=1) / np.linalg.norm(sn, axis=1)
    amap = anomaly_map(t, s, 16, sigma=0)  # same size: align_corners upsampling is the identity
    np.testing.assert_allclose(amap[:, 0].numpy(), 1 - cosine, atol=1e-5)
    blurred = scipy_blur((1 - cosine)[:, None], 4)
    np.testing.assert_allclose(anomaly_map(t, s, 16).numpy(), blurred, atol=1e-5)


def test_sum_and_product_combine_the_scales():
    t, s = features(4), features(5)
    per_scale = [anomaly_map([a], [b], 33, sigma=0) for a, b in zip(t, s)]
    torch.testing.assert_close(anomaly_map(t, s, 33, sigma=0), per_scale[0] + per_scale[1] + per_scale[2])
    product = anomaly_map(t, s, 33, mode="product", sigma=0)
    torch.testing.assert_close(product, per_scale[0] * per_scale[1] * per_scale[2])
    torch.testing.assert_close(anomaly_map(t, s, 33), gaussian_blur(anomaly_map(t, s, 33, sigma=0), 4.0))
    assert not torch.allclose(anomaly_map(t, s, 33), anomaly_map(t, s, 33, mode="product"))


@pytest.mark.parametrize("mode", ["sum", "product"])
@pytest.mark.parametrize("row, col", [(32, 32), (16, 48)])
def test_map_peaks_where_features_differ(mode, row, col):
    """Grids of 17, 9 and 5 on a 65-pixel image (align_corners): pixel p sits at grid index p / step."""
    t = features(6, batch=1)
    # small disagreement everywhere (a product is zero wherever one scale agrees exactly),
    # full disagreement (negated features) at one location on every scale
    s = [f + 0.3 * torch.randn(f.shape, generator=torch.Generator().manual_seed(7)) for f in t]
    for f, g, step in zip(s, t, (4, 8, 16)):
        f[0, :, row // step, col // step] = -g[0, :, row // step, col // step]
    amap = anomaly_map(t, s, 65, mode=mode)[0, 0]
    peak = divmod(int(amap.argmax()), 65)
    assert abs(peak[0] - row) <= 2 and abs(peak[1] - col) <= 2, peak


def test_bad_inputs():
    t, s = features(0), features(1)
    with pytest.raises(ValueError, match="mode"):
        anomaly_map(t, s, 64, mode="max")
    with pytest.raises(ValueError, match="number of teacher and student scales"):
        anomaly_map(t, s[:2], 64)
    with pytest.raises(ValueError, match="scale 1"):
        anomaly_map(t, [s[0], s[2], s[1]], 64)
