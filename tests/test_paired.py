"""The two-level paired bootstrap and the power statement, on synthetic scores whose answer is known."""

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

from rdtutorial.paired import (minimum_detectable_difference, paired_standard_error, two_level_bootstrap,
                               weighted_auroc, weighted_average_precision)


def gaussian_scores(rng, seeds: int, n: int, shift: float, offsets=0.0):
    """Scores [seeds, 2n] and labels [2n]: n normal ~ N(0, 1), n defective ~ N(shift + each seed's offset, 1).
    The population image AUROC is Phi(shift / sqrt(2)) (without offsets)."""
    labels = np.r_[np.zeros(n), np.ones(n)]
    return rng.normal(size=(seeds, 2 * n)) + labels * (shift + np.reshape(offsets, (-1, 1))), labels


def test_weighted_metrics_equal_sklearn_on_the_resampled_set():
    rng = np.random.default_rng(0)
    labels = (rng.random(80) < 0.4).astype(int)
    scores = np.round(rng.normal(size=80) + labels, 1)  # many ties
    weights = rng.integers(0, 3, size=(6, 80)).astype(float)
    for row, auroc, ap in zip(weights, weighted_auroc(scores, labels, weights),
                              weighted_average_precision(scores, labels, weights)):
        copies = np.repeat(np.arange(80), row.astype(int))  # the resample as a list of images
        assert auroc == pytest.approx(roc_auc_score(labels[copies], scores[copies]), abs=1e-12)
        assert ap == pytest.approx(average_precision_score(labels[copies], scores[copies]), abs=1e-12)


def test_identical_configurations_differ_by_exactly_zero():
    rng = np.random.default_rng(1)
    scores, labels = gaussian_scores(rng, seeds=3, n=50, shift=1.0)
    for metric in ("image_auroc", "average_precision"):
        result = two_level_bootstrap(scores, scores, labels, metric=metric, resamples=500)
        assert (result.difference, result.low, result.high, result.se) == (0.0, 0.0, 0.0, 0.0)


def test_two_equal_detectors_get_an_interval_around_zero():
    rng = np.random.default_rng(2)
    a, labels = gaussian_scores(rng, seeds=5, n=200, shift=1.0, offsets=rng.normal(0, 0.2, size=5))
    b, _ = gaussian_scores(rng, seeds=5, n=200, shift=1.0, offsets=rng.normal(0, 0.2, size=5))
    result = two_level_bootstrap(a, b, labels, resamples=1000)
    assert result.low < 0 < result.high
    assert 0 < result.se < 0.05


def test_a_known_shift_is_recovered():
    rng = np.random.default_rng(3)
    better, labels = gaussian_scores(rng, seeds=3, n=300, shift=2.0)
    base, _ = gaussian_scores(rng, seeds=3, n=300, shift=1.0)
    truth = norm.cdf(2.0 / np.sqrt(2)) - norm.cdf(1.0 / np.sqrt(2))  # 0.161
    result = two_level_bootstrap(better, base, labels, resamples=1000)
    assert result.low < truth < result.high and result.low > 0.1
    per_seed = [roc_auc_score(labels, x) - roc_auc_score(labels, y) for x, y in zip(better, base)]
    assert result.difference == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert result.mde == pytest.approx(2.801585 * result.se, rel=1e-6)


def test_the_interval_covers_seed_variation_not_only_images():
    rng = np.random.default_rng(4)
    base, labels = gaussian_scores(rng, seeds=5, n=200, shift=2.5)
    calm, _ = gaussian_scores(rng, seeds=5, n=200, shift=2.5)
    wild, _ = gaussian_scores(rng, seeds=5, n=200, shift=2.5, offsets=np.linspace(-1.5, 1.5, 5))  # runs differ
    calm_se = two_level_bootstrap(calm, base, labels, resamples=1000).se  # test images only: about 0.01
    assert two_level_bootstrap(wild, base, labels, resamples=1000).se > 3 * calm_se


def test_resamples_are_seeded():
    rng = np.random.default_rng(5)
    a, labels = gaussian_scores(rng, seeds=2, n=40, shift=1.0)
    b, _ = gaussian_scores(rng, seeds=2, n=40, shift=1.0)
    assert two_level_bootstrap(a, b, labels, resamples=300) == two_level_bootstrap(a, b, labels, resamples=300)
    assert two_level_bootstrap(a, b, labels, resamples=300, seed=1) != two_level_bootstrap(a, b, labels,
                                                                                           resamples=300)


def test_bad_inputs_are_refused():
    scores = np.zeros((2, 4))
    with pytest.raises(ValueError, match="seeds, N"):
        two_level_bootstrap(scores, np.zeros((3, 4)), np.array([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="normal and defective"):
        two_level_bootstrap(scores, scores, np.ones(4))
    with pytest.raises(ValueError, match="metric"):
        two_level_bootstrap(scores, scores, np.array([0, 0, 1, 1]), metric="f1")


def test_minimum_detectable_difference():
    assert minimum_detectable_difference(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-6)
    assert minimum_detectable_difference(0.01, alpha=0.05, power=0.5) == pytest.approx(0.01959964, abs=1e-8)


def test_paired_standard_error_shrinks_like_one_over_sqrt_n():
    rng = np.random.default_rng(6)
    small, large = rng.normal(size=400), rng.normal(size=1600)
    assert paired_standard_error(small) == pytest.approx(np.std(small, ddof=1) / 20)
    ratio = minimum_detectable_difference(paired_standard_error(small)) / \
        minimum_detectable_difference(paired_standard_error(large))
    assert ratio == pytest.approx(2.0, rel=0.1)
    with pytest.raises(ValueError, match="at least 2"):
        paired_standard_error([0.1])
