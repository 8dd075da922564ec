"""The real-scale training recipe on tiny random components: a model source as --init (VAE, text encoder, epsilon
prediction from the pipeline), motion augmentation, condition dropout, presets, mixed precision, gradient
checkpointing, 8-bit Adam's fallback, gradient accumulation, EMA, trackers, the hub upload, and two processes under
`accelerate launch` sharing a dataset, checkpointing and resuming."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_loading import save_image_model, save_motion_adapter
from test_train_data import coded, make_dataset

from insv2v import InsV2VPipeline
from insv2v.augment import PAN_MAX, STILL, ZOOM_MAX, CameraMove, apply_move, augment_pairs, draw_move
from insv2v.cli import main
from insv2v.synth.prompts import PromptPair
from insv2v.testing.tiny import tiny_components
from insv2v.train import (
    PRESETS,
    TrainConfig,
    check_config,
    drop_conditions,
    editing_loss,
    loss_target,
    pipeline_parts,
    resolve_settings,
    train,
)
from insv2v.video import write_video

ROOT = Path(__file__).resolve().parents[1]
UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A tiny random InsV2V pipeline folder: AutoencoderKL (scaling 0.18215), CLIP text encoder, epsilon DDPM."""
    folder = tmp_path_factory.mktemp("tiny") / "pipe"
    InsV2VPipeline(**tiny_components(seed=3)).save_pretrained(folder)
    return folder


def coded_dataset(root: Path, rejected: tuple[int, ...], n: int, frames: int, size: int) -> Path:
    """n coded pairs (see test_train_data.coded), those in `rejected` not kept by the filter."""
    prompts = [PromptPair(f"scene {k}", f"edit {k}", f"edited {k}") for k in range(n)]
    make_dataset(root, [(*coded(k, frames, size), prompts[k], k not in rejected) for k in range(n)])
    return root


@pytest.fixture
def fresh_accelerate():
    """Accelerate keeps its state per process; a run in another precision needs it new, and leaves it new."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


# ---------------------------------------------------------------- motion augmentation


def test_augmentation_off_is_the_identity_and_keeps_shapes():
    rng = np.random.default_rng(0)
    source, target = torch.rand(3, 3, 5, 32, 40), torch.rand(3, 3, 5, 32, 40)
    same = augment_pairs(rng, source, target, pan_prob=0, zoom_prob=0)
    assert torch.equal(same[0], source) and torch.equal(same[1], target)
    moved = augment_pairs(rng, source, target, pan_prob=1, zoom_prob=1)
    assert moved[0].shape == source.shape and moved[1].shape == target.shape
    assert not torch.equal(moved[0], source)


def test_input_and_target_get_the_same_move():
    source, target = torch.rand(4, 3, 6, 24, 24), torch.rand(4, 3, 6, 24, 24)
    moved_source, moved_target = augment_pairs(np.random.default_rng(7), source, target, pan_prob=1, zoom_prob=1)
    rng = np.random.default_rng(7)
    moves = [draw_move(rng, 1, 1) for _ in range(4)]  # the draws augment_pairs made
    for i, move in enumerate(moves):
        assert move != STILL
        torch.testing.assert_close(moved_source[i], apply_move(source[i], move), rtol=0, atol=1e-6)
        torch.testing.assert_close(moved_target[i], apply_move(target[i], move), rtol=0, atol=1e-6)
    twins = augment_pairs(np.random.default_rng(1), source, source.clone(), pan_prob=1, zoom_prob=1)
    assert torch.equal(twins[0], twins[1])


def test_a_pan_moves_content_by_the_expected_pixels():
    """A pan of 0.2 on an 80 px frame: a 64 px window whose centre travels 16 px, shown at 80 px (x1.25), so
    content moves 20 px across the clip, 5 px per frame over 5 frames; on a ramp the window's travel is exact."""
    clip = torch.zeros(1, 5, 80, 80)  # (c, f, h, w)
    clip[..., 38:42] = 1  # a vertical bar at x = 39.5
    out = apply_move(clip, CameraMove(pan=(0.0, 0.2)))
    columns = torch.arange(80.0)
    centres = [(out[0, i].sum(0) * columns).sum() / out[0, i].sum() for i in range(5)]
    assert [round(float(c), 3) for c in centres] == [49.5, 44.5, 39.5, 34.5, 29.5]
    ramp = columns.expand(1, 5, 80, 80).clone()  # each pixel holds its column
    travel = apply_move(ramp, CameraMove(pan=(0.0, 0.2)))
    torch.testing.assert_close(travel[0, -1, :, 1:-1] - travel[0, 0, :, 1:-1], torch.full((80, 78), 16.0))
    rows = apply_move(ramp.transpose(2, 3), CameraMove(pan=(-0.1, 0.0)))  # up: the rows' values fall by 8
    torch.testing.assert_close(rows[0, -1, 1:-1] - rows[0, 0, 1:-1], torch.full((78, 80), -8.0))


