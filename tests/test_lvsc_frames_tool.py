"""tools/lvsc_frames.py: the per-pair warp errors behind the README's LVSC paragraphs, on a tiny random editor."""

import pytest
from repo_tools import load_tool

from insv2v.loading import load_pipeline
from insv2v.testing.tiny import main as save_tiny
from insv2v.toyworld.evaluate import evaluate_long


@pytest.mark.slow  # two 40-frame videos of three clips each, and the evaluation's three
def test_pair_errors_agree_with_the_evaluation_and_leave_the_first_clip_alone(tmp_path):
    model = tmp_path / "model"
    save_tiny([str(model)])
    tool = load_tool("lvsc_frames")
    record = tool.pair_errors(str(model), seed=3, videos=[0], settings=["LVSC off", "LVSC"], steps=2)
    rows = record["videos"]["0"]
    assert record["seams"] == [16, 28] and len(rows["LVSC off"]) == len(rows["LVSC"]) == 39
    assert rows["LVSC off"][:15] == rows["LVSC"][:15]  # LVSC corrects only the clips after the first
    pipe = load_pipeline(str(model), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    measured = evaluate_long(pipe, n=1, seed=3, **record["sampling"])
    for name in ("LVSC off", "LVSC"):  # the seams' own error of the evaluation, from the same frames
        at_seams = [rows[name][s - 1] for s in record["seams"]]
        assert sum(at_seams) / 2 == pytest.approx(measured[name]["seam_error"][0] * 1e3, abs=0.01)
