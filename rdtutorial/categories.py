"""One run, many categories: train or evaluate each in its own subfolder, with one ``summary.json``.

The command line's ``train`` and ``evaluate`` and the book's full run
(chapter 10) call these. Everything that can fail on input is checked before
the first category starts: the summary's settings (a folder that holds other
settings' categories is refused), every category's data and folder. The
summary is rewritten after each category, so a stopped run keeps its table.
What a front end shows or draws per category is its own callback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from torch import nn
from torch.utils.data import Dataset

from .checkpoint import CheckpointError, find_checkpoints
from .config import TrainConfig, shared_settings
from .data import ELPV, DatasetError, list_categories
from .data.elpv import package_data_dir
from .errors import ConfigError
from .evaluate import check_test_set, evaluate
from .history import History
from .metrics import METRICS
from .runs import check_writable, previous_results, run_lock, write_summary
from .train import build_dataset, build_datasets, load_trained, preflight, train

Trained = Callable[[TrainConfig, nn.Module, History, Dataset], None]
Evaluated = Callable[[TrainConfig, nn.Module, Dataset, Path], None]


def dataset_root(dataset: str, given: str | os.PathLike | None, default: str | os.PathLike) -> Path:
    """Where a ``dataset``'s categories are: the folder ``given`` (else ``default``), which must exist; for
    ``elpv`` the installed elpv-dataset package's data (a ``given`` folder is refused: it would be ignored)."""
    if dataset == "elpv":
        if given is not None:
            raise ConfigError(f"--data-root {given}: --dataset elpv takes no data root, its images come with the "
                              "elpv-dataset package")
        return package_data_dir()
    root = Path(given or default)
    if not root.is_dir():
        raise DatasetError(f"data root {root} does not exist (pass --data-root; `python -m rdtutorial download` "
                           "fetches MVTec AD, `python -m rdtutorial demo` makes the demo dataset)")
    return root


def resolve_categories(requested: list[str] | None, dataset: str, root: str | os.PathLike, default: str
                       ) -> list[str]:
    """The categories to run: ``requested`` (``all`` = every category of ``dataset``: ELPV's module types, or
    the folders found under ``root``) or ``default`` (ELPV has none: its category is asked for)."""
    if not requested and dataset == "elpv":
        raise ConfigError(f"--dataset elpv: choose --category {', '.join(ELPV.CATEGORIES)} or all")
    if not requested:
        return [default]
    if "all" in requested:
        found = list(ELPV.CATEGORIES) if dataset == "elpv" else list_categories(root)
        if not found:
            raise DatasetError(f"--category all: no category folders (with train/ or test/) in {root}")
        return found
    return list(dict.fromkeys(requested))


def train_categories(configs: list[TrainConfig], out_dir: str | os.PathLike,
                     on_trained: Trained | None = None) -> dict[str, dict]:
    """Train each config (one per category, each with its own ``out_dir`` inside ``out_dir``).

    After each category, its result (the final :data:`~rdtutorial.metrics.METRICS`, ``epochs`` and
    ``train_seconds``) joins ``out_dir/summary.json`` and ``on_trained(cfg, model, history, test_set)`` runs.
    Returns every category of the summary: those of earlier calls with the same settings, then these.
    """
    out_dir = check_writable(out_dir)
    with run_lock(out_dir):  # the summary's folder, one run at a time (each category's folder: train's own)
        results = previous_results(out_dir, "train", shared_settings(configs[0]))  # other categories of this run
        runs = [(cfg, build_datasets(cfg)) for cfg in configs]
        for cfg, (train_set, test_set) in runs:  # every category's, before the first trains
            preflight(cfg, train_set, test_set)
        for cfg, datasets in runs:
            model, history = train(cfg, datasets)
            results[cfg.category] = {**{m: history.evals[-1][m] for m in METRICS}, "epochs": cfg.epochs,
                                     "train_seconds": sum(e["seconds"] for e in history.epochs)}
            if on_trained is not None:
                on_trained(cfg, model, history, datasets[1])
            write_summary(out_dir, "train", results, cfg)
        return results


def evaluate_categories(path: str | os.PathLike, out_dir: str | os.PathLike,
                        categories: list[str] | None = None, data_root: str | None = None,
                        batch_size: int | None = None, device: str = "cpu", progress: bool = True,
                        on_evaluated: Evaluated | None = None) -> dict[str, dict]:
    """Evaluate a checkpoint, or every ``<category>/checkpoint.pt`` of a run folder (only ``categories``, if given).

    Each category's metrics go to ``out_dir/<category>/metrics.json``, then
    ``on_evaluated(cfg, model, test_set, folder)`` runs;
    ``out_dir/summary.json`` collects them. ``data_root`` and ``batch_size`` replace the checkpoint's.
    Returns every category of the summary (one evaluated again replaces its old row).
    """
    path = Path(path)
    checkpoints = find_checkpoints(path, categories)
    out_dir = check_writable(out_dir)
    with run_lock(out_dir):
        results, previous, cfg = {}, None, None
        for ckpt in checkpoints:
            model, cfg = load_trained(ckpt, device)
            if categories and cfg.category not in categories:
                continue
            if cfg.category in results:
                raise CheckpointError(f"two checkpoints under {path} are for category {cfg.category!r}; "
                                      "evaluate them one by one")
            cfg = cfg.replace(data_root=str(dataset_root(cfg.dataset, data_root, cfg.data_root)))
            if previous is None:  # categories evaluated into this folder before, checked before any evaluation
                previous = previous_results(out_dir, "evaluate", shared_settings(cfg))
            test_set = build_dataset(cfg, "test")
            check_test_set(test_set)
            result = evaluate(model, test_set, batch_size or cfg.eval_batch_size, device, progress=progress)
            folder = out_dir / cfg.category
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "metrics.json").write_text(json.dumps({**result.metrics, "checkpoint": str(ckpt),
                                                             "data_root": cfg.data_root}, indent=1))
            if on_evaluated is not None:
                on_evaluated(cfg, model, test_set, folder)
            results[cfg.category] = result.metrics
        missing = sorted(set(categories or []) - set(results))
        if missing:
            raise CheckpointError(f"no checkpoint for categories {missing} under {path}")
        results = {**(previous or {}), **results}
        write_summary(out_dir, "evaluate", results, cfg)
        return results
