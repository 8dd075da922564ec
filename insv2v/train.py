"""The one training loop, with HF Accelerate (`accelerate launch` for many GPUs): the toy world's models, and the
video stage of the real editor at the paper's scale.

    insv2v train clip  runs/clip                         # 1. a small CLIP on frames and captions
    insv2v train 2d    runs/2d    --clip runs/clip/final   # 2. InstructPix2Pix 2-D UNet on frame pairs
    insv2v train video runs/video --init runs/2d/final     # 3. inflate, train only the motion modules on clips
    insv2v train 2d    runs/2d    --data data/toy          # 2., 3. on the kept pairs of `insv2v synth generate`
    insv2v train t2i   runs/t2i   --clip runs/clip/final   # a text-to-image model of the same family (the engine's)
    insv2v train t2v   runs/t2v   --init runs/t2i/final    # inflated, only its motion modules trained: text-to-video

    accelerate launch -m insv2v.cli train video runs/real --data DIR --preset paper --mixed-precision bf16 \
        --gradient-checkpointing --ema --init compose:timbrooks/instruct-pix2pix+guoyww/animatediff-motion-adapter-v1-5

Stage video starts from a 2-D folder of stage 2d, or from any model source `insv2v.loading` understands (an
InsV2VPipeline folder or hub id, `compose:IMAGE+MOTION`): then the VAE, text encoder, tokenizer and noise schedule
are that pipeline's, and the loss follows its scheduler's prediction type. Every run checkpoints to
OUT_DIR/checkpoint (safetensors weights, optimizer state loaded with weights_only) and resumes from it when started
again with the same OUT_DIR (and the same --data). The finished model is saved in OUT_DIR/final, with
training.json: the settings and, with --data, the dataset, its thresholds and counts, and each process's pairs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import gather_object
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from insv2v.augment import augment_pairs
from insv2v.clip_tokenizer import token_ids
from insv2v.files import LOCK, complete_lines, folder_lock, write_text_atomically
from insv2v.guidance import PREDICTION_TYPES
from insv2v.loading import is_2d_folder
from insv2v.models.autoencoder import PixelUnshuffleAutoencoder
from insv2v.models.unet import unet_on_video
from insv2v.synth import dataset
from insv2v.toyworld.models import LEVELS, PATCH
from insv2v.toyworld.world import (
    EDIT_MIX,
    SIZE,
    STYLES,
    TRAIN_SEEDS,
    Scene,
    Triplet,
    apply_edit,
    caption,
    random_edit,
    random_scene,
    render,
    sample_triplet,
    shape_masks,
)

EDIT_THRESHOLD = 0.05  # in [-1, 1] pixel units: about 6 of 255 levels
STYLE_SHARE = 0.2  # t2i, t2v: share of scenes drawn in a style, so that a style edit's output caption can be drawn
SWAP_FLOOR = 0.5  # --edit-swap samples are noised to at least this share of the schedule
HIGH_NOISE_FLOOR = 0.8  # --high-noise samples are noised to at least this share: beyond it the noise hides outlines
REAL_SIZE = 256  # pixels: the paper trains at 256, below SD 1.5's native 512 (smaller models: their own size)
OPTIMIZERS = ("adamw", "adam8bit")
IMAGE_TOWERS = ("vit", "resnet")  # clip: a transformers CLIPModel's ViT, or open_clip's ResNet (CLIP RN50's)
VISION_PATCHES = (4, 8, 16)  # clip: the ViT's patch sides in pixels that tile a 64 px frame
WEIGHT_DECAY = 0.01
CALIBRATION_PAIRS = 200  # clip: exact pairs (and as many broken ones of each kind) the filter thresholds come from
MAX_SKIPPED_STEPS = 40  # float16 overflows in a row before giving up: the scaler has halved its scale 40 times

# What a setting left unset (None) becomes: the preset's value, else DEFAULTS' (the toy world's). A preset's
# `batch` is the batch the paper means, batch_size x grad_accum x processes: it sets grad_accum unless given.
DEFAULTS = dict(steps=3000, batch_size=32, lr=3e-4, frames=8, optimizer="adamw", grad_accum=1,
                gradient_checkpointing=False, augment=False)  # fmt: skip
PRESETS = {
    # The paper (sec. 4): 2000 iterations, Adam lr 5e-5 (here AdamW, as everywhere in this loop), batch 512.
    "paper": dict(steps=2000, lr=5e-5, optimizer="adamw", batch=512, batch_size=1, frames=16, augment=True),
    # The reference code's config: Adam8bit lr 1e-5, 1 clip per GPU x 4 GPUs x 256 accumulated, fp16, checkpointing
    # (its 10 epochs of 2048 clips per GPU are only 80 steps: the paper's 2000 here).
    "reference": dict(steps=2000, lr=1e-5, optimizer="adam8bit", batch=1024, batch_size=1, frames=16, augment=True,
                      mixed_precision="fp16", gradient_checkpointing=True),
}  # fmt: skip


@dataclass
class TrainConfig:
    stage: str  # "clip", "2d", "video" (the editor), "t2i" or "t2v" (the data engine's generators)
    out_dir: str
    steps: int | None = None  # optimizer steps (None: the preset's, else 3000)
    batch_size: int | None = None  # frames (clip, 2d) or clips (video) per process, micro-step (None: preset's, 32)
    lr: float | None = None  # peak learning rate (None: the preset's, else 3e-4)
    warmup: int = 100  # linear warm-up steps, then cosine decay to 10%
    frames: int | None = None  # frames per clip in the video stage (None: the preset's, else 8)
    drop_text: float = 0.05  # condition dropout, for guidance (InstructPix2Pix: 5% each, 5% both)
    drop_video: float = 0.05
    drop_both: float = 0.05  # (t2i, t2v: only drop_text + drop_both applies: the caption is dropped)
    edit_weight: float = 4.0  # extra loss weight where target and source differ (0: the plain InstructPix2Pix loss)
    shape_weight: float = 4.0  # t2i, t2v: extra loss weight on the shapes' pixels (a few percent of a frame)
    snr_gamma: float | None = None  # t2i, t2v: Min-SNR loss weighting with this gamma (None: every step alike)
    high_noise: float = 0.0  # t2i, t2v: share of samples noised to HIGH_NOISE_FLOOR or more, where words decide shapes
    edited_frames: bool = False  # clip: half of each batch the edited frames of the same triplets (`captioned_frames`)
    kind_negatives: bool = False  # clip: each frame's caption with a shape named as another kind, as a negative
    vision_patch: int = 8  # clip: the ViT's patch side in pixels; 4 sees outlines (shape kinds) at 4x the tokens
    image_tower: str = "vit"  # clip: "vit" (a transformers CLIPModel) or "resnet" (open_clip, CLIP RN50's tower)
    calibrate: int | None = None  # clip: exact toy-world pairs its filter thresholds are calibrated on at the end
    #                               (None: CALIBRATION_PAIRS; 0: none)
    edit_swap: float = 0.0  # t2i, t2v: share of samples whose caption and target are the scene edited, noised from
    #                         the scene as drawn (see `captioned_clips`)
    swap_edits: list[str] | None = None  # the kinds of edit --edit-swap draws (None: all, as often as the world does)
    clip_dir: str | None = None  # stages 2d, t2i: a trained CLIP whose text tower starts the text encoder (else random)
    init_dir: str | None = None  # stage video (t2v): the 2-D (t2i) model folder, or (video) a model source of
    #                              insv2v.loading: a pipeline folder or hub id, compose:IMAGE+MOTION; 2d, t2i: one to
    #                              go on from (optional)
    fine_attention: bool = False  # 2d, t2i: attention at 16x16 too (grown into an --init model that lacks it)
    prediction_type: str = "sample"  # t2i started afresh: what its UNet predicts (sample, epsilon, v_prediction)
    patch_size: int = PATCH  # t2i started afresh: pixels folded into channels, 4 (16x16x48 latents) or 2 (32x32x12)
    edit_mix: dict[str, float] | None = None  # relative frequency of each edit kind (None: the world's own mix)
    data_dir: str | None = None  # stages 2d, video: train on this `insv2v synth generate` dataset's kept pairs
    reverse_pairs: float = 0.0  # --data: share of the draws of a pair the toy grammar can undo that run backwards
    size: int | None = None  # --data's frames resized to size x size (None: see `training_size`)
    augment: bool | None = None  # video: random pans and zooms, the same on input and target (None: preset's, off)
    preset: str | None = None  # video: "paper" or "reference" (PRESETS) fills in the settings left unset
    optimizer: str | None = None  # "adamw", or "adam8bit" (bitsandbytes' AdamW8bit) (None: the preset's, adamw)
    grad_accum: int | None = None  # micro-steps per optimizer step (None: from the preset's batch, else 1)
    mixed_precision: str | None = None  # "no", "fp16", "bf16" (None: the preset's, else `accelerate launch`'s)
    gradient_checkpointing: bool | None = None  # recompute UNet activations in the backward pass: less memory
    ema: bool = False  # keep an exponential moving average of the trained weights; the final model is the EMA
    report_to: str | None = None  # accelerate trackers, comma-separated: tensorboard, wandb, ... (log.jsonl always)
    push_to_hub: str | None = None  # upload OUT_DIR/final to this Hugging Face Hub repo at the end
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 200
    threads: int | None = None  # CPU threads for torch (None: torch's default)
    workers: int = 0  # processes drawing fresh toy-world samples beside training (0: drawn between steps)


def resolve_settings(config: TrainConfig, processes: int = 1) -> TrainConfig:
    """`config` with every unset setting filled in: given values first, then its preset's, then DEFAULTS' (an unset
    mixed_precision outside the reference preset stays unset: accelerate's own)."""
    recipe = dict(PRESETS[config.preset]) if config.preset else {}
    batch = recipe.pop("batch", None)
    values = {**DEFAULTS, **recipe}
    values.update({k: getattr(config, k) for k in values if getattr(config, k) is not None})
    if batch and config.grad_accum is None:
        values["grad_accum"] = max(1, math.ceil(batch / (values["batch_size"] * processes)))
    return dataclasses.replace(config, **values)


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


def drawn_triplets(
    rng: np.random.Generator, n: int, frames: int = 1, edit_mix: dict[str, float] | None = None
) -> tuple[list[Triplet], np.ndarray, np.ndarray]:
    """n random training triplets, each rendered for `frames` frames from a random time: (triplets, input videos,
    edited videos), the videos (n, frames, h, w, 3) uint8."""
    triplets, inputs, targets = [], [], []
    for _ in range(n):
        triplet = random_triplet(rng, edit_mix)
        a, b = triplet.render(frames, first=int(rng.integers(32)))
        triplets.append(triplet)
        inputs.append(a)
        targets.append(b)
    return triplets, np.stack(inputs), np.stack(targets)


def frame_pairs(
    rng: np.random.Generator, n: int, edit_mix: dict[str, float] | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """n (input frame, edited frame, instruction, input caption) at random times of random training triplets."""
    triplets, inputs, targets = drawn_triplets(rng, n, 1, edit_mix)
    instructions, captions = [t.edit.instruction for t in triplets], [t.input_caption for t in triplets]
    return to_pixels(inputs[:, 0]), to_pixels(targets[:, 0]), instructions, captions


def kind_swapped_caption(rng: np.random.Generator, scene: Scene) -> str:
    """The scene's caption with one shape named as another kind: a caption only the shapes' outlines tell apart."""
    return caption(apply_edit(scene, random_edit(rng, scene, "shape")))


def captioned_frames(
    rng: np.random.Generator, n: int, edited: bool = False, kind_negatives: bool = False
) -> tuple[torch.Tensor, list[str], list[str]]:
    """n (frame, caption) of the CLIP stage, and negative captions: input frames of random training triplets (never
    styled: styles come from edits), or with `edited` the input and edited frames of n / 2 triplets, each captioned
    as drawn, so each pair's two frames meet in one batch as each other's hard negatives. With `kind_negatives`,
    each frame's caption with one shape named as another kind (else no negatives): without them the other captions
    of a batch differ in colours and backgrounds too, and the CLIP need not read kinds at all."""
    if edited:
        triplets, inputs, targets = drawn_triplets(rng, n // 2)
        scenes = [t.scene for t in triplets] + [t.edited for t in triplets]
        frames = np.concatenate([inputs[:, 0], targets[:, 0]])
    else:
        triplets, inputs, _ = drawn_triplets(rng, n)
        scenes, frames = [t.scene for t in triplets], inputs[:, 0]
    negatives = [kind_swapped_caption(rng, scene) for scene in scenes] if kind_negatives else []
    return to_pixels(frames), [caption(scene) for scene in scenes], negatives


def clip_pairs(
    rng: np.random.Generator, n: int, frames: int, edit_mix: dict[str, float] | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """n (input clip, edited clip, instruction), clips as (n, 3, f, h, w) in [-1, 1]."""
    triplets, inputs, targets = drawn_triplets(rng, n, frames, edit_mix)

    def clips(videos: np.ndarray) -> torch.Tensor:
        return to_pixels(videos.reshape(-1, *videos.shape[2:])).unflatten(0, videos.shape[:2]).transpose(1, 2)

    return clips(inputs), clips(targets), [t.edit.instruction for t in triplets]


def captioned_clips(
    rng: np.random.Generator, n: int, frames: int, edit_swap: float = 0.0, swap_edits: list[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str], torch.Tensor]:
    """n (clip, source, shape coverage, caption, swapped) of random training scenes: clips and sources (n, 3, f, h, w)
    in [-1, 1], coverage (n, 1, f, h, w) in [0, 1]; a share of the scenes in a style ("a pencil sketch of ...").

    The source is what the noisy input is made from: the clip itself, or, for an `edit_swap` share of the samples
    (`swapped`), the scene as drawn while the clip and caption are the scene after one of the world's edits (of the
    kinds `swap_edits`, else any): another colour, kind or background, or a style, everything else in place. Noised
    enough, the two are nearly the same input; asked for the caption there, the model must take what the words name
    from the words and where things are from the noise. The plain loss lets it ignore a kind word, and a layout that
    moves with any change of caption defeats Prompt-to-Prompt (docs/toy-generators.md).
    """
    swap_edits = swap_edits or list(EDIT_MIX)
    weights = np.array([EDIT_MIX[kind] for kind in swap_edits])
    clips, sources, coverage, captions, swapped = [], [], [], [], []
    for _ in range(n):
        scene = random_scene(np.random.default_rng(int(rng.integers(TRAIN_SEEDS.stop))))
        if rng.random() < STYLE_SHARE:
            scene = dataclasses.replace(scene, style=str(rng.choice(STYLES)))
        first = int(rng.integers(32))
        drawn = to_pixels(render(scene, frames, first)).transpose(0, 1)  # (3, f, h, w)
        covered = shape_masks(scene, frames, first).max(axis=0)
        swap = bool(rng.random() < edit_swap)
        if swap:
            scene = apply_edit(scene, random_edit(rng, scene, str(rng.choice(swap_edits, p=weights / weights.sum()))))
            covered = np.maximum(covered, shape_masks(scene, frames, first).max(axis=0))
        clips.append(to_pixels(render(scene, frames, first)).transpose(0, 1) if swap else drawn)
        sources.append(drawn)
        coverage.append(torch.from_numpy(covered)[None])  # (1, f, h, w)
        captions.append(caption(scene))
        swapped.append(swap)
    return torch.stack(clips), torch.stack(sources), torch.stack(coverage), captions, torch.tensor(swapped)


# ---------------------------------------------------------------- data: the kept pairs of a synthetic dataset


PAIR_MEMORY = 2 * 2**30  # bytes of decoded pairs a process keeps (a toy set entirely; of a large one, a share)


@dataclass
class PairData:
    """The kept pairs of a dataset made by `insv2v synth generate` (under `accelerate launch`, this process's share):
    checked from their headers when loaded, decoded when first drawn, and kept decoded while `memory` allows, so a
    dataset of any size trains without holding it all."""

    root: str  # the dataset folder, as --data named it
    files: list[tuple[Path, Path]]  # per kept pair: its input and edited videos
    instructions: list[str]  # the `edit` prompt of each kept pair
    captions: list[str]  # the `input` prompt of each kept pair
    thresholds: dict | None  # the CLIP filter's thresholds in force (the dataset card's)
    counts: dict  # samples and kept ones, as `dataset.counts` gives them
    ids: list[str]  # the pair id of each kept pair held
    size: int  # frames are size x size pixels (resized by `fit_square` where `resize`)
    resize: bool
    clip_frames: int = 1  # frames a training clip takes: a pair that decodes to fewer is refused, naming its file
    memory: int = PAIR_MEMORY
    top_per_prompt: int | None = None  # at most this many kept per prompt (the dataset card's)
    outputs: list[str] = field(default_factory=list)  # the `output` prompt of each kept pair
    undos: list[str | None] = field(default_factory=list)  # per kept pair: the instruction undoing its edit, if any
    reverse: float = 0.0  # share of a reversible pair's draws that run backwards (see `draw`)
    reversible: int = 0  # with `reverse`: of every process's kept pairs, those whose edit can be undone
    decoded: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.files)

    def record(self) -> dict:
        """What a run trained on it records: which dataset (as --data named it: a shipped record names no machine's
        folders), under which filter, how many pairs."""
        record = {"dir": self.root, "thresholds": self.thresholds, "top_per_prompt": self.top_per_prompt,
                  "counts": self.counts}  # fmt: skip
        if self.reverse:
            record["reverse"] = {"share": self.reverse, "reversible": self.reversible}
        return record

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Kept pair i's input and edited frames, (f, size, size, 3) uint8 each."""
        if i in self.decoded:
            return self.decoded[i]
        from insv2v.video import read_video

        source, target = (read_video(path, multiple=1).frames for path in self.files[i])
        for path, frames in zip(self.files[i], (source, target), strict=True):
            if len(frames) < self.clip_frames:  # a file cut short: its header still counts the frames it lost
                raise ValueError(f"--data {self.root}: pair {self.ids[i]}'s {path.name} decodes to {len(frames)} "
                                 f"frames, fewer than the {self.clip_frames} of a training clip: it is cut "
                                 "short")  # fmt: skip
        if source.shape != target.shape:  # the headers agreed; the streams did not
            shapes = ["x".join(map(str, x.shape[:3])) for x in (source, target)]
            raise ValueError(f"--data {self.root}: pair {self.ids[i]}'s input and edited videos decode to "
                             f"{shapes[0]} and {shapes[1]}")  # fmt: skip
        if self.resize:
            source, target = fit_square(source, self.size), fit_square(target, self.size)
        held = sum(a.nbytes + b.nbytes for a, b in self.decoded.values())
        if held + source.nbytes + target.nbytes <= self.memory:
            self.decoded[i] = source, target
        return source, target

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str, str]:
        """A random kept pair: (input frames, edited frames, instruction, input caption). Where the toy grammar can
        undo its edit, a `reverse` share of its draws runs backwards: the edited frames as the input, the input
        frames as the target, the undoing instruction, the edited caption. A pair the generator got right either
        way teaches two edits, and an edit it makes poorly from one colour is learnt from the pairs that make it
        into that colour."""
        i = int(rng.integers(len(self)))
        source, target = self.pair(i)
        if self.reverse and self.undos[i] is not None and rng.random() < self.reverse:
            return target, source, self.undos[i], self.outputs[i]
        return source, target, self.instructions[i], self.captions[i]

    def frame_pairs(self, rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
        """n (input frame, edited frame, instruction, input caption): a random frame of a random draw, as
        `frame_pairs` gives them."""
        inputs, targets, instructions, captions = [], [], [], []
        for _ in range(n):
            source, target, instruction, caption = self.draw(rng)
            t = int(rng.integers(len(source)))
            inputs.append(source[t])
            targets.append(target[t])
            instructions.append(instruction)
            captions.append(caption)
        return to_pixels(np.stack(inputs)), to_pixels(np.stack(targets)), instructions, captions

    def clip_pairs(self, rng: np.random.Generator, n: int, frames: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """n (input clip, edited clip, instruction): the same random window of `frames` consecutive frames of both
        videos of a random draw, clips as (n, 3, f, h, w) in [-1, 1], as `clip_pairs` gives them."""
        inputs, targets, instructions = [], [], []
        for _ in range(n):
            source, target, instruction, _ = self.draw(rng)
            first = int(rng.integers(len(source) - frames + 1))
            inputs.append(to_pixels(source[first : first + frames]).transpose(0, 1))  # (3, f, h, w)
            targets.append(to_pixels(target[first : first + frames]).transpose(0, 1))
            instructions.append(instruction)
        return torch.stack(inputs), torch.stack(targets), instructions


def fit_square(frames: np.ndarray, size: int) -> np.ndarray:
    """(f, h, w, 3) -> (f, size, size, 3): the centred square of each frame, resized."""
    from insv2v.video import resize

    h, w = frames.shape[1:3]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return np.stack([resize(frame[top : top + side, left : left + side], size, size) for frame in frames])


def kept_records(data_dir: str, processes: int = 1, reverse: float = 0.0) -> tuple[list, list, list]:
    """A dataset's records, its kept ones, and (with `reverse`) each kept pair's undoing instruction or None, once
    the folder is known to be a dataset whose kept pairs `processes` can share (and, with `reverse`, can run some
    backwards): read from its manifest alone, so checked before any model is built."""
    from insv2v.toyworld.world import undo_instruction

    root = Path(data_dir)
    if not dataset.is_dataset(root):
        raise ValueError(f"--data {data_dir}: not a dataset made by `insv2v synth generate` (no {dataset.MANIFEST})")
    records = dataset.filtered_records(root)
    kept = [r for r in records if r["kept"]]
    if not kept:
        raise ValueError(f"--data {data_dir}: none of its {len(records)} samples is kept by the CLIP filter; "
                         "`insv2v synth filter` can re-apply other thresholds")  # fmt: skip
    if len(kept) < processes:
        raise ValueError(f"--data {data_dir}: its {len(kept)} kept pairs cannot be shared by {processes} processes")
    # Over every kept pair, not one process's share: each process refuses alike, and the record counts them all.
    undos = [undo_instruction(r["input"], r["edit"], r["output"], phrasing=r["index"]) for r in kept] if reverse else []
    if reverse and not any(u is not None for u in undos):
        raise ValueError(f"--data {data_dir}: --reverse-pairs runs pairs backwards with the toy grammar's undoing "
                         "instruction; it can state none of these pairs' edits backwards")  # fmt: skip
    return records, kept, undos


def kept_digest(kept: list[dict]) -> str:
    """Which samples of a dataset are kept, in a few characters: a run resumes only on the pairs it started on."""
    return hashlib.sha256(json.dumps(sorted(r["index"] for r in kept)).encode()).hexdigest()[:16]


def check_same_pairs(state: dict | None, kept: list[dict], data_dir: str) -> None:
    """Refuse to resume a run on `data_dir` if its kept pairs differ from those its checkpoint trained on (a `synth
    filter`, `rescore` or `generate` since): the run would go on with other data and record only the new filter."""
    if state is not None and state.get("pairs") not in (None, kept_digest(kept)):
        raise ValueError(f"--data {data_dir}: its kept pairs changed since this run started (re-filtered, re-scored or "
                         "grown); resume with them as they were, or start a new run")  # fmt: skip


def load_pairs(
    data_dir: str, frames: int, size: int, resize: bool = False, shard: tuple[int, int] = (0, 1), reverse: float = 0.0
) -> PairData:
    """The kept pairs of `data_dir`, each checked from its headers to have at least `frames` frames of `size` x
    `size` pixels (with `resize`: of any size, made `size` x `size` by `fit_square`). `shard` (i, n): only kept
    pairs i, i + n, i + 2n ... are held, process i's share of n. `reverse`: `PairData.draw`'s share."""
    from insv2v.video import probe

    root = Path(data_dir)
    index, processes = shard
    records, kept, undos = kept_records(data_dir, processes, reverse)
    reversible = sum(u is not None for u in undos)
    card = dataset.read_card(root)
    data = PairData(data_dir, [], [], [], card.get("thresholds"), dataset.counts(records), [], size, resize, frames,
                    top_per_prompt=card.get("top_per_prompt"), undos=undos[index::processes], reverse=reverse,
                    reversible=reversible)  # fmt: skip
    for r in kept[index::processes]:
        paths = tuple(dataset.pair_paths(root, r))
        source, target = (probe(path) for path in paths)
        name = f"--data {data_dir}: pair {r['id']}"
        shapes = [(info.num_frames, info.height, info.width) for info in (source, target)]
        if shapes[0] != shapes[1]:
            raise ValueError(f"{name}: its input ({'x'.join(map(str, shapes[0]))}) and edited "
                             f"({'x'.join(map(str, shapes[1]))}) videos differ in frames or size")  # fmt: skip
        if source.num_frames < frames:
            raise ValueError(f"{name} has {source.num_frames} frames, fewer than the {frames} of a training clip "
                             "(--frames)")  # fmt: skip
        if not resize and (source.height, source.width) != (size, size):
            raise ValueError(f"{name} has {source.width}x{source.height} frames; the model takes {size}x{size} "
                             f"(the toy world is {SIZE}x{SIZE})")  # fmt: skip
        data.files.append(paths)
        data.instructions.append(r["edit"])
        data.captions.append(r["input"])
        data.outputs.append(r["output"])
        data.ids.append(r["id"])
    return data


def data_source(config: TrainConfig) -> str | None:
    """The dataset a run trains on, as its checkpoint records it (None: fresh toy-world triplets)."""
    return str(Path(config.data_dir).resolve()) if config.data_dir else None


def check_config(config: TrainConfig) -> None:
    """The settings fit the stage and each other, checked before anything is written (a resumed run's agreement with
    its checkpoint: `check_resume`)."""
    from insv2v import metrics

    if config.data_dir and config.stage not in ("2d", "video"):
        raise ValueError(f"--data is for stages 2d and video (the editor), got stage {config.stage}")
    # Settings a stage would not read are refused, not recorded in config.json as if they had been used.
    for flag, given, stages in (("--edit-mix", config.edit_mix, ("2d", "video")),
                                ("--frames", config.frames, ("video", "t2v")),
                                ("--fine-attention", config.fine_attention, ("2d", "t2i")),
                                ("--clip", config.clip_dir, ("2d", "t2i"))):  # fmt: skip
        if given and config.stage not in stages:
            raise ValueError(f"{flag} is for stages {' and '.join(stages)}, got stage {config.stage}")
    if config.clip_dir and config.init_dir:
        raise ValueError("--clip starts a new text encoder from a CLIP's text tower; the model given by --init brings "
                         "its own")  # fmt: skip
    if config.prediction_type != "sample" and (config.stage != "t2i" or config.init_dir):
        raise ValueError("--prediction-type is for stage t2i started afresh (a model given by --init goes on "
                         "predicting what it learned to)")  # fmt: skip
    if config.patch_size != PATCH and (config.stage != "t2i" or config.init_dir):
        raise ValueError("--patch-size is for stage t2i started afresh (a model given by --init keeps its fold)")
    if config.vision_patch != 8 and (config.stage != "clip" or config.vision_patch not in VISION_PATCHES):
        sides = f"{', '.join(map(str, VISION_PATCHES[:-1]))} or {VISION_PATCHES[-1]}"
        raise ValueError(f"--vision-patch is {sides} pixels for stage clip, got {config.vision_patch} for stage "
                         f"{config.stage}")  # fmt: skip
    if config.image_tower != "vit" and (config.stage != "clip" or config.image_tower not in IMAGE_TOWERS):
        raise ValueError(f"--image-tower is one of {', '.join(IMAGE_TOWERS)} for stage clip, got "
                         f"{config.image_tower!r} for stage {config.stage}")  # fmt: skip
    if config.image_tower != "vit" and config.vision_patch != 8:
        raise ValueError(f"--vision-patch is the ViT's; the {config.image_tower} image tower has no patches")
    if config.clip_dir and metrics.open_clip_name(config.clip_dir):
        raise ValueError(f"--clip {config.clip_dir} is an open_clip folder; the text encoder starts from a "
                         "transformers CLIPModel's text tower (train clip with --image-tower vit)")  # fmt: skip
    if config.patch_size not in LEVELS:
        raise ValueError(f"--patch-size must be one of {', '.join(map(str, LEVELS))}, got {config.patch_size}")
    if config.patch_size != PATCH and config.fine_attention:
        raise ValueError("--fine-attention is for the 4x4 fold (--patch-size 4)")
    if config.prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"--prediction-type must be one of {', '.join(PREDICTION_TYPES)}, got {config.prediction_type!r}"
        )
    if config.snr_gamma is not None and (config.stage not in ("t2i", "t2v") or not config.snr_gamma > 0):
        raise ValueError(f"--snr-gamma is a positive number for stages t2i and t2v, got {config.snr_gamma} for "
                         f"stage {config.stage}")  # fmt: skip
    if config.high_noise and (config.stage not in ("t2i", "t2v") or not 0 <= config.high_noise <= 1):
        raise ValueError(f"--high-noise is a share from 0 to 1 for stages t2i and t2v, got {config.high_noise} for "
                         f"stage {config.stage}")  # fmt: skip
    if config.edit_swap and (config.stage not in ("t2i", "t2v") or not 0 <= config.edit_swap <= 1):
        raise ValueError(f"--edit-swap is a share from 0 to 1 for stages t2i and t2v, got {config.edit_swap} for "
                         f"stage {config.stage}")  # fmt: skip
    if config.swap_edits is not None and (not config.swap_edits or set(config.swap_edits) - set(EDIT_MIX)):
        raise ValueError(f"--swap-edits are edit kinds, some of {', '.join(EDIT_MIX)}, got {config.swap_edits}")
    if config.workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {config.workers}")
    if config.workers and config.data_dir:
        raise ValueError("--workers draws fresh toy-world samples; the kept pairs of --data are read in the training "
                         "process")  # fmt: skip
    if config.data_dir and config.edit_mix:
        raise ValueError("--edit-mix weighs the toy world's edit kinds; with --data the dataset's kept pairs are "
                         "drawn as they are")  # fmt: skip
    if config.reverse_pairs and (not config.data_dir or not 0 <= config.reverse_pairs <= 1):
        raise ValueError(f"--reverse-pairs is a share from 0 to 1 of the draws of --data's pairs, got "
                         f"{config.reverse_pairs}" + ("" if config.data_dir else " without --data"))  # fmt: skip
    if config.size and not config.data_dir:
        raise ValueError(f"--size resizes the frames of --data; the toy world's are {SIZE}x{SIZE}")
    if config.preset and config.preset not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {config.preset!r}")
    if config.preset and config.stage != "video":
        raise ValueError(f"--preset is a recipe of the video stage, got stage {config.stage}")
    if config.augment and config.stage != "video":
        raise ValueError(f"--motion-augment moves the clips of the video stage, got stage {config.stage}")
    if config.optimizer and config.optimizer not in OPTIMIZERS:
        raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}")
    resolved = resolve_settings(config)  # the preset's and the defaults' values where none was given
    if resolved.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ValueError("fp16 mixed precision needs a GPU (on the CPU it would run in fp32); use "
                         "--mixed-precision bf16 or no")  # fmt: skip
    for flag, on in (("--edited-frames", config.edited_frames), ("--kind-negatives", config.kind_negatives)):
        if on and config.stage != "clip":
            raise ValueError(f"{flag} is for stage clip, got stage {config.stage}")
    if config.edited_frames and resolved.batch_size % 2:
        raise ValueError("--edited-frames takes an even --batch-size (each triplet gives two frames), got "
                         f"{resolved.batch_size}")  # fmt: skip
    if config.calibrate is not None and (config.stage != "clip" or config.calibrate < 0):
        raise ValueError(f"--calibrate is a number of pairs (0 or more) for stage clip, got {config.calibrate} for "
                         f"stage {config.stage}")  # fmt: skip
    if config.gradient_checkpointing and config.stage == "clip":
        raise ValueError("--gradient-checkpointing is for the UNet stages (2d, video, t2i, t2v), got stage clip")
    lr = resolved.lr
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"--lr must be a positive number, got {lr}")
    check_out_dir(Path(config.out_dir))
    if config.report_to:
        check_trackers(config.report_to)
    if config.push_to_hub:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(config.push_to_hub)
        except HFValidationError as err:
            raise ValueError(f"--push-to-hub {config.push_to_hub}: not a hub repo id (OWNER/NAME): {err}") from None


def check_out_dir(out: Path) -> None:
    """A run starts in a new or empty folder, or goes on in one an earlier start of it made; never writes over a model
    or anything else."""
    if not out.is_dir() or all(p.name == LOCK for p in out.iterdir()):
        return
    try:
        ours = "stage" in json.loads((out / "config.json").read_text())  # a run's settings, not a model's config
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        raise ValueError(f"{out} holds other files and is not a training run; choose a new or empty folder")


def check_trackers(report_to: str) -> None:
    """Each of the comma-separated trackers is one accelerate knows and whose package is installed (accelerate
    itself would drop a missing one without a word)."""
    from accelerate import tracking
    from accelerate.utils import LoggerType

    for name in report_to.split(","):
        if name not in LoggerType.list():
            raise ValueError(f"--report-to {name}: not a tracker accelerate knows ({', '.join(LoggerType.list())})")
        if name != "all" and LoggerType(name) not in tracking.get_available_trackers():
            raise ValueError(f"--report-to {name}: its package is not installed (pip install {name})")


# ---------------------------------------------------------------- the models of each stage


def build(config: TrainConfig):
    """(trainable modules by name, frozen helpers) for the stage; helpers: tokenizer, vae, scheduler (training
    noise), sampler (the saved pipeline's scheduler), and a frozen text_encoder where it does not train."""
    from insv2v.toyworld import models

    if config.stage == "clip" and config.image_tower == "resnet":
        return {"clip": models.toy_resnet_clip()}, {"tokenizer": models.resnet_clip_tokenizer()}
    if config.stage == "clip":
        return {"clip": models.toy_clip(config.vision_patch)}, {"tokenizer": models.toy_tokenizer()}
    if config.stage == "video" and config.init_dir and not is_2d_folder(config.init_dir):
        from insv2v.loading import load_fresh  # not load_pipeline: its cache would share the weights this run changes

        return pipeline_parts(load_fresh(config.init_dir, torch.device("cpu"), torch.float32))
    kind = config.prediction_type
    if config.init_dir:  # a trained model goes on predicting what it learned to
        sampler_config = Path(config.init_dir) / "scheduler" / "scheduler_config.json"
        kind = json.loads(sampler_config.read_text())["prediction_type"] if sampler_config.is_file() else "sample"
    helpers = {"tokenizer": models.toy_tokenizer(), "scheduler": models.toy_train_scheduler(kind),
               "sampler": models.toy_sample_scheduler(kind)}  # fmt: skip
    modules, frozen = _toy_modules(config)
    return modules, {**helpers, **frozen, "vae": models.toy_autoencoder(models.patch_of(modules["unet"]))}


def _toy_modules(config: TrainConfig) -> tuple[dict, dict]:
    """The toy stages' UNet and text encoder, fresh or from --init: (trainable modules, frozen ones)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPModel, CLIPTextModel

    from insv2v.models import add_source_channels
    from insv2v.toyworld import models

    if config.stage in ("2d", "t2i"):
        if config.init_dir:  # go on from a trained model of the stage; stage 2d also from a text-to-image model
            init = Path(config.init_dir)
            unet = UNet2DConditionModel.from_pretrained(init / "unet")
            text_encoder = CLIPTextModel.from_pretrained(init / "text_encoder")
            if config.stage == "2d" and unet.config.in_channels == unet.config.out_channels:
                unet = add_source_channels(unet)  # InstructPix2Pix's start: its text-to-image model
        else:
            clip = CLIPModel.from_pretrained(config.clip_dir) if config.clip_dir else models.toy_clip()
            text_encoder = models.text_encoder_from_clip(clip)  # trained along with the UNet
            unet = models.toy_unet2d(source_conditioned=config.stage == "2d", patch=config.patch_size)
        if config.fine_attention:
            unet = models.grow_fine_attention(unet)
        return {"unet": unet, "text_encoder": text_encoder}, {}
    if config.stage in ("video", "t2v"):
        if not config.init_dir:
            raise ValueError(f"stage {config.stage} needs --init (the trained 2-D model folder)")
        from insv2v.models import inflate_unet

        unet = inflate_unet(UNet2DConditionModel.from_pretrained(Path(config.init_dir) / "unet"))
        text_encoder = CLIPTextModel.from_pretrained(Path(config.init_dir) / "text_encoder").requires_grad_(False)
        return {"unet": only_motion_modules_train(unet)}, {"text_encoder": text_encoder}
    raise ValueError(f"stage must be clip, 2d, video, t2i or t2v, got {config.stage!r}")


def only_motion_modules_train(unet):
    unet.requires_grad_(False)
    for name, param in unet.named_parameters():
        param.requires_grad_("motion_modules" in name)  # only the motion modules learn (InsV2V sec. 3.2)
    return unet


def pipeline_parts(pipe) -> tuple[dict, dict]:
    """Stage video's modules and helpers from an InsV2V pipeline: its UNet (motion modules trained), its frozen
    VAE and text encoder, its tokenizer; noise is added on its scheduler's schedule, which also samples the result."""
    from diffusers import DDPMScheduler

    helpers = {"tokenizer": pipe.tokenizer, "vae": pipe.vae.requires_grad_(False),
               "text_encoder": pipe.text_encoder.requires_grad_(False),
               "scheduler": DDPMScheduler.from_config(pipe.scheduler.config), "sampler": pipe.scheduler}  # fmt: skip
    return {"unet": only_motion_modules_train(pipe.unet)}, helpers


def is_pixel_fold(vae) -> bool:
    """The toy world's lossless "autoencoder": latents are the pixels, folded."""
    return isinstance(vae, PixelUnshuffleAutoencoder)


def training_size(config: TrainConfig, unet, vae) -> tuple[int, bool]:
    """(side in pixels, whether --data's frames are resized to it): --size if given; else a learned VAE's model
    trains at REAL_SIZE (or its own size if smaller), the toy's pixel model on frames of its own size as they are."""
    from insv2v.pipeline import vae_scale_factor

    sample_size = unet.config.sample_size
    native = (sample_size if isinstance(sample_size, int) else min(sample_size)) * vae_scale_factor(vae)
    if config.size:
        if config.size % vae_scale_factor(vae):
            raise ValueError(f"--size must be a multiple of {vae_scale_factor(vae)} (the model's autoencoder shrinks "
                             f"frames by that factor), got {config.size}")  # fmt: skip
        return config.size, True
    return (native, False) if is_pixel_fold(vae) else (min(REAL_SIZE, native), True)


# ---------------------------------------------------------------- losses


def encode_text(tokenizer, text_encoder, texts: list[str], device: torch.device | None = None) -> torch.Tensor:
    return text_encoder(token_ids(tokenizer, texts, say_cut=False).to(device))[0]  # (n, L, C)


def encode_pixels(vae, pixels: torch.Tensor) -> torch.Tensor:
    """Unscaled posterior means of (n, 3, h, w) pixels in [-1, 1], as float32."""
    return vae.encode(pixels.to(vae.dtype)).latent_dist.mode().float()


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """(n, c, f, h, w) -> (n*f, c, h, w): frames as a batch of images."""
    return x.transpose(1, 2).flatten(0, 1)


def unfold_frames(x: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of `fold_frames` for `n` clips."""
    return x.unflatten(0, (n, -1)).transpose(1, 2)


def drop_conditions(rng: np.random.Generator, n: int, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(no_text, no_video) masks of n samples for dual guidance (InstructPix2Pix sec. 3.2.1): the text alone is
    dropped with probability drop_text, both with drop_both, the source video alone with drop_video."""
    roll = torch.from_numpy(rng.random(n)).float()
    no_text = roll < config.drop_text + config.drop_both
    no_video = (roll >= config.drop_text) & (roll < config.drop_text + config.drop_both + config.drop_video)
    return no_text, no_video


def loss_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to output for x_t = add_noise(x0, noise, t), by the scheduler's `prediction_type`."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return x0
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {kind!r}")


def min_snr_weight(scheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023) of timesteps `t`, for the scheduler's prediction type: the
    x0 error weighted by min(SNR, gamma), written as a weight on the error of what the UNet predicts."""
    alpha_bar = scheduler.alphas_cumprod.to(t.device)[t]
    snr = alpha_bar / (1 - alpha_bar)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":  # |eps error|^2 = SNR |x0 error|^2; min(SNR, gamma) / SNR, finite at SNR 0
        return (gamma / snr).clamp(max=1)
    if kind == "v_prediction":  # |v error|^2 = (SNR + 1) |x0 error|^2
        return snr.clamp(max=gamma) / (snr + 1)
    if kind == "sample":
        return snr.clamp(max=gamma)
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {kind!r}")


def editing_loss(unet, helpers, text_encoder, source, target, instructions, config, rng) -> torch.Tensor:
    """InstructPix2Pix loss with condition dropout; source/target (n, 3, h, w) or (n, 3, f, h, w) in [-1, 1]."""
    vae, scheduler, tokenizer = helpers["vae"], helpers["scheduler"], helpers["tokenizer"]
    video = source.ndim == 5
    n = source.shape[0]
    target_px, source_px = (fold_frames(target), fold_frames(source)) if video else (target, source)
    with torch.no_grad():  # the VAE never trains
        x0 = encode_pixels(vae, target_px) * vae.config.scaling_factor
        cond = source_latents = encode_pixels(vae, source_px)  # unscaled, as InstructPix2Pix conditions
    no_text, no_video = drop_conditions(rng, n, config)
    texts = ["" if drop else text for drop, text in zip(no_text.tolist(), instructions, strict=True)]
    embeds = encode_text(tokenizer, text_encoder, texts, source.device).float()  # (n, L, C)
    keep_video = (~no_video).float().to(source.device)
    if video:
        x0, cond, source_latents = (unfold_frames(x, n) for x in (x0, cond, source_latents))
    cond = cond * keep_video.view(n, *[1] * (cond.ndim - 1))
    noise = torch.randn_like(x0)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,)).to(source.device)
    noisy = scheduler.add_noise(x0, noise, t)  # per-sample timesteps broadcast over (c, [f,] h, w)
    model_input = torch.cat([noisy, cond], dim=1)
    if video:
        pred = unet_on_video(unet, model_input, t, embeds)
    else:
        pred = unet(model_input, t, encoder_hidden_states=embeds).sample
    error = F.mse_loss(pred.float(), loss_target(scheduler, x0, noise, t), reduction="none")
    if not is_pixel_fold(vae):
        return error.mean()
    # A recoloured shape is a few percent of the pixels; weighting what the edit changes makes the model learn
    # the edit instead of only the copy. Only the lossless pixel fold says which latents an edit changed (x0 and
    # the unscaled source share one space); a learned VAE's latents differ all over, so real models train unweighted.
    changed = ((x0 / vae.config.scaling_factor - source_latents).abs() > EDIT_THRESHOLD).float()
    return (error * (1 + config.edit_weight * changed)).mean()


def generation_loss(
    unet, helpers, text_encoder, clips, coverage, captions, config, rng, sources=None, swapped=None
) -> torch.Tensor:
    """Text-to-image/video loss with caption dropout; clips (n, 3, f, h, w) in [-1, 1], coverage (n, 1, f, h, w).

    A 2-D UNet sees the frames as a batch of images; a video UNet sees whole clips. `sources` (default: the clips)
    are what the noisy inputs are made from; the `swapped` samples, whose source differs from their clip, are
    noised to at least SWAP_FLOOR of the schedule and their target is the clip (`captioned_clips`); a
    `config.high_noise` share of all samples is noised to at least HIGH_NOISE_FLOOR.
    """
    vae, scheduler, tokenizer = helpers["vae"], helpers["scheduler"], helpers["tokenizer"]
    n, f = clips.shape[0], clips.shape[2]
    swapping = swapped is not None and bool(swapped.any())
    with torch.no_grad():
        x0 = encode_pixels(vae, fold_frames(clips)) * vae.config.scaling_factor  # (n*f, c, h, w)
        x_source = encode_pixels(vae, fold_frames(sources)) * vae.config.scaling_factor if swapping else x0
    dropped = rng.random(n) < config.drop_text + config.drop_both
    texts = ["" if d else c for d, c in zip(dropped, captions, strict=True)]
    embeds = encode_text(tokenizer, text_encoder, texts, clips.device).float()
    noise = torch.randn_like(x0)
    steps = scheduler.config.num_train_timesteps
    t = torch.randint(0, steps, (n,)).to(clips.device)
    if swapping:
        floor = round(SWAP_FLOOR * steps)
        t = torch.where(swapped.to(t.device), torch.randint(floor, steps, (n,)).to(t.device), t)
    if config.high_noise:  # more of the steps where the noise no longer shows an outline: the words must draw it
        high = torch.rand(n) < config.high_noise
        t = torch.where(high.to(t.device), torch.randint(round(HIGH_NOISE_FLOOR * steps), steps, (n,)).to(t.device), t)
    t_frames = t.repeat_interleave(f)  # one timestep per clip
    noisy = scheduler.add_noise(x_source, noise, t_frames)
    if swapping:  # the noise that makes `noisy` from the clip instead of its source
        alpha_bar = scheduler.alphas_cumprod.to(t.device)[t_frames].view(-1, 1, 1, 1)
        implied = (noisy - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
        noise = torch.where(swapped.to(t.device).repeat_interleave(f).view(-1, 1, 1, 1), implied, noise)
    pred = fold_frames(unet_on_video(unet, unfold_frames(noisy, n), t, embeds))
    # The shapes carry what a caption says beyond the background; they are a few percent of the pixels.
    weight = 1 + config.shape_weight * F.pixel_unshuffle(fold_frames(coverage), vae.config.patch_size)
    weight = weight.mean(dim=1, keepdim=True)  # (n*f, 1, h, w): the coverage of each folded patch
    if config.snr_gamma is not None:  # the steps that draw outlines, not the blurred mean of the noisiest ones
        weight = weight * min_snr_weight(scheduler, t_frames, config.snr_gamma).view(-1, 1, 1, 1)
    target = loss_target(scheduler, x0, noise, t_frames)
    return (F.mse_loss(pred.float(), target, reduction="none") * weight).mean()


def clip_logits(clip, tokenizer, pixels: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """(images, texts) scaled cosines of a transformers CLIPModel or an open_clip CLIP, from [0, 1] pixels."""
    from transformers import CLIPModel

    if isinstance(clip, CLIPModel):
        ids = token_ids(tokenizer, texts, say_cut=False).to(pixels.device)
        return clip(input_ids=ids, pixel_values=pixels).logits_per_image
    image_embeds, text_embeds, scale = clip(pixels, tokenizer(texts).to(pixels.device))[:3]  # unit vectors
    return scale * image_embeds @ text_embeds.T


def clip_loss(clip, tokenizer, images: torch.Tensor, captions: list[str], negatives: list[str] = ()) -> torch.Tensor:
    """CLIP's symmetric contrastive loss over a batch of (image, caption); `negatives` are more captions each image
    must score below its own, not images the captions choose among (NegCLIP's hard negatives, Yuksekgonul et al.
    2023). Without them it is CLIPModel's own loss (open_clip's ClipLoss for an open_clip CLIP)."""
    # the toy CLIPs see [0, 1] pixels, no normalisation
    logits = clip_logits(clip, tokenizer, (images + 1) / 2, [*captions, *negatives])  # (n, n + negatives)
    labels = torch.arange(len(captions), device=images.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits[:, : len(captions)].T, labels)) / 2


def draw_batch(config: TrainConfig, data: PairData | None, rng: np.random.Generator) -> tuple:
    """One micro-batch of the stage's samples on the CPU: fresh toy-world samples, or the kept pairs of --data."""
    n = config.batch_size
    if config.stage == "clip":
        return captioned_frames(rng, n, config.edited_frames, config.kind_negatives)
    if config.stage in ("t2i", "t2v"):
        frames = 1 if config.stage == "t2i" else config.frames
        return captioned_clips(rng, n, frames, config.edit_swap, config.swap_edits)
    if config.stage == "2d":
        return (data.frame_pairs(rng, n) if data else frame_pairs(rng, n, config.edit_mix))[:3]
    return data.clip_pairs(rng, n, config.frames) if data else clip_pairs(rng, n, config.frames, config.edit_mix)


class WorldBatches(torch.utils.data.IterableDataset):
    """Endless fresh toy-world micro-batches drawn in DataLoader worker processes (`--workers`): drawn between
    steps, rendering (1.7 ms a frame) would bound a toy step on a GPU. Worker w of a run started at `step` draws
    from seeds (seed, process, step, w); the loader takes the workers' batches in turn, so a run is reproducible
    for a given number of workers."""

    def __init__(self, config: TrainConfig, seeds: list[int]):
        self.config, self.seeds = config, seeds

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        rng = np.random.default_rng(np.random.SeedSequence([*self.seeds, worker.id if worker else 0]))
        while True:
            yield draw_batch(self.config, None, rng)


def batches(config: TrainConfig, data: PairData | None, rng: np.random.Generator, seeds: list[int], pin: bool):
    """The run's stream of micro-batches: drawn here, or with --workers in that many processes."""
    if not config.workers:
        while True:
            yield draw_batch(config, data, rng)
    loader = torch.utils.data.DataLoader(WorldBatches(config, seeds), batch_size=None, num_workers=config.workers,
                                         pin_memory=pin, prefetch_factor=4)  # fmt: skip
    yield from loader


def batch_loss(config: TrainConfig, modules: dict, helpers: dict, batch: tuple, rng, device) -> torch.Tensor:
    """The loss of one micro-batch of the stage (as `draw_batch` gives it)."""
    if config.stage == "clip":
        source, captions, negatives = batch
        return clip_loss(modules["clip"], helpers["tokenizer"], source.to(device), captions, negatives)
    text_encoder = modules.get("text_encoder", helpers.get("text_encoder"))
    if config.stage in ("t2i", "t2v"):
        clips, sources, coverage, captions, swapped = batch
        clips, sources, coverage = (x.to(device, non_blocking=True) for x in (clips, sources, coverage))
        return generation_loss(modules["unet"], helpers, text_encoder, clips, coverage, captions, config, rng,
                               sources, swapped)  # fmt: skip
    source, target, instructions = batch
    source, target = source.to(device), target.to(device)
    if config.augment:
        source, target = augment_pairs(rng, source, target)
    return editing_loss(modules["unet"], helpers, text_encoder, source, target, instructions, config, rng)


# ---------------------------------------------------------------- optimisation


def trainable_parameters(modules: dict) -> dict[str, torch.nn.Parameter]:
    """The parameters that learn, by "module.parameter" name."""
    return {f"{m}.{n}": p for m, module in modules.items() for n, p in module.named_parameters() if p.requires_grad}


def available_optimizer(name: str | None) -> str | None:
    """The optimizer this machine runs for `name`: adam8bit needs bitsandbytes, else AdamW with a warning (decided
    before the run's settings are recorded, so they say what ran, and a resume elsewhere is checked against it)."""
    if name != "adam8bit":
        return name
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        warnings.warn("--optimizer adam8bit needs bitsandbytes (pip install bitsandbytes); training with AdamW "
                      "(32-bit state) instead", stacklevel=2)  # fmt: skip
        return "adamw"
    return name


def make_optimizer(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, or bitsandbytes' 8-bit AdamW (its state in a quarter of the memory): `available_optimizer`'s."""
    if config.optimizer == "adam8bit":
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit(params, lr=config.lr, weight_decay=WEIGHT_DECAY)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=WEIGHT_DECAY)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def make_ema(params: dict[str, torch.nn.Parameter], checkpoint: Path | None = None):
    """An exponential moving average of `params`: the one saved in `checkpoint` if it holds one, else starting at
    the weights as they are (diffusers' EMAModel: decay (1 + n) / (10 + n) after n updates, at most 0.9999)."""
    from diffusers.training_utils import EMAModel

    ema = EMAModel(list(params.values()))
    if checkpoint and (checkpoint / "ema.safetensors").exists():
        try:
            shadows = load_file(checkpoint / "ema.safetensors")
            updates = json.loads((checkpoint / "state.json").read_text()).get("ema_updates", 0)
            ema.load_state_dict({"shadow_params": [shadows[name] for name in params], "optimization_step": updates})
        except (OSError, RuntimeError, ValueError, KeyError, SafetensorError) as err:
            raise damaged(checkpoint, err) from None
    return ema


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(folder: Path, modules: dict, optimizer, step: int, config: TrainConfig, ema=None,
                    scaler=None, pairs: str | None = None) -> None:  # fmt: skip
    """Weights, optimizer state, the step and the run's settings (`data_dir` as `data_source` records it, and which of
    its pairs were kept: `pairs`, `kept_digest`); the EMA of the trainable weights, if kept; float16's loss scale
    (`scaler`), so a resumed run does not learn it again over skipped steps. Written whole into a temporary folder
    (state.json last) and swapped in, so a run killed while saving resumes from this checkpoint or the one before,
    never a mix (see `settle_checkpoint`)."""
    tmp, old = _checkpoint_siblings(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, module in modules.items():
        weights = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
        save_file(weights, tmp / f"{name}.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")  # tensors and numbers only
    if scaler is not None:
        torch.save(scaler.state_dict(), tmp / "scaler.pt")
    data_dir = data_source(config)
    state = {"step": step, **({"data_dir": data_dir} if data_dir else {}), **({"pairs": pairs} if pairs else {}),
             "config": dataclasses.asdict(config)}  # fmt: skip
    if ema is not None:
        shadows = dict(zip(trainable_parameters(modules), ema.shadow_params, strict=True))
        save_file({k: v.detach().contiguous() for k, v in shadows.items()}, tmp / "ema.safetensors")
        state["ema_updates"] = ema.optimization_step
    (tmp / "state.json").write_text(json.dumps(state))
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def _checkpoint_siblings(folder: Path) -> tuple[Path, Path]:
    return folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")


def settle_checkpoint(folder: Path) -> None:
    """After a kill while saving: a complete new checkpoint (its state.json is written last) takes the place of a
    missing or unfinished one; leftovers go."""
    tmp, old = _checkpoint_siblings(folder)
    if (tmp / "state.json").exists() and not (folder / "state.json").exists():
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)


def checkpoint_state(folder: Path) -> dict | None:
    """The state.json of the (settled) checkpoint a run resumes from, or None."""
    return json.loads((folder / "state.json").read_text()) if (folder / "state.json").exists() else None


# What a resumed run may change: how long it trains; how it logs, checkpoints and uploads; where its toy samples are
# drawn (threads, workers); the accumulation (a preset's follows the number of processes); what follows the training
# (calibrate); the paths as written (the data's is compared resolved, as `data_source` records it).
RESUMABLE_CHANGES = {"steps", "log_every", "checkpoint_every", "threads", "workers", "report_to", "push_to_hub",
                     "grad_accum", "calibrate", "out_dir", "data_dir"}  # fmt: skip


def check_resume(config: TrainConfig, state: dict | None) -> None:
    """A resumed run goes on as it started (its data, and the settings its checkpoint recorded, preset and
    accelerate's choices resolved), and not below the steps it has done."""
    if state is None:
        return
    before, now = state.get("data_dir"), data_source(config)
    if before != now:
        then, given = (f"--data {d}" if d else "toy-world triplets (no --data)" for d in (before, now))
        raise ValueError(f"{config.out_dir} was trained on {then}, not {given}; resume it with the same data, or "
                         "start a new run")  # fmt: skip
    if state["step"] > config.steps:
        raise ValueError(f"{config.out_dir} has trained {state['step']} steps already; --steps must be at least that")
    before = state.get("config")  # checkpoints of earlier versions did not record it
    if before is None:
        return
    now = dataclasses.asdict(config)
    # A setting added after the checkpoint was written ran as its default (None: resolved at the start, not known).
    added = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default not in (None, dataclasses.MISSING)}
    then = {**{k: v for k, v in added.items() if k not in before}, **before}
    changed = [k for k in now if k not in RESUMABLE_CHANGES and k in then and then[k] != now[k]]
    if changed:
        listed = ", ".join(f"{k}: {then[k]!r} then, {now[k]!r} now" for k in changed)
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in sorted(RESUMABLE_CHANGES - {"out_dir", "data_dir"}))
        raise ValueError(f"{config.out_dir} was started with other settings ({listed}); resume it with the same ones "
                         f"(only {flags} may change), or start a new run")  # fmt: skip
    if before.get("steps", config.steps) != config.steps:  # allowed: the cosine stretches to the new length
        step, old = state["step"], dataclasses.replace(config, steps=before["steps"])
        then, now_lr = learning_rate(step, old), learning_rate(step, config)
        if not math.isclose(then, now_lr, rel_tol=0.01):
            warnings.warn(
                f"resuming at step {step} with --steps {config.steps} where the run had {before['steps']}: the "
                f"learning rate's cosine stretches to the new length, so it goes from {then:.3g} to {now_lr:.3g}",
                stacklevel=2,
            )
    if before.get("grad_accum") not in (None, config.grad_accum):  # allowed: a preset's follows the processes
        batch = config.batch_size * config.grad_accum
        warnings.warn(
            f"resuming with {config.grad_accum} accumulated micro-steps where the run had "
            f"{before['grad_accum']}: {batch} samples per process and step from here on",
            stacklevel=2,
        )


def load_checkpoint(folder: Path, modules: dict, optimizer, scaler=None) -> int:
    try:
        for name, module in modules.items():
            module.load_state_dict(load_file(folder / f"{name}.safetensors"))
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
        if scaler is not None and (folder / "scaler.pt").exists():  # float16 runs; checkpoints before it had none
            scaler.load_state_dict(torch.load(folder / "scaler.pt", weights_only=True))
        return json.loads((folder / "state.json").read_text())["step"]
    except (OSError, RuntimeError, ValueError, KeyError, SafetensorError) as err:
        raise damaged(folder, err) from None


def trim_log(path: Path, step: int) -> None:
    """A resumed run's log: the records up to its checkpoint's step; those after it (and a line a kill cut short)
    go, as the steps are trained again."""
    text = path.read_text() if path.exists() else ""
    kept = "".join(f"{line}\n" for line in complete_lines(path) if line.strip() and json.loads(line)["step"] <= step)
    if kept != text:
        write_text_atomically(path, kept)


def damaged(folder: Path, err: BaseException) -> ValueError:
    return ValueError(f"the checkpoint in {folder} is damaged ({err}); delete it to start the run afresh")


def save_final(config: TrainConfig, modules: dict, helpers: dict, data: PairData | None = None,
               shards: list[list[str]] | None = None) -> Path:  # fmt: skip
    """The finished model: a CLIP folder (with the filter thresholds calibrated for it), a text-to-video pipeline
    folder, an InsV2VPipeline folder, or for the 2-D stage the parts the video stage starts from (which
    `load_pipeline` loads as a per-frame editor); with training.json: the settings and the dataset trained on (None:
    fresh toy-world triplets), with the pair ids each process drew from (`shards`)."""
    final = Path(config.out_dir) / "final"
    _save_model(final, config, modules, helpers)
    pairs = CALIBRATION_PAIRS if config.calibrate is None else config.calibrate
    if config.stage == "clip" and pairs:
        from insv2v.toyworld.synthetic import calibrate_clip_folder

        calibrate_clip_folder(final, pairs)
    record = {"config": dataclasses.asdict(config), "data": {**data.record(), "shards": shards} if data else None}
    write_text_atomically(final / "training.json", json.dumps(record, indent=2))
    return final


def _save_model(final: Path, config: TrainConfig, modules: dict, helpers: dict) -> None:
    if config.stage == "clip" and config.image_tower == "resnet":
        from insv2v.toyworld.models import save_open_clip

        save_open_clip(modules["clip"], final)
        return
    if config.stage == "clip":
        modules["clip"].save_pretrained(final)
        helpers["tokenizer"].save_pretrained(final)
        return

    text_encoder = modules.get("text_encoder", helpers.get("text_encoder"))
    if config.stage in ("t2i", "t2v"):
        from insv2v.synth.t2v import TextToVideoPipeline

        pipe = TextToVideoPipeline(vae=helpers["vae"], text_encoder=text_encoder, tokenizer=helpers["tokenizer"],
                                   unet=modules["unet"], scheduler=helpers["sampler"])  # fmt: skip
        pipe.save_pretrained(final)
        return
    if config.stage == "2d":
        for name in ("unet", "text_encoder"):
            modules[name].save_pretrained(final / name)
        helpers["vae"].save_pretrained(final / "vae")  # so that it loads as a per-frame editor
        helpers["tokenizer"].save_pretrained(final / "tokenizer")
        helpers["sampler"].save_pretrained(final / "scheduler")  # what it predicts, for the video stage that follows
        return
    from insv2v.pipeline import InsV2VPipeline

    pipe = InsV2VPipeline(vae=helpers["vae"], text_encoder=text_encoder, tokenizer=helpers["tokenizer"],
                          unet=modules["unet"], scheduler=helpers["sampler"])  # fmt: skip
    pipe.save_pretrained(final)


def push_final(final: Path, repo_id: str) -> str:
    """Upload the finished model folder to the Hugging Face Hub repo `repo_id` (made if missing); its commit URL."""
    import huggingface_hub

    huggingface_hub.create_repo(repo_id, exist_ok=True)
    commit = huggingface_hub.upload_folder(repo_id=repo_id, folder_path=final, commit_message="insv2v train")
    return commit.commit_url


# ---------------------------------------------------------------- the loop


def train(config: TrainConfig) -> Path:
    """Train `config.stage` in `config.out_dir` (resuming a started run) on every process `accelerate launch` gave;
    returns the finished model's folder. A second `insv2v train` in the same folder is refused while this one runs."""
    with ExitStack() as lock:
        return _train(config, lock)


def _train(config: TrainConfig, lock: ExitStack) -> Path:
    held = False

    def hold_lock() -> None:  # by the main process, from the first moment the run folder exists
        nonlocal held
        if accelerator.is_main_process and out.is_dir() and not held:
            lock.enter_context(folder_lock(out, f"{out} is being trained by another run; wait for it to end, or "
                                                "train in another folder"))  # fmt: skip
            held = True

    # 1. Settings: checked, then resolved for this launch (preset, processes, precision)
    check_config(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out_dir)
    log_with = config.report_to.split(",") if config.report_to else None
    accelerator = Accelerator(mixed_precision=resolve_settings(config).mixed_precision, log_with=log_with,
                              project_dir=out)  # fmt: skip
    # A preset's batch sets the accumulation by the number of processes; the precision is what accelerate runs.
    config = resolve_settings(config, accelerator.num_processes)
    config = dataclasses.replace(config, mixed_precision=accelerator.mixed_precision,
                                 optimizer=available_optimizer(config.optimizer))  # fmt: skip
    accelerator.gradient_accumulation_steps = config.grad_accum
    # 2. What a killed run left, and whether it may go on with these settings
    checkpoint = out / "checkpoint"
    hold_lock()
    if accelerator.is_main_process:
        settle_checkpoint(checkpoint)
    accelerator.wait_for_everyone()
    state = checkpoint_state(checkpoint)
    check_resume(config, state)
    # 3. Models and data (the data's manifest checked first: building a model may mean a download)
    pairs = None
    if config.data_dir:
        _, kept, _ = kept_records(config.data_dir, accelerator.num_processes, config.reverse_pairs)
        check_same_pairs(state, kept, config.data_dir)
        pairs = kept_digest(kept)
    torch.manual_seed(config.seed)
    modules, helpers = build(config)
    if config.gradient_checkpointing:
        modules["unet"].enable_gradient_checkpointing()
    data = None
    if config.data_dir:
        size, resize = training_size(config, modules["unet"], helpers["vae"])
        data = load_pairs(config.data_dir, config.frames if config.stage == "video" else 1, size, resize,
                          shard=(accelerator.process_index, accelerator.num_processes),
                          reverse=config.reverse_pairs)  # fmt: skip
        accelerator.print(f"training on the {data.counts['kept']} kept pairs of {data.root} at {size}x{size}, "
                          f"shared by {accelerator.num_processes} process(es)")  # fmt: skip
    if accelerator.is_main_process:  # the settings, once every check has passed
        out.mkdir(parents=True, exist_ok=True)
        hold_lock()
        write_text_atomically(out / "config.json", json.dumps(dataclasses.asdict(config), indent=2))  # kill-safe
    accelerator.print(f"batch {config.batch_size} x {config.grad_accum} accumulated x {accelerator.num_processes} "
                      f"process(es) = {config.batch_size * config.grad_accum * accelerator.num_processes}")  # fmt: skip
    # 4. Optimizer, resumed state, and the stream of batches
    trainable = trainable_parameters(modules)
    params = list(trainable.values())
    optimizer = make_optimizer(params, config)
    step = 0
    if state is not None:  # every process loads it; only the main process writes it
        step = load_checkpoint(checkpoint, modules, optimizer, accelerator.scaler)
        accelerator.print(f"resumed from step {step}")
    if accelerator.is_main_process:  # steps a killed run logged past its checkpoint (or before its first) go again
        trim_log(out / "log.jsonl", step)
    ema = make_ema(trainable, checkpoint if step else None) if config.ema else None
    names = list(modules)
    prepared = accelerator.prepare(*modules.values(), optimizer)
    modules, optimizer = dict(zip(names, prepared[:-1], strict=True)), prepared[-1]
    for module in modules.values():
        module.train()
    for name in ("vae", "text_encoder"):
        if name in helpers:
            helpers[name].to(accelerator.device)
    if ema is not None:
        ema.to(accelerator.device)
    if config.report_to:
        settings = {k: v for k, v in dataclasses.asdict(config).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("insv2v", config=settings)
    # Each process and each resumed run draws different samples and different noise.
    seeds = [config.seed, accelerator.process_index, step]
    sequence = np.random.SeedSequence(seeds)
    rng = np.random.default_rng(sequence)
    torch.manual_seed(int(sequence.generate_state(1)[0]))
    stream = batches(config, data, rng, seeds, pin=accelerator.device.type == "cuda")
    # The first record of each run says where every process started and how many pairs it draws from.
    started = gather_object([{"process": accelerator.process_index, "started_at": step,
                              **({"pairs": len(data.ids)} if data else {})}])  # fmt: skip
    # 5. The loop: a step, its log record, its checkpoint
    began, losses, skipped = time.perf_counter(), [], 0
    while step < config.steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        logged = len(losses)
        for _ in range(config.grad_accum):  # accelerate steps the optimizer on the last micro-step only
            with accelerator.accumulate(*modules.values()):
                with accelerator.autocast():
                    loss = batch_loss(config, modules, helpers, next(stream), rng, accelerator.device)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        if accelerator.optimizer_step_was_skipped:  # float16 overflowed: the scaler lowered its scale, no update
            del losses[logged:]  # not a step's loss (inf or NaN, likely)
            skipped += 1
            if skipped >= MAX_SKIPPED_STEPS:
                raise RuntimeError(f"float16 overflowed in {skipped} steps in a row at step {step}: the loss is not "
                                   "finite; try --mixed-precision bf16 or a lower --lr")  # fmt: skip
            continue  # not a step: the learning rate, the EMA and the step count wait for an update
        skipped = 0
        step += 1
        if ema is not None:
            ema.step(params)
        if step % config.log_every == 0 or step == config.steps:
            mean = torch.tensor(np.mean(losses), dtype=torch.float64, device=accelerator.device)
            record = {"step": step, "loss": accelerator.reduce(mean, "mean").item(),
                      "lr": learning_rate(step - 1, config),
                      "seconds": round(time.perf_counter() - began, 1)}  # fmt: skip
            accelerator.log({"loss": record["loss"], "lr": record["lr"]}, step=step)
            if started:
                record["processes"], started = started, None
            if accelerator.is_main_process:
                with open(out / "log.jsonl", "a") as log:
                    log.write(json.dumps(record) + "\n")
            accelerator.print(record)
            losses = []
        if accelerator.is_main_process and (step % config.checkpoint_every == 0 or step == config.steps):
            save_checkpoint(checkpoint, {n: accelerator.unwrap_model(m) for n, m in modules.items()}, optimizer,
                            step, config, ema, accelerator.scaler, pairs)  # fmt: skip
    # 6. The finished model (the average, with --ema), saved and uploaded by the main process
    stream.close()  # --workers: their processes end here, not after saving
    accelerator.wait_for_everyone()
    modules = {n: accelerator.unwrap_model(m, keep_fp32_wrapper=False).eval() for n, m in modules.items()}
    if ema is not None:
        ema.copy_to(params)  # the finished model is the average
    shards = gather_object([data.ids]) if data else None
    if config.report_to:
        accelerator.end_training()
    if not accelerator.is_main_process:
        return out / "final"
    final = save_final(config, modules, helpers, data, shards)
    if config.push_to_hub:
        accelerator.print(f"pushed {final} to {push_final(final, config.push_to_hub)}")
    return final
