"""Disk and memory a training run needs, checked before its first epoch; a full disk or memory met during it.

A checkpoint holds the trainable weights and Adam's two moments per weight,
so its size is known from the model; :func:`check_disk` refuses a folder
without room for it. :func:`check_memory` refuses an image size or batch
whose activations cannot fit the device: a lower bound (the teacher's
feature maps, as many times over as the step surely holds them), so a run
that fits is never refused. :func:`storage_failure` and
:func:`out_of_memory` recognise those failures in the errors torch raises.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from .errors import MemoryLimitError, StorageError

MIB = 2**20
DISK_MARGIN = 1.25  # the checkpoint's size times this, plus DISK_SLACK: history, metrics, the zip's overhead
DISK_SLACK = 16 * MIB
# Feature maps a training step surely holds per teacher feature: the teacher's on the clean and noisy batch,
# the projections' on both, the student's output and its gradient. The backbones' inner activations are left
# out, so the estimate is below the real peak.
FEATURE_COPIES = 6
PROBE_SIZE = 64  # the image side the teacher's feature sizes are measured at, then scaled
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
TORCH_WRITE_FAILURES = ("file write failed", "unexpected pos")  # torch.save's RuntimeError for a failed write


def checkpoint_bytes(model: nn.Module) -> int:
    """The size of a checkpoint of ``model``: its non-teacher state and Adam's two moments per trainable weight."""
    state = sum(v.numel() * v.element_size() for k, v in model.state_dict().items() if not k.startswith("teacher."))
    moments = sum(2 * p.numel() * p.element_size() for n, p in model.named_parameters()
                  if p.requires_grad and not n.startswith("teacher."))
    return state + moments


def check_disk(folder: str | os.PathLike, model: nn.Module) -> None:
    """Refuse ``folder`` when its disk has no room for a checkpoint of ``model`` (with a margin)."""
    need = int(checkpoint_bytes(model) * DISK_MARGIN) + DISK_SLACK
    free = shutil.disk_usage(folder).free
    if free < need:
        raise StorageError(f"out_dir {folder}: {free / MIB:.0f} MiB free on its disk, a checkpoint needs about "
                           f"{need / MIB:.0f} MiB; free some space or choose another --out-dir")


def device_memory(device: str) -> int:
    """The memory of ``device`` in bytes: a CUDA device's total, else the machine's physical memory."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_properties(torch.device(device)).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@torch.no_grad()
def activation_bytes(teacher: nn.Module, image_size: int, batch_size: int, device: str) -> int:
    """A lower bound of a training step's activations: the teacher's feature maps at ``image_size`` (measured
    on one ``PROBE_SIZE`` image and scaled by area) x ``batch_size`` x :data:`FEATURE_COPIES`."""
    feats = teacher(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE, device=device))
    per_image = sum(f.numel() * 4 for f in feats) * (image_size / PROBE_SIZE) ** 2  # float32
    return int(per_image * batch_size * FEATURE_COPIES)


def check_memory(teacher: nn.Module, image_size: int, batch_size: int, device: str) -> None:
    """Refuse an ``image_size`` and ``batch_size`` whose activations surely exceed the memory of ``device``."""
    need, have = activation_bytes(teacher, image_size, batch_size, device), device_memory(device)
    if need > have:
        raise MemoryLimitError(f"image_size {image_size} with batch_size {batch_size} needs at least "
                               f"{_size(need)} for the activations alone (the teacher's feature maps x "
                               f"{FEATURE_COPIES}), more than the {_size(have)} of {device}; lower --image-size or "
                               "--batch-size")


def _size(count: int) -> str:
    """``count`` bytes in GiB, or in MiB below one GiB."""
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / MIB:.1f} MiB"


def storage_failure(err: BaseException) -> bool:
    """Whether ``err`` is a full disk, an exceeded quota or a read-only file system (torch.save wraps these in a
    RuntimeError that keeps only "file write failed")."""
    if isinstance(err, OSError):
        return err.errno in STORAGE_ERRNOS
    return isinstance(err, RuntimeError) and any(text in str(err) for text in TORCH_WRITE_FAILURES)


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is torch running out of memory (CPU allocator or a GPU)."""
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err))


def free_space(folder: Path) -> str:
    """``123 MiB free`` on the disk of ``folder``, or ``''`` when it cannot be read."""
    try:
        return f"{shutil.disk_usage(folder).free / MIB:.0f} MiB free"
    except OSError:
        return ""
