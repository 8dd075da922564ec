"""Tune-A-Video on tiny random components: the inflated UNet's invariants, one-shot tuning, DDIM inversion, the cache
of tuned weights, and `insv2v tav edit`."""

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, ModelMixin
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from media import make_video

from insv2v.assets import EXAMPLES, TOY_T2I
from insv2v.cli import main
from insv2v.tav import cli as tav_cli
from insv2v.tav.model import (
    TRAINABLE_SUFFIXES,
    SparseCausalAttnProcessor,
    TuneAVideoUNet,
    inflate_tav,
    trainable_parameters,
)
from insv2v.tav.pipeline import (
    CHECKPOINT_FILE,
    PRESETS,
    TUNED_FILE,
    Cancelled,
    TAVSettings,
    TuneAVideoPipeline,
    TuningCancelled,
    cache_key,
    tav_edit,
)
from insv2v.testing.tiny import tiny_t2v_pipeline
from insv2v.video import probe, read_video

FAST = TAVSettings(tune_steps=3, lr=1e-3, inversion_steps=2, steps=2, checkpoint_every=2)


@pytest.fixture(scope="module")
def t2i():
    """A tiny random text-to-image pipeline: 2-D UNet (32/64 channels), KL VAE (factor 8), epsilon DDIM."""
    return tiny_t2v_pipeline("2d")


def make_pipe(t2i, scheduler=None, unet=None) -> TuneAVideoPipeline:
    pipe = TuneAVideoPipeline(vae=t2i.vae, text_encoder=t2i.text_encoder, tokenizer=t2i.tokenizer,
                              unet=unet if unet is not None else inflate_tav(t2i.unet).eval(),
                              scheduler=scheduler or t2i.scheduler)  # fmt: skip
    pipe.source = "tiny-t2i"
    pipe.set_progress_bar_config(disable=True)
    return pipe


def video(seed: int, frames: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, 64, 64, 3), dtype=np.uint8)


def tuned_state(pipe) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trainable_parameters(pipe.unet).items()}


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# ---------------------------------------------------------------- the model


def test_fresh_inflation_equals_the_2d_unet_on_a_static_video_and_not_on_a_moving_one(t2i):
    unet = inflate_tav(t2i.unet).eval()
    text = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    frame = torch.randn(1, 4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    moving = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        static = unet(frame.repeat(1, 1, 3, 1, 1), 500, text).sample  # (1, 4, 3, 8, 8)
        alone = t2i.unet(frame[:, :, 0], 500, text).sample  # (1, 4, 8, 8)
        out = unet(moving, torch.tensor([500]), text).sample
        per_frame = t2i.unet(moving[0].transpose(0, 1), 500, text.expand(3, -1, -1)).sample  # (3, 4, 8, 8)
    assert (static - alone[:, :, None]).abs().max() < 1e-5
    assert (out[0].transpose(0, 1) - per_frame).abs().max() > 1e-2  # clip-wide norms and sparse-causal attention


def test_sparse_causal_attention_is_frame_0_and_the_previous_frame_as_keys():
    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8).eval()
    f, d = 3, 5
    hidden = torch.randn(2 * f, d, 16)  # (b*f, d, c): two clips of three frames
    frames = type("Frames", (), {"value": f})()
    with torch.no_grad():
        out = SparseCausalAttnProcessor(frames)(attn, hidden).unflatten(0, (2, f))  # (b, f, d, c)
        clips = hidden.unflatten(0, (2, f))
        alone = AttnProcessor2_0()(attn, clips[:, 0])  # frame 0 by itself
        np.testing.assert_allclose(out[:, 0], alone, atol=1e-6)

        def explicit(queries, context):  # softmax(q k^T / sqrt(d)) v per head, then the output projection
            q, k, v = attn.to_q(queries), attn.to_k(context), attn.to_v(context)
            q, k, v = (x.unflatten(-1, (2, 8)).transpose(1, 2) for x in (q, k, v))  # (b, heads, l, 8)
            weights = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1)
            return attn.to_out[0]((weights @ v).transpose(1, 2).flatten(2))

        for i in (1, 2):
            context = torch.cat([clips[:, 0], clips[:, i - 1]], dim=1)  # (b, 2d, c)
            np.testing.assert_allclose(out[:, i], explicit(clips[:, i], context), atol=1e-6)
        np.testing.assert_allclose(out[:, 0], explicit(clips[:, 0], clips[:, 0]), atol=1e-6)


