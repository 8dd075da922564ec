"""Benchmark Tune-A-Video: seconds per tuning step, the whole tuning, inversion and sampling, and peak memory.

    python benchmarks/tav.py                           # the shipped toy text-to-image model, 16 frames, 2 CPU cores
    python benchmarks/tav.py --sd --device cuda --dtype float16 --frames 8 --size 512 --steps 300   # its Space
    python benchmarks/tav.py --sd --device cuda --dtype float16 --frames 24 --size 512 --steps 500  # its paper

`--sd` builds a Stable Diffusion 1.x-sized model with random weights (no download): SD's VAE, the CLIP ViT-L/14
text encoder and SD 1.5's UNet shape. On a GPU the tuning runs in fp16 autocast with
gradient checkpointing, as the official code does. `--timed N` times N tuning steps and projects `--steps` from
their median (the full tuning is the same step repeated).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import sys
import time

import numpy as np
import torch

# Stable Diffusion 1.5's UNet (its unet/config.json), random weights.
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)  # fmt: skip


def sd_sized_pipeline(device: str, dtype: torch.dtype):
    """Tune-A-Video on an SD 1.5-shaped model with seeded random weights, made on `device`."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from insv2v.clip_tokenizer import clip_tokenizer
    from insv2v.models.reference import REFERENCE_TEXT_ENCODER_CONFIG, REFERENCE_VAE_CONFIG
    from insv2v.tav import TuneAVideoPipeline, inflate_tav

    torch.manual_seed(0)
    with torch.device(device):
        vae = AutoencoderKL.from_config(REFERENCE_VAE_CONFIG).to(dtype)
        text_encoder = CLIPTextModel(CLIPTextConfig.from_dict(REFERENCE_TEXT_ENCODER_CONFIG)).to(dtype)
        unet = inflate_tav(UNet2DConditionModel(**SD15_UNET))  # float32 master weights, tuned under autocast
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)  # fmt: skip
    pipe = TuneAVideoPipeline(vae.eval(), text_encoder.eval(), clip_tokenizer(), unet, scheduler)
    pipe.source = "random SD 1.5-sized"
    return pipe


def toy_pipeline():
    from insv2v.assets import TOY_T2I
    from insv2v.tav import TuneAVideoPipeline

    return TuneAVideoPipeline.from_t2i(str(TOY_T2I))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd", action="store_true", help="an SD 1.5-sized model, random weights (else the toy one)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, help="frame side in pixels (default: the model's native size)")
    parser.add_argument("--steps", type=int, default=500, help="tuning steps to project (500 official, 300 Space)")
    parser.add_argument("--timed", type=int, default=20, help="tuning steps actually run and timed")
    parser.add_argument("--edit-steps", type=int, default=50, help="DDIM inversion and sampling steps (50 official)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from insv2v.tav import PRESETS

    device = torch.device(args.device)
    pipe = (sd_sized_pipeline(args.device, getattr(torch, args.dtype)) if args.sd else toy_pipeline()).to(device)
    pipe.set_progress_bar_config(disable=True)
    side = args.size or pipe.unet.config.sample_size * pipe.vae_scale_factor
    frames = np.random.default_rng(0).integers(0, 256, (args.frames, side, side, 3), dtype=np.uint8)
    settings = dataclasses.replace(PRESETS["official"], tune_steps=args.timed, inversion_steps=args.edit_steps,
                                   steps=args.edit_steps, checkpoint_every=10**9)  # fmt: skip

    stamps = []
    pipe.tune(frames, "a video", settings, callback=lambda step, total, loss: stamps.append(time.perf_counter()))
    step_seconds = statistics.median(np.diff(stamps)) if len(stamps) > 2 else float("nan")  # the first is warm-up
    began = time.perf_counter()
    latents = pipe.invert(pipe.encode_frames(frames)[0], settings.inversion_steps)
    pipe.sample("a video, edited", latents, settings.steps, settings.guidance_scale)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    edit_seconds = time.perf_counter() - began
    figures = {
        "model": "random SD 1.5-sized" if args.sd else "toy text-to-image",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()}",
        "frames": args.frames, "size": side, "dtype": args.dtype,
        "seconds_per_tuning_step": round(step_seconds, 4),
        f"tuning_{args.steps}_steps_s": round(step_seconds * args.steps, 1),
        f"inversion_and_sampling_{args.edit_steps}+{args.edit_steps}_s": round(edit_seconds, 1),
        "peak_memory_mb": round(peak_memory_mb(device)),
    }  # fmt: skip
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
