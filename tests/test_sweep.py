"""The CFG sweep core and the shared-source edit path on a tiny random pipeline, without any UI."""

import csv
import json

import numpy as np
import pytest
import torch
from media import make_video

from insv2v.editing import EditRecipe, Source, run_edit
from insv2v.metrics import consecutive_flows, edit_scores, warp_error
from insv2v.sweep import SweepCell, SweepResult, best_cell, check_grid, parse_scales, run_sweep, score_grid
from insv2v.testing.tiny import tiny_pipeline
from insv2v.video import read_video


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("in") / "clip.mp4", num_frames=6, size=(96, 64))


def recipe(clip, **kwargs):
    settings = dict(instruction="make it snowy", steps=2, seed=3, frames_per_clip=4, ref_frames=1)
    return EditRecipe(input=clip, **{**settings, **kwargs})


def count_encodes(pipe, monkeypatch) -> list:
    calls = []
    original = pipe.encode_video
    monkeypatch.setattr(pipe, "encode_video", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def test_shared_source_gives_the_same_edit_and_encodes_once(pipe, clip, tmp_path, monkeypatch):
    plain = run_edit(recipe(clip), tmp_path / "plain.mp4", pipe, keep_frames=True)
    calls = count_encodes(pipe, monkeypatch)
    source = Source.read(recipe(clip), pipe).encode(pipe)
    again = [
        run_edit(recipe(clip), tmp_path / f"again{i}.mp4", pipe, source=source, keep_frames=True) for i in range(2)
    ]
    assert len(calls) == 1 and source.latents.shape == (1, 4, 6, 8, 12)
    for result in again:
        np.testing.assert_array_equal(result.frames, plain.frames)
    np.testing.assert_array_equal(again[0].source_frames, plain.source_frames)
    assert plain.frames.shape == (6, 64, 96, 3) and plain.frames.dtype == np.uint8


def test_source_read_for_other_sampling_is_refused(pipe, clip, tmp_path):
    source = Source.read(recipe(clip), pipe)
    with pytest.raises(ValueError, match="`source` was read with"):
        run_edit(recipe(clip, stride=2), tmp_path / "o.mp4", pipe, source=source)


@pytest.fixture
def computed_frames(monkeypatch) -> list:
    """The frames each of the sweep's edits computed, before its lossy encoding to mp4 (decoded files cannot be
    compared exactly: H.264 at CRF 18 on a random pipeline's noise-like frames is tens of levels off)."""
    import insv2v.sweep

    kept = []

    def run_and_keep(*args, **kwargs):
        result = run_edit(*args, **kwargs)
        kept.append(result.frames)
        return result

    monkeypatch.setattr(insv2v.sweep, "run_edit", run_and_keep)
    return kept


def test_sweep_cells_equal_separate_edits_and_share_one_encoding(pipe, clip, tmp_path, monkeypatch, computed_frames):
    calls = count_encodes(pipe, monkeypatch)
    seen = []
    result = run_sweep(recipe(clip), [3, 9], [1.2, 1.5], pipe, tmp_path / "sweep", on_cell=lambda i, c: seen.append(i))
    assert len(calls) == 1 and seen == [0, 1, 2, 3]
    assert [(c.text_cfg, c.video_cfg) for c in result.cells] == [(3, 1.2), (3, 1.5), (9, 1.2), (9, 1.5)]
    assert np.isfinite(score_grid(result.rows(), "warp_error", (2, 2))).all()  # every cell scored
    assert set(result.cells[0].scores) == {"warp_error"}
    # At video CFG != 1 a lone edit runs all three guidance branches in one batch, as the sweep's shared first step
    # does: both paths compute the same operations, so the outputs are equal, not just close. (At video CFG 1 a
    # lone edit runs two branches; that case is compared with a tolerance in test_sampling_cache_....)
    cell = result.cells[3]
    alone = run_edit(recipe(clip, text_cfg=9, video_cfg=1.5), tmp_path / "alone.mp4", pipe, keep_frames=True)
    np.testing.assert_array_equal(computed_frames[3], alone.frames)
    assert read_video(cell.output).frames.shape == alone.frames.shape
    assert cell.scores["warp_error"] == pytest.approx(warp_error(alone.frames, alone.source_frames))
    assert json.loads(cell.output.with_suffix(".json").read_text())["text_cfg"] == 9  # each cell reproducible
    # cells differ only in guidance: the seed is drawn once
    assert len({json.loads(c.output.with_suffix(".json").read_text())["seed"] for c in result.cells}) == 1


def test_sweep_with_motion_compensation_passes_pixels(pipe, clip, tmp_path, monkeypatch):
    calls = count_encodes(pipe, monkeypatch)
    result = run_sweep(recipe(clip, mc=True, seed=None), [7.5], [1.2, 1.4], pipe, tmp_path)
    assert len(calls) == 2 and len(result.cells) == 2 and result.recipe.seed is not None


def test_best_rows_and_exports(tmp_path):
    cells = [
        SweepCell(t, v, tmp_path / f"{t}_{v}.mp4", {"clip_text": t * v, "warp_error": 1 / (t + v)}, 0.5)
        for t in (1.0, 2.0)
        for v in (1.0, 3.0)
    ]
    result = SweepResult(EditRecipe(input="/x/clip.mp4", instruction="i"), [1.0, 2.0], [1.0, 3.0], cells, 6, 0.1, 2.1)
    rows = result.rows()
    assert best_cell(rows, "clip_text") == best_cell(rows, "warp_error") == 3  # text 2, video 3: higher, lower
    rows[0]["warp_error"] = rows[1]["warp_error"] = 0.0  # equals: the first
    rows[3]["clip_text"] = None  # a cell without the score is not the best
    assert best_cell(rows, "warp_error") == 0 and best_cell(rows, "clip_text") == 1  # text 1, video 3
    np.testing.assert_allclose(score_grid(rows, "clip_text", (2, 2)), [[1, 3], [2, np.nan]])
    with pytest.raises(ValueError, match="score must be one of"):
        best_cell(rows, "psnr")
    with pytest.raises(ValueError, match="no cell has the score 'clip_consistency'"):
        best_cell(rows, "clip_consistency")
    rows = list(csv.DictReader(result.write_csv(tmp_path / "s.csv").read_text().splitlines()))
    assert len(rows) == 4 and rows[3]["clip_text"] == "6.0" and rows[3]["output"] == "2.0_3.0.mp4"
    data = json.loads(result.write_json(tmp_path / "s.json").read_text())
    assert data["recipe"]["input"] == "clip.mp4" and len(data["cells"]) == 4  # no server path in the export


def test_grid_and_scale_parsing_errors():
    assert parse_scales("3, 7.5 ,12", "text CFG") == [3.0, 7.5, 12.0]
    with pytest.raises(ValueError, match="text CFG values must be numbers"):
        parse_scales("3, lots", "text CFG")
    with pytest.raises(ValueError, match="at least one video CFG"):
        parse_scales(" , ", "video CFG")
    with pytest.raises(ValueError, match="at least one text CFG"):
        parse_scales(None, "text CFG")  # an API call without the field
    with pytest.raises(ValueError, match=r"text CFG values must be in \[0.0, 30.0\], got \[99.0\]"):
        check_grid([99.0], [1.2])
    with pytest.raises(ValueError, match="repeat"):
        check_grid([5.0, 5.0], [1.2])
    with pytest.raises(ValueError, match="repeat"):  # two cells would write one file, text7.5_video1.2.mp4
        check_grid([7.5, 7.500001], [1.2])
    with pytest.raises(ValueError, match="at most 49 cells"):
        check_grid([float(i) for i in range(8)], [1.0 + i / 10 for i in range(7)])


def test_edit_scores_with_cached_flows_equal_fresh_ones():
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    edited = np.clip(source.astype(int) + 20, 0, 255).astype(np.uint8)
    fresh = edit_scores(edited, source, "make it snowy")
    cached = edit_scores(edited, source, "make it snowy", flows=consecutive_flows(source))
    assert fresh == cached and set(fresh) == {"warp_error"}
    with pytest.raises(ValueError, match="one flow per consecutive pair"):
        edit_scores(edited, source, "x", flows=consecutive_flows(source)[:1])


def test_sampling_cache_runs_each_clips_first_step_once_and_changes_nothing(pipe):
    from insv2v.pipeline import SamplingCache

    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (6, 32, 48, 3), dtype=np.uint8)
    calls = []
    original = pipe._branches

    def counted(*args):
        calls.append(1)
        return original(*args)

    def run(cache=None, seed=0, **kwargs):
        settings = dict(num_inference_steps=3, frames_per_clip=4, ref_frames=1, output_type="latent", **kwargs)
        generator = torch.Generator().manual_seed(seed)
        return pipe(video, "make it snowy", generator=generator, cache=cache, **settings).frames

    cache = SamplingCache()
    pipe._branches = counted
    try:
        first = run(cache, guidance_scale=5.0)
        assert len(calls) == 2 * 3 and cache.hits == 0  # two clips, three steps
        calls.clear()
        second = run(cache, guidance_scale=9.0, video_guidance_scale=1.5)
        assert len(calls) == 2 * 2 and cache.hits == 2  # each clip's first step came from the cache
        other_seed = run(cache, seed=1, guidance_scale=9.0)  # different noise: nothing reused
        assert cache.hits == 2
        with_mc = [run(cache, guidance_scale=g, motion_compensation=True) for g in (5.0, 9.0)]
        assert cache.hits == 2 + 2 + 1  # the second MC call reuses first steps and the flows of clip 2
    finally:
        pipe._branches = original
    # The cached first step batches the branches the call needs as an uncached call does (three, or two at video CFG
    # 1): the same operations, so equal outputs, and a sweep cell's recipe replays it exactly.
    at_video_cfg_1 = run(cache, guidance_scale=9.0, video_guidance_scale=1.0)
    torch.testing.assert_close(at_video_cfg_1, run(guidance_scale=9.0, video_guidance_scale=1.0), rtol=0, atol=0)
    torch.testing.assert_close(first, run(guidance_scale=5.0), rtol=0, atol=0)
    torch.testing.assert_close(second, run(guidance_scale=9.0, video_guidance_scale=1.5), rtol=0, atol=0)
    torch.testing.assert_close(other_seed, run(seed=1, guidance_scale=9.0), rtol=0, atol=0)
    torch.testing.assert_close(with_mc[1], run(guidance_scale=9.0, motion_compensation=True), rtol=0, atol=0)


def test_sampling_cache_never_gives_one_models_first_step_to_another(pipe):
    from insv2v.pipeline import SamplingCache

    video = np.random.default_rng(0).integers(0, 256, (4, 32, 48, 3), dtype=np.uint8)
    other = type(pipe)(**{**pipe.components, "unet": tiny_pipeline(seed=1).unet})  # only the UNet differs

    def run(model, cache=None):
        generator = torch.Generator().manual_seed(0)
        return model(video, "make it snowy", generator=generator, cache=cache, num_inference_steps=2,
                     frames_per_clip=4, ref_frames=1, output_type="latent").frames  # fmt: skip

    cache = SamplingCache()
    run(pipe, cache)
    shared = run(other, cache)
    assert cache.hits == 0
    torch.testing.assert_close(shared, run(other), rtol=0, atol=0)
    assert not torch.equal(shared, run(pipe))
