"""Reverse distillation (RD4AD) and RD++ as whole models.

Both hold a frozen ``teacher``, an ``bottleneck`` (the OCBE) and a student
``decoder``; RD++ adds ``projections`` between teacher and OCBE:

    RD:    E(x) -> OCBE -> D          student mimics E(x)
    RD++:  E(x) -> P -> OCBE -> D     student mimics E(x), the raw teacher maps

``forward`` returns a :class:`DistillationOutput` with the lists the losses
and the anomaly map need.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .ocbe import OCBE
from .decoder import Decoder
from .projection import MultiScaleProjection
from .teacher import Teacher


@dataclass
class DistillationOutput:
    """Per-scale maps, each a list of 3 tensors ``[B, C_k, H/s_k, W/s_k]`` (s = 4, 8, 16).

    ``teacher``: E(x); ``student``: D(OCBE(.)); ``projected``: P(E(x)) for
    RD++, ``None`` for RD.
    """

    teacher: list[Tensor]
    student: list[Tensor]
    projected: list[Tensor] | None = None


def _check_size(images: Tensor) -> None:
    if images.ndim != 4 or images.shape[-1] % 32 or images.shape[-2] % 32:
        raise ValueError(
            f"images must be [B,3,H,W] with H and W multiples of 32 (the OCBE works at stride 32), "
            f"got {tuple(images.shape)}"
        )


class ReverseDistillation(nn.Module):
    """RD4AD: ``images [B,3,H,W]`` in [0, 1] (H, W multiples of 32) -> :class:`DistillationOutput`."""

    def __init__(self, teacher: Teacher) -> None:
        super().__init__()
        self.teacher = teacher
        self.bottleneck = OCBE(teacher.channels)
        self.decoder = Decoder(teacher.channels, signed=teacher.signed)

    def forward(self, images: Tensor) -> DistillationOutput:
        _check_size(images)
        feats = self.teacher(images)
        return DistillationOutput(teacher=feats, student=self.decoder(self.bottleneck(feats)))


class RDPlusPlus(nn.Module):
    """RD++: ``images [B,3,H,W]`` in [0, 1] -> :class:`DistillationOutput` with ``projected`` set.

    ``residual_projection``: projections that start at the identity (see :class:`Projection`).
    """

    def __init__(self, teacher: Teacher, residual_projection: bool = False) -> None:
        super().__init__()
        self.teacher = teacher
        self.projections = MultiScaleProjection(teacher.channels, residual=residual_projection)
        self.bottleneck = OCBE(teacher.channels)
        self.decoder = Decoder(teacher.channels, signed=teacher.signed)

    def forward(self, images: Tensor) -> DistillationOutput:
        _check_size(images)
        feats = self.teacher(images)
        projected = self.projections(feats)
        return DistillationOutput(teacher=feats, student=self.decoder(self.bottleneck(projected)), projected=projected)
