"""Training on the toy world, the paper's recipe in miniature, with HF Accelerate (`accelerate launch` for many GPUs).

    insv2v train clip  runs/clip                         # 1. a small CLIP on frames and captions
    insv2v train 2d    runs/2d    --clip runs/clip/final   # 2. InstructPix2Pix 2-D UNet on frame pairs
    insv2v train video runs/video --init runs/2d/final     # 3. inflate, train only the motion modules on clips
    insv2v train 2d    runs/2d    --data data/toy          # 2., 3. on the kept pairs of `insv2v synth generate`
    insv2v train t2i   runs/t2i   --clip runs/clip/final   # a text-to-image model of the same family (the engine's)
    insv2v train t2v   runs/t2v   --init runs/t2i/final    # inflated, only its motion modules trained: text-to-video

Every run checkpoints to OUT_DIR/checkpoint (safetensors weights, optimizer state loaded with weights_only)
and resumes from it when started again with the same OUT_DIR (and the same --data). The finished model is saved
in OUT_DIR/final, with training.json: the settings and, with --data, the dataset, its thresholds and counts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from insv2v.synth import dataset
from insv2v.toyworld.models import toy_sample_scheduler, toy_tokenizer
from insv2v.toyworld.world import (
    SIZE,
    STYLES,
    TRAIN_SEEDS,
    Triplet,
    caption,
    random_scene,
    render,
    sample_triplet,
    shape_masks,
)

EDIT_THRESHOLD = 0.05  # in [-1, 1] pixel units: about 6 of 255 levels
STYLE_SHARE = 0.2  # t2i, t2v: share of scenes drawn in a style, so that a style edit's output caption can be drawn


@dataclass
class TrainConfig:
    stage: str  # "clip", "2d", "video" (the editor), "t2i" or "t2v" (the data engine's generators)
    out_dir: str
    steps: int = 3000  # optimizer steps
    batch_size: int = 32  # frames (clip, 2d) or clips (video) per step
    lr: float = 3e-4
    warmup: int = 100  # linear warm-up steps, then cosine decay to 10%
    frames: int = 8  # frames per clip in the video stage
    drop_text: float = 0.05  # condition dropout, for guidance (InstructPix2Pix: 5% each, 5% both)
    drop_video: float = 0.05
    drop_both: float = 0.05  # (t2i, t2v: only drop_text + drop_both applies: the caption is dropped)
    edit_weight: float = 4.0  # extra loss weight where target and source differ (0: the plain InstructPix2Pix loss)
    shape_weight: float = 4.0  # t2i, t2v: extra loss weight on the shapes' pixels (a few percent of a frame)
    clip_dir: str | None = None  # stages 2d, t2i: a trained CLIP whose text tower starts the text encoder (else random)
    init_dir: str | None = None  # stage video (t2v): the 2-D (t2i) model folder; 2d, t2i: one to go on from (optional)
    fine_attention: bool = False  # 2d, t2i: attention at 16x16 too (grown into an --init model that lacks it)
    edit_mix: dict[str, float] | None = None  # relative frequency of each edit kind (None: the world's own mix)
    data_dir: str | None = None  # stages 2d, video: train on this `insv2v synth generate` dataset's kept pairs
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 200
    threads: int | None = None  # CPU threads for torch (None: torch's default)


# ---------------------------------------------------------------- data: fresh procedural samples every step


def to_pixels(frames: np.ndarray) -> torch.Tensor:
    """(n, h, w, 3) uint8 -> (n, 3, h, w) float in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1


def random_triplet(rng: np.random.Generator, edit_mix: dict[str, float] | None = None) -> Triplet:
    """A random training triplet; `edit_mix` (kind -> relative frequency) picks its edit kind."""
    kind = None
    if edit_mix:
        kinds, weights = zip(*edit_mix.items(), strict=True)
        kind = str(rng.choice(kinds, p=np.array(weights) / sum(weights)))
    return sample_triplet(int(rng.integers(TRAIN_SEEDS.stop)), kind=kind)


