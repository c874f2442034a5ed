"""Run folders: one run per folder, writable, checked before any work starts.

A run folder holds one training run (``checkpoint.pt``, ``history.json``,
``metrics.json``, figures); :func:`check_run_folder` refuses to start a fresh
run where another one lies, and :func:`check_writable` finds a read-only
folder or a file in the way before hours of training rather than after them.
A parent folder's ``summary.json`` collects the categories of one set of
settings: :func:`write_summary` writes it, :func:`previous_results` returns
its categories, or refuses other settings. :func:`run_lock` holds a folder for
one process while it works there, so a second run into it is refused at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from .checkpoint import CHECKPOINT_NAME
from .config import TrainConfig, legacy_values, resumable_fields, shared_settings
from .errors import InputError
from .metrics import mean_metrics

RUN_FILES = (CHECKPOINT_NAME, "history.json", "metrics.json")
SUMMARY_NAME = "summary.json"
LOCK_NAME = ".rdtutorial.lock"
LOCK_INFO_NAME = ".rdtutorial.lock.json"  # who holds the lock: PID, start time, command line
_held: dict[Path, int] = {}  # folders this process holds, with their nesting depth (a demo's train inside it)


class RunFolderError(InputError, ValueError):
    """An output folder cannot be written, or holds another run's files."""


def check_writable(folder: str | os.PathLike, option: str = "--out-dir") -> Path:
    """Make ``folder`` (and its parents) and check that a file can be written in it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except (FileExistsError, NotADirectoryError):
        in_way = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise RunFolderError(f"{option} {folder}: {in_way} is a file, not a folder; choose another {option}") from None
    except PermissionError:
        raise RunFolderError(f"{option} {folder}: permission denied, cannot write there; choose a writable "
                             f"{option}") from None
    except OSError as err:
        raise RunFolderError(f"{option} {folder}: cannot write there ({err.strerror}); choose another "
                             f"{option}") from None
    return folder


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, option: str = "--out-dir") -> Iterator[Path]:
    """Hold ``folder`` for this process while the block runs; another process that asks for it is refused at
    once with the holder's PID and start time.

    The lock is the operating system's (:mod:`filelock`), so a killed holder releases it; the info file a killed
    holder leaves behind is overwritten by the next run. Nested calls for one folder in one process are allowed.
    """
    folder = check_writable(folder, option).resolve()
    if folder in _held:
        _held[folder] += 1
        try:
            yield folder
        finally:
            _held[folder] -= 1
        return
    lock = FileLock(folder / LOCK_NAME, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunFolderError(f"{option} {folder} is in use by another run ({lock_holder(folder)}); wait for it to "
                             f"finish or choose another {option}") from None
    info = folder / LOCK_INFO_NAME
    info.write_text(json.dumps({"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                "command": " ".join(sys.argv)}))
    _held[folder] = 1
    try:
        yield folder
    finally:
        del _held[folder]
        info.unlink(missing_ok=True)
        lock.release()


def lock_holder(folder: Path) -> str:
    """Who holds the lock of ``folder``, from its info file: ``PID 123, started 2026-01-02 08:00:00 (command)``."""
    try:
        info = json.loads((folder / LOCK_INFO_NAME).read_text())
        return f"PID {info['pid']}, started {info['started']} ({info['command']})"
    except (OSError, ValueError, KeyError, TypeError):  # the holder is still writing it, or an old version holds it
        return "its PID is not recorded yet"


def check_run_folder(folder: str | os.PathLike, resume: bool, resumable: bool = True) -> None:
    """Refuse ``folder`` when it holds another run: a fresh run needs an empty one, a resumed one its checkpoint
    (``resumable=False``: the command has no ``--resume``, so the message does not offer it)."""
    folder = Path(folder)
    found = [name for name in RUN_FILES if (folder / name).exists()]
    if not found:
        return
    if not resume:
        offer = "pass --resume (resume=True) to continue it, or " if resumable else ""
        raise RunFolderError(f"{folder} already holds a run ({', '.join(found)}): {offer}choose another --out-dir "
                             "(or delete that folder) to train afresh")
    if CHECKPOINT_NAME not in found:
        raise RunFolderError(f"{folder} holds {', '.join(found)} but no {CHECKPOINT_NAME}, so its run cannot be "
                             "resumed; choose another --out-dir (or delete those files)")


def previous_results(out_dir: str | os.PathLike, command: str, config: dict) -> dict[str, dict]:
    """The per-category results already in ``out_dir/summary.json`` for the same ``command`` and ``config``.

    ``{}`` when there is none; a :class:`RunFolderError` when it was written with other settings
    (its categories are not ours to mix with or to drop). Settings a resumed run may change (epochs,
    device, ...: :func:`~rdtutorial.config.resumable_fields`) may differ.
    """
    path = Path(out_dir) / SUMMARY_NAME
    if not path.exists():
        return {}
    try:
        summary = json.loads(path.read_text())
        old_command, old_config, categories = summary["command"], summary["config"], summary["categories"]
    except (OSError, ValueError, KeyError, TypeError):
        raise RunFolderError(f"{path} is not a summary written by rdtutorial; move it away or choose another "
                             "--out-dir") from None
    old_config = {**legacy_values(), **old_config}  # a summary written before a field existed: its value then
    new, resumable = json.loads(json.dumps(config)), resumable_fields()
    changed = sorted(k for k in set(old_config) | set(new) if k not in resumable and old_config.get(k) != new.get(k))
    if old_command != command or changed:
        diffs = ", ".join(f"{k} {old_config.get(k)!r} -> {new.get(k)!r}" for k in changed[:4]) or \
            f"command {old_command!r}"
        raise RunFolderError(f"{path} belongs to a run with other settings ({diffs}); use the same settings to add "
                             "categories to it, or choose another --out-dir")
    return dict(categories)


def write_summary(out_dir: str | os.PathLike, command: str, results: dict[str, dict], cfg: TrainConfig) -> Path:
    """Write ``out_dir/summary.json``: ``command``, the settings the categories share
    (:func:`~rdtutorial.config.shared_settings` of ``cfg``), the metrics per category and their mean."""
    summary = {"command": command, "config": shared_settings(cfg), "categories": results,
               "mean": mean_metrics(results)}
    path = Path(out_dir) / SUMMARY_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1))
    return path
