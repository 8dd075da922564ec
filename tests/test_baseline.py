"""The toy-scale comparison (insv2v eval --toyworld --baseline tav) on tiny random models: every method scored on
every edit by the Compare tab's code, and the README table built from the records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from insv2v.assets import TOY_CLIP
from insv2v.cli import main
from insv2v.tav import TAVSettings, TuneAVideoPipeline
from insv2v.testing.tiny import tiny_pipeline, tiny_t2v_pipeline
from insv2v.toyworld import baseline
from insv2v.toyworld.world import HELDOUT_SEEDS, sample_triplet
from insv2v.video import probe

FAST_TAV = TAVSettings(tune_steps=1, inversion_steps=1, steps=1, frames=2)


@pytest.fixture(scope="module")
def tav_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("t2i")
    tiny_t2v_pipeline("2d").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def records(tav_folder):
    pipe = tiny_pipeline()
    tav = TuneAVideoPipeline.from_t2i(str(tav_folder))
    tav.set_progress_bar_config(disable=True)
    return baseline.evaluate_baseline(pipe, tav, FAST_TAV, str(TOY_CLIP), n=4, frames=2, seed=5,
                                      num_inference_steps=1)["records"]  # fmt: skip


def test_every_method_is_scored_on_every_edit(records):
    assert [r["kind"] for r in records] == ["background", "colour", "shape", "style"]
    for i, record in enumerate(records):
        triplet = sample_triplet(HELDOUT_SEEDS.start + 5 + i, kind=record["kind"])
        assert record["seed"] == 5 + i and record["edited_caption"] == triplet.edited_caption
        assert set(record["methods"]) == set(baseline.METHODS)
        for scores in record["methods"].values():
            assert set(scores) >= {"correct", "psnr", "warp_error", "loveu_consistency", "pick_score", "seconds"}
            assert scores["seconds"] > 0 and np.isfinite(scores["psnr"])
            assert 0 < scores["loveu_consistency"] <= 100 + 1e-3


def test_the_summary_counts_each_method_and_the_table_has_a_row_each(records):
    summary = baseline.summarise(records)
    assert summary["InsV2V"]["correct_all"]["n"] == 4 and summary["Tune-A-Video"]["correct_shape"]["n"] == 1
    seconds = [r["methods"]["Tune-A-Video"]["seconds"] for r in records]
    assert summary["Tune-A-Video"]["seconds"]["median"] == pytest.approx(np.median(seconds))
    lines = baseline.markdown_table(records).splitlines()
    assert len(lines) == 2 + len(baseline.METHODS)
    assert [line.split(" | ")[0].lstrip("| ") for line in lines[2:]] == list(baseline.METHODS)


def test_saving_an_item_again_replaces_its_line(tmp_path):
    from insv2v.compare import MethodResult

    frames = np.zeros((2, 16, 16, 3), np.uint8)
    runs = [MethodResult("InsV2V", frames, 1.0)]
    for offset in (5, 3, 5):  # item 5 made twice (a run done again): still one line, in item order
        triplet = sample_triplet(HELDOUT_SEEDS.start + offset)
        baseline.save_outputs(tmp_path, offset, triplet, frames, frames, runs)
    items = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert [i["item"] for i in items] == ["000003", "000005"]


@pytest.mark.slow
def test_the_cli_writes_the_comparison(tmp_path, tav_folder):
    model = tmp_path / "tiny"
    main(["tiny", str(model)])
    out = tmp_path / "compare.json"
    code = main(["eval", "--toyworld", "--model", str(model), "--baseline", "tav", "--tav-model", str(tav_folder),
                 "--tav-steps", "1", "--edits", "2", "--steps", "1", "--seed", "9", "--out", str(out),
                 "--save-outputs", str(tmp_path / "videos")])  # fmt: skip
    assert code in (0, None)
    results = json.loads(out.read_text())
    assert results["tav"]["tune_steps"] == 1 and results["seed"] == 9 and len(results["records"]) == 2
    items = [json.loads(line) for line in (tmp_path / "videos" / "items.jsonl").read_text().splitlines()]
    assert [i["item"] for i in items] == ["000009", "000010"]
    assert items[0]["instruction"] == results["records"][0]["instruction"]
    triplet = sample_triplet(HELDOUT_SEEDS.start + items[1]["heldout_offset"], items[1]["kind"])
    assert (items[1]["caption"], items[1]["edited_caption"]) == (triplet.input_caption, triplet.edited_caption)
    assert set(items[0]["outputs"]) == {"insv2v", "frame2d", "tav"}
    for path in [items[1]["input"], items[1]["reference"], *items[1]["outputs"].values()]:
        info = probe(tmp_path / "videos" / path)
        assert (info.num_frames, info.width, info.height) == (16, 64, 64)
