"""Training smoke runs (all three stages, checkpoint and resume), triplet files, and the toy evaluation's checks."""

import dataclasses
import json
import shutil
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from insv2v import InsV2VPipeline
from insv2v.clip_tokenizer import token_ids
from insv2v.loading import load_fresh
from insv2v.toyworld.dataset import split_seeds, write_triplets
from insv2v.toyworld.evaluate import EDIT_KINDS, edit_correct
from insv2v.toyworld.world import HELDOUT_SEEDS, sample_triplet
from insv2v.train import (
    EDIT_THRESHOLD,
    TrainConfig,
    batches,
    build,
    captioned_clips,
    captioned_frames,
    check_resume,
    clip_loss,
    editing_loss,
    frame_pairs,
    generation_loss,
    learning_rate,
    load_checkpoint,
    min_snr_weight,
    random_triplet,
    save_checkpoint,
    train,
    trainable_parameters,
    training_size,
)
from insv2v.video import probe, read_video


def test_edit_correct_accepts_ground_truth_and_rejects_the_input():
    for i in range(24):
        triplet = sample_triplet(HELDOUT_SEEDS.start + i, kind=EDIT_KINDS[i % 4])
        source, target = triplet.render(8)
        assert edit_correct(triplet, target), triplet.edit
        assert not edit_correct(triplet, source), triplet.edit


def test_write_triplets(tmp_path):
    folders = write_triplets(tmp_path, n=2, seed=5, split="heldout", frames=12)
    assert [f.name for f in folders] == ["0000", "0001"]
    meta = json.loads((folders[1] / "meta.json").read_text())
    assert meta["seed"] == HELDOUT_SEEDS.start + 6 and meta["split"] == "heldout"
    triplet = sample_triplet(meta["seed"])
    assert meta["instruction"] == triplet.edit.instruction and meta["edit_type"] == triplet.edit.kind
    info = probe(folders[1] / "target.mp4")
    assert (info.num_frames, info.width, info.height) == (12, 64, 64)
    decoded = read_video(folders[1] / "target.mp4").frames
    assert np.abs(decoded.astype(int) - triplet.render(12)[1].astype(int)).mean() < 4  # H.264 at high quality
    with pytest.raises(ValueError, match="do not fit"):
        split_seeds("heldout", n=10, seed=len(HELDOUT_SEEDS))


def test_edit_mix_draws_the_named_kinds_in_proportion():
    rng = np.random.default_rng(0)
    kinds = [random_triplet(rng, {"shape": 3, "colour": 1}).edit.kind for _ in range(400)]
    assert set(kinds) == {"shape", "colour"}
    assert kinds.count("shape") / len(kinds) == pytest.approx(0.75, abs=0.06)  # 4.4 standard deviations
    assert {random_triplet(rng).edit.kind for _ in range(100)} == set(EDIT_KINDS)  # default: the world's mix


def test_learning_rate_schedule():
    config = TrainConfig("2d", "unused", steps=100, lr=1e-3, warmup=10)
    assert learning_rate(0, config) == pytest.approx(1e-4)
    assert learning_rate(9, config) == pytest.approx(1e-3)
    assert learning_rate(99, config) == pytest.approx(1e-4, rel=0.01)


def test_a_resumed_run_that_trains_longer_says_where_its_learning_rate_jumps():
    config = TrainConfig("2d", "unused", steps=1000, lr=1e-3, warmup=10)
    state = {"step": 1000, "data_dir": None, "config": dataclasses.asdict(config)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_resume(config, state)  # the same length: nothing to say
        check_resume(dataclasses.replace(config, steps=2000), {**state, "step": 5})  # still warming up: no jump
    with pytest.warns(UserWarning, match=r"--steps 2000 where the run had 1000: .* goes from 0\.0001 to 0\.000554"):
        check_resume(dataclasses.replace(config, steps=2000), state)


def test_a_setting_newer_than_a_checkpoint_resumes_only_at_its_default():
    config = TrainConfig("t2i", "unused", steps=1000)
    old = {k: v for k, v in dataclasses.asdict(config).items() if k != "high_noise"}  # written before the option
    state = {"step": 500, "data_dir": None, "config": old}
    check_resume(config, state)  # its default is what the run did
    with pytest.raises(ValueError, match=r"other settings \(high_noise: 0\.0 then, 0\.5 now\)"):
        check_resume(dataclasses.replace(config, high_noise=0.5), state)


def test_editing_loss_weights_what_the_edit_changes():
    """A UNet that is off by 1 everywhere: the loss is 1 + edit_weight x the share of values the edit changed."""
    _, helpers = build(TrainConfig("2d", "unused"))
    rng = np.random.default_rng(0)
    source, target, instructions, _ = frame_pairs(rng, 4)
    changed = ((target - source).abs() > EDIT_THRESHOLD).float().mean().item()
    assert 0.01 < changed < 0.9

    class OffByOne(torch.nn.Module):
        def forward(self, sample, t, encoder_hidden_states):
            target_latents = helpers["vae"].encode(target).latent_dist.mode()
            return type("Out", (), {"sample": target_latents + 1})()

    text_encoder = lambda ids: (torch.zeros(len(ids), ids.shape[1], 64),)  # noqa: E731
    for weight in (0.0, 4.0):
        config = TrainConfig("2d", "unused", edit_weight=weight)
        loss = editing_loss(OffByOne(), helpers, text_encoder, source, target, instructions, config, rng)
        assert loss.item() == pytest.approx(1 + weight * changed, rel=1e-5)


def test_a_unet_runs_on_videos_the_same_wrapped_for_distributed_training():
    """Under `accelerate launch`, DistributedDataParallel wraps the UNet: a 2-D one must still see frames as images."""
    from insv2v.models import unet_on_video
    from insv2v.testing.tiny import tiny_t2v_pipeline

    unet = tiny_t2v_pipeline("2d").unet

    class Wrapped(torch.nn.Module):  # what DistributedDataParallel looks like from outside: the model as `module`
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

    torch.manual_seed(0)
    sample, text = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 77, unet.config.cross_attention_dim)
    t = torch.tensor([10, 500])
    plain = unet_on_video(unet, sample, t, text)
    assert plain.shape == sample.shape
    assert torch.equal(unet_on_video(Wrapped(unet), sample, t, text), plain)
    frame = unet(sample[1, :, 2][None], t[1:], encoder_hidden_states=text[1:]).sample[0]  # one frame, alone
    torch.testing.assert_close(plain[1, :, 2], frame, rtol=1e-5, atol=1e-5)