def test_official_parameter_names_processors_and_a_save_load_round_trip(t2i, tmp_path):
    unet = inflate_tav(t2i.unet).eval()
    state = unet.state_dict()
    block = "down_blocks.0.attentions.0.transformer_blocks.0."
    names = ["attn_temp.to_q.weight", "attn_temp.to_k.weight", "attn_temp.to_v.weight", "attn_temp.to_out.0.weight",
             "attn_temp.to_out.0.bias", "norm_temp.weight", "norm_temp.bias"]  # fmt: skip
    assert all(block + name in state for name in names)
    assert not state[block + "attn_temp.to_out.0.weight"].any()  # zero-initialised
    TuneAVideoUNet.from_config(unet.config).load_state_dict(state, strict=True)

    processors = unet.attn_processors  # every attention module has one: 3 per transformer block
    assert len(processors) == 3 * sum(k.endswith("attn_temp.to_q.weight") for k in state)
    for name, processor in processors.items():
        expected = SparseCausalAttnProcessor if name.endswith("attn1.processor") else AttnProcessor2_0
        assert type(processor) is expected, name

    with torch.no_grad():  # temporal attention that does something, so that the round trip is not trivial
        for name, param in unet.named_parameters():
            if "attn_temp.to_out" in name:
                param.normal_(std=0.1)
    unet.save_pretrained(tmp_path / "unet")
    again = TuneAVideoUNet.from_pretrained(tmp_path / "unet").eval()
    public = [{k: v for k, v in json.loads(u.to_json_string()).items() if not k.startswith("_")} for u in (unet, again)]
    assert public[0] == public[1] and type(again).__name__ == json.loads(again.to_json_string())["_class_name"]
    sample, text = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 77, 32)
    with torch.no_grad():
        assert torch.equal(again(sample, 10, text).sample, unet(sample, 10, text).sample)


# ---------------------------------------------------------------- tuning


def test_tuning_changes_exactly_the_official_trainable_parameters(t2i):
    pipe = make_pipe(t2i)
    names = set(trainable_parameters(pipe.unet))
    assert names and all(".attn1.to_q." in n or ".attn2.to_q." in n or ".attn_temp." in n for n in names)
    assert not any("norm_temp" in n for n in names) and TRAINABLE_SUFFIXES[-1] == "attn_temp"
    before = {name: p.detach().clone() for name, p in pipe.unet.named_parameters()}
    text_before = {name: p.detach().clone() for name, p in pipe.text_encoder.named_parameters()}
    pipe.tune(video(0), "a red ball", TAVSettings(tune_steps=3, lr=1e-3))
    for name, param in pipe.unet.named_parameters():
        assert torch.equal(param, before[name]) != (name in names), name
        assert not param.requires_grad
    assert all(torch.equal(p, text_before[n]) for n, p in pipe.text_encoder.named_parameters())


def test_the_loss_decreases_over_twenty_steps(t2i):
    losses = make_pipe(t2i).tune(video(0), "a red ball", TAVSettings(tune_steps=20, lr=1e-2))
    assert len(losses) == 20
    assert np.mean(losses[-5:]) < 0.95 * np.mean(losses[:5])  # measured: 1.114 -> 0.960


# ---------------------------------------------------------------- DDIM inversion


class GaussianDenoiser(ModelMixin):
    """The exact model output for data ~ N(0, sigma^2 I), in the scheduler's prediction type."""

    def __init__(self, scheduler, sigma: float):
        super().__init__()
        self.alphas, self.kind, self.sigma = scheduler.alphas_cumprod, scheduler.config.prediction_type, sigma
        self.register_buffer("unit", torch.ones(()))

    def forward(self, x, t, embeds):
        a, s2 = self.alphas[int(t)], self.sigma**2
        x0 = a.sqrt() * s2 * x / (a * s2 + 1 - a)  # E[x0 | x_t]
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        out = {"epsilon": eps, "sample": x0, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0}[self.kind]
        return UNet2DConditionOutput(sample=out)


