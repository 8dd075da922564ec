"""tools/paired.py: the paired differences the docs quote, from two editors' records or two judged pair sets."""

import json

import pytest
from repo_tools import load_tool

from insv2v.synth import dataset
from insv2v.synth.clip_filter import SCORE_NAMES

SCORES = dict.fromkeys(SCORE_NAMES, 0.3)  # a sample record's four filter scores


def test_two_editors_are_compared_edit_by_edit(tmp_path):
    def record(path, psnr, correct, seeds=range(4)):
        kinds = ["colour", "colour", "shape", "shape", "shape"]
        edits = [{"seed": s, "kind": kinds[s], "psnr": psnr[s], "correct": correct[s]} for s in seeds]
        path.write_text(json.dumps({"edits": {"records": edits}}))
        return path

    a = record(tmp_path / "a.json", [10.0, 12.0, 14.0, 16.0], [True, False, True, True])
    b = record(tmp_path / "b.json", [11.0, 13.0, 15.0, 17.0, 99.0], [True, True, False, True, True], range(5))
    lines = load_tool("paired").compare_edits(a, b)
    assert lines[0] == "4 edits: PSNR, B less A (dB): +1.00 (95% +1.00 to +1.00)"  # the edit only B has is left out
    assert lines[1:] == ["  colour: right 1 and 2 of 2 (only A 0, only B 1)",
                         "  shape: right 2 and 1 of 2 (only A 1, only B 0)"]  # fmt: skip


def test_two_pair_sets_are_compared_sample_by_sample_and_must_share_prompts(tmp_path):
    def pairs(root, right, seeds=(0, 1, 2)):
        root.mkdir()
        for i, (ok, seed) in enumerate(zip(right, seeds, strict=True)):
            judge = {"edit_right": ok, "edit_right_ignoring_kinds": ok if i < 2 else None}
            dataset.append_record(root / dataset.MANIFEST, {"index": i, "input": f"caption {i}", "seed": seed,
                                                            "kind": "background", "judge": judge, "scores": SCORES,
                                                            "kept": True, "files": {}})  # fmt: skip
        return root

    tool = load_tool("paired")
    a, b = pairs(tmp_path / "a", [False, False, True]), pairs(tmp_path / "b", [True, True, True])
    lines = tool.compare_pairs(a, b)
    assert lines[0].startswith(
        "edit_right: 3 pairs, right 1 and 3 of 3 (only A 0, only B 2); B less A (points): +66.67 "
    )
    assert lines[2].startswith("edit_right_ignoring_kinds: 2 pairs, right 0 and 2 of 2")  # judged in both only
    with pytest.raises(ValueError, match="sample 2: the two datasets differ in prompt or seed"):
        tool.compare_pairs(a, pairs(tmp_path / "c", [True, True, True], seeds=(0, 1, 7)))


def test_lvsc_settings_are_compared_with_lvsc_off_video_by_video(tmp_path):
    rows = {"LVSC off": {"seam_score": [1.0, 2.0], "seam_error": [0.001, 0.002]},
            "LVSC": {"seam_score": [0.5, 1.5], "seam_error": [0.003, 0.002]}}  # fmt: skip
    (tmp_path / "r.json").write_text(json.dumps({"long": rows}))
    lines = load_tool("paired").compare_long(tmp_path / "r.json")
    assert lines[0] == "LVSC less LVSC off, seam_score: -0.50 (95% -0.50 to -0.50), higher in 0 of 2 videos"
    assert lines[1] == "LVSC less LVSC off, seam_error (x 1e-3): +1.00 (95% +0.00 to +2.00), higher in 1 of 2 videos"
    assert len(lines) == 2
    rows["LVSC"]["seam_error"] = [0.003]  # one video short: not paired
    (tmp_path / "r.json").write_text(json.dumps({"long": rows}))
    with pytest.raises(ValueError, match="LVSC has no seam_error for each of the 2 videos"):
        load_tool("paired").compare_long(tmp_path / "r.json")
