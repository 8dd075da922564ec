"""The shipped toy editor (assets/toy-editor): the default model, safetensors only, and it does the edits it
was trained for on held-out scenes (at the demo's CPU setting of 10 steps)."""

import numpy as np
import pytest

from insv2v.assets import TOY_EDITOR
from insv2v.editing import model_defaults
from insv2v.loading import default_source, load_pipeline
from insv2v.toyworld.evaluate import edit_correct
from insv2v.toyworld.world import HELDOUT_SEEDS, sample_triplet


@pytest.fixture(scope="module")
def editor():
    pipe = load_pipeline(str(TOY_EDITOR), device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_shipped_editor_is_the_default_and_holds_no_pickles(monkeypatch):
    monkeypatch.delenv("INSV2V_MODEL", raising=False)
    assert default_source() == str(TOY_EDITOR)
    files = [p for p in TOY_EDITOR.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".json", ".jsonl", ".safetensors", ".md"}
    assert sum(p.stat().st_size for p in files) < 60e6  # about 50 MB: 12M float32 weights and the tokenizer


def test_shipped_editor_has_the_toy_architecture(editor):
    assert type(editor.vae).__name__ == "PixelUnshuffleAutoencoder"
    from diffusers import UNetMotionModel

    assert isinstance(editor.unet, UNetMotionModel) and editor.unet.config.motion_max_seq_length >= 16
    assert editor.scheduler.config.prediction_type == "sample"


@pytest.mark.slow  # 16-frame edits with the shipped editor
@pytest.mark.parametrize("kind", ["background", "colour"])
def test_shipped_editor_follows_held_out_instructions(editor, kind):
    import torch

    recommended = model_defaults(str(TOY_EDITOR))
    results = []
    for i in range(6):
        triplet = sample_triplet(HELDOUT_SEEDS.start + 777 + i, kind=kind)
        source, _ = triplet.render(4)
        generator = torch.Generator().manual_seed(i)
        out = editor(
            source,
            triplet.edit.instruction,
            num_inference_steps=10,
            generator=generator,
            guidance_scale=recommended.text_cfg,
            video_guidance_scale=recommended.video_cfg,
        ).frames
        results.append(edit_correct(triplet, (out * 255).round().astype(np.uint8)))
    assert sum(results) >= 5, results
