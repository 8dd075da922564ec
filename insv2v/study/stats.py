"""The statistics of a pairwise user study, as pure functions of counts, with participants as clusters (one
participant answers many comparisons): win rates with Wilson intervals at the effective sample size, a sign-flip test
over participants, Holm's correction, Bradley-Terry strengths (with a bootstrap over participants), Krippendorff's
alpha for nominal data and the left/right bias per screen."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

from insv2v.stats import wilson_interval

BT_ITERATIONS = 10_000  # most MM updates of a Bradley-Terry fit
BT_TOLERANCE = 1e-10  # a fit has converged when no strength moves by more than this in one update
SIGN_FLIPS = 10_000  # random sign patterns of a participant-level test (every pattern when 2**participants is fewer)


def sign_flip_test(nets: Sequence[int], flips: int = SIGN_FLIPS, seed: int = 0) -> float:
    """Two-sided sign-flip test that participants' net preferences (wins - losses, one integer each) centre on 0
    (Fisher 1935, the randomisation test of paired differences): with no preference a net is as likely negated, so
    |sum| is ranked among the sums of every sign pattern: all 2**n of them when that is at most `flips`, else `flips`
    seeded random ones with p = (1 + hits) / (1 + flips) (Phipson & Smyth 2010). Nets of 0 are dropped; 1 when none
    is left. With every net +-1 it is the exact sign test."""
    nets = np.asarray([net for net in nets if net != 0], dtype=np.int64)  # (n,)
    n = len(nets)
    if n == 0:
        return 1.0
    observed = abs(int(nets.sum()))
    if 2**n <= flips:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)  # (2**n, n) every pattern of +-1
        return float((np.abs(signs @ nets) >= observed).mean())
    signs = np.random.default_rng(seed).choice(np.array([-1, 1]), size=(flips, n))  # (flips, n)
    return float((1 + (np.abs(signs @ nets) >= observed).sum()) / (1 + flips))


def _design_effect(wins: np.ndarray, decided: np.ndarray) -> float:
    """The ratio estimator's between-participant (linearised) variance over the binomial one, floored at 1; 1 when
    it cannot be estimated (fewer than two participants decided anything, or every answer went one way)."""
    clusters = decided > 0
    n, total = int(clusters.sum()), decided.sum()
    rate = wins.sum() / total if total else math.nan
    if n < 2 or not 0 < rate < 1:
        return 1.0
    variance = n / (n - 1) * ((wins[clusters] - rate * decided[clusters]) ** 2).sum() / total**2
    return max(1.0, float(variance / (rate * (1 - rate) / total)))


def win_rate(tallies: Iterable[Sequence[int]], flips: int = SIGN_FLIPS, seed: int = 0) -> dict:
    """Share of wins among decided answers (ties shown, not decided), each participant one cluster: `tallies` has
    one (wins, losses, ties) per participant, since one participant's answers are not independent.

    interval: Wilson 95% at the effective sample size decided / design effect (Korn & Graubard 1998), the design
    effect from the spread of the participants' results (`_design_effect`), so never narrower than Wilson over
    answers, and all of [0, 1] with fewer than two participants deciding; p: `sign_flip_test` of the participants'
    nets, seeded. The rate is nan when nothing was decided.
    """
    counts = np.asarray(list(tallies), dtype=np.int64).reshape(-1, 3)  # (participants, [wins, losses, ties])
    if (counts < 0).any():
        raise ValueError(f"wins, losses and ties must be >= 0, got {counts.tolist()}")
    wins, losses, ties = (int(total) for total in counts.sum(0))
    decided = wins + losses
    deciding = int((counts[:, 0] + counts[:, 1] > 0).sum())
    effect = _design_effect(counts[:, 0], counts[:, 0] + counts[:, 1])
    return {
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "decided": decided,
        "participants": len(counts),
        "deciding": deciding,
        "rate": wins / decided if decided else math.nan,
        "design_effect": effect,
        # one participant's spread says nothing of others': no interval (all of [0, 1]) rather than one over answers
        "interval": wilson_interval(wins / effect, decided / effect) if deciding >= 2 else (0.0, 1.0),
        "p": sign_flip_test(counts[:, 0] - counts[:, 1], flips, seed),
    }


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (Holm 1979), in the input's order: the i-th smallest times (m - i),
    made non-decreasing in that order and capped at 1."""
    pvalues = [float(p) for p in pvalues]
    if any(not 0 <= p <= 1 for p in pvalues):
        raise ValueError(f"p-values must lie in [0, 1], got {pvalues}")
    m = len(pvalues)
    adjusted, running = [0.0] * m, 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def _bt_fit(wins: np.ndarray) -> np.ndarray:
    """Bradley-Terry strengths by Hunter's MM algorithm (Hunter 2004, eq. 3) for one or many win matrices at once.

    wins: (..., k, k), wins[..., i, j] the (weighted) times i beat j. Returns (..., k) strengths summing to 1; a
    method that never won gets 0, one never compared gets nan.
    """
    wins = np.asarray(wins, dtype=np.float64)
    games = wins + np.swapaxes(wins, -1, -2)  # (..., k, k) comparisons of i with j
    won = wins.sum(-1)  # (..., k)
    compared = games.sum(-1) > 0  # (..., k)
    p = np.where(compared, 1.0, 0.0) / np.maximum(compared.sum(-1, keepdims=True), 1)  # (..., k) uniform start
    for _ in range(BT_ITERATIONS):
        pair = p[..., :, None] + p[..., None, :]  # (..., k, k) p_i + p_j
        rate = np.divide(games, pair, out=np.zeros_like(games), where=pair > 0).sum(-1)  # (..., k)
        new = np.divide(won, rate, out=np.zeros_like(won), where=rate > 0)
        new /= np.maximum(new.sum(-1, keepdims=True), np.finfo(np.float64).tiny)
        done = np.abs(new - p).max() <= BT_TOLERANCE
        p = new
        if done:
            break
    return np.where(compared, p, np.nan)


