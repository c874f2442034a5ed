"""Checkpoints that survive a crash or a Colab disconnect, and that are checked when read.

A checkpoint holds the trainable weights (the frozen teacher is rebuilt from
the config), both optimisers, the random-number states, the epoch, the
history and the config. It is written to a temporary file and renamed, so a
kill mid-write never leaves a broken checkpoint (a temporary file left by a
killed process is removed by the next write), and read back with
``torch.load(..., weights_only=True)``: plain tensors and Python values only.
A file that is not such a checkpoint, or one that does not fit the run that
reads it, raises :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_KEYS = ("epoch", "model", "optimizers", "rng", "history", "config")
# Settings a resumed run may change: where and how fast it runs, how often it evaluates or saves, how long.
RESUMABLE_CHANGES = ("device", "progress", "resume", "out_dir", "data_root", "num_workers", "checkpoint_every",
                     "eval_every", "eval_batch_size", "epochs", "diagnostics")


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, not ours, or does not fit the run that reads it."""


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict without the frozen teacher."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("teacher.")}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load weights saved by :func:`trainable_state`; every non-teacher key and shape must match."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches: torch lists every tensor, we name the first
        first = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), "")
        raise CheckpointError(f"{source} does not fit the model ({first}): it was trained with another "
                              "method or teacher") from None
    missing = [k for k in result.missing_keys if not k.startswith("teacher.")]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{source} does not fit the model: missing {missing[:5]}, unexpected "
                              f"{result.unexpected_keys[:5]}; it was trained with another method or teacher")


def read_torch_file(path: str | os.PathLike, what: str, map_location: str | torch.device = "cpu") -> object:
    """``torch.load(path, weights_only=True)``; any failure is a CheckpointError naming ``what``.

    Torch's own advice to retry with ``weights_only=False`` is never passed on:
    that would run whatever code the file holds.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes); it was cut short: copy or write it again")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol notes
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{what} {path} is not a file of tensors and plain values: it is damaged, or holds "
                              "Python objects, which are never loaded (that could run code)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{what} {path} cannot be read ({first}); it is damaged or cut short") from None


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the temporary files of ``path`` whose writing process is gone (killed mid-write)."""
    removed = []
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``), checking its entries."""
    if Path(path).is_file() and not zipfile.is_zipfile(path):  # torch.save has written zip archives since 1.6
        raise CheckpointError(f"checkpoint {path} is not a complete torch.save file ({Path(path).stat().st_size} "
                              "bytes): it was cut short or is another format; pass a checkpoint.pt from a run folder")
    state = read_torch_file(path, "checkpoint", map_location)
    missing = [k for k in CHECKPOINT_KEYS if k not in state] if isinstance(state, dict) else list(CHECKPOINT_KEYS)
    if missing:
        raise CheckpointError(f"{path} is not a checkpoint written by `rdtutorial train` (it has no {missing}); "
                              "pass a checkpoint.pt from a run folder")
    return state


def resume_state(cfg) -> dict | None:
    """The checkpoint that a :class:`~rdtutorial.config.TrainConfig` with ``resume=True`` continues from
    (``out_dir/checkpoint.pt``, checked by :func:`check_resumable`), or None to start afresh."""
    path = Path(cfg.out_dir) / CHECKPOINT_NAME if cfg.out_dir else None
    if not cfg.resume or path is None or not path.is_file():
        return None
    state = load_checkpoint(path)
    check_resumable(state, cfg.to_dict(), path)
    return state


def check_resumable(state: dict, config: dict, path: str | os.PathLike) -> None:
    """Refuse to resume from ``state`` when its run differs from ``config`` (a dict of TrainConfig fields).

    Only the settings in :data:`RESUMABLE_CHANGES` may differ, and ``epochs``
    may not fall below the checkpoint's epoch.
    """
    saved = state["config"]
    changed = [k for k in config if k in saved and k not in RESUMABLE_CHANGES and _plain(saved[k]) != _plain(config[k])]
    if changed:
        diffs = ", ".join(f"{k} {saved[k]!r} -> {config[k]!r}" for k in changed)
        raise CheckpointError(f"cannot resume from {path}: it was trained with other settings ({diffs}); "
                              "resume with the same settings, or train afresh in another --out-dir")
    if state["epoch"] > config["epochs"]:
        raise CheckpointError(f"cannot resume from {path}: it is at epoch {state['epoch']}, beyond epochs="
                              f"{config['epochs']}; pass --epochs {state['epoch']} or more")


def _plain(value):
    return list(value) if isinstance(value, (tuple, list)) else value
