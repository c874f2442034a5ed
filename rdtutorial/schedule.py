"""How long the paper's schedule takes on this machine, from a measured step.

wall time of a category = epochs x steps per epoch x step time + one evaluation,
steps per epoch = train images // batch size (the last incomplete batch is
dropped), evaluation = test images x measured seconds per test image. Summed
over the 15 MVTec AD categories with the public code's epochs
(:data:`rdtutorial.config.PAPER_EPOCHS`), that is the whole paper schedule.
Decoding the images (once per run) and the metrics (on the CPU) are left
out: the evaluation time is the model's, maps included.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from .config import PAPER_EPOCHS, TrainConfig
from .cpu import fast_cpu
from .evaluate import predict_maps
from .noise import PseudoAnomaly
from .train import build_model, build_optimizers, training_step

# Images per MVTec AD category (train/good, and the whole test split).
MVTEC_TRAIN_IMAGES = {
    "bottle": 209, "cable": 224, "capsule": 219, "carpet": 280, "grid": 264, "hazelnut": 391, "leather": 245,
    "metal_nut": 220, "pill": 267, "screw": 320, "tile": 230, "toothbrush": 60, "transistor": 213, "wood": 247,
    "zipper": 240,
}
MVTEC_TEST_IMAGES = {
    "bottle": 83, "cable": 150, "capsule": 132, "carpet": 117, "grid": 78, "hazelnut": 110, "leather": 124,
    "metal_nut": 115, "pill": 167, "screw": 160, "tile": 117, "toothbrush": 42, "transistor": 100, "wood": 79,
    "zipper": 151,
}


@dataclass
class ScheduleEstimate:
    """Seconds per category and in total, from ``step_s`` (one batch) and ``eval_s_per_image``."""

    step_s: float
    eval_s_per_image: float
    batch_size: int
    device: str
    peak_memory_gib: float | None
    per_category_s: dict[str, float]

    @property
    def total_s(self) -> float:
        return sum(self.per_category_s.values())

    def __str__(self) -> str:
        memory = f"{self.peak_memory_gib:.2f} GiB" if self.peak_memory_gib is not None else "not measured (no GPU)"
        longest = max(self.per_category_s, key=self.per_category_s.get)
        return "\n".join([
            f"measured on {self.device}: {self.step_s:.3f} s per batch of {self.batch_size} "
            f"({self.batch_size / self.step_s:.1f} images/s), {1000 * self.eval_s_per_image:.1f} ms per test image",
            f"peak memory: {memory}",
            f"bottle ({PAPER_EPOCHS['bottle']} epochs): {self.per_category_s['bottle'] / 3600:.2f} h; "
            f"longest, {longest}: {self.per_category_s[longest] / 3600:.2f} h",
            f"all {len(self.per_category_s)} categories ({sum(PAPER_EPOCHS.values())} epochs): "
            f"{self.total_s / 3600:.1f} h",
        ])


def estimate_schedule(
    step_s: float, eval_s_per_image: float, batch_size: int, device: str = "?", peak_memory_gib: float | None = None,
) -> ScheduleEstimate:
    """The paper schedule's wall time on MVTec AD from a step time and an evaluation time."""
    per_category = {
        c: PAPER_EPOCHS[c] * (MVTEC_TRAIN_IMAGES[c] // batch_size) * step_s + MVTEC_TEST_IMAGES[c] * eval_s_per_image
        for c in PAPER_EPOCHS
    }
    return ScheduleEstimate(step_s, eval_s_per_image, batch_size, device, peak_memory_gib, per_category)


def _sync(device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def measure_schedule(cfg: TrainConfig, repeats: int = 3, warmup: int = 2) -> ScheduleEstimate:
    """Time ``cfg``'s training step and evaluation on random images, on ``cfg.device``; estimate the schedule.

    The step is the trainer's (pseudo-anomalies, forward, backward, both
    optimiser steps), with ``cfg``'s batch size, image size, ``amp`` and
    ``channels_last``, ``projection`` and CPU settings
    (:func:`rdtutorial.cpu.fast_cpu`); the median of ``repeats`` after
    ``warmup``. Speed does not depend on the weights, so the teacher is
    randomly initialised.
    """
    with fast_cpu():
        return _measure(cfg, repeats, warmup)


def _measure(cfg: TrainConfig, repeats: int, warmup: int) -> ScheduleEstimate:
    device = cfg.device
    model = build_model(cfg.replace(teacher_weights=None))  # the trainer's model; speed needs no weights
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizers = build_optimizers(model, cfg)
    pseudo = PseudoAnomaly(cfg.noise_size, cfg.noise_scale)
    gen = torch.Generator().manual_seed(0)
    size = (3, cfg.image_size, cfg.image_size)
    images = torch.rand(cfg.batch_size, *size, device=device).contiguous(memory_format=memory_format)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and not torch.cuda.is_bf16_supported())
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    model.train()
    steps = []
    for i in range(warmup + repeats):
        t0 = _sync(device)
        scaler.scale(training_step(model, images, cfg, pseudo, gen)["total"]).backward()
        for opt in optimizers:
            scaler.step(opt)
        scaler.update()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        if i >= warmup:
            steps.append(_sync(device) - t0)
    model.eval()
    test = torch.rand(cfg.eval_batch_size, *size, device=device).contiguous(memory_format=memory_format)
    evals = []
    for i in range(warmup + repeats):
        t0 = _sync(device)
        predict_maps(model, test)
        if i >= warmup:
            evals.append((_sync(device) - t0) / cfg.eval_batch_size)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return estimate_schedule(statistics.median(steps), statistics.median(evals), cfg.batch_size, device, peak)