def test_a_zoom_grows_progressively():
    clip = torch.zeros(1, 4, 64, 64)
    clip[..., 24:40] = 1  # a centred bar 16 px wide
    widths = apply_move(clip, CameraMove(zoom=(1.0, 1.25)))[0, :, 32].sum(-1)  # (f,): 16 px x the frame's zoom
    torch.testing.assert_close(widths, torch.tensor([16.0, 16 * 13 / 12, 16 * 14 / 12, 20.0]), rtol=0, atol=0.05)
    assert (widths[1:] > widths[:-1]).all()


def test_moves_are_drawn_at_the_reference_rates_and_ranges():
    rng = np.random.default_rng(0)
    moves = [draw_move(rng) for _ in range(4000)]
    panned = [m for m in moves if m.pan != (0.0, 0.0)]
    zoomed = [m for m in moves if m.zoom != (1.0, 1.0)]
    assert len(panned) / len(moves) == pytest.approx(0.7, abs=0.04)  # about 5 standard deviations
    assert len(zoomed) / len(moves) == pytest.approx(0.2, abs=0.04)
    assert all(0 < abs(d) <= PAN_MAX for m in panned for d in m.pan)
    assert {np.sign(m.pan[1]) for m in panned} == {-1.0, 1.0}
    assert all(min(m.zoom) == 1.0 and 1.0 < max(m.zoom) <= ZOOM_MAX for m in zoomed)
    assert {m.zoom[0] == 1.0 for m in zoomed} == {True, False}  # in and out


# ---------------------------------------------------------------- the loss


def test_condition_dropout_rates_are_what_they_say():
    config = TrainConfig("video", "unused", drop_text=0.1, drop_video=0.05, drop_both=0.2)
    no_text, no_video = drop_conditions(np.random.default_rng(0), 40000, config)
    rates = {
        "text": (no_text & ~no_video).float().mean().item(),
        "video": (no_video & ~no_text).float().mean().item(),
        "both": (no_text & no_video).float().mean().item(),
        "none": (~no_text & ~no_video).float().mean().item(),
    }
    expected = {"text": 0.1, "video": 0.05, "both": 0.2, "none": 0.65}
    assert rates == pytest.approx(expected, abs=0.012)  # 5 standard deviations at 40000 draws


def test_the_loss_target_follows_the_prediction_type():
    from diffusers import DDPMScheduler

    x0, noise, t = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 4, 3, 8, 8), torch.tensor([10, 900])
    a = DDPMScheduler().alphas_cumprod[t].view(2, 1, 1, 1, 1)
    expected = {"epsilon": noise, "sample": x0, "v_prediction": a.sqrt() * noise - (1 - a).sqrt() * x0}
    for kind, target in expected.items():
        torch.testing.assert_close(loss_target(DDPMScheduler(prediction_type=kind), x0, noise, t), target)


