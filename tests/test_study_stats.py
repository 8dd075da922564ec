"""The user study's statistics against values computed by hand, and the invariants they promise."""

import json
import math
from itertools import combinations

import numpy as np
import pytest

from insv2v.stats import wilson_interval
from insv2v.study.report import agreement, format_report, report
from insv2v.study.stats import (
    SIGN_FLIPS,
    bradley_terry,
    bradley_terry_bootstrap,
    holm,
    krippendorff_alpha_nominal,
    side_bias,
    sign_flip_test,
    win_rate,
)


def _sign_test(wins: int, losses: int) -> float:
    """The exact two-sided sign test, twice the smaller binomial tail at 1/2, capped at 1 (Conover 1999)."""
    n = wins + losses
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n)


def test_sign_flip_test_is_the_exact_sign_test_on_unit_nets_and_counts_every_pattern():
    # Nets of +-1: every pattern of signs is a binomial draw, so the test is the sign test.
    # 9 vs 3: P(X <= 3 | n=12, 1/2) = (1 + 12 + 66 + 220) / 4096 = 299/4096; two-sided: 598/4096.
    assert sign_flip_test([1] * 9 + [-1] * 3) == pytest.approx(598 / 4096, abs=1e-15)
    assert sign_flip_test([-1] * 9 + [1] * 3) == sign_flip_test([1] * 9 + [-1] * 3)
    assert sign_flip_test([1] * 10) == pytest.approx(2 / 1024)  # both all-or-nothing patterns
    assert sign_flip_test([1] * 5 + [-1] * 5 + [0] * 3) == 1.0 and sign_flip_test([0, 0]) == 1.0  # nets of 0 dropped
    # Magnitudes count: nets 3, 1, -1 sum to 3; of the 8 sums +-3 +-1 +-1 (5, 3, 3, 1 and their negatives) six
    # reach |3|: p = 6/8. Nets 5, 1: sums +-6, +-4; two of four reach 6.
    assert sign_flip_test([3, 1, -1]) == 0.75 and sign_flip_test([5, 1]) == 0.5


def test_sign_flip_test_draws_seeded_patterns_past_the_exact_limit():
    nets = [1] * 14 + [-1] * 6  # 2**20 patterns: more than SIGN_FLIPS, so drawn
    assert SIGN_FLIPS < 2**20
    drawn = sign_flip_test(nets, seed=3)
    assert drawn == sign_flip_test(nets, seed=3)  # seeded
    # the sign test's 0.1153; the draws' standard error sqrt(0.115 * 0.885 / 10_000) = 0.0032
    assert drawn == pytest.approx(_sign_test(14, 6), abs=0.013)
    assert sign_flip_test([1] * 20) == pytest.approx(1 / (1 + SIGN_FLIPS))  # (1 + hits) / (1 + flips), never 0


def test_win_rate_widens_wilson_by_the_design_effect_of_participants():
    # Participants (wins, losses, ties): W = 9 of D = 16 decided, rate r = 9/16. Residuals w - r d per participant:
    # 1.75, -2.25, -0.25, 0.75, squares summing to 8.75. Clustered variance 4/3 * 8.75 / 16^2; binomial
    # r (1 - r) / 16 = 63/4096; design effect (35/768) / (63/4096) = 80/27. Wilson at 9 / (80/27) of 16 / (80/27).
    result = win_rate([(4, 0, 1), (0, 4, 0), (2, 2, 0), (3, 1, 2)])
    assert (result["wins"], result["losses"], result["ties"], result["decided"]) == (9, 7, 3, 16)
    assert result["participants"] == 4 and result["rate"] == 9 / 16
    assert result["design_effect"] == pytest.approx(80 / 27, rel=1e-12)
    assert result["interval"] == pytest.approx(wilson_interval(9 * 27 / 80, 16 * 27 / 80), rel=1e-12)
    # Nets 4, -4, 0, 2: nonzero 4, -4, 2; all 8 sums +-4 +-4 +-2 reach |2|.
    assert result["p"] == 1.0


def test_win_rate_is_wilson_over_answers_where_participants_agree_and_ignores_copies_within_one():
    # Every participant at 3 of 4: no spread, design effect 1: Wilson over answers, 9 of 12 -> 0.468-0.911
    # (centre (0.75 + z^2/24) / (1 + z^2/12) = 0.6894, half-width 0.2217).
    same = win_rate([(3, 1, 2), (3, 1, 0), (3, 1, 3)])
    assert same["rate"] == 0.75 and same["design_effect"] == 1.0 and same["ties"] == 5
    assert [round(bound, 3) for bound in same["interval"]] == [0.468, 0.911]
    # Ten copies of every answer inside each participant multiply the design effect by ten and leave the interval
    # and the test unchanged; counting answers as independent would have shrunk the interval about sqrt(10) times.
    tallies = [(5, 1, 0), (2, 4, 2), (6, 0, 0), (3, 3, 0), (1, 2, 1)]
    copied = win_rate([tuple(10 * c for c in t) for t in tallies])
    base = win_rate(tallies)
    assert copied["design_effect"] == pytest.approx(10 * base["design_effect"])
    assert copied["interval"] == pytest.approx(base["interval"]) and copied["p"] == base["p"]
    alone = win_rate([(18, 2, 0), (0, 0, 3)])  # one participant decided: their 20 answers are one cluster
    assert alone["rate"] == 0.9 and alone["deciding"] == 1 and alone["interval"] == (0.0, 1.0)
    nothing = win_rate([(0, 0, 4)])
    assert math.isnan(nothing["rate"]) and nothing["interval"] == (0.0, 1.0) and nothing["p"] == 1.0
    assert math.isnan(win_rate([])["rate"])
    with pytest.raises(ValueError, match="must be >= 0"):
        win_rate([(1, 1, -1)])


