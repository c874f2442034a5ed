"""The one check that a device is named right and present on this machine.

The command line (``--device``), the notebooks (``RDT_DEVICE``) and training
(``TrainConfig.device``) all ask :func:`check_device`; each passes how the
user wrote the device and how to fix it, so the message speaks their terms.
"""

from __future__ import annotations

import torch

from .config import DEVICE_NAME
from .errors import ConfigError, DeviceError


def default_device() -> str:
    """``cuda`` where a CUDA GPU is present, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str, given: str | None = None, fix: str | None = None) -> str:
    """``device`` if it is a device name this machine has.

    ``given`` is how the user wrote it (``--device 'cuda'``, ``RDT_DEVICE='cuda'``;
    default ``device='cuda'``) and ``fix`` what to do instead. A
    malformed name is a :class:`~rdtutorial.errors.ConfigError`, a missing
    device a :class:`~rdtutorial.errors.DeviceError`.
    """
    given = given or f"device={device!r}"
    fix = fix or "use device='cpu' or a GPU runtime"
    if not DEVICE_NAME.fullmatch(device):
        raise ConfigError(f"{given}: use cpu, cuda, cuda:N or mps")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"{given} needs a CUDA GPU, but no CUDA GPU is available here; {fix}")
    if device == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"{given}: Apple's MPS backend is not available here; {fix}")
    return device
