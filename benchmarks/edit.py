"""Benchmark a file-to-file edit: seconds per edited frame, peak memory and model FLOPs utilisation, CPU or GPU.

    python benchmarks/edit.py                                   # tiny random model, 64 frames of 320x240
    python benchmarks/edit.py --compare-frames 64 512           # peak RSS vs video length, one process each
    python benchmarks/edit.py --model DIR --frames 16 --width 512 --height 512 --steps 20 --device cuda
    python benchmarks/edit.py --random-weights --sweep --device cuda --dtype float16
        # full-size InsV2V architecture with random weights (no download): 512x512 and 384x384, 16 and 64 frames,
        # 20 steps, one process per configuration; prints a Markdown table

Each compared configuration runs in a fresh process, so peak RSS and peak GPU memory are its own. The time is the
whole edit (decode, encode, sample, decode, write); FLOPs count the UNet calls and the VAE, on the meta device.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_tflops, random_full_size_pipeline, unet_call_flops, vae_frame_flops

SWEEP_SIZES = (512, 384)  # square frames, pixels
SWEEP_FRAMES = (16, 64)


def synthetic_clip(path: Path, frames: int, width: int, height: int, fps: float = 30.0) -> None:
    """A moving colour gradient, written frame by frame."""
    from insv2v.video import VideoWriter

    xs = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    ys = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    with VideoWriter(path, fps) as writer:
        for i in range(frames):
            frame = (xs + ys * 0.5 + 4 * i) % 256 * np.array([1.0, 0.6, 0.3], np.float32)
            writer.write(frame.astype(np.uint8)[None])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def edit_flops(pipe, frames: int, height: int, width: int, recipe) -> float:
    """Model FLOPs of one edit: every guided UNet call of every clip, plus VAE encode and decode of every frame."""
    from insv2v.guidance import needed_branches
    from insv2v.longvideo import plan_clips

    branches = len(needed_branches(recipe.video_cfg, recipe.text_cfg))
    s = pipe.vae_scale_factor
    unet_config, text_dim = dict(pipe.unet.config), pipe.text_encoder.config.hidden_size
    per_length = {}
    total = 0.0
    for span in plan_clips(frames, recipe.frames_per_clip, recipe.ref_frames):
        if span.length not in per_length:
            per_length[span.length] = unet_call_flops(unet_config, span.length, (height // s, width // s), text_dim,
                                                      batch=branches)  # fmt: skip
        total += per_length[span.length] * recipe.steps
    return total + frames * vae_frame_flops(dict(pipe.vae.config), (height, width))


def load(args: argparse.Namespace, device: torch.device):
    from insv2v.loading import default_dtype, load_pipeline
    from insv2v.testing.tiny import tiny_pipeline

    dtype = getattr(torch, args.dtype) if args.dtype else default_dtype(device)
    if args.model:
        pipe = load_pipeline(args.model, device=device, dtype=dtype)
    elif args.random_weights:
        # with offload the weights start on the CPU, as a GPU too small to hold them all needs
        pipe = random_full_size_pipeline("cpu" if args.offload else device, dtype, unet_config=args.unet_config)
    else:
        pipe = tiny_pipeline().to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    if args.offload:
        pipe.enable_model_cpu_offload(device=device)
    if args.vae_tiling:
        pipe.enable_vae_tiling()
    if args.compile:
        pipe.unet.compile(mode=args.compile)
    return pipe


def run_once(args: argparse.Namespace) -> dict:
    from insv2v.editing import model_defaults, run_edit

    device = torch.device(args.device)
    pipe = load(args, device)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "input.mp4"
        synthetic_clip(source, args.frames, args.width, args.height)
        recipe = dataclasses.replace(
            model_defaults(args.model),  # with the model's recommended guidance, as `insv2v edit` uses
            input=str(source),
            instruction="make it snowy",
            steps=args.steps,
            seed=0,
            resolution=min(args.width, args.height),
            mc=args.mc,
        )
        for _ in range(args.warmup):  # first calls pay for kernel selection (and compilation with --compile)
            warmup = dataclasses.replace(recipe, steps=1, max_frames=min(args.frames, 16))
            run_edit(warmup, Path(tmp) / "warmup.mp4", pipe)
        times = []
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            began = time.perf_counter()
            result = run_edit(recipe, Path(tmp) / "out.mp4", pipe)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - began)
    seconds = statistics.median(times)
    flops = edit_flops(pipe, args.frames, result.height, result.width, recipe)
    peak = peak_tflops(device, pipe.unet.dtype, args.peak_tflops)
    achieved = flops / seconds / 1e12
    return {
        "frames": args.frames,
        "size": f"{result.width}x{result.height}",
        "steps": args.steps,
        "text_cfg": recipe.text_cfg,
        "video_cfg": recipe.video_cfg,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "dtype": str(pipe.unet.dtype).removeprefix("torch."),
        "seconds": round(seconds, 3),
        "s_per_frame": round(seconds / args.frames, 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
        "model_tflop": float(f"{flops / 1e12:.4g}"),
        "achieved_tflops": float(f"{achieved:.4g}"),
        "mfu": round(achieved / peak, 4) if peak else None,
    }


def run_in_subprocess(argv: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, *argv, "--json"], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"benchmark {' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _without(argv: list[str], option: str, values: int) -> list[str]:
    if option not in argv:
        return argv
    i = argv.index(option)
    return argv[:i] + argv[i + 1 + values :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="pipeline folder, hub id or compose:... (default: the tiny random pipeline)")
    source.add_argument("--random-weights", action="store_true", help="full-size architecture, random weights")
    parser.add_argument("--unet-config", help="with --random-weights: a UNet config JSON other than the full size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="default: float16 on CUDA")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--mc", action="store_true", help="motion compensation on")
    parser.add_argument("--offload", action="store_true", help="enable_model_cpu_offload: least GPU memory, slower")
    parser.add_argument("--vae-tiling", action="store_true", help="encode and decode frames in tiles")
    parser.add_argument("--compile", nargs="?", const="default", choices=["default", "max-autotune"],
                        help="torch.compile the UNet (in this mode)")  # fmt: skip
    parser.add_argument("--warmup", type=int, help="untimed 1-step runs first (default: 1 on CUDA, else 0)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration; the median is reported")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak for MFU (default: known GPUs, half)")
    parser.add_argument("--compare-frames", type=int, nargs="+", help="frame counts to compare, one process each")
    parser.add_argument("--sweep", action="store_true", help="square sizes x frame counts, 20 steps, one process each")
    parser.add_argument("--sizes", type=int, nargs="+", default=SWEEP_SIZES, help=f"sweep sizes {SWEEP_SIZES}")
    parser.add_argument("--frame-counts", type=int, nargs="+", default=SWEEP_FRAMES, help=f"sweep {SWEEP_FRAMES}")
    parser.add_argument("--json", action="store_true", help="print one JSON line (used by the comparisons)")
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = 1 if args.device.startswith("cuda") else 0

    if args.sweep:
        argv = _without(_without(sys.argv[1:], "--sweep", 0), "--steps", 1)
        argv = _without(_without(argv, "--sizes", len(args.sizes)), "--frame-counts", len(args.frame_counts))
        print("| frames | size | s / frame | seconds | peak GPU MiB | model TFLOP | TFLOP/s | MFU |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|")
        for size in args.sizes:
            for frames in args.frame_counts:
                row = run_in_subprocess([*argv, "--steps", "20", "--width", str(size), "--height", str(size),
                                         "--frames", str(frames)])  # fmt: skip
                print(f"| {row['frames']} | {row['size']} | {row['s_per_frame']} | {row['seconds']} | "
                      f"{row['peak_gpu_mb']} | {row['model_tflop']} | {row['achieved_tflops']} | {row['mfu']} |",
                      flush=True)  # fmt: skip
        print(f"\n{row['device']}, {row['dtype']}, 20 steps, whole edit file to file")
        return
    if not args.compare_frames:
        result = run_once(args)
        print(json.dumps(result) if args.json else "  ".join(f"{k}={v}" for k, v in result.items()))
        return
    rows = []
    for frames in args.compare_frames:
        argv = _without(sys.argv[1:], "--compare-frames", len(args.compare_frames))
        rows.append(run_in_subprocess([*argv, "--frames", str(frames)]))
        print("  ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    base = rows[0]
    for row in rows[1:]:
        print(
            f"{row['frames']} vs {base['frames']} frames: peak RSS x{row['peak_rss_mb'] / base['peak_rss_mb']:.2f}, "
            f"s/frame x{row['s_per_frame'] / base['s_per_frame']:.2f}"
        )


if __name__ == "__main__":
    main()
