"""Shared by the benchmarks: full-size random weights (no download), FLOP counts, peak FLOP rates for MFU."""

from __future__ import annotations

import torch
from diffusers.utils import logging as diffusers_logging
from torch.utils.flop_counter import FlopCounterMode

diffusers_logging.set_verbosity_error()  # casting random weights with .to(dtype) is intended here

# Dense fp16/bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, matched against the device name.
PEAK_TFLOPS_HALF = [
    ("H100 PCIe", 756.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
]


def random_full_size_pipeline(device: str | torch.device, dtype: torch.dtype, seed: int = 0, unet_config=None):
    """The reference model's architecture (UNet with norm_mode "reference", SD VAE, CLIP ViT-L/14 text encoder) with
    seeded random weights, made directly on `device`: what `insv2v convert` produces, minus the download."""
    from insv2v.models.reference import build_components
    from insv2v.pipeline import InsV2VPipeline

    torch.manual_seed(seed)
    components = build_components(unet_config=unet_config, device=device)
    for name in ("unet", "vae", "text_encoder"):
        components[name].to(dtype)
    pipe = InsV2VPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def count_flops(fn) -> float:
    """FLOPs of `fn()` (matmuls, convolutions, attention), counted by torch on whatever device it runs."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def unet_call_flops(unet_config: dict, frames: int, latent_hw: tuple[int, int], text_dim: int, batch: int = 3) -> float:
    """FLOPs of one guided UNet call (`batch` guidance branches at once) on a clip, counted on the meta device."""
    from insv2v.models.unet import InsV2VUNetMotionModel

    with torch.device("meta"):
        unet = InsV2VUNetMotionModel.from_config(unet_config)
        sample = torch.empty(batch, unet_config["in_channels"], frames, *latent_hw)  # (b, c, f, h, w)
        text = torch.empty(batch * frames, 77, text_dim)  # (b*f, L, C)
        return count_flops(lambda: unet(sample, torch.tensor(500), encoder_hidden_states=text))


def vae_frame_flops(vae_config: dict, hw: tuple[int, int]) -> float:
    """FLOPs to encode and decode one frame of `hw` pixels, counted on the meta device."""
    from diffusers import AutoencoderKL

    if "block_out_channels" not in vae_config:
        return 0.0  # the toy world's pixel fold: a reshape, no multiply-adds
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(vae_config)
        factor = 2 ** (len(vae_config["block_out_channels"]) - 1)
        pixels = torch.empty(1, 3, *hw)
        latents = torch.empty(1, vae_config["latent_channels"], hw[0] // factor, hw[1] // factor)
        return count_flops(lambda: vae.encode(pixels)) + count_flops(lambda: vae.decode(latents))


def peak_tflops(device: torch.device, dtype: torch.dtype, override: float | None = None) -> float | None:
    """The device's dense half-precision peak, for MFU; None where unknown (CPU, fp32) unless given."""
    if override:
        return override
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops for key, tflops in PEAK_TFLOPS_HALF if key in name), None)
