"""Models of reverse distillation: teachers, RD++ projections, OCBE, student decoder."""

from .blocks import Bottleneck
from .ocbe import OCBE
from .decoder import Decoder
from .projection import MultiScaleProjection, Projection
from .rd import DistillationOutput, RDPlusPlus, ReverseDistillation
from .teacher import TEACHERS, Teacher, build_teacher, lite0_classifier

__all__ = [
    "TEACHERS",
    "Bottleneck",
    "Decoder",
    "DistillationOutput",
    "MultiScaleProjection",
    "OCBE",
    "Projection",
    "RDPlusPlus",
    "ReverseDistillation",
    "Teacher",
    "build_teacher",
    "lite0_classifier",
]
