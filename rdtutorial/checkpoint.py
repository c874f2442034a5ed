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
import tempfile
import zipfile
from pathlib import Path

import torch
from torch import nn

from .config import legacy_values, resumable_fields
from .errors import CheckpointError, StorageError
from .resources import free_space, storage_failure
from .safe_load import read_torch_file

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_KEYS = ("epoch", "model", "optimizers", "rng", "history", "config")


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


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, then rename).

    A full disk, an exceeded quota or a read-only folder raises :class:`StorageError` naming the folder; the
    previous checkpoint at ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        if not storage_failure(err):
            raise
        space = free_space(path.parent)
        kept = f"the previous {path.name} is intact" if path.is_file() else f"no {path.name} was written"
        raise StorageError(f"cannot write {path.name} in {path.parent}: the disk is full, over quota or read-only"
                           f"{f' ({space})' if space else ''}; {kept}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def rescue_checkpoint(state: dict) -> str:
    """Try once to write ``state`` to a new folder in the system's temporary folder; what became of it, in words."""
    folder = None
    try:
        folder = Path(tempfile.mkdtemp(prefix="rdtutorial-rescue-"))
        return f"the trained weights are saved in {save_checkpoint(folder / CHECKPOINT_NAME, state)} instead"
    except (OSError, RuntimeError):
        if folder is not None:
            folder.rmdir()
        return f"they could not be saved in {tempfile.gettempdir()} either"


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

    Only the settings that :func:`rdtutorial.config.resumable_fields` names may
    differ, and ``epochs`` may not fall below the checkpoint's epoch.
    """
    saved, resumable = {**legacy_values(), **state["config"]}, resumable_fields()  # older runs: their values
    changed = [k for k in config if k in saved and k not in resumable and _plain(saved[k]) != _plain(config[k])]
    if changed:
        diffs = ", ".join(f"{k} {saved[k]!r} -> {config[k]!r}" for k in changed)
        raise CheckpointError(f"cannot resume from {path}: it was trained with other settings ({diffs}); "
                              "resume with the same settings, or train afresh in another --out-dir")
    if state["epoch"] > config["epochs"]:
        raise CheckpointError(f"cannot resume from {path}: it is at epoch {state['epoch']}, beyond epochs="
                              f"{config['epochs']}; pass --epochs {state['epoch']} or more")


def _plain(value):
    return list(value) if isinstance(value, (tuple, list)) else value


def find_checkpoints(path: str | os.PathLike, categories: list[str] | None = None) -> list[Path]:
    """``path`` itself, ``path/checkpoint.pt``, or ``path/*/checkpoint.pt`` (one per category of a run folder;
    with ``categories``, only those category folders, so that other categories' files are never read)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint or run folder at {path}")
    if (path / CHECKPOINT_NAME).is_file():
        return [path / CHECKPOINT_NAME]
    found = sorted(p for p in path.glob(f"*/{CHECKPOINT_NAME}") if not categories or p.parent.name in categories)
    if not found:
        raise FileNotFoundError(f"no {CHECKPOINT_NAME} in {path} or in its subfolders"
                                + (f" for categories {categories}" if categories else ""))
    return found
