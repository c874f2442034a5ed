"""Paired comparisons of two detectors on one test set over seeds: a two-level bootstrap and a power statement.

Two configurations trained with the same seeds score the same test images:
``scores[s, i]`` of seed ``s`` on image ``i``, for each. Their difference in a
metric (image AUROC or average precision) varies with the seed (training
randomness) and with the test images (a finite sample of cells). The
**two-level paired bootstrap** resamples both: seeds with replacement, then the
test images with replacement, normal and defective ones separately (the test
set's class sizes are fixed by its split). One image resample serves every
seed and both configurations: the seeds share one test set, so its sampling
error does not average out over seeds, and an interval that drew images anew
per seed would be too narrow. Each resample gives the mean over its seeds of
``metric(config) - metric(baseline)``; the 2.5 and 97.5 percentiles of those
are the 95% interval, their standard deviation the standard error.

A resample only changes how often each image counts, so the metrics are
computed from per-image weights (:func:`weighted_auroc`,
:func:`weighted_average_precision`) as matrix products with the pairwise
order of the scores: ten thousand resamples take seconds.

The **power statement** (:func:`minimum_detectable_difference`): with a
standard error SE of the paired mean difference, a two-sided test at level
0.05 detects a true difference of ``(z_0.975 + z_0.8) * SE = 2.80 * SE`` with
80% probability (normal approximation). Smaller true gains are likely missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.stats import norm

RESAMPLES = 10_000
CHUNK = 500  # resamples computed at once (weights [CHUNK, N] per seed)


def minimum_detectable_difference(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference a two-sided test at level ``alpha`` detects with probability ``power``,
    given the standard error ``se`` of the estimated difference: ``(z_{1-alpha/2} + z_power) * se``
    (``(1.959964 + 0.841621) * se`` for the defaults)."""
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * se)


def paired_standard_error(differences: list[float] | np.ndarray) -> float:
    """Standard error of the mean of paired ``differences`` [n] (sample standard deviation / sqrt(n), n >= 2)."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2:
        raise ValueError(f"a standard error needs at least 2 paired differences, got {d.size}")
    return float(d.std(ddof=1) / np.sqrt(d.size))


def weighted_auroc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Image AUROC [R] of ``scores`` [N] against 0/1 ``labels`` [N], each row of ``weights`` [R, N] counting
    each image that many times (the AUROC of that resample): the weighted share of (defective, normal) pairs
    that the score orders correctly, ties counting one half."""
    labels = labels.astype(bool)
    pos, neg = scores[labels], scores[~labels]
    wins = (neg[:, None] < pos[None, :]) + 0.5 * (neg[:, None] == pos[None, :])  # [n0, n1]
    w_pos, w_neg = weights[:, labels], weights[:, ~labels]
    return ((w_neg @ wins) * w_pos).sum(axis=1) / (w_pos.sum(axis=1) * w_neg.sum(axis=1))


def weighted_average_precision(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision [R] (scikit-learn's: recall steps times precision) of ``scores`` [N] against 0/1
    ``labels`` [N], each row of ``weights`` [R, N] counting each image that many times: the mean over
    defective images (weighted) of the precision among the images that score at least as high."""
    labels = labels.astype(bool)
    above = (scores[:, None] >= scores[labels][None, :]).astype(np.float64)  # [N, n1]: j counts at i's threshold
    true_positives = (weights * labels) @ above  # [R, n1]
    flagged = weights @ above
    precision = np.divide(true_positives, flagged, out=np.zeros_like(flagged), where=flagged > 0)
    w_pos = weights[:, labels]
    return (w_pos * precision).sum(axis=1) / w_pos.sum(axis=1)


METRICS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "image_auroc": weighted_auroc,
    "average_precision": weighted_average_precision,
}


@dataclass(frozen=True)
class PairedDifference:
    """``difference`` (mean over seeds of config - baseline on the whole test set), its bootstrap 95% interval
    ``(low, high)``, standard error ``se``, and the :func:`minimum_detectable_difference` ``mde`` from it."""

    difference: float
    low: float
    high: float
    se: float
    seeds: int

    @property
    def mde(self) -> float:
        return minimum_detectable_difference(self.se)

    def to_dict(self) -> dict:
        return {"difference": self.difference, "ci": [self.low, self.high], "se": self.se, "mde": self.mde,
                "seeds": self.seeds}


def two_level_bootstrap(scores: np.ndarray, baseline: np.ndarray, labels: np.ndarray, metric: str = "image_auroc",
                        resamples: int = RESAMPLES, confidence: float = 0.95, seed: int = 0) -> PairedDifference:
    """The paired difference in ``metric`` between ``scores`` [S, N] and ``baseline`` [S, N] (row s: seed s of
    each, the same N test images with 0/1 ``labels`` [N]), with the two-level bootstrap of the module docstring.

    ``seed`` fixes the resamples: the same inputs give the same interval, and two metrics computed with
    the same ``seed`` see the same resamples.
    """
    scores, baseline = np.asarray(scores, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if scores.ndim != 2 or scores.shape != baseline.shape or labels.shape != scores.shape[1:]:
        raise ValueError(f"scores {scores.shape} and baseline {baseline.shape} must be [seeds, N] alike, labels "
                         f"{labels.shape} [N]")
    if labels.all() or not labels.any():
        raise ValueError("the test set needs normal and defective images")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    compute, (n_seeds, n) = METRICS[metric], scores.shape
    ones = np.ones((1, n))
    point = float(np.mean([compute(a, labels, ones)[0] - compute(b, labels, ones)[0]
                           for a, b in zip(scores, baseline)]))
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(~labels), np.flatnonzero(labels)]
    draws = []
    for start in range(0, resamples, CHUNK):
        r = min(CHUNK, resamples - start)
        seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=r)  # [r, S]
        weights = np.zeros((r, n))
        for group in groups:  # each class resampled within itself: its size stays the split's
            weights[:, group] = rng.multinomial(group.size, np.full(group.size, 1 / group.size), size=r)
        diffs = np.stack([compute(a, labels, weights) - compute(b, labels, weights)
                          for a, b in zip(scores, baseline)], axis=1)  # [r, S]
        draws.append((seed_counts * diffs).sum(axis=1) / n_seeds)
    draws = np.concatenate(draws)
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return PairedDifference(point, float(low), float(high), float(draws.std(ddof=1)), n_seeds)
