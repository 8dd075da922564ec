"""The Synthetic pairs tab: its pure parts, and "make one pair" through Gradio's API on a tiny random model."""

import json

import numpy as np
import pytest
from app_server import serve

from insv2v.assets import TOY_CLIP
from insv2v.synth import dataset
from insv2v.synth.clip_filter import Thresholds
from insv2v.synth.generate import GenerateConfig, generate
from insv2v.synth.p2p import P2PSettings
from insv2v.synth.prompts import toy_prompts
from insv2v.testing.tiny import tiny_t2v_pipeline
from insv2v.toyworld.synthetic import toy_judge
from insv2v.ui.synth_tab import (
    available_datasets,
    dataset_view,
    describe_pair,
    filtered,
    histograms,
    kept_at,
    open_dataset,
    summary,
)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny text-to-video model and a 4-pair dataset made with it (64 px, which the toy judge reads), inside an
    allowed datasets folder."""
    tmp = tmp_path_factory.mktemp("synth")
    tiny_t2v_pipeline("motion").save_pretrained(tmp / "t2v")
    config = GenerateConfig(out_dir=str(tmp / "datasets" / "tiny-set"), t2v=str(tmp / "t2v"), prompts="toy", n=4,
                            clip=str(TOY_CLIP), frames=3, steps=2, size=64)  # fmt: skip
    generate(config, lambda start: toy_prompts(0, start=start), toy_judge)
    return tmp


def records(kept_right_pattern):
    """Records with given (kept, judged right) and sim_dir = 0.1 * position."""
    return [{"index": i, "kind": "colour", "kept": k, "judge": {"edit_right": r},
             "scores": {"sim_0": 0.3, "sim_1": 0.3, "sim_dir": 0.1 * i, "sim_image": 0.9}}
            for i, (k, r) in enumerate(kept_right_pattern)]  # fmt: skip


def test_summary_counts_precision_and_recall():
    rs = records([(True, True), (True, False), (False, True), (True, True)])
    text = summary(rs, [r["kept"] for r in rs])
    assert "3 of 4 kept (75%)" in text
    assert "3 of 4 pairs show the edit" in text
    assert "67% right (precision)" in text and "67% kept (recall)" in text


def test_histograms_and_browse_filters_follow_the_thresholds():
    rs = records([(True, True)] * 5)
    image = histograms(rs, Thresholds(sim_dir=0.25))
    assert image.size == (600, 362) and np.asarray(image).std() > 0
    kept = kept_at({"records": rs, "card": {}}, Thresholds(sim_dir=0.25))
    assert filtered(rs, kept, "kept", "all") == [3, 4]  # sim_dir 0.3, 0.4
    assert filtered(rs, kept, "rejected", "all") == [0, 1, 2]
    assert filtered(rs, kept, "all", "shape") == []
    one_prompt = [{**r, "prompt": 0} for r in rs]
    best = {"records": one_prompt, "card": {"top_per_prompt": 1}}  # the dataset's limit holds under the sliders
    assert filtered(best["records"], kept_at(best, Thresholds(sim_dir=0.25)), "kept", "all") == [4]


def test_datasets_are_found_inside_the_allowed_folders_only(made, tmp_path):
    found = available_datasets([made / "datasets", tmp_path])
    assert list(found) == ["datasets/tiny-set"] and dataset.is_dataset(found["datasets/tiny-set"])
    assert available_datasets([made / "datasets" / "tiny-set"]) == {"tiny-set": made / "datasets" / "tiny-set"}


def test_a_damaged_dataset_is_refused_naming_the_line(made, tmp_path):
    import shutil
    from types import SimpleNamespace

    import gradio as gr

    copy = tmp_path / "sets" / "damaged"
    shutil.copytree(made / "datasets" / "tiny-set", copy)
    lines = (copy / dataset.MANIFEST).read_text().splitlines(keepends=True)
    (copy / dataset.MANIFEST).write_text("".join([*lines[:2], "{not json\n", *lines[2:]]))
    studio = SimpleNamespace(config=SimpleNamespace(datasets=(tmp_path / "sets",)))
    with pytest.raises(gr.Error, match=r"damaged cannot be opened: manifest\.jsonl line 3 is not a JSON record"):
        open_dataset(studio, "sets/damaged")
    shutil.copytree(made / "datasets" / "tiny-set", tmp_path / "sets" / "good")
    shown = dataset_view(studio, "sets/good", Thresholds())
    assert shown[0]["name"] == "sets/good" and "manifest.jsonl" not in shown[1]
    data, text, *_, kinds = dataset_view(studio, "sets/damaged", Thresholds())  # its state replaces the good one's
    assert data is None and "damaged cannot be opened: manifest.jsonl line 3" in text  # nothing of it is shown
    assert kinds["choices"] == ["all"]


def test_browsing_back_to_a_pair_serves_the_video_made_before(made, tmp_path):
    from types import SimpleNamespace

    from insv2v.ui.serving import OutputCache
    from insv2v.ui.synth_tab import show_pair

    cache = OutputCache(tmp_path / "cache", max_bytes=1e9, max_age_s=3600)
    studio = SimpleNamespace(config=SimpleNamespace(datasets=(made / "datasets",)), cache=cache)
    data = open_dataset(studio, "datasets/tiny-set")
    first, second, again = (show_pair(studio, data, k, "all", "all", -1, -1, -1, -1)[0] for k in (1, 2, 1))
    assert first == again != second and len(list(cache.jobs.iterdir())) == 2  # one folder per pair, made once


@pytest.fixture(scope="module")
def client(made):
    from gradio_client import Client

    settings = dict(t2v=str(made / "t2v"), synth_clip=str(TOY_CLIP), datasets=(made / "datasets",))
    with serve(made / "app", **settings) as (url, _demo):
        yield Client(url, verbose=False)


def test_make_one_pair_endpoint(client):
    video, text, table, record, status = client.predict(
        "a red circle moving right on a beach", "a blue circle moving right on a beach", "make the circle blue",
        seed=3, draw_settings=True, steps=2, frames=3, api_name="/synth_pair",
    )  # fmt: skip
    record = json.loads(record)
    assert record["settings"] == P2PSettings.draw(3).to_dict() and record["seed"] == 3
    assert video["video"].endswith(".mp4") if isinstance(video, dict) else video.endswith(".mp4")
    assert [row[0] for row in table["data"]] == ["sim_0", "sim_1", "sim_dir", "sim_image"]
    assert ("kept" in status) == record["kept"]
    assert "make the circle blue" in text
    _, _, _, record, _ = client.predict(
        "a red circle moving right on a beach", "a blue circle moving right on a beach", "", seed=3,
        draw_settings=False, guidance_scale=6, sa_end=0.3, ca_end=0.6, edit_weight=2, steps=2, frames=3,
        api_name="/synth_pair",
    )  # fmt: skip
    settings = {"guidance_scale": 6, "sa_end": 0.3, "ca_end": 0.6, "edit_weight": 2, "shared_end": 0}
    assert json.loads(record)["settings"] == settings
    assert "blend_area" not in json.loads(record)  # off unless asked for
    _, text, _, record, _ = client.predict(
        "a red circle moving right on a beach", "a blue circle moving right on a beach", "", seed=3, steps=2,
        frames=3, local_blend=0.3, api_name="/synth_pair",
    )  # fmt: skip
    area = json.loads(record)["blend_area"]
    assert 0 <= area <= 1 and f"local blending: {area:.0%} of the frame may change" in text
    _, text, _, record, _ = client.predict(
        "a red circle moving right on a beach", "a blue circle moving right on a beach", "", seed=3, steps=2,
        frames=3, shared_end=0.5, api_name="/synth_pair",
    )  # fmt: skip
    assert json.loads(record)["settings"] == {**P2PSettings.draw(3).to_dict(), "shared_end": 0.5}
    assert "the edited video shares the input's first 50% of steps" in text
    _, text, _, record, _ = client.predict(
        "a red circle moving right on a beach", "a blue circle moving right on a beach", "", seed=3, steps=2,
        frames=3, local_blend=0.5, shared_end=0.5, blend_maps="difference", api_name="/synth_pair",
    )  # fmt: skip
    area = json.loads(record)["blend_area"]  # DiffEdit's mask, read over the shared step
    assert 0 < area < 1 and f"local blending: {area:.0%} of the frame may change" in text


@pytest.mark.parametrize(
    "captions, words",
    [(("", "a blue circle"), "give both captions"), (("a red circle", "a red circle"), "same as input"),
     (("a red circle", "a blue circle", 1.0), "Value 1.0 is greater than maximum value 0.95")],
)  # fmt: skip
def test_make_one_pair_refuses_bad_input_with_a_message(client, captions, words):
    from gradio_client.exceptions import AppError

    input_caption, output_caption, *blend = captions
    with pytest.raises(AppError, match=words):
        client.predict(input_caption, output_caption, "", steps=2, frames=3, local_blend=blend[0] if blend else 0,
                       api_name="/synth_pair")  # fmt: skip


def test_kind_guidance_on_a_model_without_a_kind_classifier_says_so(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="needs a text-to-video folder with a kind classifier"):
        client.predict("a red circle moving right on a beach", "a blue circle moving right on a beach", "", steps=2,
                       frames=3, kind_guidance=5, api_name="/synth_pair")  # fmt: skip


def test_a_pair_says_its_prompt_to_prompt_phases_for_either_recipe():
    record = {"input": "a red circle on a beach", "edit": "make it snowy", "output": "a red circle on snow", "seed": 4}
    video = describe_pair({**record, "settings": P2PSettings.draw(4).to_dict()})
    image = describe_pair({**record, "settings": P2PSettings.draw_image(4).to_dict()})
    assert "cross-attention until" in video and "edit weight" in video and "seed 4" in video
    assert "no cross-attention edit" in image and "edit weight" not in image and "seed 4" in image