def test_generation_loss_weights_the_shapes():
    """A UNet that is off by 1 everywhere: the loss is 1 + shape_weight x the share of shape pixels in the frames."""
    modules, helpers = build(TrainConfig("t2i", "unused"))
    clips, _, coverage, captions, _ = captioned_clips(np.random.default_rng(0), 4, 1)
    shapes = coverage.mean().item()
    assert 0.01 < shapes < 0.5
    unet = modules["unet"]  # run as a 2-D UNet is on frames, its forward off by one
    unet.forward = lambda sample, t, encoder_hidden_states: type(
        "Out", (), {"sample": helpers["vae"].encode(clips[:, :, 0]).latent_dist.mode() + 1})()  # fmt: skip
    text_encoder = lambda ids: (torch.zeros(len(ids), ids.shape[1], 64),)  # noqa: E731
    for weight in (0.0, 4.0):
        config = TrainConfig("t2i", "unused", shape_weight=weight)
        loss = generation_loss(unet, helpers, text_encoder, clips, coverage, captions, config,
                               np.random.default_rng(1))  # fmt: skip
        assert loss.item() == pytest.approx(1 + weight * shapes, rel=1e-5)


@pytest.mark.parametrize("kind", ["shape", "colour", "background"])
def test_edit_swap_captions_and_draws_the_scene_edited_in_place(kind):
    """A swapped sample's clip and caption are its scene after one edit of the given kind, its source the scene as
    drawn: a shape edit or a recolouring changes pixels only inside the two outlines and names a kind or colour no
    other shape has; a background edit changes only the caption's background. An unswapped sample's clip is its
    source."""
    from insv2v.toyworld.reader import read_caption

    clips, sources, coverage, captions, swapped = captioned_clips(np.random.default_rng(3), 24, 2, 0.5, [kind])
    assert 6 < swapped.sum() < 18
    changed = (clips != sources).any(dim=1)  # (n, f, h, w)
    assert not changed[~swapped].any()
    for i in np.flatnonzero(swapped.numpy()):
        assert changed[i].any()
        reading = read_caption(captions[i])
        if kind != "background" and reading.style != "sketch":  # a sketch's lines reach a little beyond outlines
            assert (coverage[i, 0][changed[i]] > 0).all()  # the changed pixels lie inside one of the two outlines
        shapes = captions[i].split(" on ")[0].count(" and ") + 1
        assert len(reading.shapes) == len(set(reading.shapes.values())) == shapes  # colours and kinds stay distinct
    plain = captioned_clips(np.random.default_rng(3), 4, 1)
    assert not plain[4].any() and torch.equal(plain[0], plain[1])