def official_inversion(model, scheduler, latents, steps):
    """The arithmetic of the official `tuneavideo.util.ddim_inversion` (DDIM's alphas, an epsilon model)."""
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps.flip(0):
        eps = model(latents, t, None).sample
        current = min(int(t) - scheduler.config.num_train_timesteps // steps, 999)
        a = scheduler.alphas_cumprod[current] if current >= 0 else scheduler.final_alpha_cumprod
        a_next = scheduler.alphas_cumprod[int(t)]
        x0 = (latents - (1 - a).sqrt() * eps) / a.sqrt()
        latents = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
    return latents


TOY_SCHEDULER = DDIMScheduler.from_pretrained(TOY_T2I, subfolder="scheduler")  # x0 prediction, cosine, alpha_0 = 1


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_inversion_of_gaussian_data_with_the_exact_denoiser_reaches_unit_noise_and_samples_back(t2i, kind):
    config = TOY_SCHEDULER.config if kind == "sample" else t2i.scheduler.config
    scheduler = DDIMScheduler.from_config(config, prediction_type=kind)
    pipe = make_pipe(t2i, scheduler, GaussianDenoiser(scheduler, sigma=0.5))
    source = 0.5 * torch.randn(1, 4, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    inverted = pipe.invert(source, 50)
    assert 0.95 < inverted.std() < 1.15  # measured: 1.02 (epsilon), 0.99 (v), 1.12 (x0: its first steps are hard)
    back = pipe.sample("", inverted, 50, guidance_scale=1.0, output_type="latent")
    error = (back - source).norm() / source.norm()
    assert error < 0.1  # measured: 0.037, 0.067, 0.072: DDIM inversion's first-order error at 50 steps
    if kind == "epsilon":  # diffusers' DDIMInverseScheduler steps as the official code does
        official = official_inversion(pipe.unet, DDIMScheduler.from_config(config), source, 50)
        torch.testing.assert_close(inverted, official, atol=1e-5, rtol=1e-5)


def test_inversion_round_trip_with_a_random_tiny_unet_beats_a_random_start(t2i):
    pipe = make_pipe(t2i)
    source = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    back = pipe.sample("", pipe.invert(source, 10), 10, guidance_scale=1.0, output_type="latent")
    from_noise = pipe.sample("", torch.randn_like(source), 10, guidance_scale=1.0, output_type="latent")
    error = (back - source).norm() / source.norm()
    assert error < 0.25 * (from_noise - source).norm() / source.norm()  # measured: 1.52 against 8.81 (random weights)


# ---------------------------------------------------------------- the cache, cancel and resume


def test_a_second_prompt_reuses_the_tuning_and_another_video_starts_from_pristine_weights(t2i, tmp_path):
    pipe = make_pipe(t2i)
    first = tav_edit(pipe, video(0), "a red ball", "a blue ball", FAST, cache_dir=tmp_path)
    tuned_a = tuned_state(pipe)
    assert not first.cached and len(first.losses) == 3 and first.frames.shape == (2, 64, 64, 3)
    entry = next(tmp_path.iterdir())
    assert sorted(p.name for p in entry.iterdir()) == ["entry.json", TUNED_FILE]  # no checkpoint, no temp files

    again = tav_edit(pipe, video(0), "a red ball", "a green ball", FAST, cache_dir=tmp_path)  # in memory
    assert again.cached and again.tune_seconds < 0.05 and again.losses == first.losses
    fresh = make_pipe(t2i)  # a new process: from the disk, marking the entry used
    os.utime(entry, (1000, 1000))
    from_disk = tav_edit(fresh, video(0), "a red ball", "a green ball", FAST, cache_dir=tmp_path)
    assert from_disk.cached and from_disk.tune_seconds < 0.5 and from_disk.losses == first.losses
    assert entry.stat().st_mtime > 1000
    assert_same_state(tuned_state(fresh), tuned_a)
    np.testing.assert_array_equal(from_disk.frames, again.frames)

    other = tav_edit(pipe, video(1), "a red ball", "a blue ball", FAST, cache_dir=tmp_path)
    assert not other.cached and len(list(tmp_path.iterdir())) == 2
    alone = make_pipe(t2i)
    alone.tune(video(1), "a red ball", FAST)
    assert_same_state(tuned_state(pipe), tuned_state(alone))


def test_a_model_retrained_in_place_does_not_reuse_the_old_tunings(tmp_path):
    """The tuned-weight cache is keyed by the model's files, not only its path: tunings of the old weights would
    replace the new model's tuned layers."""
    folder = tmp_path / "t2i"
    (folder / "unet").mkdir(parents=True)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"first")
    frames, settings = np.zeros((2, 8, 8, 3), np.uint8), PRESETS["space"]
    key = cache_key(frames, "a cat", str(folder), settings)
    assert cache_key(frames, "a cat", str(folder), settings) == key
    weights.write_bytes(b"second!")  # retrained in place
    os.utime(weights, (time.time() + 10, time.time() + 10))
    assert cache_key(frames, "a cat", str(folder), settings) != key
    assert cache_key(frames, "a dog", str(folder), settings) != cache_key(frames, "a cat", str(folder), settings)


def test_cancel_stops_tuning_and_a_later_call_resumes_from_the_checkpoint(t2i, tmp_path):
    settings = TAVSettings(tune_steps=6, lr=1e-3, checkpoint_every=2)
    pipe, cancel, seen = make_pipe(t2i), threading.Event(), []

    def on_step(step, total, loss):
        seen.append(step)
        if step == 3:
            cancel.set()

    with pytest.raises(TuningCancelled, match="step 3 of 6"):
        pipe.tune(video(0), "a red ball", settings, on_step, cancel, checkpoint_dir=tmp_path)
    assert (tmp_path / CHECKPOINT_FILE).is_file() and seen == [1, 2, 3]

    def killed(step, total, loss):  # a crash after step 5: the last periodic checkpoint is step 4
        seen.append(step)
        if step == 5:
            raise KeyboardInterrupt

    seen.clear()
    with pytest.raises(KeyboardInterrupt):
        pipe.tune(video(0), "a red ball", settings, killed, checkpoint_dir=tmp_path)
    assert seen == [4, 5]

    seen.clear()
    losses = pipe.tune(video(0), "a red ball", settings, lambda step, total, loss: seen.append(step),
                       checkpoint_dir=tmp_path)  # fmt: skip
    assert seen == [5, 6] and len(losses) == 6
    uninterrupted = make_pipe(t2i)
    assert uninterrupted.tune(video(0), "a red ball", settings) == losses
    assert_same_state(tuned_state(pipe), tuned_state(uninterrupted))

    (tmp_path / CHECKPOINT_FILE).write_bytes((tmp_path / CHECKPOINT_FILE).read_bytes()[:200])  # a crash cut it short
    seen.clear()
    with pytest.warns(UserWarning, match="is damaged .*; tuning from the start"):
        again = pipe.tune(video(0), "a red ball", settings, lambda step, total, loss: seen.append(step),
                          checkpoint_dir=tmp_path)  # fmt: skip
    assert seen == [1, 2, 3, 4, 5, 6] and again == losses


def test_a_cancel_after_tuning_stops_inversion_and_a_damaged_cached_tuning_is_tuned_again(t2i, tmp_path):
    cancel = threading.Event()

    def cancel_at_the_end(step, total, loss):  # pressed during the last tuning step: inversion must not run
        if step == total:
            cancel.set()

    pipe = make_pipe(t2i)
    with pytest.raises(Cancelled, match="inversion cancelled"):
        tav_edit(pipe, video(0), "a red ball", "a blue ball", FAST, cache_dir=tmp_path, callback=cancel_at_the_end,
                 cancel=cancel)  # fmt: skip
    (tuned,) = tmp_path.glob(f"*/{TUNED_FILE}")  # the finished tuning is kept
    first = tav_edit(make_pipe(t2i), video(0), "a red ball", "a blue ball", FAST, cache_dir=tmp_path)
    assert first.cached

    tuned.write_bytes(tuned.read_bytes()[:100])  # a crash that lost the end of the file
    with pytest.warns(UserWarning, match="is damaged .*; tuning again"):
        again = tav_edit(make_pipe(t2i), video(0), "a red ball", "a blue ball", FAST, cache_dir=tmp_path)
    assert not again.cached and again.losses == first.losses
    np.testing.assert_array_equal(again.frames, first.frames)


# ---------------------------------------------------------------- inputs, the toy model, the command


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(source_prompt="  "), "`source_prompt` must be a non-empty caption"),
        (dict(prompt=""), "`prompt` must be a non-empty caption"),
        (dict(settings=TAVSettings(tune_steps=0)), "`tune_steps` must be at least 1, got 0"),
        (dict(settings=TAVSettings(steps=0)), "`steps` must be at least 1, got 0"),
        (dict(settings=TAVSettings(guidance_scale=100)), r"`guidance_scale` must be in \[0.0, 30.0\], got 100"),
        (dict(settings=TAVSettings(lr=0)), "`lr` must be > 0, got 0"),
        (dict(frames=video(0)[:, :60]), "multiples of 8, got 60x64"),
        (dict(frames=np.zeros((65, 64, 64, 3), np.uint8)), "1 to 64 frames, got 65"),
    ],
)
def test_bad_inputs_are_refused_before_any_work(t2i, change, message):
    arguments = dict(frames=video(0), source_prompt="a red ball", prompt="a blue ball", settings=FAST) | change
    with pytest.raises(ValueError, match=message):
        tav_edit(make_pipe(t2i), **arguments)


