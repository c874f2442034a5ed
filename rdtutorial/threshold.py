"""Decision thresholds for anomaly scores, chosen without (or with few) defect examples.

Everywhere here a score ``s`` is called anomalous when ``s >= threshold``
(scikit-learn's and anomalib's convention). Scores are any array: image
scores ``[N]`` or anomaly maps ``[N,H,W]``, which are flattened, so the same
functions give image and pixel thresholds.

* From held-out **normal** images only: :func:`fpr_threshold` takes the order
  statistic ``s_(k)``, ``k = ceil((n + 1)(1 - alpha))``, of n normal scores (the
  split-conformal quantile). For exchangeable, continuous scores the expected
  false-alarm rate on new normal images is then at most ``alpha``, but the rate
  that one threshold achieves varies with the n images it came from:
  :func:`false_alarm_interval` gives the range, from the exact distribution of
  that rate, ``Beta(n + 1 - k, k)`` (Vovk 2012; Angelopoulos and Bates 2021,
  section 3.2). We use this order-statistic result rather than a Clopper-Pearson
  interval on the calibration images' own false alarms because the threshold was
  chosen from those very images, so their false-alarm count is not a binomial
  sample; Clopper-Pearson (:func:`observed_rate_interval`) is the right tool for
  false alarms counted on *other* normal images. Pixels of one image are not
  independent, so for pixel thresholds the interval is too narrow: read it for
  image scores only.
* With some labelled defects: :func:`f1_threshold` (maximum F1, from
  ``sklearn.metrics.precision_recall_curve``) and :func:`recall_threshold` (the
  highest threshold that reaches a target recall, from ``roc_curve``).
* :class:`Normalization` makes runs comparable: ``y = (s - t) / (max - min) + 0.5``,
  anomalib's min-max normalisation around the threshold ``t`` without its clip to
  [0, 1], so that it stays exactly invertible and strictly monotone; ``t`` maps
  to 0.5, and the calibration scores' range to an interval of length 1 around it.
* :class:`Calibration` stores the thresholds, how they were chosen and the
  normalisations, as JSON in a run folder (:meth:`Calibration.to_dict`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
from scipy import stats
from sklearn.metrics import precision_recall_curve, roc_curve

ArrayLike = Any  # numpy array, torch tensor (moved to the CPU by np.asarray) or sequence of floats
T = TypeVar("T")
METHODS = ("fpr", "f1", "recall")

__all__ = ["METHODS", "Calibration", "Normalization", "calibrate", "f1_threshold", "false_alarm_interval",
           "fpr_threshold", "min_normal_count", "observed_rate_interval", "recall_threshold"]


def _flat(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a flat float64 array; empty or non-finite values are a ``ValueError``."""
    if hasattr(values, "detach"):
        values = values.detach().cpu()
    flat = np.asarray(values, dtype=np.float64).ravel()
    if flat.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(flat).all():
        raise ValueError(f"{name} holds non-finite values (NaN or inf)")
    return flat


