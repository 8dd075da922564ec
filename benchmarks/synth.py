"""Benchmark the data engine's video Prompt-to-Prompt: pairs per minute and peak memory, CPU or GPU.

    python benchmarks/synth.py                                  # the shipped toy text-to-video model, 2 CPU cores
    python benchmarks/synth.py --local-blend 0.3                # the same with local blending
    python benchmarks/synth.py --local-blend 0.5 --blend-maps difference --shared-end 0.5   # DiffEdit's mask
    python benchmarks/synth.py --kind-guidance 30               # the toy t2v's kind classifier guiding both videos
    python benchmarks/synth.py --modelscope --device cuda --dtype float16 --compare
        # a ModelScope-sized UNet3DConditionModel with random weights (no download) at 16 x 256 x 256, 30 DDIM steps:
        # SDPA-only Prompt-to-Prompt vs the same with every attention map materialised, one process each

Each compared configuration runs in a fresh process, so its peak memory is its own. Time covers the pair's
sampling and decoding (not the CLIP scores or the files).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

# ModelScope text-to-video-ms-1.7b's UNet3DConditionModel (its unet/config.json), random weights.
MODELSCOPE_UNET = dict(
    sample_size=32, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
    cross_attention_dim=1024, attention_head_dim=64, norm_num_groups=32,
    down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
)  # fmt: skip


def explicit_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v with the map materialised, as attention-storing Prompt-to-Prompt code does."""
    weights = (query @ key.transpose(-1, -2) * query.shape[-1] ** -0.5).softmax(dim=-1)  # (b, heads, n, m)
    return weights @ value


def modelscope_sized_pipeline(device: str, dtype: torch.dtype):
    """SD's VAE and a ModelScope-sized UNet3D with random weights; the CLIP ViT-H text tower is a small stand-in
    of the same width (1024), since text encoding is done once per pair."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from insv2v.clip_tokenizer import CLIP_VOCAB_SIZE, clip_tokenizer
    from insv2v.models.reference import REFERENCE_VAE_CONFIG
    from insv2v.synth.t2v import TextToVideoPipeline

    torch.manual_seed(0)
    vae = AutoencoderKL(**REFERENCE_VAE_CONFIG)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=CLIP_VOCAB_SIZE, hidden_size=1024, intermediate_size=1024,
                                        num_hidden_layers=1, num_attention_heads=16))  # fmt: skip
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)  # fmt: skip
    pipe = TextToVideoPipeline(vae=vae, text_encoder=text, tokenizer=clip_tokenizer(),
                               unet=UNet3DConditionModel(**MODELSCOPE_UNET), scheduler=scheduler)  # fmt: skip
    return pipe.to(device, dtype)


def run_one(args) -> dict:
    from insv2v.synth.p2p import LocalBlend, P2PSettings, generate_pair
    from insv2v.synth.t2v import load_t2v

    torch.set_num_threads(args.threads) if args.threads else None
    dtype = getattr(torch, args.dtype)
    if args.modelscope:
        pipe = modelscope_sized_pipeline(args.device, dtype)
    else:
        from insv2v.assets import TOY_T2V

        pipe = load_t2v(args.model or str(TOY_T2V), args.device)
    pipe.set_progress_bar_config(disable=True)
    size = args.size or pipe.default_resolution
    attention = explicit_attention if args.explicit_maps else None
    blend = LocalBlend(args.local_blend, maps=args.blend_maps) if args.local_blend is not None else None
    cuda = args.device.startswith("cuda")
    times = []
    for i in range(args.warmup + args.pairs):
        if cuda:
            torch.cuda.synchronize()
        began = time.perf_counter()
        settings = replace(P2PSettings.draw(i), shared_end=args.shared_end)
        generate_pair(pipe, "a red circle moving right on a beach", "a blue circle moving right on a beach", settings,
                      num_frames=args.frames, height=size, width=size, num_inference_steps=args.steps,
                      generator=torch.Generator().manual_seed(i), attention=attention, local_blend=blend,
                      kind_guidance=args.kind_guidance)  # fmt: skip
        if cuda:
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - began)
    seconds = statistics.median(times)
    return {
        "model": "ModelScope-sized, random" if args.modelscope else Path(args.model or "toy-t2v").name,
        "attention": ("materialised maps" if args.explicit_maps else "SDPA only")
        + (f", local blending {args.local_blend} ({args.blend_maps})" if blend else "")
        + (f", shared start {args.shared_end}" if args.shared_end else "")
        + (f", kind guidance {args.kind_guidance:g}" if args.kind_guidance else ""),
        "frames": args.frames, "size": size, "steps": args.steps, "device": args.device,
        "dtype": str(pipe.unet.dtype).removeprefix("torch."),
        "seconds_per_pair": round(seconds, 2), "pairs_per_minute": round(60 / seconds, 2),
        "all_seconds": [round(t, 2) for t in times],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
    }  # fmt: skip


def main() -> None:
    from insv2v.synth.p2p import BLEND_MAPS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="text-to-video folder or hub id (default: the shipped toy model)")
    p.add_argument("--modelscope", action="store_true", help="a ModelScope-sized UNet3D with random weights")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--size", type=int, help="pixels (default: the model's; 256 for --modelscope)")
    p.add_argument("--pairs", type=int, default=3, help="timed pairs (median)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--explicit-maps", action="store_true", help="materialise every attention map (the baseline)")
    p.add_argument("--local-blend", type=float, metavar="THRESHOLD", help="with Prompt-to-Prompt's local blending")
    p.add_argument("--blend-maps", choices=BLEND_MAPS, default="attention",
                   help="its mask: the edited words' attention (Prompt-to-Prompt's) or DiffEdit's")  # fmt: skip
    p.add_argument("--shared-end", type=float, default=0.0, help="the edited video shares the input's steps until")
    p.add_argument("--kind-guidance", type=float, default=0.0, help="the model's kind classifier's guidance (0: off)")
    p.add_argument("--compare", action="store_true", help="SDPA only vs materialised maps, one process each")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one configuration, as a JSON line
    args = p.parse_args()
    if args.modelscope and args.size is None:
        args.size = 256
    if not args.compare:
        result = run_one(args)
        print(json.dumps(result) if args.json else result)
        return
    rows = []
    for explicit in (False, True):
        argv = [a for a in sys.argv[1:] if a != "--compare"] + ["--json"] + (["--explicit-maps"] if explicit else [])
        # stderr passes through, so a failing configuration says why
        out = subprocess.run([sys.executable, __file__, *argv], stdout=subprocess.PIPE, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print("| attention | s/pair (median) | pairs/min | peak RSS MB | peak GPU MB |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['attention']} | {r['seconds_per_pair']} | {r['pairs_per_minute']} | {r['peak_rss_mb']} | "
              f"{r['peak_gpu_mb']} |")  # fmt: skip


if __name__ == "__main__":
    main()