def test_presets_are_the_official_settings_and_the_spaces():
    from insv2v.ui.compare_tab import PRESET_STEPS

    assert tuple(PRESETS) == tav_cli.PRESET_NAMES
    assert {name: PRESETS[name].tune_steps for name in ("space", "official")} == PRESET_STEPS  # the Compare tab's
    official, space = PRESETS["official"], PRESETS["space"]
    assert (official.tune_steps, official.lr, official.weight_decay, official.frames) == (500, 3e-5, 1e-2, 24)
    assert (official.inversion_steps, official.steps, official.guidance_scale) == (50, 50, 12.5)
    assert (space.tune_steps, space.lr, space.frames) == (300, 3.5e-5, 8)


def test_the_toy_text_to_image_model_tunes_inverts_and_edits():
    pipe = TuneAVideoPipeline.from_t2i(TOY_T2I)  # PixelUnshuffleAutoencoder, x0 prediction
    pipe.set_progress_bar_config(disable=True)
    frames = read_video(EXAMPLES / "toy_colour_11.mp4", max_frames=2, stride=2, resolution=64, multiple=4).frames
    source = pipe.encode_frames(frames)[0]
    back = pipe.sample("", pipe.invert(source, 20), 20, guidance_scale=1.0, output_type="latent")
    from_noise = pipe.sample("", torch.randn_like(source), 20, guidance_scale=1.0, output_type="latent")
    error, baseline = ((x - source).norm() / source.norm() for x in (back, from_noise))
    assert error < 0.5 * baseline  # measured: 0.45 against 1.21 (trained, 20 steps)
    result = tav_edit(pipe, frames, "a white circle bouncing on an ocean", "a red circle bouncing on an ocean",
                      TAVSettings(tune_steps=2, inversion_steps=5, steps=5))  # fmt: skip
    assert result.frames.shape == (2, 64, 64, 3) and np.isfinite(result.losses).all()