def _win_matrix(comparisons: Iterable[tuple[str, str, float]], methods: Sequence[str]) -> np.ndarray:
    """(k, k) matrix of weighted wins, [i, j]: how often methods[i] beat methods[j]."""
    index = {m: i for i, m in enumerate(methods)}
    wins = np.zeros((len(methods), len(methods)))
    for winner, loser, weight in comparisons:
        if winner not in index or loser not in index:
            raise ValueError(f"comparison ({winner!r}, {loser!r}) names a method not in {list(methods)}")
        if winner == loser or weight < 0:
            raise ValueError(f"a comparison needs two methods and a weight >= 0, got ({winner!r}, {loser!r}, {weight})")
        wins[index[winner], index[loser]] += weight
    return wins


def bradley_terry(comparisons: Iterable[tuple[str, str, float]], methods: Sequence[str]) -> dict[str, float]:
    """Bradley-Terry strengths from (winner, loser, weight) triples (a tie: both orders at weight 1/2), fitted by
    Hunter's MM algorithm and normalised to sum to 1, so that p_i / (p_i + p_j) is the chance i beats j."""
    strengths = _bt_fit(_win_matrix(comparisons, methods))
    return {m: float(s) for m, s in zip(methods, strengths, strict=True)}


def pairwise_outcomes(ratings: Iterable[Mapping]) -> list[tuple[str, str, float]]:
    """(winner, loser, weight) triples of ratings {method_a, method_b, choice}: a win at weight 1, a tie as half a
    win each way."""
    out = []
    for r in ratings:
        a, b, choice = r["method_a"], r["method_b"], r["choice"]
        if choice == "A":
            out.append((a, b, 1.0))
        elif choice == "B":
            out.append((b, a, 1.0))
        else:
            out += [(a, b, 0.5), (b, a, 0.5)]
    return out


def bradley_terry_bootstrap(
    ratings: Sequence[Mapping], methods: Sequence[str], resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, dict]:
    """Bradley-Terry strengths of ratings {pid, method_a, method_b, choice} with percentile intervals from
    resampling participants (clusters) with replacement: {method: {"strength", "interval"}}."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    pids = sorted({r["pid"] for r in ratings})
    by_pid = {pid: [] for pid in pids}
    for r in ratings:
        by_pid[r["pid"]].append(r)
    per_pid = np.stack([_win_matrix(pairwise_outcomes(by_pid[pid]), methods) for pid in pids]) if pids else None
    point = bradley_terry(pairwise_outcomes(ratings), methods)
    if per_pid is None:
        return {m: {"strength": point[m], "interval": (math.nan, math.nan)} for m in methods}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(pids), size=(resamples, len(pids)))  # (resamples, participants)
    weights = np.stack([np.bincount(row, minlength=len(pids)) for row in draws])  # (resamples, participants)
    strengths = _bt_fit(np.einsum("rp,pij->rij", weights, per_pid))  # (resamples, k)
    tail = (1 - level) / 2
    out = {}
    for i, m in enumerate(methods):
        fitted = strengths[np.isfinite(strengths[:, i]), i]  # resamples in which the method was compared
        low, high = np.quantile(fitted, [tail, 1 - tail]) if len(fitted) else (math.nan, math.nan)
        out[m] = {"strength": point[m], "interval": (float(low), float(high))}
    return out


def krippendorff_alpha_nominal(units: Iterable[Sequence[Hashable]]) -> float:
    """Krippendorff's alpha for nominal values (Krippendorff 2011, "Computing Krippendorff's alpha-reliability"):
    1 - D_o / D_e from the coincidence matrix. Each unit lists the values its raters gave; units with fewer than
    two values are not pairable and are skipped. nan when there is no pairable value or no variation at all."""
    per_unit = [Counter(values) for values in units if len(values) >= 2]
    totals = Counter()
    observed = 0.0  # sum over units of the unit's disagreeing ordered pairs / (m_u - 1)
    for counts in per_unit:
        m = sum(counts.values())
        observed += (m * m - sum(c * c for c in counts.values())) / (m - 1)
        totals.update(counts)
    n = sum(totals.values())
    expected = n * n - sum(c * c for c in totals.values())  # disagreeing ordered pairs of all values
    if n == 0 or expected == 0:
        return math.nan
    return 1.0 - (n - 1) * observed / expected


def side_bias(ratings: Iterable[Mapping], flips: int = SIGN_FLIPS, seed: int = 0) -> dict:
    """Share of screens on which the left video (A) was chosen, as `win_rate` with participants as clusters; 1/2 is
    no bias. Ratings are {pid, comparison_id, choice}; a screen (one participant's comparison) counts once, on the
    side most of its answers chose: none when A and B are even (e.g. every answer "tie")."""
    screens = defaultdict(Counter)  # (pid, comparison_id) -> choices
    for r in ratings:
        screens[r["pid"], r["comparison_id"]][r["choice"]] += 1
    sides = defaultdict(lambda: [0, 0, 0])  # pid -> screens [left, right, no side]
    for (pid, _), choices in screens.items():
        sides[pid][0 if choices["A"] > choices["B"] else 1 if choices["B"] > choices["A"] else 2] += 1
    rate = win_rate(sides.values(), flips, seed)
    return {
        "A": rate["wins"],
        "B": rate["losses"],
        "no_side": rate["ties"],
        "participants": rate["participants"],
        "share_a": rate["rate"],
        "interval": rate["interval"],
        "p": rate["p"],
    }
