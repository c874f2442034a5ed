"""``torch.load`` that never runs code: tensors and plain Python values only.

Checkpoints and teacher-weight files are read with ``weights_only=True``;
any failure is a :class:`~rdtutorial.errors.CheckpointError` that names the
file and what it was meant to be.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import torch

from .errors import CheckpointError


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
