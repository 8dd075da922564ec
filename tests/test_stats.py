"""Intervals against hand-computed values and the invariants they promise."""

import numpy as np
import pytest

from insv2v.stats import bootstrap_interval, wilson_interval


def test_wilson_interval_matches_hand_computed_values():
    # 9 of 12: p = 0.75, centre (0.75 + z^2/24) / (1 + z^2/12), half-width from the score formula.
    assert wilson_interval(9, 12) == pytest.approx((0.4677, 0.9111), abs=5e-5)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=5e-5)  # never below 0, unlike Wald's
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=5e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_narrows_with_more_trials_around_the_rate():
    low, high = wilson_interval(75, 100)
    wide_low, wide_high = wilson_interval(3, 4)
    assert wide_low < low < 0.75 < high < wide_high


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(0).normal(3.0, 1.0, 200)
    low, high = bootstrap_interval(values)
    assert bootstrap_interval(values) == (low, high)
    assert low < values.mean() < high
    # the mean's standard error is 1/sqrt(200) = 0.071: a 95% interval spans about 4 of them
    assert high - low == pytest.approx(4 * values.std() / np.sqrt(200), rel=0.15)
    assert bootstrap_interval([5.0, 5.0, 5.0]) == (5.0, 5.0)
