import numpy as np
import pytest

from superalign import metrics


def test_pgr_known_numbers():
    assert metrics.pgr(0.6, 0.7, 0.8) == pytest.approx(0.5)
    assert metrics.pgr(0.6, 0.8, 0.8) == pytest.approx(1.0)
    assert metrics.pgr(0.6, 0.55, 0.8) == pytest.approx(-0.25)
    assert np.isnan(metrics.pgr(0.7, 0.8, 0.7))  # no gap to recover


def test_pgr_bootstrap_point_and_ci():
    n = 1000
    rng = np.random.default_rng(0)
    truth_weak, truth_w2s, truth_ceil = 0.60, 0.70, 0.80
    u = rng.random(n)
    # nested correctness: ceiling right wherever w2s is, w2s wherever weak is
    weak = (u < truth_weak).astype(float)
    w2s = (u < truth_w2s).astype(float)
    ceil = (u < truth_ceil).astype(float)
    res = metrics.pgr_bootstrap(weak, w2s, ceil, n_boot=500, seed=1)
    assert res.pgr.value == pytest.approx((w2s.mean() - weak.mean()) / (ceil.mean() - weak.mean()))
    assert res.pgr.low < res.pgr.value < res.pgr.high
    assert 0.3 < res.pgr.low and res.pgr.high < 0.7
    assert res.reliable
    # a gap of zero is flagged, not reported as a number
    flat = metrics.pgr_bootstrap(weak, w2s, weak, n_boot=200)
    assert not flat.reliable and "minimum" in flat.reason


def test_pgr_bootstrap_averages_seeds_before_ratio():
    weak = np.array([[1, 0, 0, 0], [1, 1, 0, 0]], dtype=float)  # 25%, 50%
    w2s = np.array([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=float)  # 50%, 75%
    ceil = np.ones((2, 4))
    res = metrics.pgr_bootstrap(weak, w2s, ceil, n_boot=100, min_gap=0.0)
    assert res.weak.value == pytest.approx(0.375)
    assert res.pgr.value == pytest.approx((0.625 - 0.375) / (1 - 0.375))
    assert res.per_seed == pytest.approx([(0.5 - 0.25) / 0.75, (0.75 - 0.5) / 0.5])


def test_small_gap_is_unreliable():
    n = 400
    u = np.random.default_rng(3).random(n)
    res = metrics.pgr_bootstrap((u < 0.70).astype(float), (u < 0.71).astype(float), (u < 0.72).astype(float),
                                n_boot=200, min_gap=0.05)
    assert not res.reliable


def test_ece_known_numbers():
    probs = np.array([[0.1, 0.9], [0.1, 0.9], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([1, 0, 0, 0])
    # bin 0.9: acc 0.5, conf 0.9 (2 ex); bin 0.6: acc 1.0, conf 0.6 (2 ex)
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx((0.4 * 2 + 0.4 * 2) / 4)
    perfect = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert metrics.expected_calibration_error(perfect, np.array([1, 0])) == pytest.approx(0.0)


def test_accuracy_and_agreement():
    a = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    b = np.array([0, 0, 1])
    assert metrics.accuracy(a, b) == pytest.approx(2 / 3)
    assert metrics.agreement(a, b) == pytest.approx(2 / 3)


def test_mean_ci_brackets_the_mean():
    c = (np.random.default_rng(0).random(500) < 0.7).astype(float)
    iv = metrics.mean_ci(c, n_boot=300)
    assert iv.low < iv.value < iv.high
    assert iv.high - iv.low < 0.12