def _labels(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Flat scores and 0/1 labels of the same length, with both classes present."""
    s = _flat(scores, "scores")
    y = _flat(labels, "labels")
    if y.size != s.size:
        raise ValueError(f"scores and labels differ in size: {s.size} and {y.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (defective)")
    if y.min() == y.max():
        raise ValueError("labels must include both normal (0) and defective (1) examples")
    return s, y.astype(np.int64)


def _order_index(n: int, target_fpr: float) -> int:
    """``k = ceil((n + 1)(1 - alpha))``, the rank (1-based) of the conformal quantile among n scores."""
    if not 0 < target_fpr < 1:
        raise ValueError(f"target false-alarm rate must be in (0, 1), got {target_fpr}")
    # The small tolerance keeps e.g. (99 + 1) * (1 - 0.05) = 95.00000000000001 at rank 95.
    k = math.ceil((n + 1) * (1 - target_fpr) - 1e-9)
    if k > n:
        raise ValueError(f"a false-alarm rate of {target_fpr} needs at least {min_normal_count(target_fpr)} "
                         f"normal scores, got {n}")
    return k


def min_normal_count(target_fpr: float) -> int:
    """The fewest normal scores from which :func:`fpr_threshold` reaches ``target_fpr`` (its rank ``k <= n``)."""
    if not 0 < target_fpr < 1:
        raise ValueError(f"target false-alarm rate must be in (0, 1), got {target_fpr}")
    n = max(math.ceil(1 / target_fpr) - 2, 1)
    while math.ceil((n + 1) * (1 - target_fpr) - 1e-9) > n:  # at most two steps past the estimate
        n += 1
    return n


def fpr_threshold(normal_scores: ArrayLike, target_fpr: float) -> float:
    """The threshold ``s_(k)``, ``k = ceil((n + 1)(1 - target_fpr))``, of n normal scores (any shape).

    On these scores ``mean(s >= t) = (n - k + 1) / n``; on new normal scores the
    expected rate is ``(n + 1 - k) / (n + 1) <= target_fpr`` (continuous scores),
    with the spread given by :func:`false_alarm_interval`. Needs
    ``n >= 1 / target_fpr - 1`` scores (``ValueError`` otherwise).
    """
    s = _flat(normal_scores, "normal_scores")
    k = _order_index(s.size, target_fpr)
    return float(np.partition(s, k - 1)[k - 1])


def false_alarm_interval(
    n_normal: int, target_fpr: float, confidence: float = 0.95, n_new: int | None = None
) -> tuple[float, float]:
    """Central ``confidence`` interval of the false-alarm rate that :func:`fpr_threshold` achieves.

    The threshold from ``n_normal`` normal scores leaves a fraction ``F`` of new
    normal scores at or above it; over the draw of those n images
    ``F ~ Beta(n + 1 - k, k)`` exactly (exchangeable, continuous scores). With
    ``n_new``, the interval is for the observed fraction among ``n_new`` new
    normal images, ``BetaBinomial(n_new, n + 1 - k, k) / n_new``, which adds
    their own sampling noise.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    k = _order_index(int(n_normal), target_fpr)
    a, b = n_normal + 1 - k, k
    tails = ((1 - confidence) / 2, (1 + confidence) / 2)
    if n_new is None:
        lo, hi = stats.beta.ppf(tails, a, b)
    else:
        lo, hi = stats.betabinom.ppf(tails, n_new, a, b) / n_new
    return float(lo), float(hi)


def observed_rate_interval(false_alarms: int, n_normal: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact binomial) interval of the false-alarm rate, from ``false_alarms`` counted on
    ``n_normal`` normal images that played no part in choosing the threshold."""
    ci = stats.binomtest(int(false_alarms), int(n_normal)).proportion_ci(confidence, method="exact")
    return float(ci.low), float(ci.high)


def f1_threshold(scores: ArrayLike, labels: ArrayLike) -> float:
    """The threshold that maximises F1 on ``scores`` with 0/1 ``labels`` (same shape; maps and masks work).

    Ties go to the lowest such threshold (highest recall).
    """
    s, y = _labels(scores, labels)
    precision, recall, thresholds = precision_recall_curve(y, s)
    p, r = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    return float(thresholds[np.argmax(f1)])


def recall_threshold(scores: ArrayLike, labels: ArrayLike, target_recall: float) -> float:
    """The highest threshold whose recall on the defects (``labels == 1``) is at least ``target_recall``.

    Of all thresholds that reach the recall it has the fewest false alarms.
    """
    if not 0 < target_recall <= 1:
        raise ValueError(f"target recall must be in (0, 1], got {target_recall}")
    s, y = _labels(scores, labels)
    _, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)  # thresholds decrease, tpr increases
    return float(thresholds[np.argmax(tpr >= target_recall - 1e-12)])


@dataclass(frozen=True)
class Normalization:
    """``y = (s - threshold) / (high - low) + 0.5``: threshold -> 0.5, [low, high] -> an interval of length 1.

    Affine with a positive slope, so strictly monotone and exactly invertible
    (:meth:`inverse`); no clip, so scores outside the calibration range map
    outside [0, 1] (clip for display only). Works on floats, numpy arrays and
    torch tensors. ``low == high`` (a single score) gives slope 1.
    """

    threshold: float
    low: float
    high: float

    @classmethod
    def fit(cls, scores: ArrayLike, threshold: float) -> "Normalization":
        """The normalisation of ``threshold`` with the range of ``scores`` (any shape)."""
        s = _flat(scores, "scores")
        return cls(float(threshold), float(s.min()), float(s.max()))

    @property
    def scale(self) -> float:
        return self.high - self.low if self.high > self.low else 1.0

    def __call__(self, scores: T) -> T:
        return (scores - self.threshold) / self.scale + 0.5

    def inverse(self, normalized: T) -> T:
        return (normalized - 0.5) * self.scale + self.threshold


@dataclass(frozen=True)
class Calibration:
    """Thresholds of one trained model and how they were chosen, for ``calibration.json`` in its run folder.

    ``method``: ``"fpr"`` (quantile of normal scores, ``target`` = false-alarm
    rate), ``"f1"`` (``target`` None) or ``"recall"`` (``target`` = recall).
    ``n_normal`` / ``n_defective``: images used. ``image`` and ``pixel`` hold
    each threshold with its :class:`Normalization`; ``pixel`` is None when no
    maps (or, for f1 / recall, no masks) were given.
    """

    method: str
    target: float | None
    n_normal: int
    n_defective: int
    image: Normalization
    pixel: Normalization | None = None

    @property
    def threshold(self) -> float:
        """The image threshold: an image with score >= it is called defective."""
        return self.image.threshold

    @property
    def pixel_threshold(self) -> float | None:
        return None if self.pixel is None else self.pixel.threshold

    def false_alarm_interval(self, confidence: float = 0.95, n_new: int | None = None) -> tuple[float, float]:
        """:func:`false_alarm_interval` of the image threshold (method ``"fpr"`` only)."""
        if self.method != "fpr":
            raise ValueError(f"the false-alarm interval belongs to method 'fpr', not {self.method!r}")
        return false_alarm_interval(self.n_normal, self.target, confidence, n_new)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Calibration":
        try:
            return cls(
                method=str(data["method"]),
                target=None if data["target"] is None else float(data["target"]),
                n_normal=int(data["n_normal"]),
                n_defective=int(data["n_defective"]),
                image=Normalization(**data["image"]),
                pixel=None if data.get("pixel") is None else Normalization(**data["pixel"]),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a calibration record ({err!r}); expected the keys method, target, n_normal, "
                             "n_defective, image (threshold, low, high) and pixel") from None


def _supervised(method: str, target: float | None, scores: np.ndarray, labels: np.ndarray) -> float:
    return f1_threshold(scores, labels) if method == "f1" else recall_threshold(scores, labels, target)


def calibrate(
    scores: ArrayLike,
    labels: ArrayLike | None = None,
    maps: ArrayLike | None = None,
    masks: ArrayLike | None = None,
    method: str = "fpr",
    target: float | None = None,
) -> Calibration:
    """Image (and pixel) thresholds from held-out images.

    ``scores`` [N] image scores; ``labels`` [N] 0/1 (None: all normal);
    ``maps`` [N,H,W] (or [N,1,H,W]) anomaly maps; ``masks`` like ``maps``, 0/1.
    ``method="fpr"`` uses the normal images only, ``target`` = false-alarm rate
    for both images and pixels; ``"f1"`` and ``"recall"`` (``target`` = recall)
    need labelled defects, and masks for a pixel threshold. Each normalisation
    spans the scores (pixels) of all the images given.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if (target is None) != (method == "f1"):
        raise ValueError(f"method {method!r} " + ("takes no target" if method == "f1" else "needs a target"))
    s = _flat(scores, "scores")
    y = np.zeros(s.size, dtype=np.int64) if labels is None else _flat(labels, "labels").astype(np.int64)
    if y.size != s.size:
        raise ValueError(f"scores and labels differ in size: {s.size} and {y.size}")
    normal = y == 0
    m = None if maps is None else _flat(maps, "maps").reshape(s.size, -1)
    if method == "fpr":
        image_t = fpr_threshold(s[normal], target)
        pixel_t = None if m is None else fpr_threshold(m[normal], target)
    else:
        image_t = _supervised(method, target, s, y)
        pixel_t = None if m is None or masks is None else _supervised(method, target, m, _flat(masks, "masks"))
    return Calibration(
        method=method,
        target=target if target is None else float(target),
        n_normal=int(normal.sum()),
        n_defective=int((~normal).sum()),
        image=Normalization.fit(s, image_t),
        pixel=None if pixel_t is None else Normalization.fit(m, pixel_t),
    )
