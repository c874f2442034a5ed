"""Checkpoints that survive a crash or a Colab disconnect.

A checkpoint holds the trainable weights (the frozen teacher is rebuilt from
the config), both optimisers, the random-number states, the epoch, the
history and the config. It is written to a temporary file and renamed, so a
kill mid-write never leaves a broken checkpoint, and read back with
``torch.load(..., weights_only=True)``: plain tensors and Python values only.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

CHECKPOINT_NAME = "checkpoint.pt"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict without the frozen teacher."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("teacher.")}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load weights saved by :func:`trainable_state`; every non-teacher key must match."""
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("teacher.")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"checkpoint does not fit the model: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)
