"""The data engine's toy-world measurements: threshold calibration, the filter report, the judge's record."""

import json

import numpy as np
import pytest

from insv2v.synth.prompts import PromptPair
from insv2v.toyworld.synthetic import filter_report, format_rate, separating_threshold, toy_judge
from insv2v.toyworld.world import sample_triplet


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
