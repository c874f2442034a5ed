"""RD++ projection layers P_k: one small conv net per teacher scale.

Each P_k maps a teacher map to a map of the same shape, ``[B,C,H,W] ->
[B,C,H,W]``, through four blocks of Conv3x3 (bias) -> InstanceNorm2d (no
affine) -> LeakyReLU(0.01), with widths C -> C/2 -> C/4 -> C/2 -> C. These
match the public RD++ code (15.49 M parameters for Wide-ResNet-50-2's 256,
512, 1024 channels). The blog post calls them "linear": they are not.

``residual=True`` is this book's variant (not the paper's): ``P_k(f) = f +
s_k * g_k(f)`` with ``g_k`` the four blocks above and ``s_k`` a learnable
per-channel scale that starts at 0 (ReZero, Bachlechner et al., UAI 2021), so
training starts from P_k = identity, i.e. from plain RD, instead of from a
random map the student must first learn to undo.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=True),
        nn.InstanceNorm2d(c_out, affine=False),
        nn.LeakyReLU(0.01),
    )


class Projection(nn.Sequential):
    """P_k for one scale with ``channels`` C: ``[B,C,H,W] -> [B,C,H,W]`` (``residual``: f + s * blocks(f))."""

    def __init__(self, channels: int, residual: bool = False) -> None:
        widths = [channels, max(channels // 2, 1), max(channels // 4, 1), max(channels // 2, 1), channels]
        super().__init__(*[_block(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.scale = nn.Parameter(torch.zeros(1, channels, 1, 1)) if residual else None

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        return out if self.scale is None else x + self.scale * out


class MultiScaleProjection(nn.ModuleList):
    """One :class:`Projection` per teacher scale: ``[f_1..f_K] -> [P_1 f_1 .. P_K f_K]``."""

    def __init__(self, channels: tuple[int, ...], residual: bool = False) -> None:
        super().__init__([Projection(c, residual) for c in channels])

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        if len(feats) != len(self):
            raise ValueError(f"expected {len(self)} feature maps, got {len(feats)}")
        return [p(f) for p, f in zip(self, feats)]