def frame_pairs(
    rng: np.random.Generator, n: int, edit_mix: dict[str, float] | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """n (input frame, edited frame, instruction, input caption) at random times of random training triplets."""
    inputs, targets, instructions, captions = [], [], [], []
    for _ in range(n):
        triplet = random_triplet(rng, edit_mix)
        a, b = triplet.render(1, first=int(rng.integers(32)))
        inputs.append(a)
        targets.append(b)
        instructions.append(triplet.edit.instruction)
        captions.append(triplet.input_caption)
    return to_pixels(np.concatenate(inputs)), to_pixels(np.concatenate(targets)), instructions, captions


def clip_pairs(
    rng: np.random.Generator, n: int, frames: int, edit_mix: dict[str, float] | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """n (input clip, edited clip, instruction), clips as (n, 3, f, h, w) in [-1, 1]."""
    inputs, targets, instructions = [], [], []
    for _ in range(n):
        triplet = random_triplet(rng, edit_mix)
        a, b = triplet.render(frames, first=int(rng.integers(32)))
        inputs.append(to_pixels(a).transpose(0, 1))  # (3, f, h, w)
        targets.append(to_pixels(b).transpose(0, 1))
        instructions.append(triplet.edit.instruction)
    return torch.stack(inputs), torch.stack(targets), instructions


def captioned_clips(rng: np.random.Generator, n: int, frames: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """n (clip, shape coverage, caption) of random training scenes: clips (n, 3, f, h, w) in [-1, 1], coverage
    (n, 1, f, h, w) in [0, 1]; a share of the scenes in a style ("a pencil sketch of ...")."""
    clips, coverage, captions = [], [], []
    for _ in range(n):
        scene = random_scene(np.random.default_rng(int(rng.integers(TRAIN_SEEDS.stop))))
        if rng.random() < STYLE_SHARE:
            scene = dataclasses.replace(scene, style=str(rng.choice(STYLES)))
        first = int(rng.integers(32))
        clips.append(to_pixels(render(scene, frames, first)).transpose(0, 1))  # (3, f, h, w)
        coverage.append(torch.from_numpy(shape_masks(scene, frames, first).max(axis=0))[None])  # (1, f, h, w)
        captions.append(caption(scene))
    return torch.stack(clips), torch.stack(coverage), captions


# ---------------------------------------------------------------- data: the kept pairs of a synthetic dataset


@dataclass
class PairData:
    """The kept pairs of a dataset made by `insv2v synth generate`, decoded once and held as uint8 in memory."""

    root: str  # the dataset folder, resolved
    inputs: list[np.ndarray]  # per kept pair: (f, h, w, 3) uint8
    edited: list[np.ndarray]  # the same shapes as `inputs`
    instructions: list[str]  # the `edit` prompt of each kept pair
    captions: list[str]  # the `input` prompt of each kept pair
    thresholds: dict | None  # the CLIP filter's thresholds in force (the dataset card's)
    counts: dict  # samples and kept ones, as `dataset.counts` gives them

    def record(self) -> dict:
        """What a run trained on it records: which dataset, under which thresholds, how many pairs."""
        return {"dir": self.root, "thresholds": self.thresholds, "counts": self.counts}

    def frame_pairs(self, rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
        """n (input frame, edited frame, instruction, input caption): a random frame of a random kept pair, as
        `frame_pairs` gives them."""
        inputs, targets, instructions, captions = [], [], [], []
        for _ in range(n):
            i = int(rng.integers(len(self.inputs)))
            t = int(rng.integers(len(self.inputs[i])))
            inputs.append(self.inputs[i][t])
            targets.append(self.edited[i][t])
            instructions.append(self.instructions[i])
            captions.append(self.captions[i])
        return to_pixels(np.stack(inputs)), to_pixels(np.stack(targets)), instructions, captions

    def clip_pairs(self, rng: np.random.Generator, n: int, frames: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """n (input clip, edited clip, instruction): the same random window of `frames` consecutive frames of both
        videos of a random kept pair, clips as (n, 3, f, h, w) in [-1, 1], as `clip_pairs` gives them."""
        inputs, targets, instructions = [], [], []
        for _ in range(n):
            i = int(rng.integers(len(self.inputs)))
            first = int(rng.integers(len(self.inputs[i]) - frames + 1))
            inputs.append(to_pixels(self.inputs[i][first : first + frames]).transpose(0, 1))  # (3, f, h, w)
            targets.append(to_pixels(self.edited[i][first : first + frames]).transpose(0, 1))
            instructions.append(self.instructions[i])
        return torch.stack(inputs), torch.stack(targets), instructions


def load_pairs(data_dir: str, frames: int, size: int) -> PairData:
    """The kept pairs of `data_dir`, each checked to have at least `frames` frames of `size` x `size` pixels."""
    from insv2v.video import read_video

    root = Path(data_dir)
    if not dataset.is_dataset(root):
        raise ValueError(f"--data {data_dir}: not a dataset made by `insv2v synth generate` (no {dataset.MANIFEST})")
    records = dataset.read_manifest(root)
    kept = [r for r in records if r["kept"]]
    if not kept:
        raise ValueError(f"--data {data_dir}: none of its {len(records)} samples is kept by the CLIP filter; "
                         "`insv2v synth filter` can re-apply other thresholds")  # fmt: skip
    data = PairData(str(root.resolve()), [], [], [], [], dataset.read_card(root).get("thresholds"),
                    dataset.counts(records))  # fmt: skip
    for r in kept:
        source, target = (read_video(root / r["files"][k], multiple=1).frames for k in ("input", "edited"))
        name = f"--data {data_dir}: pair {r['id']}"
        if source.shape != target.shape:
            raise ValueError(f"{name}: its input ({'x'.join(map(str, source.shape[:3]))}) and edited "
                             f"({'x'.join(map(str, target.shape[:3]))}) videos differ in frames or size")  # fmt: skip
        if len(source) < frames:
            raise ValueError(f"{name} has {len(source)} frames, fewer than the {frames} of a training clip (--frames)")
        if source.shape[1:3] != (size, size):
            raise ValueError(f"{name} has {source.shape[2]}x{source.shape[1]} frames; the model takes {size}x{size} "
                             f"(the toy world is {SIZE}x{SIZE})")  # fmt: skip
        data.inputs.append(source)
        data.edited.append(target)
        data.instructions.append(r["edit"])
        data.captions.append(r["input"])
    return data


def data_source(config: TrainConfig) -> str | None:
    """The dataset a run trains on, as its checkpoint records it (None: fresh toy-world triplets)."""
    return str(Path(config.data_dir).resolve()) if config.data_dir else None


def check_data_config(config: TrainConfig) -> None:
    """--data fits the stage and the flags, and a resumed run goes on with the data it started with."""
    if config.data_dir and config.stage not in ("2d", "video"):
        raise ValueError(f"--data is for stages 2d and video (the editor), got stage {config.stage}")
    if config.data_dir and config.edit_mix:
        raise ValueError("--edit-mix weighs the toy world's edit kinds; with --data the dataset's kept pairs are "
                         "drawn as they are")  # fmt: skip
    state = Path(config.out_dir) / "checkpoint" / "state.json"
    if not state.exists():
        return
    before, now = json.loads(state.read_text()).get("data_dir"), data_source(config)
    if before != now:
        then, given = (f"--data {d}" if d else "toy-world triplets (no --data)" for d in (before, now))
        raise ValueError(f"{config.out_dir} was trained on {then}, not {given}; resume it with the same data, or "
                         "start a new run")  # fmt: skip


# ---------------------------------------------------------------- the models of each stage


def build(config: TrainConfig):
    """(trainable modules by name, frozen helpers) for the stage."""
    from insv2v.toyworld import models

    if config.stage == "clip":
        return {"clip": models.toy_clip()}, {}
    from diffusers import UNet2DConditionModel
    from transformers import CLIPModel, CLIPTextModel

    tokenizer = models.toy_tokenizer()
    vae = models.toy_autoencoder()
    scheduler = models.toy_train_scheduler()
    helpers = {"tokenizer": tokenizer, "vae": vae, "scheduler": scheduler}
    if config.stage in ("2d", "t2i"):
        if config.init_dir:  # go on from a trained model of the stage
            init = Path(config.init_dir)
            unet = UNet2DConditionModel.from_pretrained(init / "unet")
            text_encoder = CLIPTextModel.from_pretrained(init / "text_encoder")
        else:
            clip = CLIPModel.from_pretrained(config.clip_dir) if config.clip_dir else models.toy_clip()
            text_encoder = models.text_encoder_from_clip(clip)  # trained along with the UNet
            unet = models.toy_unet2d(source_conditioned=config.stage == "2d")
        if config.fine_attention:
            unet = models.grow_fine_attention(unet)
        return {"unet": unet, "text_encoder": text_encoder}, helpers
    if config.stage in ("video", "t2v"):
        if not config.init_dir:
            raise ValueError(f"stage {config.stage} needs --init (the trained 2-D model folder)")
        from insv2v.models import inflate_unet

        unet = inflate_unet(UNet2DConditionModel.from_pretrained(Path(config.init_dir) / "unet"))
        text_encoder = CLIPTextModel.from_pretrained(Path(config.init_dir) / "text_encoder").requires_grad_(False)
        unet.requires_grad_(False)
        for name, param in unet.named_parameters():
            param.requires_grad_("motion_modules" in name)  # only the motion modules learn (InsV2V sec. 3.2)
        return {"unet": unet}, {**helpers, "text_encoder": text_encoder}
    raise ValueError(f"stage must be clip, 2d, video, t2i or t2v, got {config.stage!r}")


def encode_text(tokenizer, text_encoder, texts: list[str]) -> torch.Tensor:
    tokens = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")  # fmt: skip
    return text_encoder(tokens.input_ids)[0]  # (n, L, C)


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """(n, c, f, h, w) -> (n*f, c, h, w): frames as a batch of images."""
    return x.transpose(1, 2).flatten(0, 1)


def unfold_frames(x: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of `fold_frames` for `n` clips."""
    return x.unflatten(0, (n, -1)).transpose(1, 2)


def editing_loss(unet, helpers, text_encoder, source, target, instructions, config, rng) -> torch.Tensor:
    """InstructPix2Pix loss with condition dropout; source/target (n, 3, h, w) or (n, 3, f, h, w) in [-1, 1]."""
    vae, scheduler, tokenizer = helpers["vae"], helpers["scheduler"], helpers["tokenizer"]
    video = source.ndim == 5
    n = source.shape[0]
    target_px, source_px = (fold_frames(target), fold_frames(source)) if video else (target, source)
    x0 = vae.encode(target_px).latent_dist.mode() * vae.config.scaling_factor
    cond = source_latents = vae.encode(source_px).latent_dist.mode()
    roll = torch.from_numpy(rng.random(n)).float()
    no_text = roll < config.drop_text + config.drop_both
    no_video = (roll >= config.drop_text) & (roll < config.drop_text + config.drop_both + config.drop_video)
    texts = ["" if drop else text for drop, text in zip(no_text.tolist(), instructions, strict=True)]
    embeds = encode_text(tokenizer, text_encoder, texts)  # (n, L, C)
    if video:
        f = source.shape[2]
        x0, cond, source_latents = (unfold_frames(x, n) for x in (x0, cond, source_latents))
        cond = cond * (~no_video).float().view(n, 1, 1, 1, 1)
        embeds = embeds.repeat_interleave(f, dim=0)  # (n*f, L, C)
    else:
        cond = cond * (~no_video).float().view(n, 1, 1, 1)
    noise = torch.randn_like(x0)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,))
    noisy = scheduler.add_noise(x0, noise, t)  # per-sample timesteps broadcast over (c, [f,] h, w)
    pred = unet(torch.cat([noisy, cond], dim=1), t, encoder_hidden_states=embeds).sample
    # A recoloured shape is a few percent of the pixels; weighting what the edit changes makes the model learn
    # the edit instead of only the copy (x0 and the unscaled source share one space: a lossless pixel fold).
    changed = ((x0 / vae.config.scaling_factor - source_latents).abs() > EDIT_THRESHOLD).float()
    return (F.mse_loss(pred, x0, reduction="none") * (1 + config.edit_weight * changed)).mean()  # "sample" prediction


def generation_loss(unet, helpers, text_encoder, clips, coverage, captions, config, rng) -> torch.Tensor:
    """Text-to-image/video loss with caption dropout; clips (n, 3, f, h, w) in [-1, 1], coverage (n, 1, f, h, w).

    A 2-D UNet sees the frames as a batch of images; a video UNet sees whole clips.
    """
    vae, scheduler, tokenizer = helpers["vae"], helpers["scheduler"], helpers["tokenizer"]
    n, f = clips.shape[0], clips.shape[2]
    x0 = vae.encode(fold_frames(clips)).latent_dist.mode() * vae.config.scaling_factor  # (n*f, c, h, w)
    dropped = rng.random(n) < config.drop_text + config.drop_both
    embeds = encode_text(tokenizer, text_encoder, ["" if d else c for d, c in zip(dropped, captions, strict=True)])
    noise = torch.randn_like(x0)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,))
    noisy = scheduler.add_noise(x0, noise, t.repeat_interleave(f))  # one timestep per clip
    if config.stage == "t2i":
        pred = unet(noisy, t.repeat_interleave(f), encoder_hidden_states=embeds.repeat_interleave(f, dim=0)).sample
    else:  # UNetMotionModel: (n, c, f, h, w) with per-frame text
        pred = unet(unfold_frames(noisy, n), t, encoder_hidden_states=embeds.repeat_interleave(f, dim=0)).sample
        pred = fold_frames(pred)
    # The shapes carry what a caption says beyond the background; they are a few percent of the pixels.
    weight = 1 + config.shape_weight * F.pixel_unshuffle(fold_frames(coverage), vae.config.patch_size)
    weight = weight.mean(dim=1, keepdim=True)  # (n*f, 1, h, w): the coverage of each folded 4x4 patch
    return (F.mse_loss(pred, x0, reduction="none") * weight).mean()  # "sample" prediction


def clip_loss(clip, tokenizer, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
    tokens = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")  # fmt: skip
    pixels = (images + 1) / 2  # toy CLIP sees [0, 1] pixels, no normalisation
    return clip(input_ids=tokens.input_ids, pixel_values=pixels, return_loss=True).loss


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(folder: Path, modules: dict, optimizer, step: int, data_dir: str | None = None) -> None:
    """Weights, optimizer state and the step; `data_dir`, the dataset trained on (see `data_source`), if any."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, module in modules.items():
        weights = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
        save_file(weights, folder / f"{name}.safetensors")
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")  # tensors and numbers only
    state = {"step": step, **({"data_dir": data_dir} if data_dir else {})}
    (folder / "state.json").write_text(json.dumps(state))


def load_checkpoint(folder: Path, modules: dict, optimizer) -> int:
    for name, module in modules.items():
        module.load_state_dict(load_file(folder / f"{name}.safetensors"))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    return json.loads((folder / "state.json").read_text())["step"]


def save_final(config: TrainConfig, modules: dict, helpers: dict, data: PairData | None = None) -> Path:
    """The finished model: a CLIP folder, or an InsV2VPipeline folder (2-D stage: the 2-D UNet inside); with
    training.json: the settings and the dataset trained on (None: fresh toy-world triplets)."""
    final = Path(config.out_dir) / "final"
    _save_model(final, config, modules, helpers)
    record = {"config": dataclasses.asdict(config), "data": data.record() if data else None}
    (final / "training.json").write_text(json.dumps(record, indent=2))
    return final


def _save_model(final: Path, config: TrainConfig, modules: dict, helpers: dict) -> None:
    if config.stage == "clip":
        modules["clip"].save_pretrained(final)
        toy_tokenizer().save_pretrained(final)
        return

    text_encoder = modules.get("text_encoder", helpers.get("text_encoder"))
    if config.stage in ("t2i", "t2v"):
        from insv2v.synth.t2v import TextToVideoPipeline

        pipe = TextToVideoPipeline(vae=helpers["vae"], text_encoder=text_encoder, tokenizer=helpers["tokenizer"],
                                   unet=modules["unet"], scheduler=toy_sample_scheduler())  # fmt: skip
        pipe.save_pretrained(final)
        return
    if config.stage == "2d":
        for name in ("unet", "text_encoder"):
            modules[name].save_pretrained(final / name)
        helpers["tokenizer"].save_pretrained(final / "tokenizer")
        return
    from insv2v.pipeline import InsV2VPipeline

    pipe = InsV2VPipeline(vae=helpers["vae"], text_encoder=text_encoder, tokenizer=helpers["tokenizer"],
                          unet=modules["unet"], scheduler=toy_sample_scheduler())  # fmt: skip
    pipe.save_pretrained(final)


# ---------------------------------------------------------------- the loop


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(config: TrainConfig) -> Path:
    check_data_config(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    accelerator = Accelerator()
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    torch.manual_seed(config.seed)
    modules, helpers = build(config)
    data = None
    if config.data_dir:
        size = modules["unet"].config.sample_size * helpers["vae"].config.patch_size  # pixels
        data = load_pairs(config.data_dir, config.frames if config.stage == "video" else 1, size)
        accelerator.print(f"training on the {len(data.inputs)} kept pairs of {data.root}")
    tokenizer = toy_tokenizer()
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    step = 0
    if (out / "checkpoint" / "state.json").exists():
        step = load_checkpoint(out / "checkpoint", modules, optimizer)
        accelerator.print(f"resumed from step {step}")
    names = list(modules)
    prepared = accelerator.prepare(*modules.values(), optimizer)
    modules, optimizer = dict(zip(names, prepared[:-1], strict=True)), prepared[-1]
    for module in modules.values():
        module.train()
    # Each process and each resumed run draws different samples.
    rng = np.random.default_rng([config.seed, accelerator.process_index, step])
    began, losses = time.perf_counter(), []
    while step < config.steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        if config.stage == "clip":
            source, _, _, captions = frame_pairs(rng, config.batch_size)
            loss = clip_loss(modules["clip"], tokenizer, source.to(accelerator.device), captions)
        else:
            text_encoder = modules.get("text_encoder", helpers.get("text_encoder"))
            if config.stage in ("t2i", "t2v"):
                frames = 1 if config.stage == "t2i" else config.frames
                clips, coverage, captions = captioned_clips(rng, config.batch_size, frames)
                loss = generation_loss(modules["unet"], helpers, text_encoder, clips.to(accelerator.device),
                                       coverage.to(accelerator.device), captions, config, rng)  # fmt: skip
            elif config.stage == "2d" and data:
                source, target, instructions, _ = data.frame_pairs(rng, config.batch_size)
            elif config.stage == "2d":
                source, target, instructions, _ = frame_pairs(rng, config.batch_size, config.edit_mix)
            elif data:
                source, target, instructions = data.clip_pairs(rng, config.batch_size, config.frames)
            else:
                source, target, instructions = clip_pairs(rng, config.batch_size, config.frames, config.edit_mix)
            if config.stage in ("2d", "video"):
                loss = editing_loss(modules["unet"], helpers, text_encoder, source.to(accelerator.device),
                                    target.to(accelerator.device), instructions, config, rng)  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        losses.append(loss.item())
        if step % config.log_every == 0 or step == config.steps:
            record = {"step": step, "loss": float(np.mean(losses)), "lr": learning_rate(step - 1, config),
                      "seconds": round(time.perf_counter() - began, 1)}  # fmt: skip
            with open(out / "log.jsonl", "a") as log:
                log.write(json.dumps(record) + "\n")
            accelerator.print(record)
            losses = []
        if accelerator.is_main_process and (step % config.checkpoint_every == 0 or step == config.steps):
            save_checkpoint(out / "checkpoint", {n: accelerator.unwrap_model(m) for n, m in modules.items()},
                            optimizer, step, data_source(config))  # fmt: skip
    accelerator.wait_for_everyone()
    modules = {n: accelerator.unwrap_model(m).eval() for n, m in modules.items()}
    return save_final(config, modules, helpers, data) if accelerator.is_main_process else out / "final"
