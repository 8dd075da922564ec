"""The user study's statistics against values computed by hand, and the invariants they promise."""

import math

import numpy as np
import pytest

from insv2v.study.stats import (
    bradley_terry,
    bradley_terry_bootstrap,
    holm,
    krippendorff_alpha_nominal,
    side_bias,
    sign_test,
    win_rate,
)


def test_win_rate_counts_decided_comparisons_only_with_a_wilson_interval():
    # 9 wins of 12 decided: p = 0.75; Wilson: centre (0.75 + z^2/24) / (1 + z^2/12) = 0.6894, half-width 0.2217.
    result = win_rate(9, 3, ties=5)
    assert result["rate"] == 0.75 and result["decided"] == 12 and result["ties"] == 5
    assert [round(bound, 3) for bound in result["interval"]] == [0.468, 0.911]
    nothing = win_rate(0, 0, ties=4)
    assert math.isnan(nothing["rate"]) and nothing["interval"] == (0.0, 1.0)
    with pytest.raises(ValueError, match="ties must be >= 0, got -1"):
        win_rate(1, 1, -1)


def test_sign_test_is_the_exact_two_sided_binomial_without_ties():
    # 9 vs 3: P(X <= 3 | n=12, 1/2) = (1 + 12 + 66 + 220) / 4096 = 299/4096; two-sided: 598/4096.
    assert sign_test(9, 3) == pytest.approx(598 / 4096, abs=1e-15)
    assert sign_test(3, 9) == sign_test(9, 3)
    assert sign_test(10, 0) == pytest.approx(2 / 1024)  # both all-or-nothing outcomes
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0 and sign_test(0, 1) == 1.0  # capped at 1
    # 17 vs 4: 2 * (1 + 21 + 210 + 1330 + 5985) / 2**21
    assert sign_test(17, 4) == pytest.approx(2 * 7547 / 2**21)


def test_sign_test_agrees_with_scipy_where_it_is_installed():
    scipy_stats = pytest.importorskip("scipy.stats")
    for wins, losses in [(9, 3), (30, 45), (0, 7), (50, 50), (61, 39)]:
        assert sign_test(wins, losses) == pytest.approx(scipy_stats.binomtest(wins, wins + losses).pvalue, rel=1e-9)


def test_holm_adjusts_in_order_keeps_monotone_and_caps_at_one():
    # sorted 0.01, 0.03, 0.04 times 3, 2, 1 -> 0.03, 0.06, 0.04; monotone -> 0.03, 0.06, 0.06; back in input order.
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # 2 * 0.5 = 1, 1 * 0.6 raised to the running 1
    assert holm([0.2]) == [0.2] and holm([]) == []
    with pytest.raises(ValueError, match="must lie in"):
        holm([0.1, 1.5])


def test_bradley_terry_matches_closed_forms():
    # Two methods: the MLE is the win share, p_a / (p_a + p_b) = 3/4; strengths sum to 1.
    assert bradley_terry([("a", "b", 3.0), ("b", "a", 1.0)], ["a", "b"]) == pytest.approx({"a": 0.75, "b": 0.25})
    # Expected win counts of known strengths are a fixed point of the likelihood: the fit returns the strengths.
    truth = {"a": 0.5, "b": 0.3, "c": 0.2}
    expected = [(i, j, 100 * truth[i] / (truth[i] + truth[j])) for i in truth for j in truth if i != j]
    assert bradley_terry(expected, list(truth)) == pytest.approx(truth, abs=1e-8)
    # A cycle is a draw, and a tie counts as half a win each way.
    cycle = [("a", "b", 1.0), ("b", "c", 1.0), ("c", "a", 1.0)]
    assert bradley_terry(cycle, ["a", "b", "c"]) == pytest.approx(dict.fromkeys("abc", 1 / 3))
    tie = [("a", "b", 0.5), ("b", "a", 0.5), ("a", "b", 1.0)]  # 1.5 wins to 0.5
    assert bradley_terry(tie, ["a", "b"]) == pytest.approx({"a": 0.75, "b": 0.25})
    never = bradley_terry([("a", "b", 1.0)], ["a", "b", "c"])
    assert never["b"] == 0 and math.isnan(never["c"])  # never won; never compared
    with pytest.raises(ValueError, match="not in"):
        bradley_terry([("a", "z", 1.0)], ["a", "b"])


def _ratings(pid: str, a_wins: int, b_wins: int, ties: int = 0) -> list[dict]:
    choices = ["A"] * a_wins + ["B"] * b_wins + ["tie"] * ties
    return [{"pid": pid, "method_a": "x", "method_b": "y", "choice": c} for c in choices]


