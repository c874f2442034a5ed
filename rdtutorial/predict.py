"""Scoring new images with a trained checkpoint: heat-map overlays, scores and decisions in a CSV.

Every PNG/JPEG/BMP image of a folder (or one image) is resized to the
model's input size and scored by the maximum of its anomaly map, as in
evaluation. The maps are drawn over the original images with one colour
scale for the whole folder, so colours compare across images.

An image is called anomalous when its score is at or above the threshold
(:mod:`rdtutorial.threshold`'s convention). The threshold is the run's own
(``calibration.json`` beside the checkpoint, chosen by ``train`` on held-out
normal images: :mod:`rdtutorial.calibration`) unless the caller gives one;
:class:`Decision` says which was applied and where it came from.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .calibration import CALIBRATION_NAME, load_calibration
from .checkpoint import CheckpointError, find_checkpoints
from .data.io import IMAGE_EXTENSIONS, is_image_file, list_images, load_image, resize_image
from .errors import ConfigError
from .evaluate import predict_maps
from .report import save_overlay
from .runs import RunFolderError, check_writable, run_lock
from .threshold import Normalization
from .train import load_trained

SCORES_NAME = "scores.csv"
OVERLAY_SUFFIX = "_map.png"


@dataclass(frozen=True)
class Decision:
    """The threshold applied to image scores (None: scores only), where it came from in one line, and the
    calibration's normalisation (0.5 = its threshold) when the threshold is the calibration's."""

    threshold: float | None
    source: str
    normalization: Normalization | None = None


@dataclass
class Predictions:
    """What :func:`predict_images` wrote: the images, their scores, their overlays' names, the colour scale and
    the decision rule."""

    images: list[Path]
    scores: list[float]
    overlays: list[str]
    vmin: float
    vmax: float
    out_dir: Path
    decision: Decision

    @property
    def anomalous(self) -> list[int] | None:
        """1 where the score is at or above the threshold, else 0; None without a threshold."""
        t = self.decision.threshold
        return None if t is None else [int(s >= t) for s in self.scores]


def decision_for(checkpoint: Path, threshold: float | None = None) -> Decision:
    """The decision rule for the model of ``checkpoint``: ``threshold`` if given, else the one in
    ``calibration.json`` beside it, else none (with what to do to get one)."""
    found = load_calibration(checkpoint.parent)
    where = checkpoint.parent / CALIBRATION_NAME
    if threshold is not None:
        overridden = f", instead of {where}'s {found[0].threshold:.6g}" if found else ""
        return Decision(threshold, f"--threshold {threshold:.6g} (given{overridden})")
    if found is None:
        return Decision(None, f"no threshold: {checkpoint.parent} has no {CALIBRATION_NAME} (train with "
                              "--calibration-fraction > 0 to get one, or pass --threshold); scores only")
    calibration, record = found
    interval = record.get("false_alarm_interval") or {}
    spread = (f"; on new normal images its rate lies in {interval['low']:.1%} to {interval['high']:.1%} "
              f"({interval['confidence']:.0%})" if {"low", "high", "confidence"} <= set(interval) else "")
    return Decision(calibration.threshold,
                    f"{calibration.threshold:.6g} from {where}: target false-alarm rate {calibration.target:g} on "
                    f"{calibration.n_normal} held-out normal images{spread}", calibration.image)


def input_images(path: str | os.PathLike) -> list[Path]:
    """``path`` if it is an image file, else the images in the folder ``path``."""
    path = Path(path)
    if is_image_file(path):
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither an image file ({', '.join(IMAGE_EXTENSIONS)}) nor a folder")
    images = list_images(path)
    if not images:
        raise FileNotFoundError(f"no PNG, BMP or JPEG images in {path}")
    return images


def prediction_folder(out_dir: str | os.PathLike, source: str | os.PathLike, overwrite: bool = False) -> Path:
    """``out_dir``, writable, not the folder of the input images (whose overlays would be scored next time), and
    without an earlier run's predictions unless ``overwrite``."""
    out_dir, source = Path(out_dir), Path(source)
    folder = source if source.is_dir() else source.parent
    if out_dir.resolve() == folder.resolve():
        raise RunFolderError(f"--out-dir {out_dir} is the folder of the input images: the overlays and scores.csv "
                             "would be mixed with them (and scored as images by the next run); choose another "
                             "--out-dir")
    earlier = earlier_predictions(check_writable(out_dir))
    if earlier and not overwrite:
        overlays = sum(p.name.endswith(OVERLAY_SUFFIX) for p in earlier)
        raise RunFolderError(f"--out-dir {out_dir} already holds predictions ({overlays} overlays *{OVERLAY_SUFFIX}"
                             f"{', ' + SCORES_NAME if (out_dir / SCORES_NAME) in earlier else ''}): pass --overwrite "
                             "to replace them, or choose another --out-dir")
    return out_dir


