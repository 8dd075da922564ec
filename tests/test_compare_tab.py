"""The Compare tab: InsV2V beside Tune-A-Video through Gradio's API on tiny random models, and its parts alone."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from app_server import serve
from media import make_video

from insv2v.assets import EXAMPLES
from insv2v.compare import LABEL_HEIGHT
from insv2v.testing.tiny import tiny_t2v_pipeline
from insv2v.toyworld.world import HELDOUT_SEEDS, sample_triplet
from insv2v.ui import compare_tab
from insv2v.video import probe, read_video, write_video


def test_examples_carry_both_captions_and_their_exact_edit():
    rows = compare_tab.example_rows()
    index = json.loads((EXAMPLES / "examples.json").read_text())
    assert len(rows) == len(index) >= 1
    for (video, instruction, caption, edited), e in zip(rows, index, strict=True):
        triplet = sample_triplet(HELDOUT_SEEDS.start + e["heldout_offset"], e["kind"])
        assert (instruction, caption, edited) == (triplet.edit.instruction, triplet.input_caption,
                                                  triplet.edited_caption)  # fmt: skip
        target = compare_tab.exact_target(video, 5)
        assert np.array_equal(target, triplet.render(5)[1])
        decoded = read_video(video, max_frames=5).frames
        assert np.abs(decoded.astype(int) - triplet.render(5)[0]).mean() < 4  # the clip is that scene (mp4-coded)


def test_a_clip_that_is_no_example_has_no_target(tmp_path):
    assert compare_tab.exact_target(make_video(tmp_path / "other.mp4", num_frames=4, size=(64, 64)), 4) is None


def test_propose_fills_the_edited_caption_or_says_why_not():
    import gradio as gr

    assert compare_tab.propose("a red circle moving right on a beach", "make the circle blue") == (
        "a blue circle moving right on a beach"
    )
    with pytest.raises(gr.Error, match="write it yourself"):
        compare_tab.propose("a man on a horse", "make it snowy")
    with pytest.raises(gr.Error, match="source caption and the instruction"):
        compare_tab.propose("", "make it snowy")


def test_the_table_has_a_row_per_method_and_psnr_only_with_a_target():
    scores = {"InsV2V": {"seconds": 1.0, "warp_error": 0.01}, "Tune-A-Video": {"seconds": 90.0, "warp_error": 0.02}}
    frame = compare_tab.table(scores)
    assert list(frame.columns) == ["Method", "Wall time (s)", "Warp error"]
    assert frame["Method"].tolist() == ["InsV2V", "Tune-A-Video"] and frame.iloc[1, 1] == 90.0
    scores["InsV2V"]["psnr"] = 20.0
    assert "PSNR to target (dB)" in compare_tab.table(scores).columns


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from gradio_client import Client

    tmp = tmp_path_factory.mktemp("compare")
    tav = tmp / "t2i"
    tiny_t2v_pipeline("2d").save_pretrained(tav)
    with serve(tmp, tav=str(tav), max_frames=4) as (url, demo):
        client = Client(url, verbose=False)
        client.compare_jobs = lambda: sorted(demo.studio.cache.jobs.glob("*-compare-*"))  # what the server ran
        yield client


def compare(client, video, source="a red circle on a beach", edited="a blue circle on a beach", **kwargs):
    from gradio_client import handle_file

    settings = dict(preset="space", tune_steps=2, steps=1, length=3, seed=0) | kwargs
    return client.predict(handle_file(video), "make the circle blue", source, edited, **settings, api_name="/compare")


@pytest.mark.slow
def test_compare_endpoint_runs_both_methods_and_reuses_the_tuning(client, tmp_path):
    video = make_video(tmp_path / "compare-2.mp4", num_frames=6, size=(64, 64))  # any name, even an output's
    panels, table, status = compare(client, video)
    upload = client.compare_jobs()[-1] / "compare-2.mp4"  # linked beside the outputs, the recipe names it
    assert upload.read_bytes() == Path(video).read_bytes()  # not overwritten by the panels video
    path = panels["video"] if isinstance(panels, dict) else panels
    info = probe(path)
    assert (info.num_frames, info.width, info.height) == (3, 3 * 64, LABEL_HEIGHT + 64)
    assert [row[0] for row in table["data"]] == ["InsV2V", "Tune-A-Video"]
    assert "tuned 2 steps" in status
    _, _, again = compare(client, video, edited="a green circle on a beach")
    assert "tuning reused from the cache" in again


@pytest.mark.slow
def test_the_status_says_when_the_video_ends_before_its_header_says(client, tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (8, 64, 64, 3), dtype=np.uint8)
    frames[:3] = 128  # three small frames, then noise: half the file holds the three and part of the fourth
    whole = tmp_path / "whole.mp4"
    write_video(whole, frames, 8)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # its header still announces 8 frames
    _, _, status = compare(client, str(cut), length=4)  # asks for more than it holds: read to its end
    assert re.search(r"cut\.mp4: ends after [1-3] of the 8 frames its header announces", status), status


@pytest.mark.slow
@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(source=""), "needs the source video's caption"),
        (dict(preset="fast"), "fast"),  # not a preset: refused, naming the value
        (dict(tune_steps=10**6), "greater than maximum value 1000"),  # no API call holds the model for hours
    ],
)
def test_compare_refuses_bad_inputs_with_a_message(client, tmp_path, kwargs, words):
    from gradio_client.exceptions import AppError

    video = make_video(tmp_path / "clip.mp4", num_frames=6, size=(64, 64))
    before = client.compare_jobs()
    with pytest.raises(AppError, match=words):
        compare(client, video, **kwargs)
    assert client.compare_jobs() == before  # refused before InsV2V's edit ran


def test_every_example_has_its_comparison_computed_ahead(tmp_path):
    """What a visitor sees at once: each example clip's comparison, found by the clip's content, with both rows."""
    index = json.loads((EXAMPLES / "examples.json").read_text())
    for e in index:
        video, frame, status = compare_tab.shipped_comparison(str(EXAMPLES / e["file"]))
        assert probe(video).num_frames >= 2 and status.startswith("Example, computed ahead")
        assert frame["Method"].tolist() == ["InsV2V", "Tune-A-Video"] and "PSNR to target (dB)" in frame.columns
    first = compare_tab.shipped_comparison()
    assert first[0] == compare_tab.shipped_comparison(str(EXAMPLES / index[0]["file"]))[0]
    assert compare_tab.shipped_comparison(make_video(tmp_path / "other.mp4", num_frames=4, size=(64, 64)))[0] is None
