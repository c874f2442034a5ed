"""The student decoder of reverse distillation: a teacher run backwards.

From the OCBE code z (stride 32) three stages of bottleneck blocks each double
the resolution (the first block of a stage upsamples with a 2x2 transposed
conv, on its shortcut too) and produce one map aligned with a teacher stage.
For Wide-ResNet-50-2 the stages have 3, 4, 6 blocks and output 1024x16x16,
512x32x32, 256x64x64 at 256 px (24.92 M parameters, as the public code).

A Wide-ResNet teacher's maps end in a ReLU, so the student's do too. A
teacher with signed maps (EfficientNet) gets linear output heads: the last
block of each stage skips its final ReLU, else the student could never match
negative values. Initialised as in the public code
(:func:`~.blocks.init_public`: kaiming-normal Conv2d, default ConvTranspose2d).
"""

from __future__ import annotations

from torch import Tensor, nn

from .blocks import Bottleneck, init_public


class Decoder(nn.Module):
    """z ``[B, 2*c3, H/32, W/32]`` -> ``[d1, d2, d3]`` with the teacher's shapes (strides 4, 8, 16)."""

    def __init__(
        self, channels: tuple[int, int, int], num_blocks: tuple[int, int, int] = (3, 4, 6), signed: bool = False
    ) -> None:
        super().__init__()
        c_in = 2 * channels[2]
        stages = []
        # Deepest stage first: out c3 at stride 16, then c2 at 8, then c1 at 4.
        for c_out, n in zip(reversed(channels), num_blocks):
            width = c_out // 2
            blocks = [Bottleneck(c_in, width, c_out, upsample=True, out_relu=not signed or n > 1)]
            blocks += [Bottleneck(c_out, width, c_out, out_relu=not signed or i < n - 2) for i in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        init_public(self)

    def forward(self, z: Tensor) -> list[Tensor]:
        outs = []
        x = z
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs[::-1]