def test_a_learned_vae_trains_without_the_toy_edit_weight(tiny_folder):
    """The edit weight needs the toy's lossless pixel fold; with a KL VAE the loss is the plain mean squared error."""
    from diffusers import DDPMScheduler

    pipe = InsV2VPipeline.from_pretrained(tiny_folder)
    _, helpers = pipeline_parts(pipe)
    helpers["scheduler"] = DDPMScheduler.from_config(helpers["scheduler"].config, prediction_type="sample")
    source, target = torch.rand(2, 3, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 3, 64, 64) * 2 - 1  # (n, c, f, h, w)
    vae = helpers["vae"]
    x0 = vae.encode(target.transpose(1, 2).flatten(0, 1)).latent_dist.mode() * vae.config.scaling_factor
    x0 = x0.unflatten(0, (2, 3)).transpose(1, 2)  # (n, c, f, h, w)

    class OffByOne(torch.nn.Module):
        def forward(self, sample, t, encoder_hidden_states):
            return SimpleNamespace(sample=x0 + 1)

    rng = np.random.default_rng(0)
    config = TrainConfig("video", "unused", edit_weight=4.0)
    loss = editing_loss(OffByOne(), helpers, pipe.text_encoder, source, target, ["a", "b"], config, rng)
    assert loss.item() == pytest.approx(1.0, rel=1e-5)


# ---------------------------------------------------------------- settings


def test_presets_fill_what_is_not_given_and_flags_override():
    plain = resolve_settings(TrainConfig("video", "unused"))
    assert (plain.steps, plain.batch_size, plain.lr, plain.frames, plain.optimizer, plain.grad_accum) == (
        3000, 32, 3e-4, 8, "adamw", 1)  # fmt: skip
    assert plain.augment is False and plain.gradient_checkpointing is False and plain.mixed_precision is None

    paper = resolve_settings(TrainConfig("video", "unused", preset="paper"), processes=8)
    assert (paper.steps, paper.lr, paper.optimizer, paper.batch_size, paper.frames, paper.augment) == (
        2000, 5e-5, "adamw", 1, 16, True)  # fmt: skip
    assert paper.batch_size * paper.grad_accum * 8 == 512  # the paper's batch
    wider = resolve_settings(TrainConfig("video", "unused", preset="paper", batch_size=2), processes=3)
    assert wider.grad_accum == 86  # ceil(512 / 6): at least the paper's batch

    given = TrainConfig("video", "unused", preset="paper", lr=1e-4, steps=10, grad_accum=3, augment=False)
    mine = resolve_settings(given, processes=8)
    assert (mine.lr, mine.steps, mine.grad_accum, mine.augment) == (1e-4, 10, 3, False)

    reference = resolve_settings(TrainConfig("video", "unused", preset="reference"), processes=4)
    assert (reference.steps, reference.lr, reference.optimizer, reference.mixed_precision) == (
        2000, 1e-5, "adam8bit", "fp16")  # fmt: skip
    assert reference.gradient_checkpointing is True
    assert reference.grad_accum == 256 and set(PRESETS) == {"paper", "reference"}
    overridden = resolve_settings(TrainConfig("video", "unused", preset="reference", mixed_precision="bf16",
                                              gradient_checkpointing=False, optimizer="adamw"))  # fmt: skip
    assert (overridden.mixed_precision, overridden.gradient_checkpointing, overridden.optimizer) == (
        "bf16", False, "adamw")  # fmt: skip


def test_the_command_line_passes_only_what_was_given(monkeypatch, tmp_path):
    import insv2v.train

    seen = []
    monkeypatch.setattr(insv2v.train, "train", lambda config: seen.append(config) or tmp_path)
    argv = ["train", "video", str(tmp_path / "run"), "--init", "compose:a/b+c/d", "--preset", "paper", "--lr", "1e-4",
            "--no-motion-augment", "--grad-accum", "4", "--mixed-precision", "bf16", "--gradient-checkpointing",
            "--optimizer", "adam8bit", "--ema", "--report-to", "tensorboard", "--push-to-hub", "me/insv2v-run",
            "--size", "128", "--log-every", "5"]  # fmt: skip
    assert main(argv) == 0
    config = seen[0]
    assert (config.preset, config.lr, config.augment, config.grad_accum, config.mixed_precision) == (
        "paper", 1e-4, False, 4, "bf16")  # fmt: skip
    assert (config.gradient_checkpointing, config.optimizer, config.ema, config.report_to) == (
        True, "adam8bit", True, "tensorboard")  # fmt: skip
    assert (config.push_to_hub, config.size, config.log_every, config.init_dir) == (
        "me/insv2v-run", 128, 5, "compose:a/b+c/d")  # fmt: skip
    assert config.steps is None and config.batch_size is None and config.frames is None  # the preset's to fill


