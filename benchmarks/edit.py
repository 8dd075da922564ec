"""Benchmark a file-to-file edit: seconds per frame and peak memory, on CPU or GPU.

    python benchmarks/edit.py                                   # tiny random model, 64 frames of 320x240
    python benchmarks/edit.py --model DIR --frames 16 --width 512 --height 512 --device cuda
    python benchmarks/edit.py --compare-frames 64 512           # peak RSS vs video length, one process each

Each configuration runs in a fresh process when compared, so peak RSS is that configuration's own.
"""

from __future__ import annotations

import argparse
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


def run_once(args: argparse.Namespace) -> dict:
    from insv2v.editing import EditRecipe, run_edit
    from insv2v.loading import load_pipeline
    from insv2v.testing.tiny import tiny_pipeline

    device = torch.device(args.device)
    if args.model:
        pipe = load_pipeline(args.model, device=device, dtype=getattr(torch, args.dtype) if args.dtype else None)
    else:
        pipe = tiny_pipeline().to(device)
    pipe.set_progress_bar_config(disable=True)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "input.mp4"
        synthetic_clip(source, args.frames, args.width, args.height)
        recipe = EditRecipe(
            input=str(source),
            instruction="make it snowy",
            steps=args.steps,
            seed=0,
            resolution=min(args.width, args.height),
            mc=args.mc,
        )
        times = []
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            began = time.perf_counter()
            run_edit(recipe, Path(tmp) / "out.mp4", pipe)
            times.append(time.perf_counter() - began)
    seconds = statistics.median(times)
    return {
        "frames": args.frames,
        "size": f"{args.width}x{args.height}",
        "steps": args.steps,
        "device": str(device),
        "dtype": str(pipe.unet.dtype),
        "seconds": round(seconds, 3),
        "s_per_frame": round(seconds / args.frames, 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.type == "cuda" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="pipeline folder or hub id (default: the tiny random pipeline)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--mc", action="store_true", help="motion compensation on")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration; the median is reported")
    parser.add_argument("--compare-frames", type=int, nargs="+", help="frame counts to compare, one process each")
    parser.add_argument("--json", action="store_true", help="print one JSON line (used by --compare-frames)")
    args = parser.parse_args()

    if not args.compare_frames:
        result = run_once(args)
        print(json.dumps(result) if args.json else "  ".join(f"{k}={v}" for k, v in result.items()))
        return
    rows = []
    for frames in args.compare_frames:
        argv = [a for a in sys.argv[1:]]
        i = argv.index("--compare-frames")
        argv = argv[:i] + argv[i + 1 + len(args.compare_frames) :] + ["--frames", str(frames), "--json"]
        out = subprocess.run([sys.executable, __file__, *argv], check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print("  ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    base = rows[0]
    for row in rows[1:]:
        print(
            f"{row['frames']} vs {base['frames']} frames: peak RSS x{row['peak_rss_mb'] / base['peak_rss_mb']:.2f}, "
            f"s/frame x{row['s_per_frame'] / base['s_per_frame']:.2f}"
        )


if __name__ == "__main__":
    main()
