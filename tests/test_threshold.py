"""Thresholds from normal scores, from labelled defects, the normalisation and the Calibration record."""

import json

import numpy as np
import pytest
import torch
from scipy import stats

from rdtutorial.threshold import (
    Calibration,
    Normalization,
    calibrate,
    f1_threshold,
    false_alarm_interval,
    fpr_threshold,
    observed_rate_interval,
    recall_threshold,
)

# A hand-made labelled set. Calling s >= t defective:
#   t = 0.1: P 2/5, R 1, F1 0.571    t = 0.2: P 2/4, R 1, F1 0.667    t = 0.35: P 2/3, R 1, F1 0.8
#   t = 0.4: P 1/2, R 1/2, F1 0.5    t = 0.8: P 1, R 1/2, F1 0.667
SCORES = np.array([0.1, 0.4, 0.35, 0.8, 0.2])
LABELS = np.array([0, 0, 1, 1, 0])


def test_fpr_threshold_is_the_conformal_order_statistic():
    scores = np.random.default_rng(0).permutation(np.arange(1.0, 100.0))  # 1..99
    # k = ceil(100 * 0.95) = 95: the 95th smallest score; 5 of the 99 are at or above it.
    t = fpr_threshold(scores, 0.05)
    assert t == 95.0
    assert np.mean(scores >= t) == pytest.approx(5 / 99)
    assert fpr_threshold(torch.tensor(scores).view(9, 11), 0.05) == 95.0  # any shape, tensors too
    with pytest.raises(ValueError, match="at least 19 normal scores, got 10"):
        fpr_threshold(np.arange(10.0), 0.05)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        fpr_threshold(scores, 1.5)


def test_interval_covers_the_achieved_rate_in_simulation():
    rng = np.random.default_rng(1)
    n, alpha, reps, n_new = 50, 0.1, 2000, 200
    lo, hi = false_alarm_interval(n, alpha, confidence=0.9)
    lo_new, hi_new = false_alarm_interval(n, alpha, confidence=0.9, n_new=n_new)
    true_rates, inside, inside_new = [], 0, 0
    for _ in range(reps):
        t = fpr_threshold(rng.standard_normal(n), alpha)
        rate = stats.norm.sf(t)  # the false-alarm rate on all future normal images
        observed = np.mean(rng.standard_normal(n_new) >= t)
        true_rates.append(rate)
        inside += lo <= rate <= hi
        inside_new += lo_new <= observed <= hi_new
    # k = ceil(51 * 0.9) = 46, rate ~ Beta(5, 46): mean 5/51 <= alpha
    assert np.mean(true_rates) == pytest.approx(5 / 51, abs=0.005)
    assert 0.87 <= inside / reps <= 0.93
    assert inside_new / reps >= 0.88
    assert lo_new <= lo and hi_new >= hi  # finitely many new images add their own noise


def test_observed_rate_interval_is_clopper_pearson():
    lo, hi = observed_rate_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10))
    lo, hi = observed_rate_interval(3, 20)
    assert lo < 3 / 20 < hi


def test_f1_and_recall_thresholds_by_hand():
    assert f1_threshold(SCORES, LABELS) == 0.35
    assert recall_threshold(SCORES, LABELS, 0.5) == 0.8
    assert recall_threshold(SCORES, LABELS, 0.6) == 0.35
    assert recall_threshold(SCORES, LABELS, 1.0) == 0.35
    with pytest.raises(ValueError, match="both normal"):
        f1_threshold(SCORES, np.zeros(5))
    with pytest.raises(ValueError, match="differ in size"):
        f1_threshold(SCORES, LABELS[:4])


def test_normalization_maps_threshold_to_half_is_monotone_and_inverts():
    scores = np.random.default_rng(2).gamma(2.0, size=500)
    norm = Normalization.fit(scores, threshold=2.5)
    assert norm(2.5) == 0.5
    assert norm(scores.max()) - norm(scores.min()) == pytest.approx(1.0)
    ordered = np.sort(np.concatenate([scores, [-3.0, 50.0]]))  # beyond the range too: no clip
    assert np.all(np.diff(norm(ordered)) > 0)
    np.testing.assert_allclose(norm.inverse(norm(ordered)), ordered, rtol=1e-12, atol=1e-12)
    maps = torch.rand(2, 1, 8, 8, dtype=torch.float64) * 5
    torch.testing.assert_close(norm.inverse(norm(maps)), maps)
    assert Normalization.fit([3.0, 3.0], 3.0)(4.0) == 1.5  # one distinct score: slope 1


def test_calibrate_images_and_pixels_and_json_round_trip():
    rng = np.random.default_rng(3)
    maps = rng.random((30, 4, 4))
    scores = maps.reshape(30, -1).max(axis=1)
    labels = np.r_[np.zeros(25), np.ones(5)]
    cal = calibrate(scores, labels, maps[:, None], method="fpr", target=0.1)
    assert (cal.n_normal, cal.n_defective) == (25, 5)
    assert cal.threshold == fpr_threshold(scores[:25], 0.1)
    assert cal.pixel_threshold == fpr_threshold(maps[:25], 0.1)
    assert cal.image(cal.threshold) == 0.5 and cal.pixel(cal.pixel_threshold) == 0.5
    assert (cal.image.low, cal.image.high) == (scores.min(), scores.max())
    assert cal.false_alarm_interval() == false_alarm_interval(25, 0.1)
    assert Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal

    masks = np.zeros((5, 1, 4, 4))
    masks[[2, 3], 0, 0, 0] = 1  # the defective images' first pixels
    maps5 = np.full((5, 1, 4, 4), 0.1)
    maps5[:, 0, 0, 0] = [0.1, 0.4, 0.35, 0.8, 0.2]  # the hand-made pixels: F1-best threshold 0.35
    f1 = calibrate(SCORES, LABELS, maps5, masks, method="f1")
    assert (f1.threshold, f1.target, f1.pixel_threshold) == (0.35, None, 0.35)
    assert calibrate(SCORES, LABELS, method="recall", target=0.5).pixel is None
    with pytest.raises(ValueError, match="needs a target"):
        calibrate(SCORES, LABELS, method="recall")
    with pytest.raises(ValueError, match="not a calibration record"):
        Calibration.from_dict({"method": "fpr"})