def test_bradley_terry_bootstrap_resamples_participants_not_ratings():
    ratings = _ratings("p1", 5, 1) + _ratings("p2", 2, 4, 2) + _ratings("p3", 6, 0) + _ratings("p4", 3, 3)
    methods = ["x", "y"]
    result = bradley_terry_bootstrap(ratings, methods, resamples=400, seed=1)
    assert result == bradley_terry_bootstrap(ratings, methods, resamples=400, seed=1)  # seeded
    for m in methods:
        low, high = result[m]["interval"]
        assert low <= result[m]["strength"] <= high
    # x won 16 + 1 (half of the 2 ties) of 26: its strength is the win share
    assert result["x"]["strength"] == pytest.approx(17 / 26)
    # Ten copies of every rating inside each participant leave participants, and so the intervals, unchanged;
    # resampling ratings would have shrunk them about sqrt(10) times.
    copied = [r for r in ratings for _ in range(10)]
    assert bradley_terry_bootstrap(copied, methods, resamples=400, seed=1)["x"]["interval"] == pytest.approx(
        result["x"]["interval"]
    )


def test_krippendorff_alpha_nominal_on_krippendorffs_own_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", 4 observers x 12 units, "." missing:
    #   A: 1 2 3 3 2 1 4 1 2 . . .
    #   B: 1 2 3 3 2 2 4 1 2 5 . 3
    #   C: . 3 3 3 2 3 4 2 2 5 1 .
    #   D: 1 2 3 3 2 4 4 1 2 5 1 .
    # Unit 12 has one value: not pairable. Pairable values n = 3 + 4*8 + 3 + 2 = 40.
    # Disagreeing ordered pairs / (m_u - 1): unit 2 {2,2,2,3}: 2*3*1/3 = 2; unit 6 {1,2,3,4}: 12/3 = 4;
    # unit 8 {1,1,1,2}: 6/3 = 2; the others agree: total 8.
    # Value totals n_c: 1: 9, 2: 13, 3: 10, 4: 5, 5: 3; sum of squares 384.
    # alpha = 1 - (n - 1) * 8 / (n^2 - 384) = 1 - 39 * 8 / 1216 = 904 / 1216 = 0.7434
    rows = ["1 2 3 3 2 1 4 1 2 . . .", "1 2 3 3 2 2 4 1 2 5 . 3", ". 3 3 3 2 3 4 2 2 5 1 .", "1 2 3 3 2 4 4 1 2 5 1 ."]
    units = [[v for v in column if v != "."] for column in zip(*(r.split() for r in rows), strict=True)]
    assert krippendorff_alpha_nominal(units) == pytest.approx(904 / 1216, abs=1e-12)
    assert round(krippendorff_alpha_nominal(units), 3) == 0.743


def test_krippendorff_alpha_nominal_on_wikipedias_example_and_edge_cases():
    # Wikipedia's computational example, 3 coders x 15 units: nominal alpha = 0.691.
    rows = ["* * * * * 3 4 1 2 1 1 3 3 * 3", "1 * 2 1 3 3 4 3 * * * * * * *", "* * 2 1 3 4 4 * 2 1 1 3 3 * 4"]
    units = [[v for v in column if v != "*"] for column in zip(*(r.split() for r in rows), strict=True)]
    assert round(krippendorff_alpha_nominal(units), 3) == 0.691
    assert krippendorff_alpha_nominal([["A", "A"], ["B", "B", "B"], ["tie", "tie"]]) == 1.0  # perfect agreement
    assert krippendorff_alpha_nominal([["A", "B"], ["B", "A"]]) < 0  # systematic disagreement
    assert math.isnan(krippendorff_alpha_nominal([["A"], ["B"]]))  # nothing pairable
    assert math.isnan(krippendorff_alpha_nominal([["A", "A"], ["A", "A"]]))  # no variation: undefined


def test_side_bias_is_the_share_of_decided_answers_on_the_left():
    result = side_bias(["A"] * 9 + ["B"] * 3 + ["tie"] * 4)
    assert (result["A"], result["B"], result["ties"], result["share_a"]) == (9, 3, 4, 0.75)
    assert [round(bound, 3) for bound in result["interval"]] == [0.468, 0.911]
    assert side_bias([{"choice": "A"}, {"choice": "B"}])["share_a"] == 0.5
    assert np.isnan(side_bias([])["share_a"])
