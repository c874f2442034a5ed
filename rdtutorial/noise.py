"""Fractal simplex noise and RD++ pseudo-anomalies.

RD++ trains its projection layers on pseudo-anomalous images: a box of
fractal 3-D OpenSimplex noise (6 octaves, persistence 0.6, first octave at
1/32 of the pixel frequency) times 0.2, added to a normal image in [0, 1].
The OpenSimplex lattice itself (:func:`noise2`, :func:`noise3`, re-exported
here) is in :mod:`rdtutorial.simplex`.

Public names: :func:`noise2`, :func:`noise3`, :func:`fractal_noise`
(octaves), :class:`PseudoAnomaly` (images [B, C, H, W] -> noisy images,
box masks [B, 1, H, W]), :class:`BoxDraw` (its random draws).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .simplex import DEFAULT_SEED, check_seed, noise2, noise3

__all__ = ["noise2", "noise3", "fractal_noise", "PseudoAnomaly", "BoxDraw"]


# --------------------------------------------------------------------------- fractal noise


def fractal_noise(
    x: torch.Tensor,
    y: torch.Tensor,
    z: torch.Tensor | None = None,
    seed: int = DEFAULT_SEED,
    *,
    octaves: int = 6,
    persistence: float = 0.6,
    frequency: float = 1 / 32,
) -> torch.Tensor:
    """Fractal (multi-octave) OpenSimplex noise at pixel coordinates; 3-D, or 2-D when ``z`` is None.

    ``sum_o persistence**o * noise(frequency * 2**o * (x, y, z))`` for
    o = 0..octaves-1: the first octave sees coordinates divided by 32 (paper
    defaults), each next one twice the frequency and ``persistence`` times the
    amplitude. All octaves are evaluated in one batched call.

    The public RD++ code's (3, h, w) field is ``fractal_noise(x, y, z)`` on the
    grid ``z, y, x = torch.meshgrid(arange(3), arange(h), arange(w), indexing="ij")``:
    the channel index is the z coordinate. Coordinates are broadcast; returns
    float64 of the broadcast shape.
    """
    if octaves < 1:
        raise ValueError(f"octaves must be >= 1, got {octaves}")
    if not frequency > 0:
        raise ValueError(f"frequency must be > 0, got {frequency}")
    coords = [torch.as_tensor(c) for c in ((x, y) if z is None else (x, y, z))]
    coords = [c.to(torch.float64) for c in torch.broadcast_tensors(*coords)]
    device = coords[0].device
    scale = frequency * 2.0 ** torch.arange(octaves, dtype=torch.float64, device=device)
    amplitude = persistence ** torch.arange(octaves, dtype=torch.float64, device=device)
    view = (octaves,) + (1,) * coords[0].dim()
    noise = noise2 if z is None else noise3
    values = noise(*(c[None] * scale.view(view) for c in coords), seed=seed)  # [octaves, *shape]
    return (values * amplitude.view(view)).sum(0)


# --------------------------------------------------------------------------- pseudo-anomalies


class BoxDraw(NamedTuple):
    """The random draws behind one batch of pseudo-anomalies (all on the images' device).

    top, left, height, width: [B] int64, the box of each sample, fully inside the image.
    offset: [B, K, 3] float64, where in the noise domain (pixel units, x/y/z)
    each sample's box starts; K = 1 (channel-correlated, channel c at z + c)
    or K = C (one independent offset per channel).
    """

    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    offset: torch.Tensor


class PseudoAnomaly(torch.nn.Module):
    """RD++ pseudo-anomalies: add a box of fractal simplex noise to every image of a batch.

    ``PseudoAnomaly()(images, generator=None) -> (noisy_images, box_masks)``
    with images [B, C, H, W] in [0, 1] on any device; noisy_images has their
    shape, dtype and device; box_masks is [B, 1, H, W] (1 inside the box, 0 outside).

    Per sample: box height and width uniform in ``size_range`` (inclusive),
    position uniform with the box fully inside the image, noise =
    ``scale * fractal_noise(...)`` (paper: 10..31 px, 0.2, 6 octaves,
    persistence 0.6, frequency 1/32), added to the image, not clamped unless
    ``clamp=True``. Unlike the public code, which crops one fixed noise field
    for every image, each sample reads its own region of the noise domain
    (a random offset in [0, ``offset_range``) per axis), so no two samples
    share noise. ``correlated_channels=True`` is the published recipe (one
    3-D field whose z axis is the channel, so channels are nearly equal);
    False gives each channel its own offset. All boxes of the batch are
    evaluated in one batched noise call, on the images' device. Random draws
    come from ``generator`` (or torch's default CPU generator) on its own
    device, so a CPU generator gives the same result on CPU and CUDA.
    (The public code draws sizes with ``randint(10, 32)``, i.e. 10..31, and
    starts at 1..H-h-1; we allow every fully-inside position, 0..H-h.)

    ``draw`` and ``apply`` split a call into its random draws (:class:`BoxDraw`)
    and the deterministic rest, so the same boxes can be shown or reproduced.
    """

    def __init__(
        self,
        size_range: tuple[int, int] = (10, 31),
        scale: float = 0.2,
        *,
        octaves: int = 6,
        persistence: float = 0.6,
        frequency: float = 1 / 32,
        clamp: bool = False,
        correlated_channels: bool = True,
        seed: int = 0,
        offset_range: float = 2.0**16,
    ) -> None:
        super().__init__()
        low, high = size_range
        if not 1 <= low <= high:
            raise ValueError(f"size_range must satisfy 1 <= low <= high, got {size_range}")
        if octaves < 1:
            raise ValueError(f"octaves must be >= 1, got {octaves}")
        if not offset_range > 0:
            raise ValueError(f"offset_range must be > 0, got {offset_range}")
        check_seed(seed)
        self.size_range = (int(low), int(high))
        self.scale = scale
        self.octaves = octaves
        self.persistence = persistence
        self.frequency = frequency
        self.clamp = clamp
        self.correlated_channels = correlated_channels
        self.seed = seed
        self.offset_range = offset_range

    def extra_repr(self) -> str:
        return (
            f"size_range={self.size_range}, scale={self.scale}, octaves={self.octaves}, "
            f"persistence={self.persistence}, frequency={self.frequency}, clamp={self.clamp}, "
            f"correlated_channels={self.correlated_channels}, seed={self.seed}"
        )

    def draw(
        self, shape: torch.Size | tuple[int, int, int, int], device: torch.device, generator: torch.Generator | None = None
    ) -> BoxDraw:
        """Draw boxes and noise offsets for a batch of ``shape`` [B, C, H, W]; returned on ``device``."""
        batch, channels, height, width = shape
        low, high = self.size_range
        if high > height or high > width:
            raise ValueError(f"size_range {self.size_range} does not fit images of {height}x{width} pixels")
        gen_device = generator.device if generator is not None else torch.device("cpu")
        kw = {"generator": generator, "device": gen_device}
        box_h = torch.randint(low, high + 1, (batch,), **kw)
        box_w = torch.randint(low, high + 1, (batch,), **kw)
        # uniform in 0..H-h inclusive; the clamp guards a rounding of u * n up to n
        top = (torch.rand(batch, dtype=torch.float64, **kw) * (height - box_h + 1)).long().clamp_max(height - box_h)
        left = (torch.rand(batch, dtype=torch.float64, **kw) * (width - box_w + 1)).long().clamp_max(width - box_w)
        k = 1 if self.correlated_channels else channels
        offset = torch.rand(batch, k, 3, dtype=torch.float64, **kw) * self.offset_range
        return BoxDraw(*(t.to(device) for t in (top, left, box_h, box_w, offset)))

    def apply(self, images: torch.Tensor, draw: BoxDraw) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the noise boxes described by ``draw`` to ``images`` [B, C, H, W].

        Returns (noisy [B, C, H, W], masks [B, 1, H, W]). Noise is evaluated only
        at the pixels inside the boxes (one batched call for the whole batch).
        """
        batch, channels, height, width = images.shape
        device = images.device
        rows, cols = torch.arange(height, device=device), torch.arange(width, device=device)
        row_in = (rows >= draw.top[:, None]) & (rows < (draw.top + draw.height)[:, None])  # [B, H]
        col_in = (cols >= draw.left[:, None]) & (cols < (draw.left + draw.width)[:, None])  # [B, W]
        masks = (row_in[:, None, :, None] & col_in[:, None, None, :]).to(images.dtype)  # [B, 1, H, W]

        # Box pixels of the whole batch, from a padded [B, hmax, wmax] grid of in-box positions.
        i = torch.arange(int(draw.height.max()), device=device)
        j = torch.arange(int(draw.width.max()), device=device)
        valid = (i < draw.height[:, None])[:, :, None] & (j < draw.width[:, None])[:, None, :]
        b, i, j = valid.nonzero(as_tuple=True)  # [P] each

        ch = torch.arange(channels, device=device)
        offset = draw.offset[b]  # [P, K, 3]
        x = offset[..., 0] + j[:, None]  # [P, K]
        y = offset[..., 1] + i[:, None]
        z = offset[..., 2] + ch if self.correlated_channels else offset[..., 2]  # [P, C]
        values = fractal_noise(
            x, y, z, self.seed, octaves=self.octaves, persistence=self.persistence, frequency=self.frequency
        )  # [P, C]: all boxes of the batch in one call

        index = (b[:, None], ch, (draw.top[b] + i)[:, None], (draw.left[b] + j)[:, None])
        noisy = images.clone()
        noisy[index] = images[index] + (self.scale * values).to(images.dtype)
        if self.clamp:
            noisy = noisy.clamp(0, 1)
        return noisy, masks

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, C, H, W] in [0, 1] -> (noisy_images [B, C, H, W], box_masks [B, 1, H, W])."""
        if images.dim() != 4 or not images.is_floating_point():
            raise ValueError(
                f"images must be a floating tensor [B, C, H, W], got {images.dim()}-D {images.dtype} {tuple(images.shape)}"
            )
        return self.apply(images, self.draw(images.shape, images.device, generator))
