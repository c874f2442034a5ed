"""Anomaly maps: where the student fails to reproduce the teacher.

Per scale k the map is ``1 - cos_c(E_k(x), D_k(z))``, the per-pixel cosine
distance over channels, upsampled to the image size (bilinear,
``align_corners=True``), combined over scales (sum, or product), then
smoothed with a Gaussian of sigma 4. The image score is the map's maximum.

The public RD4AD/RD++ code smooths on the CPU with
``scipy.ndimage.gaussian_filter(sigma=4)``, one image at a time. We blur the
whole batch on its device with a separable convolution that reproduces
scipy's kernel (radius ``int(4 * sigma + 0.5)``, 33 taps for sigma 4) and
its default boundary mode ``'reflect'`` (edge sample repeated: ``d c b a | a
b c d | d c b a``). torch's own ``'reflect'`` padding leaves the edge sample
out (scipy calls that ``'mirror'``), so the padding is an index gather here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["anomaly_map", "gaussian_blur", "image_scores"]

TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default: radius = int(4 * sigma + 0.5)


def _gaussian_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """scipy's 1-D Gaussian: ``exp(-x^2 / (2 sigma^2))`` on ``-r..r``, normalised. Shape [2r+1]."""
    radius = int(TRUNCATE * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def _symmetric_indices(n: int, radius: int, device: torch.device) -> torch.Tensor:
    """Source index of each sample of a length-n axis padded by ``radius`` in scipy's 'reflect' mode.

    Works for any radius, also one larger than the axis (the reflection repeats with period 2n).
    """
    i = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def gaussian_blur(maps: torch.Tensor, sigma: float = 4.0) -> torch.Tensor:
    """Gaussian-blur each channel of ``maps`` [B, C, H, W] like ``scipy.ndimage.gaussian_filter``.

    Same kernel (truncate 4) and boundary mode ('reflect') as scipy's defaults,
    on the maps' own device and dtype. ``sigma=0`` returns the maps unchanged,
    as scipy does.
    """
    if maps.dim() != 4:
        raise ValueError(f"gaussian_blur expects maps of shape [B, C, H, W], got {tuple(maps.shape)}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return maps
    channels, height, width = maps.shape[1:]
    kernel = _gaussian_kernel(sigma, maps.dtype, maps.device)
    radius = (kernel.numel() - 1) // 2
    rows = maps.index_select(2, _symmetric_indices(height, radius, maps.device))
    out = F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    cols = out.index_select(3, _symmetric_indices(width, radius, maps.device))
    return F.conv2d(cols, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)


def anomaly_map(
    teacher_feats: Sequence[torch.Tensor],
    student_feats: Sequence[torch.Tensor],
    size: int | tuple[int, int],
    mode: str = "sum",
    sigma: float = 4.0,
) -> torch.Tensor:
    """Anomaly map [B, 1, H, W] from per-scale teacher and student features.

    ``teacher_feats`` and ``student_feats`` are lists of [B, C_k, h_k, w_k]
    tensors, scale by scale. ``size`` is the output size, an int (square) or
    (H, W). ``mode`` combines the upsampled per-scale maps: ``"sum"`` (the
    papers' choice) or ``"product"``. ``sigma`` is the Gaussian blur
    (0 = no blur). Keeps the features' dtype and device; call it under
    ``torch.no_grad()`` at test time.
    """
    if mode not in ("sum", "product"):
        raise ValueError(f"mode must be 'sum' or 'product', got {mode!r}")
    if len(teacher_feats) != len(student_feats) or len(teacher_feats) == 0:
        raise ValueError(
            f"need the same non-zero number of teacher and student scales, "
            f"got {len(teacher_feats)} and {len(student_feats)}"
        )
    size = (size, size) if isinstance(size, int) else tuple(size)
    combined = None
    for k, (t, s) in enumerate(zip(teacher_feats, student_feats)):
        if t.shape != s.shape or t.dim() != 4:
            raise ValueError(
                f"scale {k}: teacher and student features must both be [B, C, h, w], "
                f"got {tuple(t.shape)} and {tuple(s.shape)}"
            )
        distance = 1 - F.cosine_similarity(t, s, dim=1).unsqueeze(1)
        distance = F.interpolate(distance, size=size, mode="bilinear", align_corners=True)
        if combined is None:
            combined = distance
        elif mode == "sum":
            combined = combined + distance
        else:
            combined = combined * distance
    return gaussian_blur(combined, sigma)


def image_scores(maps: torch.Tensor) -> torch.Tensor:
    """Image anomaly scores [B]: the maximum of each map [B, ...]."""
    return maps.flatten(1).amax(dim=1)
