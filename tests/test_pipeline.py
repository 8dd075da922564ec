"""InsV2VPipeline on tiny random components: shapes, reproducibility, the LVSC promise, errors, save/load."""

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2DiscreteScheduler,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
)

from insv2v import InsV2VPipeline
from insv2v.guidance import dual_guidance
from insv2v.models import inflate_unet
from insv2v.testing.tiny import tiny_components, tiny_pipeline

H, W = 32, 48  # pixels; latents 4x6


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def video(frames=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (frames, H, W, 3), dtype=np.uint8)


def run(pipe, v, **kwargs):
    kwargs.setdefault("num_inference_steps", 2)
    kwargs.setdefault("generator", torch.Generator().manual_seed(0))
    return pipe(v, "make it snowy", **kwargs).frames


def test_inflated_unet_equals_2d_unet_frame_by_frame():
    torch.manual_seed(0)
    unet2d = UNet2DConditionModel(
        sample_size=8, in_channels=8, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
    ).eval()  # fmt: skip
    video_unet = inflate_unet(unet2d).eval()
    zeroed = [n for n, p in video_unet.named_parameters() if "motion_modules" in n and "proj_out" in n]
    assert zeroed and all(video_unet.get_parameter(n).abs().max() == 0 for n in zeroed)
    assert video_unet.config.in_channels == 8 and not video_unet.config.use_motion_mid_block
    x = torch.randn(2, 8, 5, 8, 12)  # (b, c, f, h, w)
    text = torch.randn(2, 7, 32)
    with torch.no_grad():
        out = video_unet(x, 500, encoder_hidden_states=text.repeat_interleave(5, 0)).sample
        per_frame = x.permute(0, 2, 1, 3, 4).reshape(10, 8, 8, 12)  # (b*f, c, h, w)
        ref = unet2d(per_frame, 500, encoder_hidden_states=text.repeat_interleave(5, 0)).sample
    ref = ref.reshape(2, 5, 4, 8, 12).permute(0, 2, 1, 3, 4)
    assert out.shape == (2, 4, 5, 8, 12)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_output_types_and_shapes(pipe):
    v = video(5)
    frames = run(pipe, v, frames_per_clip=4, ref_frames=1)
    assert frames.shape == (5, H, W, 3) and frames.dtype == np.float32
    assert frames.min() >= 0 and frames.max() <= 1
    latents = run(pipe, v, frames_per_clip=4, ref_frames=1, output_type="latent")
    assert latents.shape == (1, 4, 5, H // 8, W // 8)
    pt = run(pipe, v, frames_per_clip=4, ref_frames=1, output_type="pt")
    assert pt.shape == (5, 3, H, W)
    torch.testing.assert_close(pt.permute(0, 2, 3, 1).numpy(), frames)
    pil = run(pipe, v, frames_per_clip=4, ref_frames=1, output_type="pil")
    assert len(pil) == 5 and pil[0].size == (W, H)


def test_same_seed_same_output_and_latents_equal_generator(pipe):
    v = video(6)
    a = run(pipe, v, frames_per_clip=4, ref_frames=2)
    b = run(pipe, v, frames_per_clip=4, ref_frames=2)
    np.testing.assert_array_equal(a, b)
    c = run(pipe, v, frames_per_clip=4, ref_frames=2, generator=torch.Generator().manual_seed(1))
    assert np.abs(a - c).max() > 0.01
    # DDIM is deterministic given the initial noise, so `latents=` alone reproduces the edit.
    ddim = InsV2VPipeline(**{**pipe.components, "scheduler": DDIMScheduler.from_config(pipe.scheduler.config)})
    noise = torch.randn(1, 4, 6, H // 8, W // 8, generator=torch.Generator().manual_seed(3))
    d1 = run(ddim, v, latents=noise, generator=None)
    d2 = run(ddim, v, latents=noise.clone(), generator=None)
    np.testing.assert_array_equal(d1, d2)


@pytest.mark.parametrize("scheduler", [UniPCMultistepScheduler, HeunDiscreteScheduler, EulerAncestralDiscreteScheduler])
def test_any_diffusers_scheduler_samples(pipe, scheduler):
    """Some schedulers' `step` takes a generator (Euler ancestral), others none (UniPC, Heun)."""
    other = InsV2VPipeline(**{**pipe.components, "scheduler": scheduler.from_config(pipe.scheduler.config)})
    frames = run(other, video(5), frames_per_clip=4, ref_frames=1)
    assert frames.shape == (5, H, W, 3) and np.isfinite(frames).all()


def lvsc_predictions(pipe, scheduler) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The predicted x0 of every scheduler step of a 6-frame edit in two clips of 4 (2 reference frames, LVSC for half
    of 4 steps) with `scheduler`, and the final latents."""
    other = InsV2VPipeline(**{**pipe.components, "scheduler": scheduler})
    predicted, step = [], other.scheduler.step

    def recording(*args, **kwargs):
        out = step(*args, **{**kwargs, "return_dict": True})
        predicted.append(out.pred_original_sample)
        return (out.prev_sample,)

    other.scheduler.step = recording
    latents = run(other, video(6), frames_per_clip=4, ref_frames=2, lvsc_fraction=0.5, num_inference_steps=4,
                  output_type="latent")  # fmt: skip
    return predicted, latents


@pytest.mark.parametrize(
    "scheduler, config",
    [(DDIMScheduler, {}), (EulerDiscreteScheduler, {"use_karras_sigmas": True}), (EulerAncestralDiscreteScheduler, {})],
)
def test_lvsc_reference_frames_predict_their_latents_with_any_scheduler(pipe, scheduler, config):
    """The second clip's reference frames (2, 3 of 6) predict the first clip's final latents of those frames while
    LVSC corrects (its first 2 of 4 steps), also where the scheduler steps by sigmas between the table's timesteps."""
    predicted, latents = lvsc_predictions(pipe, scheduler.from_config(pipe.scheduler.config, **config))
    assert len(predicted) == 8  # two clips of 4 steps
    for x0 in predicted[4:6]:
        torch.testing.assert_close(x0[:, :, :2], latents[:, :, 2:4], atol=2e-5, rtol=0)
    assert (predicted[6][:, :, :2] - latents[:, :, 2:4]).abs().max() > 1e-3  # uncorrected after LVSC's share


def test_lvsc_corrects_a_second_order_step_at_the_sigma_it_evaluates(pipe):
    """KDPM2 evaluates its second stage at an interpolated sigma: the reference frames' predicted x0 must still be the
    first clip's latents there (corrected at the table's sigma, it was not)."""
    predicted, latents = lvsc_predictions(pipe, KDPM2DiscreteScheduler.from_config(pipe.scheduler.config))
    assert len(predicted) == 2 * 7  # per clip 2 x 4 - 1 evaluations, the first 4 (i < 3.5) corrected
    for x0 in predicted[7:11]:  # two of them second-order
        torch.testing.assert_close(x0[:, :, :2], latents[:, :, 2:4], atol=2e-5, rtol=0)


def test_video_latents_input_equals_video_input(pipe):
    v = video(6)
    latents = pipe.encode_video(v, chunk_size=4)
    assert latents.shape == (1, 4, 6, H // 8, W // 8)
    # Encoding in chunks equals encoding at once.
    torch.testing.assert_close(latents, pipe.encode_video(v, chunk_size=16), atol=1e-6, rtol=0)
    a = run(pipe, v, frames_per_clip=4, ref_frames=1, output_type="latent")
    b = pipe(video_latents=latents, prompt="make it snowy", num_inference_steps=2, frames_per_clip=4, ref_frames=1,
             generator=torch.Generator().manual_seed(0), output_type="latent").frames  # fmt: skip
    torch.testing.assert_close(a, b)


def test_three_branches_in_one_batch_match_separate_calls(pipe):
    torch.manual_seed(0)
    x = torch.randn(1, 4, 3, 4, 6)
    source = torch.randn(1, 4, 3, 4, 6)
    embeds = torch.randn(3, 77, 32)
    guided = dual_guidance(*pipe._branches(x, source, torch.zeros_like(source), embeds, torch.tensor(500)), 1.5, 7.5)

    def eps(cond, text):
        inp = torch.cat([x, cond], dim=1)
        return pipe.unet(inp, torch.tensor(500), encoder_hidden_states=text.repeat(3, 1, 1)).sample

    expected = dual_guidance(eps(torch.zeros_like(source), embeds[0:1]), eps(source, embeds[1:2]),
                             eps(source, embeds[2:3]), 1.5, 7.5)  # fmt: skip
    torch.testing.assert_close(guided, expected, atol=1e-4, rtol=1e-4)


def test_video_guidance_1_skips_the_unconditional_branch_and_changes_nothing(pipe, monkeypatch):
    """At video CFG 1 the unconditional branch has weight 0: the UNet runs on 2 branches, not 3, same result."""
    batches = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    settings = dict(num_inference_steps=3, frames_per_clip=4, ref_frames=1, output_type="latent",
                    guidance_scale=5.0, video_guidance_scale=1.0)  # fmt: skip
    try:
        fast = pipe(video(), "make it snowy", generator=torch.Generator().manual_seed(0), **settings).frames
        assert batches == [2] * 3 * 2  # two clips, three steps
        full = pipe._branches
        monkeypatch.setattr(pipe, "_branches", lambda *args: full(*args[:5]))  # all three, as before
        batches.clear()
        every = pipe(video(), "make it snowy", generator=torch.Generator().manual_seed(0), **settings).frames
        assert batches == [3] * 3 * 2
    finally:
        hook.remove()
    torch.testing.assert_close(fast, every, rtol=1e-4, atol=1e-4)  # float rounding of another batch size


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_reference_frames_reproduce_the_earlier_clip(pipe, prediction_type):
    """With LVSC on every step and deterministic DDIM ending at alpha=1, the predicted x0 of the reference
    frames is the earlier clip's result at every step, so a clip ends exactly where the earlier one did."""
    config = {**pipe.scheduler.config, "prediction_type": prediction_type, "set_alpha_to_one": True}
    ddim = InsV2VPipeline(**{**pipe.components, "scheduler": DDIMScheduler.from_config(config)})
    ends = []

    def keep_clip_ends(p, step, t, kwargs):
        if (step + 1) % 3 == 0:
            ends.append(kwargs["latents"].clone())
        return kwargs

    result = run(ddim, video(10), num_inference_steps=3, frames_per_clip=4, ref_frames=2, lvsc_fraction=1.0,
                 output_type="latent", callback_on_step_end=keep_clip_ends)  # fmt: skip
    # Clips: 0-4 (new 0-4), 2-6 (refs 2,3), 4-8 (refs 4,5), 6-10 (refs 6,7).
    assert len(ends) == 4
    for k, start in enumerate([2, 4, 6], start=1):
        torch.testing.assert_close(ends[k][:, :, :2], result[:, :, start : start + 2], atol=1e-4, rtol=1e-4)
    # Without correction the reference frames drift away from the earlier clip.
    ends.clear()
    run(ddim, video(10), num_inference_steps=3, frames_per_clip=4, ref_frames=2, lvsc_fraction=0.0,
        output_type="latent", callback_on_step_end=keep_clip_ends)  # fmt: skip
    assert (ends[1][:, :, :2] - result[:, :, 2:4]).abs().max() > 1e-2


def test_lvsc_fraction_zero_equals_independent_overlapping_clips(pipe, monkeypatch):
    """Turning LVSC off changes every later clip, and leaves the first clip alone; motion compensation, which only
    steers LVSC, then changes nothing and measures no flow."""
    v = video(8)
    on = run(pipe, v, frames_per_clip=4, ref_frames=2, lvsc_fraction=1.0)
    off = run(pipe, v, frames_per_clip=4, ref_frames=2, lvsc_fraction=0.0)
    np.testing.assert_array_equal(on[:4], off[:4])
    assert np.abs(on[4:] - off[4:]).max() > 0

    def no_flows(*args):
        raise AssertionError("flows measured for LVSC that is off")

    monkeypatch.setattr("insv2v.pipeline.reference_flows", no_flows)
    np.testing.assert_array_equal(run(pipe, v, frames_per_clip=4, ref_frames=2, lvsc_fraction=0.0,
                                      motion_compensation=True), off)  # fmt: skip


def test_motion_compensation_on_a_static_video_equals_lvsc(pipe):
    still = np.repeat(video(1), 8, axis=0)  # identical frames: optical flow is zero everywhere
    lvsc = run(pipe, still, frames_per_clip=4, ref_frames=2, lvsc_fraction=1.0)
    mc = run(pipe, still, frames_per_clip=4, ref_frames=2, lvsc_fraction=1.0, motion_compensation=True)
    np.testing.assert_allclose(mc, lvsc, atol=2 / 255)


def test_on_frames_streams_every_frame_once_in_order(pipe):
    v = video(11)
    seen = []
    frames = run(pipe, v, frames_per_clip=4, ref_frames=1, on_frames=lambda first, f: seen.append((first, f)))
    starts = [first for first, _ in seen]
    assert starts == [0, 4, 7, 10]  # clips 0-4, 3-7, 6-10, 7-11 (last one shifted back)
    streamed = np.concatenate([f for _, f in seen])
    assert streamed.dtype == np.uint8 and streamed.shape == (11, H, W, 3)
    np.testing.assert_array_equal(streamed, (frames * 255).round().astype(np.uint8))


@pytest.mark.parametrize("stop_at", [2, 1])  # the second clip's first step; the first clip's last step (finished)
def test_interrupt_returns_only_finished_clips(pipe, stop_at):
    def stop(p, step, t, kwargs):  # 2 steps a clip
        if step == stop_at:
            p._interrupt = True
        return kwargs

    seen = []
    frames = run(pipe, video(10), frames_per_clip=4, ref_frames=1, callback_on_step_end=stop,
                 on_frames=lambda first, f: seen.append(len(f)))  # fmt: skip
    assert seen == [4] and frames.shape[0] == 4 and pipe.interrupt


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"prompt": "  "}, "`prompt` must be a non-empty"),
        ({"guidance_scale": 100.0}, "`guidance_scale` must be in"),
        ({"video_guidance_scale": -1.0}, "`video_guidance_scale` must be in"),
        ({"frames_per_clip": 4, "ref_frames": 4}, "`ref_frames` must be in [0, frames_per_clip)"),
        ({"frames_per_clip": 64}, "`frames_per_clip` must be in [2, 32]"),
        ({"frames_per_clip": 8.0}, "`frames_per_clip` must be an integer, got 8.0"),
        ({"ref_frames": True}, "`ref_frames` must be an integer, got True"),
        ({"num_inference_steps": 0}, "`num_inference_steps`"),
        ({"lvsc_fraction": 1.5}, "`lvsc_fraction`"),
        ({"output_type": "gif"}, "`output_type`"),
        ({"latents": torch.zeros(1, 4, 2, 4, 6)}, "`latents` must have shape (1, 4, 6, 4, 6)"),
        ({"video": np.zeros((3, 30, 48, 3), np.uint8)}, "divisible by 8, got 48x30"),
        ({"video": np.zeros((0, 32, 48, 3), np.uint8)}, "(frames, height, width, 3) uint8"),
        ({"video": torch.zeros(3, 3, 32, 48, dtype=torch.uint8)}, "floats in [0, 1], got (3, 3, 32, 48) torch.uint8"),
        ({"video": torch.full((3, 3, 32, 48), 255.0)}, "must be in [0, 1], got [255, 255]"),  # 0-255 pixels
        ({"video": None, "video_latents": torch.zeros(1, 4, 3, 4, 6), "motion_compensation": True}, "optical flow"),
    ],
)
def test_bad_arguments_are_named(pipe, kwargs, words):
    args = {"video": video(6), "prompt": "make it snowy", "num_inference_steps": 1, **kwargs}
    with pytest.raises(ValueError) as err:
        pipe(**args)
    assert words in str(err.value)


def test_save_and_load_round_trip(tmp_path, pipe):
    pipe.save_pretrained(tmp_path)
    loaded = InsV2VPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.unet).__name__ == "UNetMotionModel"
    assert loaded.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    v = video(5)
    np.testing.assert_array_equal(run(pipe, v, frames_per_clip=4, ref_frames=1),
                                  run(loaded, v, frames_per_clip=4, ref_frames=1))  # fmt: skip


def test_tiny_components_are_deterministic():
    a, b = tiny_components(seed=0), tiny_components(seed=0)
    for name in ("unet", "vae", "text_encoder"):
        for (n, p), (_, q) in zip(a[name].state_dict().items(), b[name].state_dict().items(), strict=True):
            assert torch.equal(p, q), n


def test_a_seed_torch_cannot_take_is_refused_before_the_input_is_read(tmp_path):
    from insv2v.editing import EditRecipe, run_edit

    recipe = EditRecipe(input=str(tmp_path / "not-read.mp4"), instruction="make it snowy", seed=2**64)
    with pytest.raises(ValueError, match=r"seed must be between 0 and 2\*\*63 - 1, got 18446744073709551616"):
        run_edit(recipe, tmp_path / "out.mp4", None)
