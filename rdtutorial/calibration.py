"""The calibration split: training normals held out of training, to choose the decision threshold after it.

With ``TrainConfig.calibration_fraction`` f > 0, ``round(f * N)`` of the N
training normals are held out: chosen from the file list sorted by path, by a
numpy generator seeded with the category seed and a stream number of its own.
Torch's generators (weights, shuffling, noise) never see it, so the training
images and the training's random numbers are the same in every run with the
same f and seed; f = 0 holds out nothing and is today's training, bit for bit.

After training, :func:`calibrate_held_out` scores the held-out normals and
chooses the thresholds with :func:`rdtutorial.threshold.calibrate` (method
``fpr``, target ``TrainConfig.calibration_fpr``): the image threshold, the
pixel threshold of the anomaly-map overlay, and the normalisations that map
each threshold to 0.5. :func:`save_calibration` writes them to
``calibration.json`` in the run folder with the number of images, the 95%
range of the false-alarm rate the image threshold achieves on new normal
images (:func:`rdtutorial.threshold.false_alarm_interval`: the rate is
``Beta(n + 1 - k, k)``-distributed over the draw of the n held-out images) and
each held-out image's path and score.

The defaults, 0.2 and 0.1, are set by the smallest training sets the book
meets: the demo categories and MVTec AD's toothbrush have 60 training
normals. A false-alarm rate a needs at least ``1/a - 1`` held-out images, so
0.1 of 60 (6 images) cannot express a rate of 0.1 at all (the smallest is
1/7, the maximum of the six, and its 95% range runs from 0.4% to 46%). 0.2
holds out 12: the threshold for a = 0.1 is their largest score, its expected
false-alarm rate on new normals 1/13 and its 95% range 0.2% to 26%. An
inspection line wanting 1% needs 99 held-out normals (f = 0.2 of 500).
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .config import TrainConfig
from .data import CachedImages
from .errors import ConfigError, InputError
from .evaluate import predict_maps
from .threshold import Calibration, calibrate, min_normal_count

CALIBRATION_NAME = "calibration.json"
CALIBRATION_STREAM = 0xCA1  # the split's generator: seeded with (category seed, this), apart from torch's
CONFIDENCE = 0.95

__all__ = ["CALIBRATION_NAME", "CalibrationError", "calibrate_held_out", "calibration_split", "held_out_count",
           "load_calibration", "save_calibration"]


class CalibrationError(InputError, ValueError):
    """A ``calibration.json`` that is unreadable or not one that ``train`` wrote."""


def held_out_count(n: int, fraction: float) -> int:
    """How many of ``n`` training normals a ``fraction`` holds out: ``round(fraction * n)``, halves up."""
    return math.floor(fraction * n + 0.5)


def calibration_split(cfg: TrainConfig, train_set: Dataset) -> tuple[Dataset, Dataset | None]:
    """``(training images, held-out normals)`` of ``train_set``; ``(train_set, None)`` when
    ``cfg.calibration_fraction`` is 0.

    The training images keep ``train_set``'s order, the held-out ones are in
    path order. Too few held-out images for ``cfg.calibration_fpr``, or a train
    set that does not list its files (``.samples``), is a ``ConfigError`` that
    says what to change; it is raised by :func:`rdtutorial.train.preflight`,
    before the first epoch.
    """
    if not cfg.calibration_fraction:
        return train_set, None
    samples = getattr(train_set, "samples", None)
    if samples is None:
        raise ConfigError(f"calibration_fraction = {cfg.calibration_fraction}: the train set "
                          f"({type(train_set).__name__}) does not list its files, so none can be held out; "
                          "pass an rdtutorial.data data set or calibration_fraction=0")
    n_held, needed = held_out_count(len(samples), cfg.calibration_fraction), min_normal_count(cfg.calibration_fpr)
    if n_held < needed:
        raise ConfigError(f"calibration_fraction = {cfg.calibration_fraction} holds out {n_held} of the "
                          f"{len(samples)} training images, but a false-alarm rate of {cfg.calibration_fpr} needs "
                          f"at least {needed}: raise --calibration-fraction or --calibration-fpr, or pass "
                          "--calibration-fraction 0 (no threshold)")
    by_path = sorted(samples, key=lambda s: str(s.image))
    rng = np.random.default_rng([cfg.category_seed(), CALIBRATION_STREAM])
    chosen = sorted(rng.choice(len(by_path), size=n_held, replace=False).tolist())
    held_ids = {id(by_path[i]) for i in chosen}
    train, held = copy.copy(train_set), copy.copy(train_set)
    train.samples = [s for s in samples if id(s) not in held_ids]
    held.samples = [by_path[i] for i in chosen]
    return train, held


@torch.no_grad()
def calibrate_held_out(model: nn.Module, held_out: CachedImages, cfg: TrainConfig) -> tuple[Calibration, list[float]]:
    """Score the held-out normals (maps ``[N,1,H,W]``, scores ``[N]`` = each map's maximum, as in evaluation)
    and choose the thresholds for ``cfg.calibration_fpr``; returns the calibration and the image scores."""
    was_training = model.training
    model.eval()
    maps = []
    starts = range(0, len(held_out), cfg.eval_batch_size)
    for start in tqdm(starts, desc="calibrate", leave=False, disable=not cfg.progress):
        indices = torch.arange(start, min(start + cfg.eval_batch_size, len(held_out)))
        maps.append(predict_maps(model, held_out.images(indices)).float().cpu())
    model.train(was_training)
    maps_t = torch.cat(maps)[:, 0]
    scores = maps_t.flatten(1).amax(1)
    return calibrate(scores, maps=maps_t, method="fpr", target=cfg.calibration_fpr), scores.tolist()


def save_calibration(folder: str | os.PathLike, calibration: Calibration, paths: list[str],
                     scores: list[float]) -> Path:
    """Write ``folder/calibration.json``: the calibration, its false-alarm range and the held-out images."""
    low, high = calibration.false_alarm_interval(CONFIDENCE)
    record = {**calibration.to_dict(),
              "false_alarm_interval": {"confidence": CONFIDENCE, "low": low, "high": high},
              "images": [{"path": p, "score": s} for p, s in zip(paths, scores)]}
    path = Path(folder) / CALIBRATION_NAME
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def load_calibration(folder: str | os.PathLike) -> tuple[Calibration, dict[str, Any]] | None:
    """The calibration in ``folder/calibration.json`` and the whole record; None when there is none."""
    path = Path(folder) / CALIBRATION_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        return Calibration.from_dict(record), record
    except (ValueError, TypeError, AttributeError) as err:
        raise CalibrationError(f"{path} is not a calibration written by `rdtutorial train` ({err}); move it away "
                               "or train again") from None
