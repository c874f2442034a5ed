"""The one-class bottleneck embedding (OCBE) of reverse distillation.

Multi-scale feature fusion (MFF) brings the three teacher maps to stride 16
and concatenates them; the one-class embedding (OCE) compresses the result
with three bottleneck blocks to a stride-32 code z that the student decodes.
For Wide-ResNet-50-2 (256, 512, 1024 channels):

    f1 [B,256,64,64] -> conv3x3 s2 + BN + ReLU -> conv3x3 s2 + BN + ReLU -> [B,1024,16,16]
    f2 [B,512,32,32] -> conv3x3 s2 + BN + ReLU                           -> [B,1024,16,16]
    f3 [B,1024,16,16]                                                    -> concat [B,3072,16,16]
    OCE: 3 bottlenecks (width 1024, out 2048, first with stride 2)       -> z [B,2048,8,8]

58.89 M parameters, as in the public code without its unused conv4/bn4.
For a teacher with channels (c1, c2, c3) the widths become c2, c3, 3*c3 ->
width c3 -> 2*c3. Initialised as in the public code (:func:`~.blocks.init_public`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import Bottleneck, init_public


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class OCBE(nn.Module):
    """``[f1, f2, f3]`` (strides 4, 8, 16) -> z ``[B, 2*c3, H/32, W/32]``."""

    def __init__(self, channels: tuple[int, int, int], num_blocks: int = 3) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.fuse1 = nn.Sequential(_conv_bn_relu(c1, c2), _conv_bn_relu(c2, c3))
        self.fuse2 = _conv_bn_relu(c2, c3)
        blocks = [Bottleneck(3 * c3, c3, 2 * c3, stride=2)]
        blocks += [Bottleneck(2 * c3, c3, 2 * c3) for _ in range(num_blocks - 1)]
        self.embed = nn.Sequential(*blocks)
        self.out_channels = 2 * c3
        init_public(self)

    def forward(self, feats: list[Tensor]) -> Tensor:
        f1, f2, f3 = feats
        maps = [self.fuse1(f1), self.fuse2(f2), f3]
        sizes = sorted({tuple(m.shape[-2:]) for m in maps})
        if len(sizes) != 1:
            raise ValueError(f"OCBE: fused maps differ in size {sizes}; use an input size that is a multiple of 32 px")
        return self.embed(torch.cat(maps, dim=1))
