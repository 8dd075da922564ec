"""A study's report: per question and method pair, wins/losses/ties, the win rate with its interval and a sign-flip
test, both with participants as clusters (`stats.win_rate`), and Holm's correction over every pair and question;
Bradley-Terry strengths with intervals from resampling participants (3+ methods); Krippendorff's alpha per question;
left/right bias, a screen counted once; the participants who failed an attention check (chose the unedited input as
the better match to the instruction), excluded unless kept.

Regular comparisons only feed the statistics; gold ones only decide who failed.
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from itertools import combinations

from PIL import Image, ImageDraw, ImageFont

from insv2v.study import stats
from insv2v.study.store import StudyStore

GOLD_QUESTION = "text"  # the question a gold comparison checks: the exact edit matches the instruction
BOOTSTRAP_RESAMPLES = 1000  # participant resamples of the Bradley-Terry intervals
CSV_COLUMNS = ("pid", "item", "comparison_id", "gold", "method_a", "method_b", "question", "choice", "created")
BT_EDGE = 1e-3  # Bradley-Terry strengths this close to 0 or 1 get a note: the fit has no finite maximum there
PLOT_WIDTH = 900  # pixels
PLOT_ROW = 30  # pixels per method pair
PLOT_LABEL = 300  # pixels of labels left of the axis
PLOT_MARGIN = 30  # pixels around the axis


def failed_gold(ratings: Sequence[dict]) -> list[str]:
    """Participants who chose the unedited input over the exact edit on a gold comparison's "text" question."""
    failed = set()
    for r in ratings:
        if r["gold"] and r["question"] == GOLD_QUESTION:
            chosen = {"A": r["method_a"], "B": r["method_b"]}.get(r["choice"])
            if chosen == "input":
                failed.add(r["pid"])
    return sorted(failed)


def tallies(ratings: Sequence[dict], first: str, second: str) -> list[tuple[int, int, int]]:
    """(wins, losses, ties) of `first` against `second` per participant who rated comparisons between the two."""
    per_pid = defaultdict(lambda: [0, 0, 0])
    for r in ratings:
        if {r["method_a"], r["method_b"]} != {first, second}:
            continue
        chosen = {"A": r["method_a"], "B": r["method_b"]}.get(r["choice"])
        per_pid[r["pid"]][0 if chosen == first else 1 if chosen == second else 2] += 1
    return [tuple(counts) for _, counts in sorted(per_pid.items())]


def agreement(ratings: Sequence[dict], order: Mapping[int, tuple[str, str]]) -> float:
    """Krippendorff's alpha (nominal) over comparisons: each comparison a unit, each answer coded within it as the
    comparison's first method, its second (`order`: comparison id -> the two, a fixed order such as
    `StudyStore.comparison_methods`, whose sides are balanced per pair) or a tie. Not the letter: each participant
    sees the sides in their own order; nor the method's name: values of comparisons that share no method would pool,
    and raters choosing at random would agree above chance (alpha 0.25 with 3 methods)."""
    units = defaultdict(list)
    for r in ratings:
        chosen = {"A": r["method_a"], "B": r["method_b"]}.get(r["choice"])
        first = order[r["comparison_id"]][0]
        units[r["comparison_id"]].append("tie" if chosen is None else "first" if chosen == first else "second")
    return stats.krippendorff_alpha_nominal(list(units.values()))


