"""The toy editor trained on synthetic pairs alone (assets/toy-editor-synthetic): safetensors only, the editor's
architecture and defaults, and a record of the synthetic datasets it learned from."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from insv2v.editing import model_defaults
from insv2v.loading import load_pipeline

EDITOR = Path(__file__).resolve().parents[1] / "assets" / "toy-editor-synthetic"  # in the repository, not the wheel


@pytest.fixture(scope="module")
def editor():
    pipe = load_pipeline(str(EDITOR), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_it_holds_no_pickles():  # and names no machine's folders: test_packaging.py checks every shipped record
    files = [p for p in EDITOR.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".json", ".jsonl", ".safetensors", ".md"}


def test_it_learned_from_synthetic_pairs_only(editor):
    training = json.loads((EDITOR / "training.json").read_text())
    assert training["config"]["stage"] == "video" and training["data"]["counts"]["kept"] == 256
    assert training["config"]["augment"]  # its motion modules saw the clips panned and zoomed, as the paper's did
    assert Path(training["config"]["init_dir"]).name == "final"  # the 2-D stage trained on synthetic image pairs
    stage_2d = json.loads((EDITOR / "training_2d.json").read_text())  # started from a t2i, on 3000 image pairs
    assert "t2i" in stage_2d["config"]["init_dir"] and stage_2d["data"]["counts"]["kept"] == 3000
    recommended = model_defaults(str(EDITOR))
    assert (recommended.text_cfg, recommended.video_cfg) == (4.0, 1.5)
    assert not recommended.lvsc  # measured: LVSC roughens this editor's long videos (its card)
    from diffusers import UNetMotionModel

    assert isinstance(editor.unet, UNetMotionModel) and type(editor.vae).__name__ == "PixelUnshuffleAutoencoder"


def test_it_edits_a_clip(editor):
    video = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    out = editor(video, "make it snowy", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames
    assert out.shape == (4, 64, 64, 3) and out.min() >= 0 and out.max() <= 1
