"""`insv2v tav edit`: the Tune-A-Video baseline, file to file.

insv2v tav edit in.mp4 --source-prompt "a man is skiing" --prompt "spider man is skiing on the beach" -o out.mp4
insv2v tav edit in.mp4 ... --model CompVis/stable-diffusion-v1-4 --preset space    # its Space: 8 frames, 300 steps

Tuned weights are cached per (video, caption, model, tuning settings): another prompt on the same video and caption
skips tuning, and a stopped tuning resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from pathlib import Path

from insv2v.argtypes import positive_int, resolution, seed

PRESET_NAMES = ("official", "space")  # insv2v.tav.pipeline.PRESETS, named here so that parsing imports no torch


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/insv2v/tav, else ~/.cache/insv2v/tav."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "insv2v" / "tav"


def add_parsers(commands) -> None:
    t = commands.add_parser("tav", help="the Tune-A-Video baseline: one-shot tuning, DDIM inversion, editing")
    actions = t.add_subparsers(dest="action", required=True)
    e = actions.add_parser("edit", help="edit a video with Tune-A-Video (tunes on it first, or reuses the cache)")
    e.add_argument("input", help="input video (any common format)")
    e.add_argument("--source-prompt", required=True, help='what the input shows, e.g. "a man is skiing"')
    e.add_argument("--prompt", required=True, help='the edited caption, e.g. "spider man is skiing on the beach"')
    e.add_argument("-o", "--output", required=True, help="output .mp4")
    e.add_argument("--model", help="Stable Diffusion 1.x folder or hub id, e.g. CompVis/stable-diffusion-v1-4, or a "
                   "text-to-image pipeline folder (default: the shipped toy text-to-image model)")  # fmt: skip
    e.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        default="official",
        help="official: 24 frames, 500 steps, lr 3e-5; space: 8 frames, 300 steps, lr 3.5e-5 (official)",
    )
    e.add_argument("--steps", type=positive_int, help="tuning steps (default: the preset's)")
    e.add_argument("--frames", type=positive_int, help="frames tuned and edited (default: the preset's)")
    e.add_argument("--stride", type=positive_int, default=2, help="keep every N-th frame of the input (2, official)")
    e.add_argument("--guidance", type=float, help="classifier-free guidance of the edit (12.5)")
    e.add_argument("--seed", type=seed, help="seed of the tuning (0)")
    e.add_argument("--cache", help=f"folder of tuned weights (default: {default_cache_dir()})")
    e.add_argument(
        "--resolution", type=resolution, help="short side in pixels, 8 to 4096 (default: the model's native size)"
    )


class _Progress:
    """Prints the tuning's loss and ETA about twenty times per run."""

    def __init__(self):
        self.began = self.first = None

    def __call__(self, step: int, total: int, loss: float) -> None:
        if self.began is None:
            self.began, self.first = time.perf_counter(), step
        if step % max(1, total // 20) and step != total:
            return
        done = step - self.first
        rate = (time.perf_counter() - self.began) / done if done else 0.0
        print(f"tuning step {step}/{total}  loss {loss:.4f}  ETA {rate * (total - step):.0f} s", flush=True)


def tav(args: argparse.Namespace) -> None:
    import dataclasses

    from insv2v.assets import TOY_T2I
    from insv2v.editing import check_output
    from insv2v.loading import default_device
    from insv2v.tav.pipeline import PRESETS, Cancelled, check_captions, check_settings, load_tav, tav_edit
    from insv2v.video import OUTPUT_FORMATS, probe, read_video, write_video

    changes = {"tune_steps": args.steps, "frames": args.frames, "guidance_scale": args.guidance, "seed": args.seed}
    settings = dataclasses.replace(PRESETS[args.preset], **{k: v for k, v in changes.items() if v is not None})
    check_settings(settings)  # bad settings, captions, input or output fail here, before the model loads and tunes
    check_captions(args.source_prompt, args.prompt)
    probe(args.input)
    check_output(Path(args.output), args.input, suffixes=OUTPUT_FORMATS)  # what write_video below can write
    device = default_device()
    began = time.perf_counter()
    pipe = load_tav(str(args.model or TOY_T2I), device)
    pipe.set_progress_bar_config(disable=True)
    print(f"loaded {pipe.source} on {device} in {time.perf_counter() - began:.1f} s")
    resolution = args.resolution or pipe.default_resolution
    clip = read_video(args.input, max_frames=settings.frames, stride=args.stride, resolution=resolution,
                      multiple=pipe.vae_scale_factor)  # fmt: skip
    cache = args.cache or default_cache_dir()
    cancel = threading.Event()  # Ctrl-C stops tuning at the end of a step, with a checkpoint to resume from

    def on_interrupt(*_) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt  # pressed again: at once
        cancel.set()

    interrupt = signal.signal(signal.SIGINT, on_interrupt)
    try:
        result = tav_edit(pipe, clip.frames, args.source_prompt, args.prompt, settings, cache, _Progress(), cancel)
    except Cancelled:
        raise KeyboardInterrupt from None  # said as for any command stopped with Ctrl-C
    finally:
        signal.signal(signal.SIGINT, interrupt)
    write_video(args.output, result.frames, clip.fps)
    f, h, w = result.frames.shape[:3]
    tuning = "tuned weights from the cache" if result.cached else f"tuned {len(result.losses)} steps"
    print(f"wrote {args.output} ({f} frames, {w}x{h}); {tuning} in {result.tune_seconds:.1f} s, "
          f"edited in {result.edit_seconds:.1f} s; cache: {cache}")  # fmt: skip