def test_settings_that_do_not_fit_are_refused_before_anything_is_written(tmp_path, monkeypatch):
    from accelerate import tracking

    out = str(tmp_path / "run")
    refusals = {
        "--preset is a recipe of the video stage": TrainConfig("2d", out, preset="paper"),
        "--motion-augment moves the clips of the video stage": TrainConfig("t2v", out, augment=True),
        "--size resizes the frames of --data": TrainConfig("video", out, size=128),
        "--push-to-hub not a repo/: not a hub repo id": TrainConfig("video", out, push_to_hub="not a repo/"),
        "--report-to nonsense: not a tracker accelerate knows": TrainConfig("video", out, report_to="nonsense"),
        "--gradient-checkpointing is for the UNet stages": TrainConfig("clip", out, gradient_checkpointing=True),
        "--calibrate is a number of pairs .* for stage clip, got 5 for stage 2d": TrainConfig("2d", out, calibrate=5),
        "--edit-mix is for stages 2d and video, got stage t2i": TrainConfig("t2i", out, edit_mix={"shape": 1.0}),
        "--frames is for stages video and t2v, got stage 2d": TrainConfig("2d", out, frames=4),
        "--fine-attention is for stages 2d and t2i, got stage t2v": TrainConfig("t2v", out, fine_attention=True),
        "--clip is for stages 2d and t2i, got stage video": TrainConfig("video", out, clip_dir=out),
        "--init brings its own": TrainConfig("2d", out, clip_dir=out, init_dir=out),
        "--calibrate is a number of pairs .* got -1 for stage clip": TrainConfig("clip", out, calibrate=-1),
    }
    for message, config in refusals.items():
        with pytest.raises(ValueError, match=message):
            train(config)
    monkeypatch.setattr(tracking, "get_available_trackers", list)  # none installed
    with pytest.raises(ValueError, match=r"--report-to tensorboard: its package is not installed"):
        check_config(TrainConfig("video", out, report_to="tensorboard"))
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- whole runs


