"""The `insv2v` command.

insv2v edit INPUT.mp4 "make it snowy" -o OUT.mp4 --model DIR_OR_HUB_ID
insv2v edit --recipe OUT.json -o AGAIN.mp4          # reproduce an earlier edit exactly
insv2v tiny OUT_DIR                                  # a tiny random pipeline for smoke runs
insv2v convert insv2v.pth OUT_DIR                    # a reference checkpoint -> a pipeline folder
insv2v toyworld make OUT_DIR --n 16 --split heldout  # toy-world triplets as files
insv2v train clip|2d|video|t2i|t2v RUN_DIR           # train the toy models (resumes a started run)
insv2v eval --toyworld --out results.json            # the toy-world table of the paper's claims
insv2v generate "CAPTION" -o OUT.mp4                 # a video from text (the data engine's text-to-video model)
insv2v synth generate|filter|export ...              # the synthetic paired-video data engine (insv2v/synth/cli.py)
insv2v tav edit IN.mp4 --source-prompt .. --prompt .. -o OUT.mp4  # the Tune-A-Video baseline (insv2v/tav/cli.py)
insv2v study build|report ...                        # blind pairwise user studies (insv2v/study/cli.py)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from insv2v.argtypes import (
    non_negative_float,
    non_negative_int,
    number_in,
    positive_float,
    positive_int,
    resolution,
    seed,
    share,
    torch_device,
)
from insv2v.editing import EditRecipe, model_defaults
from insv2v.study import cli as study_cli
from insv2v.synth import cli as synth_cli
from insv2v.tav import cli as tav_cli
from insv2v.toyworld.world import EDIT_MIX

DEFAULTS = EditRecipe(input="", instruction="")
DTYPES = ("float32", "float16", "bfloat16")


def _default_guidance(name: str) -> str:
    """Help text for a guidance flag's default: a model folder's sampling.json, else EditRecipe's."""
    return f"the model's sampling.json, else {getattr(DEFAULTS, name)}"


def _edit_mix(text: str) -> dict[str, float]:
    """ "shape=5,colour=2" -> {"shape": 5.0, "colour": 2.0}: relative frequencies of the toy world's edit kinds."""
    mix = {}
    for item in text.split(","):
        kind, _, weight = item.partition("=")
        if kind.strip() not in EDIT_MIX:
            raise argparse.ArgumentTypeError(f"unknown edit kind {kind.strip()!r}; kinds: {', '.join(EDIT_MIX)}")
        try:
            mix[kind.strip()] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not KIND=WEIGHT") from None
    if not all(math.isfinite(w) and w >= 0 for w in mix.values()) or sum(mix.values()) <= 0:
        raise argparse.ArgumentTypeError(f"weights must be >= 0 and not all 0, got {text!r}")
    return mix


