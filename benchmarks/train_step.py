"""Benchmark one training step of the video stage: seconds per iteration (median) and peak memory.

    python benchmarks/train_step.py                        # the shipped toy editor: 8 frames of 64x64, batch 4, CPU
    python benchmarks/train_step.py --real --device cuda   # SD 1.5-sized UNetMotionModel (8 input channels), random
        # weights (no download): 16 frames of 256x256, batch 1, bf16 autocast

A step is what `insv2v train video` runs on each micro-batch (insv2v.train's own functions): encode both clips
with the VAE and the instructions with the text encoder, add noise, the UNet forward and backward (only the motion
modules learn), clip the gradients, one AdamW step. With and without gradient checkpointing by default, each in a
fresh process so that its peak memory (RSS on CPU, allocated on CUDA) is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import random_full_size_pipeline


def load_pipeline(args: argparse.Namespace, device: torch.device):
    """The toy editor, or the reference architecture (SD 1.5's UNet inflated, 8 input channels) with random weights,
    in float32 master weights as training keeps them."""
    if args.real:
        return random_full_size_pipeline(device, torch.float32)
    from insv2v import InsV2VPipeline
    from insv2v.assets import TOY_EDITOR

    return InsV2VPipeline.from_pretrained(TOY_EDITOR).to(device)


def run_once(args: argparse.Namespace) -> dict:
    from accelerate import Accelerator

    from insv2v.train import TrainConfig, editing_loss, make_optimizer, pipeline_parts

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=device.type == "cpu")
    modules, helpers = pipeline_parts(load_pipeline(args, device))
    unet = modules["unet"]
    if args.checkpointing == "on":
        unet.enable_gradient_checkpointing()
    config = TrainConfig("video", "unused", batch_size=args.batch_size, frames=args.frames, lr=1e-5)
    params = [p for p in unet.parameters() if p.requires_grad]
    unet, optimizer = accelerator.prepare(unet.train(), make_optimizer(params, config))
    rng = np.random.default_rng(0)
    shape = (args.batch_size, 3, args.frames, args.size, args.size)  # (n, c, f, h, w)
    instructions = ["make it snowy"] * args.batch_size

    def step() -> float:
        source, target = (torch.rand(shape, device=device) * 2 - 1 for _ in range(2))
        began = time.perf_counter()
        with accelerator.autocast():
            loss = editing_loss(unet, helpers, helpers["text_encoder"], source, target, instructions, config, rng)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - began

    for _ in range(args.warmup):  # the first steps allocate the optimizer state and pick kernels
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = statistics.median(step() for _ in range(args.iterations))
    threads = f"cpu, {torch.get_num_threads()} threads"
    return {
        "model": "SD 1.5-sized, random" if args.real else "toy editor",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else threads,
        "clip": f"{args.batch_size} x {args.frames} x {args.size}x{args.size}",
        "precision": accelerator.mixed_precision,
        "checkpointing": args.checkpointing,
        "trainable_m": round(sum(p.numel() for p in params) / 1e6, 1),
        "s_per_it": round(seconds, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # Linux: KiB
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
    }


def run_in_subprocess(argv: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, *argv, "--json"], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"benchmark {' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", action="store_true", help="SD 1.5-sized random model (default: the toy editor)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, help="frames per clip (16 with --real, else 8)")
    parser.add_argument("--size", type=int, help="pixels per side (256 with --real, else 64)")
    parser.add_argument("--batch-size", type=int, help="clips per step (1 with --real, else 4)")
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], help="default: bf16 on CUDA, else no")
    parser.add_argument("--checkpointing", choices=["off", "on", "both"], default="both")
    parser.add_argument("--iterations", type=int, default=5, help="timed steps; the median is reported (5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (2)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--json", action="store_true", help="print one JSON line (used for each configuration)")
    args = parser.parse_args()
    sizes = dict(frames=16, size=256, batch_size=1) if args.real else dict(frames=8, size=64, batch_size=4)
    for name, default in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.mixed_precision = args.mixed_precision or ("bf16" if args.device.startswith("cuda") else "no")

    if args.checkpointing != "both":
        result = run_once(args)
        print(json.dumps(result) if args.json else "  ".join(f"{k}={v}" for k, v in result.items()))
        return
    rows = []
    for checkpointing in ("off", "on"):
        argv = [*sys.argv[1:], "--checkpointing", checkpointing]
        rows.append(run_in_subprocess([a for a in argv if a != "--json"]))
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