@pytest.mark.parametrize("prediction_type", ["sample", "epsilon", "v_prediction"])
def test_edit_swap_targets_the_clip_from_a_strongly_noised_source(prediction_type):
    """A UNet that knows the clip (the swapped kind) has no loss: whatever it predicts, x0, noise or velocity, is
    the clip's for the noisy input made from the source; and a swapped sample is noised to SWAP_FLOOR or more."""
    from diffusers import DDIMScheduler

    from insv2v.train import SWAP_FLOOR

    modules, helpers = build(TrainConfig("t2i", "unused"))
    scheduler = helpers["scheduler"] = DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type)
    vae = helpers["vae"]
    clips, sources, coverage, captions, swapped = captioned_clips(np.random.default_rng(4), 8, 1, edit_swap=0.5)
    assert swapped.any() and not swapped.all()
    x0 = vae.encode(clips[:, :, 0]).latent_dist.mode() * vae.config.scaling_factor
    seen = []

    def oracle(sample, t, encoder_hidden_states):  # the t2i UNet's forward, run as a 2-D UNet is on frames
        seen.append(t)
        alpha_bar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        noise = (sample - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
        out = {"sample": x0, "epsilon": noise, "v_prediction": scheduler.get_velocity(x0, noise, t)}
        return type("Out", (), {"sample": out[prediction_type]})()

    unet = modules["unet"]
    unet.forward = oracle

    text_encoder = lambda ids: (torch.zeros(len(ids), ids.shape[1], 64),)  # noqa: E731
    for seed in range(3):
        config = TrainConfig("t2i", "unused", edit_swap=0.5)
        loss = generation_loss(unet, helpers, text_encoder, clips, coverage, captions, config,
                               np.random.default_rng(seed), sources, swapped)  # fmt: skip
        assert loss.item() < 1e-8
    floor = SWAP_FLOOR * scheduler.config.num_train_timesteps
    assert all((t[swapped] >= floor).all() for t in seen)
    assert any((t[~swapped] < floor).any() for t in seen)  # the others are noised anywhere on the schedule


@pytest.mark.parametrize("prediction_type", ["sample", "epsilon", "v_prediction"])
def test_min_snr_weights_every_prediction_type_as_the_x0_error_times_min_snr_gamma(prediction_type):
    """One belief about x0, written as each prediction type: the weighted error of that output is min(SNR, gamma)
    times the x0 error, at every noise level."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type)
    t = torch.tensor([0, 50, 300, 600, 900, 980])  # SNR from above gamma to 1e-4 (999: zero SNR, below)
    a = scheduler.alphas_cumprod[t].view(-1, 1)
    generator = torch.Generator().manual_seed(0)
    x0, noise, wrong = (torch.randn(len(t), 8, generator=generator) for _ in range(3))
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    x0_hat = x0 + 0.1 * wrong
    eps_hat = (x_t - a.sqrt() * x0_hat) / (1 - a).sqrt()
    outputs = {
        "sample": (x0_hat, x0),
        "epsilon": (eps_hat, noise),
        "v_prediction": (a.sqrt() * eps_hat - (1 - a).sqrt() * x0_hat, a.sqrt() * noise - (1 - a).sqrt() * x0),
    }
    predicted, target = outputs[prediction_type]
    weighted = min_snr_weight(scheduler, t, 5.0) * ((predicted - target) ** 2).mean(-1)
    expected = (a / (1 - a)).clamp(max=5.0).squeeze(1) * ((x0_hat - x0) ** 2).mean(-1)
    torch.testing.assert_close(weighted, expected, rtol=1e-3, atol=0)
    # A schedule that ends at zero SNR (Lin et al. 2024): the pure-noise step, where x0 cannot be told, weighs
    # nothing in x0 or velocity, and its noise error weighs 1 (min(SNR, gamma) / SNR as SNR -> 0).
    zero_snr = DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type,
                             rescale_betas_zero_snr=True)  # fmt: skip
    assert zero_snr.alphas_cumprod[-1] == 0
    assert min_snr_weight(zero_snr, torch.tensor([999]), 5.0).item() == (prediction_type == "epsilon")


def test_high_noise_draws_a_share_of_the_timesteps_from_where_the_noise_hides_outlines(tmp_path):
    from insv2v.train import HIGH_NOISE_FLOOR

    modules, helpers = build(TrainConfig("t2i", "unused"))
    clips, _, coverage, captions, _ = captioned_clips(np.random.default_rng(4), 64, 1)
    floor = HIGH_NOISE_FLOOR * helpers["scheduler"].config.num_train_timesteps
    seen = []
    forward = modules["unet"].forward
    modules["unet"].forward = lambda sample, t, **kwargs: seen.append(t) or forward(sample, t, **kwargs)
    text_encoder = lambda ids: (torch.zeros(len(ids), ids.shape[1], 64),)  # noqa: E731
    torch.manual_seed(0)  # the timesteps' draws
    for share in (1.0, 0.5, 0.0):
        config = TrainConfig("t2i", "unused", high_noise=share)
        generation_loss(modules["unet"], helpers, text_encoder, clips, coverage, captions, config,
                        np.random.default_rng(0))  # fmt: skip
    high = [(t >= floor).float().mean().item() for t in seen]
    assert high[0] == 1.0 and 0.45 < high[1] < 0.75 and high[2] < 0.4  # 0.5 + 0.5 x 0.2 expected, then 0.2
    for stage, share in (("2d", 0.5), ("video", 0.5), ("t2i", 1.5)):
        with pytest.raises(ValueError, match="--high-noise is a share from 0 to 1 for stages t2i and t2v"):
            train(TrainConfig(stage=stage, out_dir=str(tmp_path / "no"), high_noise=share))
    assert not (tmp_path / "no").exists()


def test_min_snr_is_for_the_generators_and_a_positive_gamma(tmp_path):
    for stage, gamma in (("2d", 5.0), ("video", 5.0), ("t2i", 0.0), ("t2i", -1.0)):
        with pytest.raises(ValueError, match="--snr-gamma is a positive number for stages t2i and t2v"):
            train(TrainConfig(stage=stage, out_dir=str(tmp_path / "no"), snr_gamma=gamma))
    assert not (tmp_path / "no").exists()


def test_edit_swap_is_a_share_of_the_world_s_edits_for_the_generators(tmp_path):
    for stage, share in (("2d", 0.5), ("video", 0.5), ("t2i", 1.5), ("t2v", -0.1), ("t2i", float("nan"))):
        with pytest.raises(ValueError, match="--edit-swap is a share from 0 to 1 for stages t2i and t2v"):
            train(TrainConfig(stage=stage, out_dir=str(tmp_path / "no"), edit_swap=share))
    for edits in ([], ["colour", "size"]):
        with pytest.raises(ValueError, match="--swap-edits are edit kinds"):
            train(TrainConfig(stage="t2i", out_dir=str(tmp_path / "no"), edit_swap=0.5, swap_edits=edits))
    assert not (tmp_path / "no").exists()


def test_the_clip_stage_with_edited_frames_sees_each_pairs_edit_beside_its_input(tmp_path):
    """--edited-frames: frames 0..n/2-1 are inputs, n/2.. their edits, each captioned as drawn (styles too)."""
    from insv2v.toyworld.reader import read_caption

    frames, captions, negatives = captioned_frames(np.random.default_rng(0), 64, edited=True)
    assert negatives == [] and frames.shape == (64, 3, 64, 64) and frames.min() >= -1 and frames.max() <= 1
    for k in range(32):  # the edit changes each pair's caption and pixels
        assert read_caption(captions[k]) != read_caption(captions[k + 32])
        assert not torch.equal(frames[k], frames[k + 32])
    assert any(read_caption(c).style for c in captions[32:]) and not any(read_caption(c).style for c in captions[:32])
    plain, _, _ = captioned_frames(np.random.default_rng(0), 64)
    assert plain.shape == frames.shape  # without the flag: inputs alone, as the shipped toy CLIP learned
    with pytest.raises(ValueError, match=r"--edited-frames takes an even --batch-size .* got 3"):
        train(TrainConfig("clip", str(tmp_path / "odd"), steps=1, batch_size=3, edited_frames=True))
    with pytest.raises(ValueError, match="--edited-frames is for stage clip"):
        train(TrainConfig("2d", str(tmp_path / "2d"), steps=1, batch_size=2, edited_frames=True))
    assert not (tmp_path / "odd").exists() and not (tmp_path / "2d").exists()
    clip = train(TrainConfig("clip", str(tmp_path / "clip"), steps=1, batch_size=4, warmup=1, edited_frames=True,
                             calibrate=0))  # fmt: skip
    assert (clip / "model.safetensors").is_file() and json.loads((clip / "training.json").read_text())["config"][
        "edited_frames"]  # fmt: skip


def test_kind_negatives_name_one_shape_as_another_kind_and_join_the_captions_each_image_chooses_from(tmp_path):
    """--kind-negatives: each frame's negative caption differs from its own in exactly one shape's kind; the loss
    without negatives is CLIPModel's own, and a negative the image prefers raises it. --vision-patch: finer patches."""
    from insv2v.toyworld.models import toy_clip, toy_tokenizer
    from insv2v.toyworld.reader import read_caption

    frames, captions, negatives = captioned_frames(np.random.default_rng(0), 16, edited=True, kind_negatives=True)
    assert frames.shape == (16, 3, 64, 64) and len(captions) == len(negatives) == 16
    for own, negative in zip(captions, negatives, strict=True):
        own, negative = read_caption(own), read_caption(negative)
        assert (own.background, own.style) == (negative.background, negative.style)
        assert own.shapes.keys() == negative.shapes.keys()  # colour -> kind
        assert sum(own.shapes[colour] != negative.shapes[colour] for colour in own.shapes) == 1
    same, _, _ = captioned_frames(np.random.default_rng(0), 16, edited=True)
    assert torch.equal(same, frames)  # the negatives are drawn after the frames: the same frames with or without

    torch.manual_seed(0)
    clip, tokenizer = toy_clip(), toy_tokenizer()
    ids = token_ids(tokenizer, captions, say_cut=False)
    own_loss = clip(input_ids=ids, pixel_values=(frames + 1) / 2, return_loss=True).loss
    with torch.no_grad():
        assert torch.allclose(clip_loss(clip, tokenizer, frames, captions), own_loss, atol=1e-6)
        easy = clip_loss(clip, tokenizer, frames, captions, ["a photo of nothing at all"] * 16)
        hard = clip_loss(clip, tokenizer, frames, captions, captions)  # each image's own caption again, as a negative
    # an added negative only adds terms to each image's softmax; its own caption again scores exactly as high
    assert own_loss < easy < hard
    with pytest.raises(ValueError, match="--kind-negatives is for stage clip"):
        train(TrainConfig("t2i", str(tmp_path / "t2i"), steps=1, kind_negatives=True))
    with pytest.raises(ValueError, match="--vision-patch is 4, 8 or 16 pixels for stage clip, got 4 for stage t2i"):
        train(TrainConfig("t2i", str(tmp_path / "t2i"), steps=1, vision_patch=4))
    trained = train(TrainConfig("clip", str(tmp_path / "clip"), steps=1, batch_size=4, warmup=1, kind_negatives=True,
                                vision_patch=4, calibrate=0))  # fmt: skip
    assert json.loads((trained / "training.json").read_text())["config"]["kind_negatives"]
    assert json.loads((trained / "config.json").read_text())["vision_config"]["patch_size"] == 4  # 16 x 16 patches


def test_a_resnet_image_tower_trains_with_open_clips_loss_and_scores_from_its_folder_as_trained(tmp_path):
    """--image-tower resnet: open_clip's CLIP with CLIP RN50's image tower. Its loss is open_clip's own ClipLoss; the
    run's folder loads through `load_clip` (open_clip's local-dir) and embeds frames and captions as the trained
    weights do; the refusals name the flag."""
    from open_clip.loss import ClipLoss

    from insv2v.metrics import load_clip
    from insv2v.toyworld.models import resnet_clip_tokenizer, toy_resnet_clip

    frames, captions, _ = captioned_frames(np.random.default_rng(0), 8)
    torch.manual_seed(0)
    clip, tokenizer = toy_resnet_clip().eval(), resnet_clip_tokenizer()
    with torch.no_grad():
        images, texts, scale = clip((frames + 1) / 2, tokenizer(captions))
        assert torch.allclose(clip_loss(clip, tokenizer, frames, captions), ClipLoss()(images, texts, scale),
                              atol=1e-6)  # fmt: skip

    trained = train(TrainConfig("clip", str(tmp_path / "rn"), steps=2, batch_size=4, warmup=1, kind_negatives=True,
                                image_tower="resnet", calibrate=0))  # fmt: skip
    assert {"open_clip_config.json", "open_clip_model.safetensors"} <= {p.name for p in trained.iterdir()}
    clip.load_state_dict(load_file(trained / "open_clip_model.safetensors"))
    scorer, pixels = load_clip(str(trained)), (frames + 1) / 2
    as_frames = (pixels * 255).round().byte().permute(0, 2, 3, 1).numpy()  # the frames are 8-bit renders
    with torch.no_grad():
        own_images = F.normalize(clip.encode_image(pixels), dim=-1)
        own_texts = F.normalize(clip.encode_text(tokenizer(captions)), dim=-1)
    assert torch.allclose(scorer.images(as_frames), own_images, atol=1e-5)
    assert torch.allclose(scorer.texts(captions), own_texts, atol=1e-6)
    assert scorer.logit_scale == pytest.approx(clip.logit_scale.exp().item())

    with pytest.raises(ValueError, match="--image-tower is one of vit, resnet for stage clip, got 'resnet' for stage"):
        train(TrainConfig("t2i", str(tmp_path / "t2i"), steps=1, image_tower="resnet"))
    with pytest.raises(ValueError, match="--vision-patch is the ViT's; the resnet image tower has no patches"):
        train(TrainConfig("clip", str(tmp_path / "odd"), steps=1, image_tower="resnet", vision_patch=4))
    with pytest.raises(ValueError, match="is an open_clip folder; the text encoder starts from a transformers"):
        train(TrainConfig("t2i", str(tmp_path / "t2i"), steps=1, clip_dir=str(trained)))


@pytest.mark.slow  # trains three stages
def test_three_stages_train_checkpoint_resume_and_load(tmp_path):
    small = {"batch_size": 2, "log_every": 1, "checkpoint_every": 1, "warmup": 1}
    clip = train(TrainConfig("clip", str(tmp_path / "clip"), steps=2, calibrate=0, **small))
    flat = train(TrainConfig("2d", str(tmp_path / "2d"), steps=2, clip_dir=str(clip), **small))
    # The 2-D stage loads as a per-frame editor: its own weights, the motion modules' outputs zero.
    per_frame = load_fresh(str(flat), torch.device("cpu"), torch.float32)
    weights = per_frame.unet.state_dict()
    saved = load_file(flat / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in saved.items())
    assert all(not v.any() for k, v in weights.items() if "motion_modules" in k and "proj_out" in k)
    per_frame.set_progress_bar_config(disable=True)
    edited = per_frame(sample_triplet(1).render(3)[0], "make the background a forest", num_inference_steps=2).frames
    assert edited.shape == (3, 64, 64, 3)

    video_dir = tmp_path / "video"
    train(TrainConfig("video", str(video_dir), steps=1, frames=3, init_dir=str(flat), **small))
    first = load_file(video_dir / "checkpoint" / "unet.safetensors")
    # Only motion modules learn in the video stage.
    start = load_file(tmp_path / "2d" / "checkpoint" / "unet.safetensors")
    moved = {k for k in first if k in start and not torch.equal(first[k], start[k])}
    assert moved == set()  # no 2-D weight moved...
    assert any("motion_modules" in k and "proj_out" in k and first[k].abs().max() > 0 for k in first)  # ...these did

    # Fine-tuning a 2-D model starts from its weights, not from fresh ones.
    tuned = build(TrainConfig("2d", "unused", init_dir=str(flat)))[0]["unet"].state_dict()
    assert all(
        torch.equal(tuned[k], v) for k, v in load_file(flat / "unet" / "diffusion_pytorch_model.safetensors").items()
    )

    # Resume: a second run with more steps continues from step 1 and appends to the same log.
    final = train(TrainConfig("video", str(video_dir), steps=2, frames=3, init_dir=str(flat), **small))
    log = [json.loads(line) for line in (video_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert json.loads((video_dir / "checkpoint" / "state.json").read_text())["step"] == 2

    pipe = InsV2VPipeline.from_pretrained(final)
    pipe.set_progress_bar_config(disable=True)
    source, _ = sample_triplet(1).render(4)
    out = pipe(source, "make the background a forest", num_inference_steps=2, frames_per_clip=4, ref_frames=1).frames
    assert out.shape == (4, 64, 64, 3)
    assert type(pipe.vae).__name__ == "PixelUnshuffleAutoencoder" and pipe.scheduler.config.prediction_type == "sample"


def test_a_resumed_run_goes_on_as_it_started_from_a_whole_checkpoint(tmp_path):
    run = TrainConfig("clip", str(tmp_path / "clip"), steps=2, batch_size=2, log_every=1, checkpoint_every=1, warmup=1,
                      calibrate=0)  # fmt: skip
    train(run)
    checkpoint = tmp_path / "clip" / "checkpoint"
    with pytest.raises(ValueError, match=r"other settings \(lr: 0\.0003 then, 0\.001 now\); .*only --calibrate, "
                       "--checkpoint-every, --grad-accum, --log-every, --push-to-hub, --report-to, --steps, --threads, "
                       "--workers may change"):  # fmt: skip
        train(dataclasses.replace(run, steps=3, lr=1e-3))
    with pytest.raises(ValueError, match="has trained 2 steps already; --steps must be at least that"):
        train(dataclasses.replace(run, steps=1))
    assert json.loads((tmp_path / "clip" / "config.json").read_text())["lr"] == 3e-4  # nothing refused was written

    # Killed between swapping the old checkpoint out and the new one in: the new one, complete, is used.
    tmp, old = checkpoint.with_name("checkpoint.tmp"), checkpoint.with_name("checkpoint.old")
    shutil.copytree(checkpoint, tmp)
    (tmp / "state.json").write_text(json.dumps({**json.loads((tmp / "state.json").read_text()), "step": 1}))
    checkpoint.rename(old)
    train(dataclasses.replace(run, steps=3))
    log = [json.loads(line)["step"] for line in (tmp_path / "clip" / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3] and not tmp.exists() and not old.exists()  # resumed at 1, from the swapped-in one
    # (the first run's record of step 2, trained again, is dropped)

    # Killed before its first checkpoint: started again from step 0, its log starts again too.
    shutil.rmtree(checkpoint)
    train(dataclasses.replace(run, steps=2))
    log = [json.loads(line)["step"] for line in (tmp_path / "clip" / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2]

    # Killed while writing the weights of a run saved in place (as before this was atomic): a clear message.
    (checkpoint / "clip.safetensors").write_bytes((checkpoint / "clip.safetensors").read_bytes()[:100])
    with pytest.raises(ValueError, match=r"checkpoint in .* is damaged .*; delete it to start the run afresh"):
        train(dataclasses.replace(run, steps=4))


def test_a_second_run_in_a_folder_being_trained_is_refused_and_changes_nothing(tmp_path):
    from insv2v.files import folder_lock

    run = TrainConfig("clip", str(tmp_path / "clip"), steps=1, batch_size=2, checkpoint_every=1, warmup=1,
                      calibrate=0)  # fmt: skip
    train(run)
    state = (tmp_path / "clip" / "checkpoint" / "state.json").read_text()
    busy = r"clip is being trained by another run; wait for it to end"
    with folder_lock(tmp_path / "clip", "held by the first run"), pytest.raises(ValueError, match=busy):
        train(dataclasses.replace(run, steps=2))  # as the first run holds the lock while it trains
    assert (tmp_path / "clip" / "checkpoint" / "state.json").read_text() == state
    train(dataclasses.replace(run, steps=2))  # once it has ended, the run goes on
    assert json.loads((tmp_path / "clip" / "checkpoint" / "state.json").read_text())["step"] == 2
    # A folder that holds nothing but a lock left behind is a new run's folder.
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / ".lock").touch()
    assert train(dataclasses.replace(run, out_dir=str(tmp_path / "new"))).is_dir()


def test_a_checkpoint_keeps_the_float16_loss_scale_and_a_damaged_ema_is_named(tmp_path):
    """A resumed float16 run starts at the loss scale it had learned, not at 65536 over again (each overflow on the
    way down skips a whole batch); a damaged EMA file gets the damaged-checkpoint message, not a traceback."""
    run = TrainConfig("clip", str(tmp_path / "clip"), steps=1, batch_size=2, checkpoint_every=1, warmup=1, ema=True,
                      calibrate=0)  # fmt: skip
    train(run)
    checkpoint = tmp_path / "clip" / "checkpoint"
    modules, _ = build(run)
    optimizer = torch.optim.AdamW(trainable_parameters(modules).values())
    learned = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    learned.load_state_dict({**learned.state_dict(), "scale": 512.0, "_growth_tracker": 7})  # after some overflows
    save_checkpoint(tmp_path / "scaled", modules, optimizer, 1, run, scaler=learned)
    fresh = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    assert load_checkpoint(tmp_path / "scaled", modules, optimizer, fresh) == 1
    assert (fresh.get_scale(), fresh.state_dict()["_growth_tracker"]) == (512.0, 7)

    train(dataclasses.replace(run, steps=2))  # with its EMA
    (checkpoint / "ema.safetensors").write_bytes((checkpoint / "ema.safetensors").read_bytes()[:50])
    with pytest.raises(ValueError, match=r"checkpoint in .* is damaged .*; delete it to start the run afresh"):
        train(dataclasses.replace(run, steps=3))


def test_size_must_suit_the_autoencoder(tmp_path):
    from insv2v.toyworld.models import toy_autoencoder, toy_unet2d

    unet, vae = toy_unet2d(), toy_autoencoder()
    assert training_size(TrainConfig("2d", "x", data_dir="d", size=48), unet, vae) == (48, True)
    with pytest.raises(ValueError, match=r"--size must be a multiple of 4 .*, got 66"):
        training_size(TrainConfig("2d", "x", data_dir="d", size=66), unet, vae)


def test_loss_weights_that_would_push_the_error_up_are_refused_and_ctrl_c_says_what_is_kept(tmp_path, capsys,
                                                                                            monkeypatch):  # fmt: skip
    import insv2v.cli
    from insv2v.cli import main

    for flags, words in ((["--edit-weight", "-2"], "--edit-weight: must be a number >= 0, got -2"),
                         (["--shape-weight", "nan"], "--shape-weight: must be a number >= 0, got nan"),
                         (["--edit-mix", "shape=nan"], "weights must be >= 0 and not all 0")):  # fmt: skip
        with pytest.raises(SystemExit):
            main(["train", "2d", str(tmp_path / "run"), *flags])
        assert words in capsys.readouterr().err
    assert not (tmp_path / "run").exists()

    def stopped(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(insv2v.cli, "train", stopped)
    assert main(["train", "clip", str(tmp_path / "run")]) == 130
    assert "interrupted; the same command resumes from the run's last checkpoint" in capsys.readouterr().err


def test_fp16_on_the_cpu_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as here, on a machine with a GPU too
    with pytest.raises(ValueError, match="fp16 mixed precision needs a GPU"):
        train(TrainConfig("clip", str(tmp_path), steps=1, batch_size=2, mixed_precision="fp16"))


def test_a_run_never_writes_over_a_model_or_with_a_learning_rate_that_cannot_train(tmp_path):
    from insv2v.assets import TOY_CLIP

    model = tmp_path / "clip-copy"
    shutil.copytree(TOY_CLIP, model)
    before = (model / "config.json").read_text()
    with pytest.raises(ValueError, match="holds other files and is not a training run"):
        train(TrainConfig("clip", str(model), steps=1, batch_size=2))
    with pytest.raises(ValueError, match="--lr must be a positive number, got -1"):
        train(TrainConfig("clip", str(tmp_path / "run"), steps=1, batch_size=2, lr=-1.0))
    assert (model / "config.json").read_text() == before and not (tmp_path / "run").exists()


def test_the_2d_stage_starts_from_a_text_to_image_model_as_instructpix2pix_does(tmp_path):
    """--init with the toy text-to-image model: the editing UNet gains zero-weighted source channels and so starts
    as that model, its text encoder included."""
    from insv2v.assets import TOY_T2I
    from insv2v.synth.t2v import load_t2v

    modules, _ = build(TrainConfig(stage="2d", out_dir=str(tmp_path), init_dir=str(TOY_T2I)))
    t2i = load_t2v(str(TOY_T2I), "cpu")
    unet = modules["unet"]
    assert (unet.config.in_channels, unet.config.out_channels) == (96, 48)
    x, source, t = torch.randn(1, 48, 16, 16), torch.randn(1, 48, 16, 16), torch.tensor([500])
    tokens = t2i.tokenizer(["a red circle on a beach"], return_tensors="pt").input_ids
    with torch.no_grad():
        text = t2i.text_encoder(tokens)[0]
        assert torch.equal(modules["text_encoder"](tokens)[0], text)
        edited = unet(torch.cat([x, source], 1), t, encoder_hidden_states=text).sample
        assert torch.allclose(edited, t2i.unet(x, t, encoder_hidden_states=text).sample, atol=1e-5)


def test_a_text_to_image_model_may_predict_velocity_and_its_video_model_follows(tmp_path):
    final = train(TrainConfig(stage="t2i", out_dir=str(tmp_path / "t2i"), prediction_type="v_prediction", steps=1,
                              batch_size=2, warmup=1))  # fmt: skip
    saved = json.loads((final / "scheduler" / "scheduler_config.json").read_text())
    assert saved["prediction_type"] == "v_prediction"
    _, helpers = build(TrainConfig(stage="t2v", out_dir=str(tmp_path / "t2v"), init_dir=str(final)))
    assert helpers["scheduler"].config.prediction_type == helpers["sampler"].config.prediction_type == "v_prediction"
    # An editor's 2-D stage started from it predicts velocity too, and so does the video stage after it.
    editor_2d = train(TrainConfig(stage="2d", out_dir=str(tmp_path / "2d"), init_dir=str(final), steps=1,
                                  batch_size=2, warmup=1))  # fmt: skip
    _, helpers = build(TrainConfig(stage="video", out_dir=str(tmp_path / "video"), init_dir=str(editor_2d)))
    assert helpers["scheduler"].config.prediction_type == helpers["sampler"].config.prediction_type == "v_prediction"
    for stage, init in (("2d", None), ("t2i", str(final))):
        with pytest.raises(ValueError, match="--prediction-type is for stage t2i started afresh"):
            train(TrainConfig(stage=stage, out_dir=str(tmp_path / "no"), init_dir=init, prediction_type="epsilon"))
    assert not (tmp_path / "no").exists()


def test_a_text_to_image_model_may_fold_2x2_and_its_video_model_follows(tmp_path):
    """--patch-size 2: 32x32x12 latents and one more UNet level (without attention: it stays at 8x8 and 4x4); the
    saved pipeline draws 64x64 frames, and a video model inflated from it works in the same fold."""
    from insv2v.synth.t2v import load_t2v

    final = train(TrainConfig(stage="t2i", out_dir=str(tmp_path / "t2i"), patch_size=2, steps=1, batch_size=2,
                              warmup=1))  # fmt: skip
    pipe = load_t2v(str(final), "cpu")
    assert pipe.vae.config.patch_size == 2
    assert (pipe.unet.config.in_channels, pipe.unet.config.sample_size) == (12, 32)
    attended = [b for b in pipe.unet.down_blocks if getattr(b, "attentions", None)]
    assert [b.resnets[0].out_channels for b in attended] == [128, 128]  # the 8x8 and 4x4 levels
    assert len(pipe.unet.down_blocks) == 4
    pipe.set_progress_bar_config(disable=True)
    frames = pipe("a red circle moving up on a beach", num_frames=1, num_inference_steps=2).frames[0]
    assert np.asarray(frames).shape == (1, 64, 64, 3)
    modules, helpers = build(TrainConfig(stage="t2v", out_dir=str(tmp_path / "t2v"), init_dir=str(final)))
    assert helpers["vae"].config.patch_size == 2
    clips = torch.rand(1, 3, 2, 64, 64) * 2 - 1
    coverage = torch.zeros(1, 1, 2, 64, 64)
    config = TrainConfig(stage="t2v", out_dir="unused")
    loss = generation_loss(modules["unet"], helpers, helpers["text_encoder"], clips, coverage, ["a beach"], config,
                           np.random.default_rng(0))  # fmt: skip
    assert torch.isfinite(loss)
    for config in (TrainConfig(stage="t2i", out_dir=str(tmp_path / "no"), init_dir=str(final), patch_size=2),
                   TrainConfig(stage="2d", out_dir=str(tmp_path / "no"), patch_size=2)):  # fmt: skip
        with pytest.raises(ValueError, match="--patch-size is for stage t2i started afresh"):
            train(config)
    with pytest.raises(ValueError, match="--fine-attention is for the 4x4 fold"):
        train(TrainConfig(stage="t2i", out_dir=str(tmp_path / "no"), patch_size=2, fine_attention=True))
    with pytest.raises(ValueError, match="grown into 4x4-fold UNets only, not a 2x2-fold one"):
        train(TrainConfig(stage="2d", out_dir=str(tmp_path / "no"), init_dir=str(final), fine_attention=True))
    with pytest.raises(ValueError, match="--patch-size must be one of 4, 2, got 8"):
        train(TrainConfig(stage="t2i", out_dir=str(tmp_path / "no"), patch_size=8))
    assert not (tmp_path / "no").exists()


def test_workers_draw_distinct_reproducible_batches_and_a_run_trains_with_them(tmp_path):
    """--workers: each worker process draws its own samples (no two alike), the same ones again for the same seeds,
    and a text-to-image run trains on them."""
    config = TrainConfig(stage="t2i", out_dir=str(tmp_path / "t2i"), steps=2, batch_size=2, warmup=1, log_every=1,
                         workers=2)  # fmt: skip

    def first_captions(seeds):
        stream = batches(config, None, np.random.default_rng(0), seeds, pin=False)
        return [tuple(next(stream)[3]) for _ in range(4)]

    drawn = first_captions([0, 0, 0])
    assert len(set(drawn)) == 4  # two workers, two batches each: none repeats another
    assert first_captions([0, 0, 0]) == drawn and first_captions([1, 0, 0]) != drawn
    train(config)
    assert [json.loads(line)["step"] for line in (tmp_path / "t2i" / "log.jsonl").read_text().splitlines()] == [1, 2]
    with pytest.raises(ValueError, match="--workers draws fresh toy-world samples"):
        train(dataclasses.replace(config, stage="2d", data_dir=str(tmp_path), out_dir=str(tmp_path / "no")))