def _add_edit_parser(commands) -> None:
    p = commands.add_parser("edit", help="edit a video from a text instruction")
    p.add_argument("input", nargs="?", help="input video (any common format)")
    p.add_argument("instruction", nargs="?", help='what to change, e.g. "make it snowy"')
    p.add_argument("-o", "--output", required=True, help="output .mp4 (keeps fps and audio) or .gif")
    p.add_argument("--recipe", help="recipe JSON of an earlier edit: its settings become the defaults")
    p.add_argument(
        "--model",
        help="pipeline folder, hub id, or compose:IMAGE_MODEL+MOTION_ADAPTER, e.g. "
        "compose:timbrooks/instruct-pix2pix+guoyww/animatediff-motion-adapter-v1-5 "
        "(default: $INSV2V_MODEL, else the bundled toy editor)",
    )
    p.add_argument("--device", type=torch_device, help="cpu, cuda, cuda:1, mps (default: the best available)")
    p.add_argument("--dtype", choices=DTYPES, help="weights' precision (default: float16 on CUDA, else float32)")
    g = p.add_argument_group("guidance")
    text_help = f"text guidance; raise if the edit is too weak ({_default_guidance('text_cfg')})"
    g.add_argument("--text-cfg", type=float, help=text_help)
    video_help = f"video guidance; raise if the result strays ({_default_guidance('video_cfg')})"
    g.add_argument("--video-cfg", type=float, help=video_help)
    g.add_argument("--negative-prompt", help="text of the unconditional branch (default: empty)")
    g.add_argument("--steps", type=positive_int, help=f"denoising steps ({DEFAULTS.steps})")
    g.add_argument("--seed", type=seed, help="random seed (default: drawn and recorded in the recipe)")
    lv = p.add_argument_group("long video")
    lv.add_argument("--frames-per-clip", type=int, help=f"frames sampled together ({DEFAULTS.frames_per_clip})")
    lv.add_argument("--ref-frames", type=int, help=f"frames a clip shares with the one before ({DEFAULTS.ref_frames})")
    lv.add_argument("--lvsc", action=argparse.BooleanOptionalAction, help="long video sampling correction (the "
                    "model's sampling.json, else on)")  # fmt: skip
    lv.add_argument("--lvsc-fraction", type=float, help=f"fraction of steps corrected ({DEFAULTS.lvsc_fraction})")
    lv.add_argument("--mc", action=argparse.BooleanOptionalAction, help="motion-compensated correction (off)")
    s = p.add_argument_group("input sampling")
    s.add_argument("--start", type=non_negative_float, help="start time in seconds (0)")
    s.add_argument("--max-frames", type=positive_int, help="at most this many frames (default: all)")
    rate = s.add_mutually_exclusive_group()
    rate.add_argument("--stride", type=positive_int, help="keep every N-th frame (1)")
    rate.add_argument("--fps", type=positive_float, help="resample to this frame rate instead")
    s.add_argument(
        "--resolution", type=resolution, help="short side in pixels, 8 to 4096 (default: the model's native size)"
    )
    p.add_argument("--side-by-side", action="store_true", help="also write OUT_side_by_side.mp4 (input | edit)")


def _recipe_from_args(args: argparse.Namespace) -> tuple[EditRecipe, dict]:
    """The recipe the arguments give, over a --recipe's settings (or the model's defaults), and what the --recipe's
    run recorded ({} without one)."""
    if args.recipe:
        base, made = EditRecipe.load(args.recipe)
    else:
        from insv2v.loading import default_source

        base, made = model_defaults(default_source(args.model)), {}
    overrides = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(EditRecipe) if getattr(args, f.name, None) is not None
    }
    if args.fps is not None:
        overrides["stride"] = 1
    if args.stride is not None:
        overrides["fps"] = None
    recipe = dataclasses.replace(base, **overrides)
    if not recipe.input:
        raise ValueError("no input video: give INPUT (or a --recipe that names one)")
    if args.instruction is None and not args.recipe:
        raise ValueError('no instruction: give one after the input, e.g. "make it snowy"')
    return recipe, made


def edit(args: argparse.Namespace) -> None:
    import torch

    from insv2v.editing import SETTINGS, check_edit_files, name_settings, replay_differences, replay_dtype, run_edit
    from insv2v.loading import default_device, default_source, load_pipeline
    from insv2v.video import check_decode_length, probe

    dtype = getattr(torch, args.dtype) if args.dtype else None
    recipe, made = _recipe_from_args(args)
    info = probe(recipe.input)  # a bad input, output or instruction fails here, before the model loads
    check_decode_length(info, recipe.start, recipe.max_frames, recipe.stride, recipe.fps)
    check_edit_files(recipe, Path(args.output), args.side_by_side)
    device = torch.device(args.device) if args.device else default_device()
    dtype = dtype or replay_dtype(made, device)  # a recipe runs again in the precision it ran in
    pipe = load_pipeline(recipe.model, device=device, dtype=dtype)
    # the source it loaded, as given ($INSV2V_MODEL's "compose:A+B" too: a composed pipeline has no name_or_path)
    recipe = dataclasses.replace(recipe, model=default_source(recipe.model) or pipe.name_or_path)
    for note in replay_differences(made, recipe, pipe):
        print(f"insv2v: note: {note}", file=sys.stderr)
    try:
        result = run_edit(recipe, args.output, pipe, side_by_side_view=args.side_by_side)
    except ValueError as err:  # the pipeline names its arguments; the user gave flags
        flags = {arg: f"--{name.replace('_', '-')}" for arg, name in SETTINGS.items()}
        raise ValueError(name_settings(str(err), flags)) from err
    print(
        f"wrote {result.output} ({result.num_frames} frames, {result.width}x{result.height}, {result.fps:.3f} fps, "
        f"seed {result.recipe.seed}) in {result.seconds:.1f} s; recipe: {result.recipe_path}"
        + (f"; side by side: {result.side_by_side}" if result.side_by_side else "")
    )


