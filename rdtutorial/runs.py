"""Run folders: one run per folder, writable, checked before any work starts.

A run folder holds one training run (``checkpoint.pt``, ``history.json``,
``metrics.json``, figures); :func:`check_run_folder` refuses to start a fresh
run where another one lies, and :func:`check_writable` finds a read-only
folder or a file in the way before hours of training rather than after them.
A parent folder's ``summary.json`` collects the categories of one set of
settings: :func:`write_summary` writes it, :func:`previous_results` returns
its categories, or refuses other settings.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .checkpoint import CHECKPOINT_NAME
from .config import TrainConfig, resumable_fields, shared_settings
from .errors import InputError
from .metrics import mean_metrics

RUN_FILES = (CHECKPOINT_NAME, "history.json", "metrics.json")
SUMMARY_NAME = "summary.json"


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
