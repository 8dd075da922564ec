"""Time the reference implementation's sampler against ours on the same random full-size weights, with MFU.

    python benchmarks/reference_sampler.py --reference PATH/TO/instruct-video-to-video --device cuda --dtype float16

PATH is a checkout of github amazon-science/instruct-video-to-video (imported from there, never copied; it needs
`einops`). Both sides get the same seeded full-size weights (made by benchmarks/common.py, exported to the
reference layout), the same source latents, noise and text embeddings, and sample a long video the same way:
clips of 16 frames sharing 4, LVSC on the first half of 20 DDPM steps. Only sampling is timed (no VAE, no text
encoder). For each square size and frame count it prints seconds per frame, peak activation memory above the
resident weights (both models stay loaded) and MFU; `--parity` first checks one full-size UNet call in float32.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: the reference draws a bar per clip

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tools"))
from common import peak_tflops, random_full_size_pipeline, unet_call_flops
from make_reference_fixture import import_reference, reference_edit, reference_unet_kwargs

FRAMES_PER_CLIP, REF_FRAMES, LVSC_FRACTION = 16, 4, 0.5
TEXT_CFG, VIDEO_CFG = 7.5, 1.2


def reference_unet(ref, pipe, device, dtype):
    """The reference UNet3DConditionModel holding exactly our UNet's weights."""
    from insv2v.models.reference import unet_to_reference

    with torch.device(device):
        unet = ref.UNet3DConditionModel(**reference_unet_kwargs(dict(pipe.unet.config)))
    unet.load_state_dict(unet_to_reference(pipe.unet.state_dict()), strict=True)
    return unet.to(dtype).eval()


@torch.no_grad()
def parity(ref, device, unet_config) -> str:
    """One UNet call (full size by default) in float32 on both implementations: the largest difference."""
    pipe = random_full_size_pipeline(device, torch.float32, unet_config=unet_config)
    theirs = reference_unet(ref, pipe, device, torch.float32)
    g = torch.Generator(device).manual_seed(0)
    sample = torch.randn(3, 8, FRAMES_PER_CLIP, 64, 64, generator=g, device=device)  # (b, c, f, h, w)
    text = torch.randn(3, 77, pipe.unet.config.cross_attention_dim, generator=g, device=device)
    t = torch.tensor([981, 500, 21], device=device)
    a = theirs(sample, t, encoder_hidden_states=text).sample
    b = pipe.unet(sample, t, encoder_hidden_states=text.repeat_interleave(FRAMES_PER_CLIP, 0)).sample
    params = sum(p.numel() for p in pipe.unet.parameters()) / 1e9
    return (f"UNet of {params:.2f}B parameters, float32, 16 frames at 512x512: max |ours - reference| = "
            f"{(a - b).abs().max().item():.3g} (outputs ~{a.abs().mean().item():.3g})")  # fmt: skip


def timed(fn, device, *args) -> tuple[float, float]:
    """Seconds and peak memory above what was allocated before (MiB) of `fn(*args)`."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)
    began = time.perf_counter()
    fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - began
    extra = (torch.cuda.max_memory_allocated(device) - resident) / 2**20 if device.type == "cuda" else float("nan")
    return seconds, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="checkout of amazon-science/instruct-video-to-video")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float16")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 384], help="square frame sizes in pixels")
    parser.add_argument("--frame-counts", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--unet-config", help="a UNet config JSON other than the full size (smoke tests)")
    parser.add_argument("--parity", action="store_true", help="first compare one full-size UNet call in float32")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak for MFU (default: known GPUs, half)")
    args = parser.parse_args()

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    ref = import_reference(args.reference)
    if args.parity:
        print(parity(ref, device, args.unet_config), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    from insv2v.longvideo import plan_clips

    pipe = random_full_size_pipeline(device, dtype, unet_config=args.unet_config)
    theirs = reference_unet(ref, pipe, device, dtype)
    text = pipe.encode_prompt("make it snowy", device).to(dtype)  # (1, 77, C)
    empty = pipe.encode_prompt("", device).to(dtype)
    peak = peak_tflops(device, dtype, args.peak_tflops)
    settings = {
        "frames_per_clip": FRAMES_PER_CLIP, "ref_frames": REF_FRAMES, "steps": args.steps,
        "text_cfg": TEXT_CFG, "video_cfg": VIDEO_CFG, "lvsc_fraction": LVSC_FRACTION, "scheduler": "ddpm",
    }  # fmt: skip

    def ours(noise, source):
        pipe(video_latents=source, latents=noise, prompt_embeds=text, negative_prompt_embeds=empty,
             num_inference_steps=settings["steps"], guidance_scale=TEXT_CFG, video_guidance_scale=VIDEO_CFG,
             frames_per_clip=FRAMES_PER_CLIP, ref_frames=REF_FRAMES, lvsc_fraction=LVSC_FRACTION,
             output_type="latent", generator=torch.Generator(device).manual_seed(0))  # fmt: skip

    def reference(noise, source):
        noise, source = (x.permute(0, 2, 1, 3, 4).to(dtype) for x in (noise, source))  # (b, c, f, h, w) -> (b, f, ...)
        reference_edit(ref, theirs, noise, source, text, empty, settings)

    # Warm up both (kernel selection) on a short clip.
    warm = torch.randn(1, 4, FRAMES_PER_CLIP, 64, 64, device=device)
    ours(warm, warm)
    reference_edit(ref, theirs, warm.permute(0, 2, 1, 3, 4).to(dtype), warm.permute(0, 2, 1, 3, 4).to(dtype), text,
                   empty, {**settings, "steps": 1})  # fmt: skip

    print("| frames | size | ours s / frame | reference s / frame | speedup | ours act. MiB | reference act. MiB "
          "| ours MFU | reference MFU |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    unet_config, text_dim = dict(pipe.unet.config), pipe.text_encoder.config.hidden_size
    for size in args.sizes:
        for frames in args.frame_counts:
            hw = (size // pipe.vae_scale_factor, size // pipe.vae_scale_factor)
            g = torch.Generator(device).manual_seed(frames)
            noise = torch.randn(1, 4, frames, *hw, generator=g, device=device)  # (1, c, f, h, w)
            source = torch.randn(1, 4, frames, *hw, generator=g, device=device)
            spans = plan_clips(frames, FRAMES_PER_CLIP, REF_FRAMES)
            flops = sum(unet_call_flops(unet_config, s.length, hw, text_dim) for s in spans) * settings["steps"]
            ours_s, ours_mib = timed(ours, device, noise, source)
            ref_s, ref_mib = timed(reference, device, noise, source)
            mfu = [f"{flops / s / 1e12 / peak:.3f}" if peak else "n/a" for s in (ours_s, ref_s)]
            print(f"| {frames} | {size}x{size} | {ours_s / frames:.4f} | {ref_s / frames:.4f} | {ref_s / ours_s:.2f} "
                  f"| {ours_mib:.0f} | {ref_mib:.0f} | {mfu[0]} | {mfu[1]} |", flush=True)  # fmt: skip
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(f"\n{name}, {args.dtype}, {settings['steps']} DDPM steps, clips of {FRAMES_PER_CLIP} sharing {REF_FRAMES}, "
          f"sampling only; model FLOPs counted by torch on the meta device")  # fmt: skip


if __name__ == "__main__":
    main()