def convert(args: argparse.Namespace) -> None:
    import torch

    from insv2v.files import check_new_folder
    from insv2v.models.reference import convert_reference_checkpoint

    check_new_folder(args.out_dir)
    pipe = convert_reference_checkpoint(
        args.checkpoint,
        args.out_dir,
        unet_config=args.unet_config,
        vae_config=args.vae_config,
        text_encoder_config=args.text_encoder_config,
        torch_dtype=getattr(torch, args.dtype),
    )
    print(f"text encoder keys: {pipe.text_encoder_layout} layout")
    print(
        f'wrote {args.out_dir}; edit with it: insv2v edit INPUT.mp4 "make it snowy" -o OUT.mp4 --model {args.out_dir}'
    )


def _add_convert_parser(commands) -> None:
    p = commands.add_parser(
        "convert",
        help="convert a reference InsV2V checkpoint (.pth, .ckpt, .safetensors) to a pipeline folder",
        description="Convert a checkpoint in the reference code's format (keys unet.*, vae.*, "
        "text_model.transformer.*) to a diffusers pipeline folder (safetensors). "
        "The configs default to the full-size reference model.",
    )
    p.add_argument("checkpoint", help="the reference checkpoint; no code in it is unpickled")
    p.add_argument("out_dir", help="folder to write (model_index.json, one subfolder per component)")
    p.add_argument("--unet-config", help="JSON of the UNetMotionModel config, for a checkpoint of another size")
    p.add_argument("--vae-config", help="JSON of the AutoencoderKL config")
    p.add_argument("--text-encoder-config", help="JSON of the CLIPTextModel config")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="precision of the saved weights (float32)")


def tiny(args: argparse.Namespace) -> None:
    from insv2v.testing.tiny import save_tiny_pipeline

    save_tiny_pipeline(args.out_dir, args.seed)