def _clustered_study(rng: np.random.Generator, lean_a: float, lean_b: float) -> list[tuple[int, int, int]]:
    """20 participants x 18 decided answers, each participant winning with their own chance from Beta(a, b)."""
    chances = rng.beta(lean_a, lean_b, size=20)
    wins = rng.binomial(18, chances)
    return [(int(w), 18 - int(w), 0) for w in wins]


def test_win_rate_keeps_its_level_when_participants_each_lean_their_own_way():
    # No preference overall, but each participant leans their own way (Beta(5, 5): sd 0.15 around 1/2). Counting
    # answers as independent rejects about 20% of such studies at 5%; clustering by participant keeps near 5%.
    rng = np.random.default_rng(0)
    studies = [_clustered_study(rng, 5, 5) for _ in range(1000)]
    results = [win_rate(t, seed=i) for i, t in enumerate(studies)]
    rejected = np.mean([r["p"] < 0.05 for r in results])
    missed = np.mean([not r["interval"][0] <= 0.5 <= r["interval"][1] for r in results])
    naive = np.mean(
        [
            not wilson_interval(r["wins"], r["decided"])[0] <= 0.5 <= wilson_interval(r["wins"], r["decided"])[1]
            for r in results
        ]
    )
    assert 0.03 <= rejected <= 0.07
    assert 0.03 <= missed <= 0.08
    assert naive > 0.15  # the clustering is real: answers as independent miss three to four times too often
    # and a real preference (Beta(7, 3): 70% on average) is found in nearly every study
    found = [win_rate(_clustered_study(rng, 7, 3), seed=i) for i in range(200)]
    assert np.mean([r["p"] < 0.05 for r in found]) > 0.9 and np.mean([r["interval"][0] > 0.5 for r in found]) > 0.9


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


def _random_raters(methods: list[str], items: int, raters: int, seed: int) -> tuple[list[dict], dict]:
    """Every pair of methods on every item, each rated by `raters` raters who choose A or B at random, each shown
    the sides in their own order; and each comparison's fixed order, alternating per pair as a study is built."""
    rng = np.random.default_rng(seed)
    ratings, order = [], {}
    for item in range(items):
        for first, second in combinations(methods, 2):
            cid = len(order)
            order[cid] = (first, second) if item % 2 else (second, first)
            for rater in range(raters):
                a, b = (first, second) if rng.random() < 0.5 else (second, first)
                ratings.append({"pid": f"r{rater}", "comparison_id": cid, "method_a": a, "method_b": b,
                                "choice": "A" if rng.random() < 0.5 else "B"})  # fmt: skip
    return ratings, order


@pytest.mark.parametrize(("methods", "by_name"), [(["x", "y", "z"], 0.25), (["w", "x", "y", "z"], 1 / 3)])
def test_agreement_of_random_raters_is_near_zero_however_many_methods(methods, by_name):
    # Random A/B raters, 10 per comparison, 12 items. Coding an answer as the chosen method's name pools values of
    # comparisons that share no method: the expected disagreement is that of k names, 1 - 1/k, the observed 1/2, so
    # alpha = 1 - (1/2) / (1 - 1/k): 0.25 with 3 methods, 1/3 with 4. Coded first/second within each comparison, the
    # values are two, expected disagreement 1/2 like the observed: alpha near 0.
    alphas = [agreement(*_random_raters(methods, 12, 10, seed)) for seed in range(10)]
    assert abs(np.mean(alphas)) < 0.01 and max(map(abs, alphas)) < 0.05
    ratings, _ = _random_raters(methods, 12, 10, 0)
    units = {}
    for r in ratings:
        units.setdefault(r["comparison_id"], []).append(r["method_a"] if r["choice"] == "A" else r["method_b"])
    assert krippendorff_alpha_nominal(list(units.values())) == pytest.approx(by_name, abs=0.05)