def report(
    store: StudyStore, exclude_failed_gold: bool = True, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> dict:
    """The study's statistics as a dict (see the module docstring); `format_report` lays it out."""
    methods, questions = store.methods(), store.questions
    everything = store.ratings()
    failed = failed_gold(everything)
    excluded = set(failed) if exclude_failed_gold else set()
    ratings = [r for r in everything if not r["gold"] and r["pid"] not in excluded]
    by_question = {q: [r for r in ratings if r["question"] == q] for q in questions}

    pairs = [{"methods": [first, second],
              "questions": {q: stats.win_rate(tallies(by_question[q], first, second), seed=seed) for q in questions}}
             for first, second in combinations(methods, 2)]  # fmt: skip
    rows = [pair["questions"][q] for pair in pairs for q in questions]  # every test the report makes
    for row, adjusted in zip(rows, stats.holm([row["p"] for row in rows]), strict=True):
        row["p_holm"] = adjusted

    strengths = None
    if len(methods) >= 3:
        strengths = {q: stats.bradley_terry_bootstrap(by_question[q], methods, resamples, seed) for q in questions}

    participants = store.participants()
    regular, gold = store.comparison_count()
    order = store.comparison_methods()  # each comparison's first and second method, for the agreement's coding
    return {
        "methods": methods,
        "questions": questions,
        "pairs": pairs,
        "bradley_terry": strengths,
        "alpha": {q: agreement(by_question[q], order) for q in questions},
        "side_bias": stats.side_bias(ratings, seed=seed),
        "failed_gold": failed,
        "excluded": sorted(excluded),
        "counts": {
            "participants": len(participants),
            "consented": sum(p["consented"] is not None for p in participants),
            "completed": sum(p["planned"] > 0 and p["answered"] == p["planned"] for p in participants),
            "rated": len({r["pid"] for r in everything}),
            "included": len({r["pid"] for r in ratings}),
            "ratings": len(ratings),
            "comparisons": regular,
            "gold_comparisons": gold,
        },
    }


# ----------------------------------------------------------------------------------------------------------------------
# Layout


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _p(value: float) -> str:
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _rate(row: dict) -> str:
    if math.isnan(row["rate"]):
        return "n/a (nothing decided)"
    if row.get("deciding", 2) < 2:
        return f"{row['rate']:.0%} (one participant decided: no interval)"
    low, high = row["interval"]
    return f"{row['rate']:.0%} ({low:.0%}-{high:.0%})"


def format_report(result: dict) -> str:
    """The report as markdown: counts, then per question a table of method pairs, Bradley-Terry and alpha."""
    c = result["counts"]
    lines = [
        f"# User study: {', '.join(result['methods'])}",
        "",
        f"{c['participants']} participants arrived, {c['consented']} consented, {c['rated']} rated, "
        f"{c['completed']} completed; {c['included']} included in the statistics, with {c['ratings']} ratings of "
        f"{c['comparisons']} comparisons ({c['gold_comparisons']} attention checks besides).",
        "",
    ]
    if result["failed_gold"]:
        verb = "excluded" if result["excluded"] else "kept (--keep-failed-gold)"
        lines += [f"Failed an attention check ({verb}): {', '.join(result['failed_gold'])}.", ""]
    else:
        lines += ["No participant failed an attention check.", ""]
    tests = len(result["pairs"]) * len(result["questions"])
    lines += [f"Participants are the clusters: a win rate's 95% interval is Wilson's at the effective sample size "
              f"(decided answers / design effect); p is a sign-flip test of the participants' net preferences; Holm's "
              f"correction runs over all {tests} tests (method pairs x questions).", ""]  # fmt: skip
    for q, words in result["questions"].items():
        lines += [f"## {words} ({q})", "",
                  "| first vs second | first wins | second wins | ties | participants | first's win rate (95%) "
                  "| design effect | p | Holm p |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for pair in result["pairs"]:
            row = pair["questions"][q]
            lines.append(f"| {' vs '.join(pair['methods'])} | {row['wins']} | {row['losses']} | {row['ties']} | "
                         f"{row['participants']} | {_rate(row)} | {row['design_effect']:.2f} | {_p(row['p'])} | "
                         f"{_p(row['p_holm'])} |")  # fmt: skip
        if result["bradley_terry"]:
            lines += ["", "| method | Bradley-Terry strength (sums to 1; ties as half wins) | 95% interval "
                      "(participants resampled) |", "|---|---|---|"]  # fmt: skip
            fits = result["bradley_terry"][q]
            for method, fit in fits.items():
                low, high = fit["interval"]
                lines.append(f"| {method} | {_number(fit['strength'])} | {_number(low)}-{_number(high)} |")
            if any(not BT_EDGE < fit["strength"] < 1 - BT_EDGE for fit in fits.values()):
                lines += ["", "A strength near 0 or 1 (or n/a): a method never won, won every comparison it was in, "
                          "or was never rated; Bradley-Terry has no finite fit then: read the win rates."]  # fmt: skip
        alpha = result["alpha"][q]
        value = "n/a (no comparison rated twice, or no variation)" if math.isnan(alpha) else f"{alpha:.3f}"
        lines += ["", f"Krippendorff's alpha (nominal, comparisons as units, answers as first method, second or tie): "
                  f"{value}", ""]  # fmt: skip
    bias = result["side_bias"]
    share = "n/a" if math.isnan(bias["share_a"]) else f"{bias['share_a']:.0%}"
    low, high = bias["interval"]
    lines += [
        "## Left/right bias",
        "",
        f"The left video (A) was chosen on {share} ({low:.0%}-{high:.0%}, p {_p(bias['p'])}) of "
        f"{bias['A'] + bias['B']} screens with a side ({bias['no_side']} without), from {bias['participants']} "
        "participants as clusters; a screen counts once, on the side most of its answers chose. Each participant "
        "sees half the comparisons with their sides swapped, so a lean is the raters'.",
    ]
    return "\n".join(lines) + "\n"


def write_csv(store: StudyStore, path: str | os.PathLike) -> None:
    """Every rating with the methods it compared (the secret mapping: for analysis, never for raters)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(store.ratings())


def win_rate_plot(result: dict, path: str | os.PathLike) -> None:
    """A PNG of each pair's win rate (dot) and 95% interval (bar, participants as clusters) on [0, 1], a block per
    question."""
    rows = len(result["pairs"])
    block = PLOT_ROW * (rows + 2)  # a title row, the pairs, an axis row
    image = Image.new("RGB", (PLOT_WIDTH, PLOT_ROW + block * len(result["questions"]) + PLOT_MARGIN), "white")
    draw = ImageDraw.Draw(image)
    draw.font = ImageFont.load_default(size=13)
    left, right = PLOT_LABEL, PLOT_WIDTH - PLOT_MARGIN
    draw.text((10, 10), "Win rate of the first method over decided answers (dot; their number in brackets), with its "
              "95% interval, participants as clusters (bar); ties left out", fill="black")  # fmt: skip

    def x(value: float) -> float:
        return left + value * (right - left)

    for k, (q, words) in enumerate(result["questions"].items()):
        top = PLOT_ROW + PLOT_MARGIN // 2 + k * block
        draw.text((10, top + 8), f"{q}: {words}", fill="black")
        bottom = top + PLOT_ROW * (rows + 1)
        for y in range(top + PLOT_ROW, bottom, 6):  # dashed line at 1/2: no preference
            draw.line([(x(0.5), y), (x(0.5), y + 3)], fill="gray")
        draw.line([(left, bottom), (right, bottom)], fill="black")
        for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
            draw.line([(x(tick), bottom), (x(tick), bottom + 4)], fill="black")
            draw.text((x(tick) - 10, bottom + 6), f"{tick:.0%}", fill="black")
        for i, pair in enumerate(result["pairs"]):
            row, y = pair["questions"][q], top + PLOT_ROW * (i + 1) + PLOT_ROW // 2
            first, second = pair["methods"]
            draw.text((10, y - 7), f"{first} vs {second} ({row['decided']})", fill="black")
            if math.isnan(row["rate"]):
                draw.text((x(0.5) + 6, y - 7), "nothing decided", fill="gray")
                continue
            low, high = row["interval"]
            draw.line([(x(low), y), (x(high), y)], fill="steelblue", width=3)
            for end in (low, high):
                draw.line([(x(end), y - 5), (x(end), y + 5)], fill="steelblue", width=2)
            draw.ellipse([x(row["rate"]) - 5, y - 5, x(row["rate"]) + 5, y + 5], fill="navy")
    image.save(path, format="PNG")