def earlier_predictions(out_dir: Path) -> list[Path]:
    """The files an earlier :func:`predict_images` left in ``out_dir``: ``scores.csv`` and the ``*_map.png``
    overlays."""
    return sorted(p for p in out_dir.iterdir() if p.name == SCORES_NAME or p.name.endswith(OVERLAY_SUFFIX))


def overlay_names(images: list[Path]) -> list[str]:
    """``<stem>_map.png`` per image; ``<name>_map.png`` where two images share a stem (a.png, a.jpg)."""
    stems = [p.stem for p in images]
    return [f"{p.stem if stems.count(p.stem) == 1 else p.name}{OVERLAY_SUFFIX}" for p in images]


@torch.no_grad()
def predict_images(checkpoint: str | os.PathLike, source: str | os.PathLike, out_dir: str | os.PathLike,
                   threshold: float | None = None, vmin: float | None = None, vmax: float | None = None,
                   batch_size: int = 16, device: str = "cpu", progress: bool = True,
                   overwrite: bool = False) -> Predictions:
    """Score the images at ``source`` with the model of ``checkpoint`` (a file, or a folder holding one).

    Writes ``out_dir/<image>_map.png`` overlays (colour scale ``vmin`` to ``vmax``, default the lowest and
    highest map value) and ``out_dir/scores.csv``: path, score, with the run's calibration
    ``score_normalized`` (0.5 = its threshold), with a threshold (:func:`decision_for`: ``threshold``, else
    the calibration's) ``anomalous`` 0/1, and overlay. A folder holding earlier predictions is refused; with
    ``overwrite``, they are removed (once the new maps are computed), so old and new files are never mixed.
    """
    ckpt = find_checkpoints(checkpoint)
    if len(ckpt) != 1:
        raise CheckpointError(f"{checkpoint} holds {len(ckpt)} checkpoints; pass one checkpoint.pt")
    if threshold is not None and not math.isfinite(threshold):
        raise ConfigError(f"--threshold {threshold}: must be a finite number")
    if vmin is not None and vmax is not None and vmax <= vmin:
        raise ConfigError(f"--vmax {vmax} must be greater than --vmin {vmin}")
    decision = decision_for(ckpt[0], threshold)
    images = input_images(source)
    out_dir = prediction_folder(out_dir, source, overwrite)
    with run_lock(out_dir):  # a second predict into this folder is refused until this one has written
        prediction_folder(out_dir, source, overwrite)  # again: one that held the folder may have written there
        return _predict_into(ckpt[0], images, out_dir, decision, vmin, vmax, batch_size, device, progress)


def _predict_into(checkpoint: Path, images: list[Path], out_dir: Path, decision: Decision, vmin: float | None,
                  vmax: float | None, batch_size: int, device: str, progress: bool) -> Predictions:
    """The body of :func:`predict_images`, once ``out_dir`` is checked and held."""
    model, cfg = load_trained(checkpoint, device)
    size = (cfg.image_size, cfg.image_size)
    maps, scores = [], []
    for start in tqdm(range(0, len(images), batch_size), desc="predict", unit="batch", disable=not progress):
        batch = torch.stack([resize_image(load_image(p), size) for p in images[start:start + batch_size]])
        m = predict_maps(model, batch.to(device)).float()
        scores.extend(m.flatten(1).amax(1).cpu().tolist())
        maps.extend(m.cpu().half())
    vmin = vmin if vmin is not None else float(min(m.min() for m in maps))
    vmax = vmax if vmax is not None else float(max(m.max() for m in maps))
    names = overlay_names(images)
    for stale in earlier_predictions(out_dir):
        stale.unlink()
    for path, amap, name in tqdm(list(zip(images, maps, names)), desc="overlays", disable=not progress):
        image = load_image(path)
        full = F.interpolate(amap[None].float(), size=image.shape[-2:], mode="bilinear", align_corners=False)
        save_overlay(out_dir / name, image.permute(1, 2, 0).numpy(), full[0, 0].numpy(), vmin, vmax)
    found = Predictions(images, scores, names, vmin, vmax, out_dir, decision)
    write_scores(out_dir / SCORES_NAME, found)
    return found


def write_scores(path: Path, found: Predictions) -> None:
    """The CSV of :func:`predict_images`: path, score[, score_normalized][, anomalous], overlay."""
    norm, flags = found.decision.normalization, found.anomalous
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "score"] + (["score_normalized"] if norm else []) +
                        (["anomalous"] if flags is not None else []) + ["overlay"])
        for i, (image, score, name) in enumerate(zip(found.images, found.scores, found.overlays)):
            writer.writerow([str(image), f"{score:.6f}", *([f"{norm(score):.6f}"] if norm else []),
                             *([flags[i]] if flags is not None else []), name])