def _add_toyworld_parsers(commands) -> None:
    from insv2v.synth.t2v import DEFAULT_GUIDANCE, KIND_GUIDANCE_RANGE

    p = commands.add_parser("toyworld", help="the procedural toy world").add_subparsers(dest="action", required=True)
    make = p.add_parser("make", help="write triplets: NNNN/input.mp4, NNNN/target.mp4, NNNN/meta.json")
    make.add_argument("out_dir")
    make.add_argument("--n", type=positive_int, default=16, help="number of triplets (16)")
    make.add_argument("--seed", type=int, default=0, help="offset into the split (0)")
    make.add_argument("--split", choices=["train", "heldout"], default="train")
    make.add_argument("--frames", type=positive_int, default=16, help="frames per video (16)")

    t = commands.add_parser("train", help="train the toy world's models (the CLIP, the 2-D editor, its motion modules, "
                            "the data engine's text-to-image and text-to-video models), or the real editor's motion "
                            "modules at the paper's scale (stage video)")  # fmt: skip
    from insv2v.train import IMAGE_TOWERS, OPTIMIZERS, PRESETS, VISION_PATCHES

    t.add_argument("stage", choices=["clip", "2d", "video", "t2i", "t2v"])
    t.add_argument("out_dir", help="run folder (checkpoint, log.jsonl, final/); an existing run resumes")
    t.add_argument("--steps", type=positive_int, help="optimizer steps (the --preset's, else 3000)")
    t.add_argument("--batch-size", type=positive_int, help="frames (clip, 2d) or clips (video) per process and "
                   "micro-step (the --preset's, else 32)")  # fmt: skip
    t.add_argument("--lr", type=float, help="peak learning rate (the --preset's, else 3e-4)")
    t.add_argument("--warmup", type=positive_int, help="linear warm-up steps before the cosine decay (100)")
    t.add_argument("--frames", type=positive_int, help="frames per clip in stages video, t2v (the --preset's, else 8)")
    t.add_argument("--clip", dest="clip_dir", help="2d, t2i: trained CLIP folder whose text tower starts the encoder")
    t.add_argument("--init", dest="init_dir", help="video (t2v): the 2d (t2i) stage's final folder, or (video) a "
                   "model source: an InsV2V pipeline folder or hub id, or compose:IMAGE_MODEL+MOTION_ADAPTER, e.g. "
                   "compose:timbrooks/instruct-pix2pix+guoyww/animatediff-motion-adapter-v1-5; 2d, t2i: one to go "
                   "on from (2d also a text-to-image model: InstructPix2Pix's start)")  # fmt: skip
    t.add_argument("--fine-attention", action="store_true", help="2d, t2i: attention at 16x16 too (2.7x slower "
                   "steps; added to an --init model without it, starting as the identity)")  # fmt: skip
    t.add_argument("--shape-weight", type=non_negative_float,
                   help="t2i, t2v: extra loss weight on the shapes' pixels (4)")  # fmt: skip
    t.add_argument("--snr-gamma", type=float, help="t2i, t2v: Min-SNR loss weighting with this gamma (e.g. 5; "
                   "default: every timestep weighted alike)")  # fmt: skip
    t.add_argument("--edited-frames", action="store_true", help="clip: half of each batch the edited frames of the "
                   "same triplets, captioned as edited (styles too; each pair's two frames are hard negatives), so "
                   "that as the data engine's filter it tells an edit made from one not made")  # fmt: skip
    t.add_argument("--kind-negatives", action="store_true", help="clip: each frame's caption with one shape named "
                   "as another kind as an extra negative caption, so that it reads shape kinds (the filter's shape "
                   "edits)")  # fmt: skip
    t.add_argument("--vision-patch", type=int, choices=VISION_PATCHES, help="clip: the ViT's patch side in pixels (8; "
                   "4 sees shapes' outlines at 4x the tokens)")  # fmt: skip
    t.add_argument("--image-tower", choices=IMAGE_TOWERS, help="clip: the image tower, a transformers CLIPModel's "
                   "ViT (vit, the default) or open_clip's ResNet, CLIP RN50's at toy size, which learns shape outlines "
                   "far sooner (resnet; saved as an open_clip folder)")  # fmt: skip
    t.add_argument("--calibrate", type=non_negative_int, metavar="PAIRS", help="clip: at the end, calibrate the data "
                   "engine's filter thresholds for it on this many exact toy-world pairs and as many broken ones, "
                   "into final/filter_thresholds.json (200; 0: none)")  # fmt: skip
    t.add_argument("--edit-swap", type=share, help="t2i, t2v: share of samples captioned and drawn after one of the "
                   "world's edits, noised from the scene as it was: words say what, noise where (0)")  # fmt: skip
    t.add_argument("--high-noise", type=share, help="t2i, t2v: share of samples noised to 0.8 of the schedule or more, "
                   "where the noise no longer shows a shape's outline and the caption must decide it (0)")  # fmt: skip
    t.add_argument("--swap-edits", nargs="+", choices=list(EDIT_MIX), help="t2i, t2v: the kinds of edit --edit-swap "
                   "draws (default: all, as often as the world draws them)")  # fmt: skip
    t.add_argument("--prediction-type", choices=["sample", "epsilon", "v_prediction"], help="t2i started afresh: "
                   "what its UNet predicts (sample: x0, the toy models' choice)")  # fmt: skip
    t.add_argument("--patch-size", type=int, choices=[4, 2], help="t2i started afresh: pixels folded into "
                   "channels, 4 (16x16x48 latents, the editor's) or 2 (32x32x12, one more UNet level)")  # fmt: skip
    t.add_argument("--edit-mix", type=_edit_mix, help="2d, video: how often each edit kind is drawn, e.g. "
                   "shape=5,colour=2,background=2,style=1 (default: the world's 3,3,3,1)")  # fmt: skip
    t.add_argument("--data", dest="data_dir", metavar="DIR", help="2d, video: train on the kept pairs of a dataset "
                   "made by `insv2v synth generate` instead of fresh toy-world triplets (under accelerate launch, "
                   "process i of n takes pairs i, i+n, ...)")  # fmt: skip
    t.add_argument("--reverse-pairs", type=share, help="--data: share of the draws of a pair whose edit the toy "
                   "grammar can undo (colour, shape, background) that run backwards: the edited video as the "
                   "input, the input as the target, the undoing instruction (0)")  # fmt: skip
    t.add_argument("--size", type=positive_int, help="--data: frames resized to SIZE x SIZE pixels (default: "
                   "256 for real models, or their own size if smaller; the toy's pixel model takes its 64 "
                   "as they are)")  # fmt: skip
    t.add_argument("--edit-weight", type=non_negative_float, help="extra loss weight where the edit changes "
                   "pixels (4; the toy's pixel models only)")  # fmt: skip
    r = t.add_argument_group("real-scale training")
    r.add_argument("--preset", choices=list(PRESETS), help="video: a recipe for the settings not given: paper (2000 "
                   "steps, AdamW lr 5e-5, batch 512, 16 frames, motion augmentation) or reference (the reference "
                   "code's: Adam8bit lr 1e-5, batch 1024, fp16, gradient checkpointing)")  # fmt: skip
    r.add_argument("--motion-augment", dest="augment", action=argparse.BooleanOptionalAction, help="video: random "
                   "pans (70%%, up to 20%% of the frame) and zooms (20%%, up to 1.25x), the same on input and "
                   "target (the --preset's, else off)")  # fmt: skip
    r.add_argument("--optimizer", choices=OPTIMIZERS, help="adamw, or adam8bit (bitsandbytes' 8-bit AdamW; AdamW "
                   "with a warning where it is not installed) (the --preset's, else adamw)")  # fmt: skip
    r.add_argument("--grad-accum", type=positive_int, help="micro-steps per optimizer step: the batch is batch-size "
                   "x grad-accum x processes (default: a --preset's batch, else 1)")  # fmt: skip
    r.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], help="autocast precision (the --preset's, "
                   "else accelerate launch's, else no)")  # fmt: skip
    r.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, help="recompute the "
                   "UNet's activations in the backward pass: less memory, slower steps (the --preset's, "
                   "else off)")  # fmt: skip
    r.add_argument("--ema", action="store_true", help="keep an exponential moving average of the trained weights "
                   "(checkpointed); the final model is the average")  # fmt: skip
    r.add_argument("--report-to", metavar="TRACKERS", help="also log loss and lr to accelerate trackers, "
                   "comma-separated: tensorboard, wandb, ... (log.jsonl is always written)")  # fmt: skip
    r.add_argument("--push-to-hub", metavar="REPO", help="upload the final folder to this Hugging Face Hub repo "
                   "(OWNER/NAME) at the end")  # fmt: skip
    t.add_argument("--log-every", type=positive_int, default=25, help="optimizer steps per log.jsonl record (25)")
    t.add_argument("--checkpoint-every", type=positive_int, default=200)
    t.add_argument("--threads", type=positive_int, help="CPU threads for torch")
    t.add_argument("--workers", type=positive_int, help="processes that draw fresh toy-world samples beside "
                   "training (on a GPU, rendering between steps would bound a toy step; default: none)")  # fmt: skip
    t.add_argument("--seed", type=seed, default=0)

    e = commands.add_parser("eval", help="measure an editor on the held-out toy world")
    e.add_argument("--toyworld", action="store_true", required=True, help="the toy-world table")
    e.add_argument("--model", help="pipeline folder (default: the shipped toy editor)")
    e.add_argument("--clip", help="CLIP folder for CLIP metrics (default: the shipped toy CLIP)")
    e.add_argument("--edits", type=positive_int, default=100, help="held-out edits for correctness and PSNR "
                   "(100: 25 of each kind)")  # fmt: skip
    e.add_argument(
        "--kinds",
        nargs="+",
        choices=sorted(EDIT_MIX),
        help="the edits rows (and --baseline) of these kinds of the --edits edits alone: the records the whole run "
        "gives them, with --parts edits in a fraction of the time (all kinds)",
    )
    e.add_argument("--n", type=positive_int, default=40, help="videos: a quarter for the temporal rows, an eighth "
                   "for the long-video rows (40)")  # fmt: skip
    e.add_argument("--steps", type=positive_int, default=20)
    e.add_argument("--text-cfg", type=float, help=f"text guidance ({_default_guidance('text_cfg')})")
    e.add_argument("--video-cfg", type=float, help=f"video guidance ({_default_guidance('video_cfg')})")
    e.add_argument(
        "--seed",
        type=int,
        default=0,
        help="offset into the held-out split, as for toyworld make: "
        "disjoint offsets give disjoint samples (0: the sample the toy editor's settings were tuned on)",
    )
    e.add_argument(
        "--parts",
        nargs="+",
        choices=("edits", "temporal", "long"),
        default=["edits", "temporal", "long"],
        help="which rows to measure (all)",
    )
    e.add_argument(
        "--combine",
        nargs="+",
        metavar="RESULTS.json",
        help="pool earlier --out files of disjoint samples into one table instead of measuring (the rows they "
        "all hold)",
    )
    e.add_argument("--t2v", nargs="?", const="", metavar="MODEL", help="measure a text-to-video (or text-to-image) "
                   "model instead: does it draw what held-out captions say (default: the shipped toy t2v)")  # fmt: skip
    e.add_argument("--frames", type=positive_int, default=16, help="--t2v: frames per video (16; 1 for images)")
    e.add_argument("--cfg", type=float,
                   help=f"--t2v: text guidance (the model's sampling.json, else {DEFAULT_GUIDANCE:g})")  # fmt: skip
    e.add_argument("--kind-guidance", type=number_in(*KIND_GUIDANCE_RANGE),
                   help="--t2v: the model's kind classifier's guidance (its sampling.json, else 0: none)")  # fmt: skip
    e.add_argument(
        "--baseline",
        choices=("tav",),
        help="compare instead: InsV2V vs Tune-A-Video vs the 2-D editor "
        "frame by frame on --edits held-out edits (one table, the Compare tab's scores, seconds per edit)",
    )
    e.add_argument("--tav-model", help="--baseline tav: Tune-A-Video's base (default: the shipped toy text-to-image)")
    e.add_argument(
        "--tav-preset",
        choices=("space", "official"),
        default="space",
        help="--baseline tav: Tune-A-Video's settings (space: 300 tuning steps; official: 500)",
    )
    e.add_argument("--tav-steps", type=positive_int, help="--baseline tav: tuning steps (the preset's)")
    e.add_argument("--save-outputs", metavar="DIR", help="--baseline tav: also write every video and DIR/items.jsonl "
                   "(what `insv2v study build --inputs DIR` imports)")  # fmt: skip
    e.add_argument("--device", type=torch_device, default="cpu", help="where the models run (cpu, so that "
                   "the figures reproduce; cuda for speed)")  # fmt: skip
    e.add_argument("--out", help="also write the results as JSON here")