def test_the_command_tunes_edits_and_reuses_its_cache(t2i, tmp_path, capsys, monkeypatch):
    model = tmp_path / "t2i"
    t2i.save_pretrained(model)
    clip = make_video(tmp_path / "in.mp4", num_frames=8, size=(96, 64))
    command = ["tav", "edit", clip, "--source-prompt", "bands", "--prompt", "red bands", "-o", tmp_path / "out.mp4",
               "--model", model, "--steps", 2, "--frames", 2, "--cache", tmp_path / "cache"]  # fmt: skip
    assert main([str(a) for a in command]) == 0
    info = probe(tmp_path / "out.mp4")
    assert (info.num_frames, info.width, info.height) == (2, 96, 64)
    out = capsys.readouterr().out
    assert "tuning step 2/2" in out and "tuned 2 steps" in out
    assert main([str(a) for a in command]) == 0
    assert "tuned weights from the cache" in capsys.readouterr().out
    saved = Path(clip).read_bytes()
    for output in (clip, tmp_path / "out.txt", tmp_path / "out.gif"):  # refused before the model loads
        assert main([str(a) for a in [*command[:8], output, *command[9:]]]) == 2
        assert "insv2v: error: output" in capsys.readouterr().err
    assert Path(clip).read_bytes() == saved

    def interrupted(*args):  # Ctrl-C while tuning: the command's handler asks tuning to stop at a step's end
        os.kill(os.getpid(), signal.SIGINT)
        assert args[-1].is_set()
        raise TuningCancelled(1, 2)

    monkeypatch.setattr("insv2v.tav.pipeline.tav_edit", interrupted)
    before = signal.getsignal(signal.SIGINT)  # Python's own, or SIG_IGN where the tests run in the background
    assert main([str(a) for a in command]) == 130
    assert "resumes the tuning from its last checkpoint" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is before  # put back
    for flags, words in ((["--prompt", " "], "`prompt` must be a non-empty caption"),
                         (["--guidance", "50"], r"`guidance_scale` must be in \[0.0, 30.0\], got 50")):  # fmt: skip
        assert main([str(a) for a in [*command[:-2], *flags, "--model", tmp_path / "missing"]]) == 2
        assert re.search(words, capsys.readouterr().err)  # before the (missing) model is looked for
