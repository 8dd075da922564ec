"""Kind guidance: the classifier's caption parsing and gradient, its place in the text-to-video pipeline and in video
Prompt-to-Prompt (the sampler's invariants hold with it), its loading and refusals; the toy classifier's training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from insv2v.assets import TOY_CLIP
from insv2v.cli import main
from insv2v.models.kind_classifier import KindClassifier, kind_guided, kind_log_likelihood_gradient
from insv2v.synth.p2p import P2PSettings, generate_pair
from insv2v.synth.t2v import TextToVideoPipeline, recommended_guidance, recommended_kind_guidance
from insv2v.testing.tiny import tiny_t2v_pipeline
from insv2v.toyworld import kind_classifier as toy
from insv2v.toyworld.world import SHAPE_COLOURS, SHAPES, random_scene

FRAMES, SIZE, STEPS, CFG = 3, 32, 3, 4.0
KINDS = 0.03  # kind guidance that moves the tiny latents (at most 1.3) by up to 0.36 (measured); stronger guidance
# amplifies the rounding of a batch of 4 against 2 beyond the invariants' 1e-4
SOURCE = "a red circle moving right and a blue square bouncing on a beach"
TARGET = "a red triangle moving right and a blue square bouncing on a beach"


def classifier(seed: int = 0, absence: bool = False) -> KindClassifier:
    torch.manual_seed(seed)
    return KindClassifier(colours=tuple(SHAPE_COLOURS), kinds=SHAPES, unseen=("pencil sketch",), width=16,
                          absence=absence).eval()  # fmt: skip


@pytest.fixture(scope="module")
def pipe() -> TextToVideoPipeline:
    """A tiny motion pipeline that predicts x0, as the toy models do, with a random kind classifier."""
    base = tiny_t2v_pipeline("motion")
    scheduler = DDIMScheduler.from_config(base.scheduler.config, prediction_type="sample")
    out = TextToVideoPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
                              scheduler=scheduler, kind_classifier=classifier())  # fmt: skip
    out.set_progress_bar_config(disable=True)
    return out


def noise(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 4, FRAMES, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(seed))


def plain(pipe, prompt: str, kind_guidance: float) -> torch.Tensor:
    out = pipe(prompt, num_frames=FRAMES, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=CFG,
               latents=noise(), output_type="latent", kind_guidance=kind_guidance)  # fmt: skip
    return out.frames[0]


def pair(pipe, source: str, target: str, sa_end: float, ca_end: float, kind_guidance: float, shared_end=0.0,
         kind_edit_only=False):  # fmt: skip
    settings = P2PSettings(CFG, sa_end, ca_end, 1.0, shared_end)
    return generate_pair(pipe, source, target, settings, num_frames=FRAMES, num_inference_steps=STEPS, height=SIZE,
                         width=SIZE, latents=noise(), output_type="latent", kind_guidance=kind_guidance,
                         kind_edit_only=kind_edit_only)  # fmt: skip


# ---------------------------------------------------------------- the classifier


def test_targets_are_the_colour_kind_pairs_a_caption_names():
    c = classifier()
    colours = list(SHAPE_COLOURS)
    assert c.targets(SOURCE) == [(colours.index("red"), 0), (colours.index("blue"), 1)]
    assert c.targets("a photo negative of a green cross bouncing on a night") == [(colours.index("green"), 3)]
    assert c.targets("a pencil sketch of a green cross bouncing on a night") == []  # frames it never saw
    assert c.targets("a red ball and a circle of blue") == []  # a colour and a kind that are not one shape's
    assert c.targets("a reddish circle") == []  # whole words only


def test_with_absence_a_caption_also_says_which_colours_have_no_shape():
    c = classifier(absence=True)
    colours = list(SHAPE_COLOURS)
    assert c(torch.zeros(2, 3, 32, 32), torch.zeros(2)).shape == (2, len(colours), len(SHAPES) + 1)
    targets = c.targets(SOURCE)
    assert targets[:2] == [(colours.index("red"), 0), (colours.index("blue"), 1)]
    absent = [colour for colour in colours if colour not in ("red", "blue")]
    assert targets[2:] == [(colours.index(colour), len(SHAPES)) for colour in absent]
    assert c.targets("a pencil sketch of a green cross bouncing on a night") == []


def test_edit_targets_are_what_the_edited_caption_asks_and_the_input_caption_does_not():
    colours = list(SHAPE_COLOURS)
    red, green = colours.index("red"), colours.index("green")
    c = classifier()
    assert c.edit_targets(SOURCE, TARGET) == [(red, SHAPES.index("triangle"))]
    assert c.edit_targets(SOURCE, SOURCE.replace("beach", "forest")) == []  # a background edit changes no shape
    recoloured = SOURCE.replace("red", "green")
    assert c.edit_targets(SOURCE, recoloured) == [(green, 0)]
    # Reading absence, a recolouring also asks that the old colour be gone.
    assert classifier(absence=True).edit_targets(SOURCE, recoloured) == [(green, 0), (red, len(SHAPES))]


def test_the_loss_with_absence_counts_every_colour_and_without_only_those_present():
    labels = torch.tensor([[2, -1, -1], [-1, 0, -1]])
    four = torch.zeros(2, 3, len(SHAPES))  # uniform over the kinds
    assert toy.kind_loss(four, labels).item() == pytest.approx(np.log(len(SHAPES)))
    five = torch.zeros(2, 3, len(SHAPES) + 1)
    five[..., len(SHAPES)] = 10.0  # sure that every colour is absent: right on 4 of 6, wrong by about 10 on 2
    expected = (4 * np.log1p(len(SHAPES) * np.exp(-10)) + 2 * np.log(len(SHAPES) + np.exp(10))) / 6
    assert toy.kind_loss(five, labels, absence=True).item() == pytest.approx(expected, rel=1e-5)


def test_a_small_step_along_the_gradient_raises_the_named_kinds_likelihood():
    c, vae = classifier(), tiny_t2v_pipeline("motion").vae
    x0 = torch.randn(4, FRAMES, 4, 4, generator=torch.Generator().manual_seed(1))
    targets = c.targets(SOURCE)

    def log_likelihood(x):
        with torch.no_grad():
            frames = vae.decode(x.transpose(0, 1) / vae.config.scaling_factor).sample
            log_p = c(frames, torch.zeros(FRAMES)).log_softmax(-1)
        return sum(log_p[:, i, k].sum().item() for i, k in targets)

    grad = kind_log_likelihood_gradient(c, vae, x0, targets)
    assert grad.shape == x0.shape and grad.abs().max() > 0
    assert log_likelihood(x0 + 1e-3 * grad) > log_likelihood(x0)  # first order: + 1e-3 |grad|^2


def test_kind_guided_moves_only_videos_whose_captions_name_kinds():
    c, vae = classifier(), tiny_t2v_pipeline("motion").vae
    x0 = torch.randn(2, 4, FRAMES, 4, 4, generator=torch.Generator().manual_seed(2))
    captions = ["a pencil sketch of a red circle moving right on a beach", SOURCE]
    moved = kind_guided(c, vae, x0, [c.targets(caption) for caption in captions], 5.0)
    assert torch.equal(moved[0], x0[0])
    assert (moved[1] - x0[1]).abs().max() > 1e-4
    assert torch.equal(kind_guided(c, vae, x0, [c.targets(SOURCE)] * 2, 0.0), x0)


# ---------------------------------------------------------------- the pipeline and Prompt-to-Prompt


def test_kind_guidance_zero_is_the_pipeline_without_a_classifier(pipe):
    bare = TextToVideoPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
                               scheduler=pipe.scheduler)  # fmt: skip
    bare.set_progress_bar_config(disable=True)
    assert torch.equal(plain(pipe, SOURCE, 0.0), plain(bare, SOURCE, 0.0))
    assert (plain(pipe, SOURCE, KINDS) - plain(pipe, SOURCE, 0.0)).abs().max() > 1e-3


def test_the_sampler_invariants_hold_with_kind_guidance(pipe):
    same = pair(pipe, SOURCE, SOURCE, sa_end=0.5, ca_end=1.0, kind_guidance=KINDS)
    assert (same.source - same.target).abs().max() <= 1e-5  # identical prompts, identical videos
    # Without injection each video is a plain guided generation of its own prompt (batch of 4 vs 2 rounding).
    off = pair(pipe, SOURCE, TARGET, sa_end=0.0, ca_end=0.0, kind_guidance=KINDS)
    assert (off.target - plain(pipe, TARGET, KINDS)).abs().max() <= 1e-4
    assert (off.source - plain(pipe, SOURCE, KINDS)).abs().max() <= 1e-4
    # A shared start guides both halves as the source while they are one.
    shared = pair(pipe, SOURCE, TARGET, sa_end=0.0, ca_end=0.0, kind_guidance=KINDS, shared_end=1.0)
    assert torch.equal(shared.source, shared.target)


def test_kind_guidance_for_the_edit_only_leaves_kept_shapes_to_the_shared_start(pipe):
    same = pair(pipe, SOURCE, SOURCE, 0.5, 1.0, KINDS, shared_end=0.5, kind_edit_only=True)
    assert (same.source - same.target).abs().max() <= 1e-5  # nothing edited: both unguided after the start
    # Shared to the end, there is no "after": the mode changes nothing.
    whole = pair(pipe, SOURCE, TARGET, 0.0, 0.0, KINDS, shared_end=1.0)
    assert torch.equal(pair(pipe, SOURCE, TARGET, 0.0, 0.0, KINDS, shared_end=1.0, kind_edit_only=True).source,
                       whole.source)  # fmt: skip
    # After a shared start of 1/3, the input is no longer guided and the edited video only towards the triangle.
    full = pair(pipe, SOURCE, TARGET, 0.0, 0.0, KINDS, shared_end=0.34)
    edit = pair(pipe, SOURCE, TARGET, 0.0, 0.0, KINDS, shared_end=0.34, kind_edit_only=True)
    assert (edit.source - full.source).abs().max() > 1e-3 and (edit.target - full.target).abs().max() > 1e-3
    with pytest.raises(ValueError, match="shared start"):
        pair(pipe, SOURCE, TARGET, 0.0, 0.0, KINDS, kind_edit_only=True)


@pytest.mark.parametrize(
    ("value", "message"), [(-1.0, "must be in"), (1001.0, "must be in")]
)  # fmt: skip
def test_kind_guidance_out_of_range_is_refused(pipe, value, message):
    with pytest.raises(ValueError, match=message):
        plain(pipe, SOURCE, value)


def test_kind_guidance_needs_a_classifier_and_an_x0_model():
    bare = tiny_t2v_pipeline("motion")  # no classifier, epsilon prediction
    with pytest.raises(ValueError, match="kind classifier"):
        plain(bare, SOURCE, 5.0)
    bare.register_modules(kind_classifier=classifier())
    with pytest.raises(ValueError, match="predicts x0"):
        plain(bare, SOURCE, 5.0)
    with pytest.raises(ValueError, match="kind classifier"):
        pair(tiny_t2v_pipeline("motion"), SOURCE, TARGET, 0.4, 0.7, kind_guidance=5.0)


def test_the_classifier_saves_and_loads_with_its_pipeline(pipe, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe.save_pretrained(tmp_path / "t2v")
    index = json.loads((tmp_path / "t2v" / "model_index.json").read_text())
    assert index["kind_classifier"] == ["insv2v.models.kind_classifier", "KindClassifier"]
    loaded = TextToVideoPipeline.from_pretrained(tmp_path / "t2v")
    assert loaded.kind_classifier.config.kinds == list(SHAPES)
    for a, b in zip(loaded.kind_classifier.state_dict().values(), pipe.kind_classifier.state_dict().values(),
                    strict=True):  # fmt: skip
        assert torch.equal(a, b)
    tiny_t2v_pipeline("motion").save_pretrained(tmp_path / "bare")
    assert TextToVideoPipeline.from_pretrained(tmp_path / "bare").kind_classifier is None


def test_a_folder_recommends_its_kind_guidance(tmp_path):
    (tmp_path / "sampling.json").write_text('{"guidance_scale": 3, "kind_guidance": 30}')
    assert (recommended_guidance(str(tmp_path)), recommended_kind_guidance(str(tmp_path))) == (3.0, 30.0)
    (tmp_path / "sampling.json").write_text('{"guidance_scale": 3}')
    assert recommended_kind_guidance(str(tmp_path)) == 0.0
    (tmp_path / "sampling.json").write_text('{"kind_guidance": "strong"}')
    with pytest.raises(ValueError, match="kind_guidance"):
        recommended_kind_guidance(str(tmp_path))


def test_the_commands_refuse_kind_guidance_a_model_cannot_take(tmp_path, capsys):
    folder, out = tmp_path / "t2v", tmp_path / "data"
    tiny_t2v_pipeline("motion").save_pretrained(folder)  # no kind classifier
    small = ["--frames", "2", "--steps", "1", "--size", "32", "--kind-guidance", "5"]
    assert main(["synth", "generate", "--t2v", str(folder), "--clip", str(TOY_CLIP), "--n", "1", "--out", str(out),
                 *small]) == 2  # fmt: skip
    assert "kind classifier" in capsys.readouterr().err
    assert not (out / "prompts.jsonl").exists() and not (out / "manifest.jsonl").exists()  # refused before writing
    assert main(["generate", "a red circle on a beach", "-o", str(tmp_path / "v.mp4"), "--model", str(folder),
                 *small]) == 2  # fmt: skip
    assert "kind classifier" in capsys.readouterr().err and not (tmp_path / "v.mp4").exists()
    with pytest.raises(SystemExit):
        main(["generate", "a red circle", "-o", str(tmp_path / "v.mp4"), "--kind-guidance", "2000"])
    assert "--kind-guidance" in capsys.readouterr().err


# ---------------------------------------------------------------- the toy classifier's training


def test_labels_name_each_shapes_kind_at_its_colour():
    scene = random_scene(np.random.default_rng(3))
    labels = toy.kind_labels(scene)
    assert (labels >= 0).sum() == len(scene.shapes)
    for shape in scene.shapes:
        assert labels[list(SHAPE_COLOURS).index(shape.colour)] == SHAPES.index(shape.kind)
    pixels, batch = toy.labelled_frames(np.random.default_rng(0), 6)
    assert pixels.shape == (6, 3, 64, 64) and pixels.min() >= -1 and pixels.max() <= 1
    assert batch.shape == (6, len(SHAPE_COLOURS)) and ((batch >= 0).sum(1) >= 1).all()


def test_training_saves_a_classifier_that_loads_and_is_measured(tmp_path):
    toy.train(tmp_path / "kc", steps=2, batch=4)
    loaded = KindClassifier.from_pretrained(tmp_path / "kc")
    assert loaded.config.unseen == ["pencil sketch"]
    assert json.loads((tmp_path / "kc" / "train.json").read_text())["steps"] == 2
    measured = toy.accuracy(loaded, n=8, timesteps=(0, 500))
    assert set(measured) == {"0", "500"}
    assert all(r["n"] >= 8 and 0 <= r["k"] <= r["n"] for r in measured.values())
    toy.train(tmp_path / "kc5", steps=2, batch=4, absence=True)
    loaded = KindClassifier.from_pretrained(tmp_path / "kc5")
    assert loaded.config.absence and loaded.absent == len(SHAPES)
    measured = toy.accuracy(loaded, n=8, timesteps=(0,))
    assert set(measured) == {"0", "0 colours"} and measured["0 colours"]["n"] == 8 * len(SHAPE_COLOURS)
