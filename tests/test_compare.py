"""Editors side by side: the labelled panels video and the per-method scores (insv2v/compare.py)."""

from __future__ import annotations

import numpy as np
import pytest

from insv2v.compare import LABEL_HEIGHT, MethodResult, labelled, panels, score_methods
from insv2v.metrics import PSNR_MAX, consecutive_flows, warp_error
from insv2v.toyworld.world import sample_triplet


@pytest.fixture(scope="module")
def toy():
    triplet = sample_triplet(7, kind="colour")
    source, target = triplet.render(4)
    return triplet, source, target


def test_labelled_frames_keep_the_frames_under_a_strip(toy):
    _, source, _ = toy
    out = labelled(source, "Tune-A-Video")
    assert out.shape == (4, LABEL_HEIGHT + 64, 64, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:, LABEL_HEIGHT:], source)
    strip = out[:, :LABEL_HEIGHT]
    assert (strip == 32).mean() > 0.5 and strip.max() > 200  # a dark strip with white text on it
    assert np.array_equal(strip[0], strip[-1])  # the same label on every frame


def test_panels_put_the_input_then_each_method_in_one_synced_video(toy):
    _, source, target = toy
    results = [MethodResult("InsV2V", target, 1.0), MethodResult("Tune-A-Video", source[:3], 60.0)]
    out = panels(source, results)
    assert out.shape == (4, LABEL_HEIGHT + 64, 3 * 64, 3)
    assert np.array_equal(out[:, LABEL_HEIGHT:, :64], source)
    assert np.array_equal(out[:, LABEL_HEIGHT:, 64:128], target)
    assert np.array_equal(out[:3, LABEL_HEIGHT:, 128:], source[:3])
    assert np.array_equal(out[3, LABEL_HEIGHT:, 128:], source[2])  # a short output holds its last frame


def test_score_methods_scores_every_method_alike(toy):
    triplet, source, target = toy
    results = [MethodResult("exact", target, 0.5), MethodResult("unchanged", source, 2.0)]
    scores = score_methods(results, source, triplet.edited_caption, target=target)
    assert set(scores) == {"exact", "unchanged"}
    assert set(scores["exact"]) == {"warp_error", "psnr", "seconds"}  # no CLIP given: no CLIP scores
    assert scores["exact"]["psnr"] == PSNR_MAX and scores["unchanged"]["psnr"] < 40
    assert scores["unchanged"]["seconds"] == 2.0
    flows = consecutive_flows(source)
    assert scores["exact"]["warp_error"] == pytest.approx(warp_error(target, source, flows))