def toyworld(args: argparse.Namespace) -> None:
    from insv2v.files import check_new_folder
    from insv2v.toyworld.dataset import write_triplets

    check_new_folder(args.out_dir)
    folders = write_triplets(args.out_dir, args.n, args.seed, args.split, args.frames)
    print(f"wrote {len(folders)} {args.split} triplets to {args.out_dir}")


def train(args: argparse.Namespace) -> None:
    from insv2v.train import TrainConfig
    from insv2v.train import train as run

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    final = run(TrainConfig(**{k: v for k, v in vars(args).items() if k in names and v is not None}))
    print(f"saved {final}")


def evaluate(args: argparse.Namespace) -> None:
    from insv2v.assets import TOY_CLIP, TOY_EDITOR
    from insv2v.files import check_record_file
    from insv2v.loading import load_pipeline, weights_digest
    from insv2v.toyworld.evaluate import (
        EDIT_KINDS,
        LONG_OFFSET,
        PARTS,
        combine,
        evaluate_edits,
        evaluate_long,
        evaluate_temporal,
        heldout_edits,
        left_out_measures,
        markdown_table,
    )

    if args.out:  # before the measurement, not after it
        check_record_file(args.out)
    from insv2v.toyworld.world import HELDOUT_SEEDS

    last = len(HELDOUT_SEEDS) - LONG_OFFSET - max(args.n, args.edits)  # the long videos' scenes lie furthest in
    if not 0 <= args.seed <= last:  # below 0 it would measure training scenes
        raise ValueError(f"--seed is an offset into the held-out scenes, 0 to {last} for these counts; got {args.seed}")
    if args.kinds and (args.t2v is not None or args.combine or not (args.baseline or "edits" in args.parts)):
        raise ValueError("--kinds chooses among the held-out edits: it goes with the edits rows or --baseline")
    kinds = tuple(kind for kind in EDIT_KINDS if kind in (args.kinds or EDIT_KINDS))
    if next(heldout_edits(args.edits, args.seed, kinds), None) is None:
        raise ValueError(f"the first {args.edits} held-out edits hold none of the kinds {', '.join(kinds)}")
    if args.t2v is not None:
        from insv2v.assets import TOY_T2V
        from insv2v.synth.t2v import load_t2v, recommended_guidance, recommended_kind_guidance
        from insv2v.toyworld.synthetic import format_rate, t2v_fidelity

        source = args.t2v or str(TOY_T2V)
        cfg = recommended_guidance(source) if args.cfg is None else args.cfg  # a malformed file refused before loading
        kinds = recommended_kind_guidance(source) if args.kind_guidance is None else args.kind_guidance
        pipe = load_t2v(source, str(args.device))
        pipe.check_kind_guidance(kinds)
        pipe.set_progress_bar_config(disable=True)
        results = t2v_fidelity(pipe, args.n, args.seed, args.frames, args.steps, cfg, kinds)
        for key in ("background", "colours", "shapes", "style"):
            print(f"{key}: {format_rate(results[key])}")
        if args.out:
            write_record(args.out, results)
        return
    if args.combine:
        loaded = []
        for path in args.combine:
            try:
                loaded.append(json.loads(Path(path).read_text()))
            except (OSError, ValueError) as err:  # ValueError: not JSON, or not text
                raise ValueError(f"cannot combine: {path}: {err}") from err
            if not isinstance(loaded[-1], dict) or "sampling" not in loaded[-1]:
                raise ValueError(f"cannot combine: {path} is not a record of insv2v eval --toyworld")
        results = combine(loaded)
        left_out = [part for part in PARTS if part not in results and any(part in r for r in loaded)]
        left_out += left_out_measures(loaded, results)
        if left_out:
            print(f"left out (not in every result): {', '.join(left_out)}", file=sys.stderr)
        print(markdown_table(results))
        if args.out:
            write_record(args.out, results)
        return
    model = args.model or str(TOY_EDITOR)
    pipe = load_pipeline(model, device=args.device)
    pipe.set_progress_bar_config(disable=True)
    recommended = model_defaults(model)
    text_cfg = recommended.text_cfg if args.text_cfg is None else args.text_cfg
    video_cfg = recommended.video_cfg if args.video_cfg is None else args.video_cfg
    sampling = {"num_inference_steps": args.steps, "guidance_scale": text_cfg, "video_guidance_scale": video_cfg}
    # model null: the shipped toy editor; weights: what tells one model from another, whatever its folder's name
    made_by = {"model": args.model, "weights": weights_digest(model), "sampling": sampling, "seed": args.seed}
    if kinds != EDIT_KINDS:  # the edits of some kinds only: pooled only with like records
        made_by["kinds"] = list(kinds)
    parts = {
        "edits": lambda: evaluate_edits(pipe, n=args.edits, seed=args.seed, kinds=kinds, **sampling),
        "temporal": lambda: evaluate_temporal(
            pipe, args.clip or str(TOY_CLIP), n=max(4, args.n // 4), seed=args.seed, **sampling
        ),
        "long": lambda: evaluate_long(pipe, n=max(2, args.n // 8), seed=args.seed, **sampling),
    }
    if args.baseline == "tav":
        from insv2v.assets import TOY_T2I
        from insv2v.tav import PRESETS, load_tav
        from insv2v.toyworld import baseline

        tav = load_tav(args.tav_model or str(TOY_T2I), args.device)
        tav.set_progress_bar_config(disable=True)
        settings = PRESETS[args.tav_preset]
        settings = dataclasses.replace(settings, tune_steps=args.tav_steps or settings.tune_steps, seed=args.seed)
        records = baseline.evaluate_baseline(pipe, tav, settings, args.clip or str(TOY_CLIP), n=args.edits,
                                             seed=args.seed, kinds=kinds, save_dir=args.save_outputs,
                                             **sampling)  # fmt: skip
        print(baseline.markdown_table(records["records"]))
        if args.out:
            write_record(args.out, {**made_by, "tav": dataclasses.asdict(settings), **records})
        return
    results = {**made_by, **{name: parts[name]() for name in args.parts}}
    print(markdown_table(results))
    if args.out:
        write_record(args.out, results)


def write_record(path: str, results: dict) -> None:
    """An evaluation's results as the JSON record `--combine` reads back (text, so it ends with a newline)."""
    from insv2v.files import write_text_atomically

    write_text_atomically(path, json.dumps(results, indent=2) + "\n")


# What a command stopped with Ctrl-C leaves (the others write their outputs whole at the end, or not at all).
INTERRUPTED = {
    ("train", None): "the same command resumes from the run's last checkpoint, if it saved one",
    ("synth", "generate"): "the same command resumes from the pairs finished (no half-written one is left)",
    ("tav", "edit"): "the same command resumes the tuning from its last checkpoint, if it saved one",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="insv2v", description="InsV2V Studio: edit videos from text instructions.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_edit_parser(commands)
    _add_convert_parser(commands)
    _add_toyworld_parsers(commands)
    t = commands.add_parser("tiny", help="save a tiny random pipeline (tests, smoke runs)")
    t.add_argument("out_dir")
    t.add_argument("--seed", type=seed, default=0)
    synth_cli.add_parsers(commands)
    tav_cli.add_parsers(commands)
    study_cli.add_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    from insv2v.loading import ModelLoadError, out_of_memory
    from insv2v.video import VideoError

    args = build_parser().parse_args(argv)
    try:
        commands = {
            "edit": edit,
            "tiny": tiny,
            "convert": convert,
            "toyworld": toyworld,
            "train": train,
            "eval": evaluate,
            "generate": synth_cli.generate_video,
            "synth": synth_cli.synth,
            "tav": tav_cli.tav,
            "study": study_cli.study,
        }
        commands[args.command](args)
    except (VideoError, ModelLoadError, ValueError, InterruptedError, OSError) as err:  # OSError: paths, files
        print(f"insv2v: error: {err}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as err:
        if out_of_memory(err) is None:
            raise
        print(f"insv2v: error: {out_of_memory(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = INTERRUPTED.get((args.command, getattr(args, "action", None)), "nothing was written")
        print(f"insv2v: interrupted; {kept}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
