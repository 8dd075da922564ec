"""The data engine's toy-world measurements: threshold calibration, the filter report, the judge's record."""

import json

import numpy as np
import pytest
import torch

from insv2v.synth.clip_filter import PairScores
from insv2v.synth.prompts import PromptPair
from insv2v.toyworld.reader import read_caption, read_frames
from insv2v.toyworld.synthetic import (
    caption_rates_by_weight,
    filter_report,
    format_rate,
    judged_thresholds,
    kind_reading,
    separating_threshold,
    toy_judge,
)
from insv2v.toyworld.world import SHAPE_COLOURS, SHAPES, sample_triplet


def test_separating_threshold_maximises_good_minus_bad_pass_rates():
    good, bad = np.array([0.5, 0.6, 0.7, 0.8]), np.array([0.1, 0.2, 0.55])
    assert separating_threshold(good, bad) == 0.6  # passes 3 of 4 good, 0 of 3 bad: J = 0.75
    assert separating_threshold(np.array([1.0]), np.array([0.0])) == 1.0


def record(kind, kept, right, sim_dir=0.5):
    return {"kind": kind, "kept": kept, "judge": {"edit_right": right},
            "scores": {"sim_0": 0.9, "sim_1": 0.9, "sim_dir": sim_dir, "sim_image": 0.9}}  # fmt: skip


def test_filter_report_precision_recall_and_per_kind():
    records = [record("colour", True, True), record("colour", True, False), record("shape", False, True),
               record("shape", False, False), {"kind": "style", "kept": True, "scores": {}}]  # fmt: skip
    r = filter_report(records)
    assert r["pairs"] == 4  # the unjudged record is left out
    assert (r["right"]["k"], r["right"]["n"]) == (2, 4)
    assert (r["kept"]["k"], r["precision"]["k"], r["precision"]["n"]) == (2, 1, 2)
    assert (r["recall"]["k"], r["recall"]["n"]) == (1, 2)
    assert r["by_kind"]["shape"]["kept"]["k"] == 0
    assert r["precision"]["interval"] == pytest.approx([0.0945, 0.9055], abs=1e-3)  # Wilson, 1 of 2
    redone = filter_report([{**r, "kept": False} for r in records[:4]])  # nothing kept
    assert redone["kept"]["k"] == 0 and format_rate(redone["precision"]) == "n/a (0 of 0)"


def test_judged_thresholds_keep_the_most_precise_share_the_floor_allows():
    """10 right pairs with sim_dir 0.6-0.9; 10 wrong ones below 0.55, but for two at 0.95 that sim_image catches."""
    right = [record("colour", False, True, sim_dir=0.6 + 0.03 * i) for i in range(10)]
    wrong = [record("colour", False, False, sim_dir=0.1 + 0.05 * i) for i in range(8)]
    for _ in range(2):
        wrong.append(record("shape", False, False, sim_dir=0.95))
        wrong[-1]["scores"]["sim_image"] = 0.1
    records = right + wrong + [{"kind": "style", "scores": right[0]["scores"], "judge": None}]  # unjudged: left out
    thresholds, report = judged_thresholds(records, min_kept=0.35)
    kept = [PairScores(**r["scores"]).passes(thresholds) for r in right + wrong]
    assert kept == [True] * 10 + [False] * 10  # exactly the right ones: precision 1 at the largest share
    assert (report["kept"]["k"], report["precision"]["k"], report["pairs"]) == (10, 10, 20)
    loose, report = judged_thresholds(records, min_kept=0.9)  # 18 of 20 at least: some wrong ones must come along
    assert report["kept"]["k"] >= 18 and report["precision"]["k"] == 10 and loose.sim_dir < thresholds.sim_dir
    with pytest.raises(ValueError, match="no judged pairs"):
        judged_thresholds(records[-1:], min_kept=0.3)


class ReaderScorer:
    """A stand-in CLIP that embeds frames and captions alike as one-hot (colour, kind) readings: it reads kinds as
    well as the toy reader does."""

    pairs = tuple((c, k) for c in SHAPE_COLOURS for k in SHAPES)

    def embed(self, shapes: dict) -> torch.Tensor:
        v = torch.tensor([float(shapes.get(c) == k) for c, k in self.pairs])
        return v / v.norm().clamp(min=1e-6)

    def images(self, frames):
        return self.embed(read_frames(frames).shapes or {})[None]

    def texts(self, captions):
        return torch.stack([self.embed(read_caption(c).shapes or {}) for c in captions])


def test_kind_reading_is_high_for_a_scorer_that_reads_kinds_and_a_rate_of_n_scenes():
    reading = kind_reading(ReaderScorer(), n=20, seed=930000)
    assert reading["n"] == 20 and reading["k"] >= 16  # a sketch's shapes have no colour: those scenes tie (not >)
    blind = kind_reading(type("Blind", (ReaderScorer,), {"embed": lambda self, shapes: torch.ones(4) / 2})(), n=20)
    assert blind["k"] == 0  # equal scores are not a preference


def test_caption_rates_by_weight_pair_each_weight_s_kinds_against_the_first_caption_by_caption():
    rows = {0.0: [{"shapes": True}, {"shapes": False}, {"shapes": False}, {}],  # the last: a sketch, no kinds read
            10.0: [{"shapes": True}, {"shapes": True}, {"shapes": False}, {}]}  # fmt: skip
    results = caption_rates_by_weight(rows)
    assert (results["0.0"]["shapes"]["k"], results["10.0"]["shapes"]["k"], results["10.0"]["shapes"]["n"]) == (1, 2, 3)
    assert results["10.0"]["shapes_less_first"]["mean"] == pytest.approx(1 / 3)
    assert "shapes_less_first" not in results["0.0"] and results["10.0"]["records"] is rows[10.0]


def test_the_judge_accepts_an_exact_pair_rejects_the_input_returned_and_leaves_other_sizes_unjudged():
    t = sample_triplet(10**9 + 17)  # a held-out triplet
    source, target = t.render(16)
    pair = PromptPair(t.input_caption, t.edit.instruction, t.edited_caption)
    assert toy_judge(pair, source, target)["edit_right"]
    unedited = toy_judge(pair, source, source)
    assert not unedited["edit_right"] and unedited["reason"]
    assert toy_judge(pair, source[:, :32, :32], target[:, :32, :32]) is None  # not the toy world's frames


def test_t2v_fidelity_reads_back_every_caption(tmp_path, capsys):
    from insv2v.cli import main
    from insv2v.testing.tiny import tiny_t2v_pipeline

    tiny_t2v_pipeline("motion").save_pretrained(tmp_path / "t2v")
    out = tmp_path / "fidelity.json"
    assert main(["eval", "--toyworld", "--t2v", str(tmp_path / "t2v"), "--n", "3", "--frames", "2", "--steps", "2",
                 "--seed", "7", "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert all(f"{key}: " in printed for key in ("background", "colours", "shapes", "style"))
    results = json.loads(out.read_text())
    assert results["n"] == 3 and len(results["records"]) == 3 and results["style"]["n"] == 3
    sketches = sum("pencil sketch" in r["caption"] for r in results["records"])
    assert results["background"]["n"] == 3 - sketches  # a sketch has no background to draw
