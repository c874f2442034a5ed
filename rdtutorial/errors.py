"""Errors that are the user's input, not a bug: the command line reports them in one line.

Each derives from :class:`InputError` and, as a second base, from the
built-in type that callers caught before (``ValueError`` or
``RuntimeError``). The command line prints an ``InputError`` as
``error: ...`` (exit status 2); any other exception is a bug in rdtutorial
and keeps its traceback. The data set and download errors live with their
modules (:mod:`rdtutorial.data`), the run-folder error in :mod:`rdtutorial.runs`.
"""

from __future__ import annotations

import re


class InputError(Exception):
    """Bad input: a value, file or folder that the user gave or must fix."""


class ConfigError(InputError, ValueError):
    """A configuration value (a :class:`~rdtutorial.config.TrainConfig` field, a profile) is not allowed."""


class DeviceError(InputError, RuntimeError):
    """The requested device is not on this machine (a CUDA device without a GPU, MPS without Apple's backend)."""


class CheckpointError(InputError, ValueError):
    """A checkpoint or weights file is unreadable, not ours, or does not fit the run that reads it."""


class StorageError(InputError, OSError):
    """A folder cannot take a file: its disk is full, over quota or read-only."""


class MemoryLimitError(InputError, RuntimeError):
    """The run does not fit the device's memory (estimated before the first epoch, or met during it)."""


def input_message(err: BaseException) -> str:
    """The one-line message of an input error: an OSError's reason and file; a DataLoader worker's original
    error without the worker's traceback (torch puts it in the message)."""
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.strerror}: {err.filename}"
    text = str(err)
    if "Original Traceback" in text:  # "Caught X in DataLoader worker ...\nOriginal Traceback ...\nmodule.X: message"
        last = [line for line in text.splitlines() if line and not line[0].isspace()][-1]
        text = re.sub(r"^[\w.]+: ", "", last) + " (in a DataLoader worker)"
    return text