def test_agreement_is_one_when_raters_agree_whichever_side_they_saw():
    ratings, order = _random_raters(["x", "y", "z"], 4, 5, 1)
    for r in ratings:  # everyone prefers the method earlier in the alphabet, wherever it was shown
        r["choice"] = "A" if r["method_a"] < r["method_b"] else "B"
    assert agreement(ratings, order) == 1.0
    # with every comparison ordered as the methods, the preferred one would always be "first": no variation, and
    # alpha undefined; the balanced order of a built study avoids that
    assert math.isnan(agreement(ratings, {cid: tuple(sorted(pair)) for cid, pair in order.items()}))
    ratings[0]["choice"] = "tie"
    assert 0.9 < agreement(ratings, order) < 1.0


class _Store:
    """What `report` reads of a StudyStore, from ratings in memory."""

    def __init__(self, ratings: list[dict], methods: list[str], order: dict):
        self._ratings, self._methods, self._order = ratings, methods, order
        self.questions = {"text": "?", "structure": "?", "aesthetic": "?"}

    def methods(self) -> list[str]:
        return self._methods

    def ratings(self) -> list[dict]:
        return self._ratings

    def participants(self) -> list[dict]:
        pids = sorted({r["pid"] for r in self._ratings})
        return [{"pid": p, "consented": "now", "planned": 1, "answered": 1} for p in pids]

    def comparison_methods(self) -> dict:
        return self._order

    def comparison_count(self) -> tuple[int, int]:
        return len(self._order), 0


def test_the_report_applies_holm_over_every_pair_and_question():
    # 30 participants prefer x, y, z in that order with their own strength; 3 pairs x 3 questions = 9 tests.
    rng = np.random.default_rng(2)
    ratings = []
    for i in range(30):
        lean = rng.beta(6, 4)
        shown, order = _random_raters(["x", "y", "z"], 2, 1, i)
        for r in shown:
            better = min(r["method_a"], r["method_b"])  # x beats y and z, y beats z
            for question in ("text", "structure", "aesthetic"):
                won = rng.random() < lean
                choice = ("A" if r["method_a"] == better else "B") if won else ("B" if r["method_a"] == better else "A")
                ratings.append({**r, "pid": f"p{i}", "gold": False, "question": question, "choice": choice})
    result = report(_Store(ratings, ["x", "y", "z"], order), resamples=20)
    rows = [pair["questions"][q] for pair in result["pairs"] for q in ("text", "structure", "aesthetic")]
    assert len(rows) == 9
    assert [row["p_holm"] for row in rows] == holm([row["p"] for row in rows])
    smallest = min(rows, key=lambda row: row["p"])
    assert smallest["p_holm"] == pytest.approx(min(1.0, 9 * smallest["p"]))
    assert "Holm's correction runs over all 9 tests" in format_report(result)
    json.dumps(result)  # `insv2v study report --json` writes it: plain Python numbers, no numpy scalars


def test_side_bias_counts_each_screen_once_on_its_majority():
    # p1: c1 A A B -> left; c2 B B tie -> right; c3 tie x3 -> no side; c4 A B tie -> no side. p2: c1 A A A -> left.
    # Per answer it would have been 6 A to 4 B; per screen it is 2 to 1.
    screens = {("p1", "c1"): "AAB", ("p1", "c2"): "BBt", ("p1", "c3"): "ttt", ("p1", "c4"): "ABt", ("p2", "c1"): "AAA"}
    ratings = [{"pid": pid, "comparison_id": c, "choice": {"t": "tie"}.get(x, x)}
               for (pid, c), answers in screens.items() for x in answers]  # fmt: skip
    result = side_bias(ratings)
    assert (result["A"], result["B"], result["no_side"], result["participants"]) == (2, 1, 2, 2)
    assert result["share_a"] == 2 / 3
    # p1: 1 left, 1 right; p2: 1 left: no spread beyond the binomial's (design effect 1): Wilson over 3 screens
    assert result["interval"] == pytest.approx(wilson_interval(2, 3))
    assert result["p"] == 1.0  # nets 0 and 1: one participant left, p = 2/2
    assert np.isnan(side_bias([])["share_a"])


def test_side_bias_keeps_its_level_when_screens_and_participants_are_clustered():
    # No bias overall; each participant leans left with their own chance from Beta(5, 5); a screen's three answers
    # copy the side the participant picked for it, each at random one time in five. 20 participants x 18 screens.
    rng = np.random.default_rng(4)
    flagged, naive = [], []
    for study in range(400):
        ratings = []
        for pid in range(20):
            lean = rng.beta(5, 5)
            for screen in range(18):
                left = rng.random() < lean
                for _ in range(3):
                    side = left if rng.random() < 0.8 else rng.random() < 0.5
                    ratings.append({"pid": pid, "comparison_id": screen, "choice": "A" if side else "B"})
        result = side_bias(ratings, seed=study)
        flagged.append(result["p"] < 0.05)
        a = sum(r["choice"] == "A" for r in ratings)
        low, high = wilson_interval(a, len(ratings))  # the old check: every answer independent
        naive.append(not low <= 0.5 <= high)
    assert 0.02 <= np.mean(flagged) <= 0.08
    assert np.mean(naive) > 0.3