def test_a_tiny_real_scale_run_with_every_option_on(tmp_path, tiny_folder, monkeypatch, fresh_accelerate):
    """bf16 autocast, gradient checkpointing, adam8bit (AdamW without bitsandbytes), 2 micro-steps per step, EMA,
    motion augmentation, epsilon prediction, frames resized: trains, checkpoints, resumes, saves an editor."""
    import huggingface_hub
    from accelerate import Accelerator

    import insv2v.train

    data = coded_dataset(tmp_path / "data", rejected=(1,), n=3, frames=6, size=80)  # resized to the model's 64
    micro_steps, checkpointed = [], []
    loss = insv2v.train.editing_loss

    def counted_loss(*args):
        micro_steps.append((args[3].shape, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return loss(*args)

    monkeypatch.setattr(insv2v.train, "editing_loss", counted_loss)
    checkpoint_function = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **kw: checkpointed.append(1) or
                        checkpoint_function(*a, **kw))  # fmt: skip
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # not installed, wherever this runs
    logged = []
    monkeypatch.setattr(Accelerator, "log", lambda self, values, step=None, **kw: logged.append((step, values)))
    pushed = []
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, **kw: pushed.append(("create", repo_id)))
    commit = SimpleNamespace(commit_url="https://huggingface.co/me/tiny-insv2v/commit/1")
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: pushed.append(("upload", kw)) or commit)

    out = tmp_path / "run"
    config = TrainConfig("video", str(out), init_dir=str(tiny_folder), data_dir=str(data), steps=2, batch_size=1,
                         frames=4, warmup=1, mixed_precision="bf16", gradient_checkpointing=True,
                         optimizer="adam8bit", grad_accum=2, ema=True, augment=True, log_every=1, checkpoint_every=1,
                         push_to_hub="me/tiny-insv2v")  # fmt: skip
    with pytest.warns(UserWarning, match="adam8bit needs bitsandbytes"):
        train(config)
    # 2 optimizer steps of 2 micro-steps each, in bf16 autocast, on clips resized to 64 px; activations recomputed
    assert micro_steps == [((1, 3, 4, 64, 64), True, torch.bfloat16)] * 4 and checkpointed
    checkpoint = out / "checkpoint"
    optimizer_state = torch.load(checkpoint / "optimizer.pt", weights_only=True)["state"]
    assert {int(s["step"]) for s in optimizer_state.values()} == {2}
    state = json.loads((checkpoint / "state.json").read_text())
    assert {k: state[k] for k in ("step", "data_dir", "ema_updates")} == {
        "step": 2, "data_dir": str(data.resolve()), "ema_updates": 2}  # fmt: skip
    assert state["config"] == json.loads((out / "config.json").read_text())  # what a resume is checked against
    run = json.loads((out / "config.json").read_text())
    assert (run["mixed_precision"], run["optimizer"], run["grad_accum"], run["ema"]) == ("bf16", "adamw", 2, True)
    assert set(optimizer_state[0]) == {"step", "exp_avg", "exp_avg_sq"}  # what ran, as the record says: AdamW

    with pytest.warns(UserWarning, match="adam8bit needs bitsandbytes"):
        final = train(dataclasses.replace(config, steps=3))  # resumes at step 2
    assert len(micro_steps) == 6
    optimizer_state = torch.load(checkpoint / "optimizer.pt", weights_only=True)["state"]
    assert {int(s["step"]) for s in optimizer_state.values()} == {3}
    assert json.loads((checkpoint / "state.json").read_text())["ema_updates"] == 3
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert [p["started_at"] for r in log if "processes" in r for p in r["processes"]] == [0, 2]
    assert [(step, values) for step, values in logged] == [(r["step"], {"loss": r["loss"], "lr": r["lr"]}) for r in log]
    assert all(np.isfinite(r["loss"]) for r in log)

    # Only the motion modules learned; the final model holds their average, which differs from the raw weights.
    init = load_file(tiny_folder / UNET_WEIGHTS)
    raw = load_file(checkpoint / "unet.safetensors")
    saved = load_file(final / UNET_WEIGHTS)
    learned = {k for k in init if not torch.equal(init[k], saved[k])}
    assert learned and all("motion_modules" in k for k in learned)
    average = load_file(checkpoint / "ema.safetensors")
    assert all(torch.equal(average[f"unet.{k}"], saved[k]) for k in learned)
    assert any(not torch.equal(raw[k], saved[k]) for k in learned)
    for part in ("vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        before, after = load_file(tiny_folder / part), load_file(final / part)
        assert all(torch.equal(before[k], after[k]) for k in before), part  # frozen, saved in full precision

    upload = {"repo_id": "me/tiny-insv2v", "folder_path": final, "commit_message": "insv2v train"}
    assert pushed == [("create", "me/tiny-insv2v"), ("upload", upload)] * 2  # at the end of each run
    record = json.loads((final / "training.json").read_text())
    assert record["data"]["shards"] == [["000000", "000002"]]

    # `insv2v edit --model FINAL` edits with it; the epsilon-prediction scheduler came along.
    clip, edited = tmp_path / "clip.mp4", tmp_path / "edited.mp4"
    write_video(clip, coded(0, frames=4)[0], 8)
    argv = ["edit", str(clip), "make it red", "-o", str(edited), "--model", str(final), "--steps", "2", "--device",
            "cpu", "--dtype", "float32", "--frames-per-clip", "4", "--ref-frames", "1"]  # fmt: skip
    assert main(argv) == 0 and edited.exists()
    assert InsV2VPipeline.from_pretrained(final).scheduler.config.prediction_type == "epsilon"


def test_a_composition_starts_the_video_stage(tmp_path):
    """--init compose:IMAGE+MOTION (local stand-ins of InstructPix2Pix and an AnimateDiff adapter): the motion
    outputs start at zero, only the motion modules learn, and the result is an editor with the image model's parts."""
    from insv2v.loading import compose_pipeline

    image_model, adapter = save_image_model(tmp_path / "ip2p"), tmp_path / "adapter"
    save_motion_adapter(adapter)
    source = f"compose:{image_model}+{adapter}"
    final = train(TrainConfig("video", str(tmp_path / "run"), init_dir=source, steps=1, batch_size=1, frames=3,
                              warmup=1))  # fmt: skip
    start = compose_pipeline(str(image_model), str(adapter)).unet.state_dict()
    pipe = InsV2VPipeline.from_pretrained(final)
    saved = pipe.unet.state_dict()
    motion_out = [k for k in start if "motion_modules" in k and "proj_out" in k]
    assert motion_out and all(not start[k].any() and saved[k].any() for k in motion_out)
    learned = {k for k in start if not torch.equal(start[k], saved[k])}
    assert learned and all("motion_modules" in k for k in learned)
    assert type(pipe.scheduler).__name__ == "DDPMScheduler" and pipe.scheduler.config.prediction_type == "epsilon"
    assert list(pipe.vae.config.block_out_channels) == [8, 16] and pipe.text_encoder.config.hidden_size == 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_processes(*args: str) -> subprocess.CompletedProcess:
    """`accelerate launch` of `insv2v train` on 2 CPU processes, every setting on the command line (no config).

    `--cpu --num_processes 2` starts one process unless MPI launches them (`--mpirun_hostfile`); torchrun's launcher
    (`--multi_gpu`) with ACCELERATE_USE_CPU=1 starts two, joined by gloo on the CPU.
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "-m", "insv2v.cli", "train", *args]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.mark.slow  # two launches of two processes
def test_two_processes_share_the_pairs_checkpoint_and_resume(tmp_path, tiny_folder):
    data = coded_dataset(tmp_path / "data", rejected=(1,), n=5, frames=6, size=64)  # kept: 0, 2, 3, 4
    out = tmp_path / "run"
    args = ["video", str(out), "--init", str(tiny_folder), "--data", str(data), "--batch-size", "1", "--frames", "4",
            "--checkpoint-every", "1", "--log-every", "1"]  # fmt: skip
    first = launch_two_processes(*args, "--steps", "2")
    assert "resumed" not in first.stdout
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 2
    shards = json.loads((out / "final" / "training.json").read_text())["data"]["shards"]
    assert shards == [["000000", "000003"], ["000002", "000004"]]  # pairs i, i + 2, ... of the kept ones

    second = launch_two_processes(*args, "--steps", "4")
    assert "resumed from step 2" in second.stdout
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]  # the main process alone writes it
    starts = [r["processes"] for r in log if "processes" in r]
    assert starts == [[{"process": i, "started_at": at, "pairs": 2} for i in (0, 1)] for at in (0, 2)]
    optimizer_state = torch.load(out / "checkpoint" / "optimizer.pt", weights_only=True)["state"]
    assert {int(s["step"]) for s in optimizer_state.values()} == {4}  # the optimizer went on from its state

    pipe = InsV2VPipeline.from_pretrained(out / "final")
    pipe.set_progress_bar_config(disable=True)
    source, _ = coded(2, frames=4)
    frames = pipe(source, "edit 2", num_inference_steps=2, frames_per_clip=4, ref_frames=1).frames
    assert frames.shape == (4, 64, 64, 3) and np.isfinite(frames).all()
