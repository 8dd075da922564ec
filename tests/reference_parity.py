"""Tiny reference-format checkpoints for conversion and parity tests (no reference code needed here).

The fixture `fixtures/reference_parity.safetensors` is written by `tools/make_reference_fixture.py`, which runs the
reference implementation. It records the reference checkpoint's key names and shapes, the inputs, and the
reference outputs; the weights themselves are re-made here from the key list and a seed, so the fixture stays
a few hundred kB and the checkpoint a test converts is exactly the one the reference code ran.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import safe_open

FIXTURE = Path(__file__).parent / "fixtures" / "reference_parity.safetensors"

# Our side of the tiny model (diffusers / transformers configs); the fixture script derives the reference's.
TINY_UNET_CONFIG = {
    "sample_size": 8,
    "in_channels": 8,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlockMotion", "DownBlockMotion"],
    "up_block_types": ["UpBlockMotion", "CrossAttnUpBlockMotion"],
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "num_attention_heads": 8,
    "norm_num_groups": 32,  # the reference's motion modules always use 32 groups
    "motion_num_attention_heads": 8,
    "motion_max_seq_length": 32,
    "use_motion_mid_block": False,
}
TINY_VAE_CONFIG = {
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "block_out_channels": [32, 64],  # LDM's autoencoder always uses 32 groups; 32 -> 64 has a shortcut conv
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 16,
    "scaling_factor": 0.18215,
}
TINY_TEXT_ENCODER_CONFIG = {
    "vocab_size": 49408,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
}


def sinusoid_table(max_len: int, dim: int) -> torch.Tensor:
    """(1, max_len, dim) sin/cos positional table (Vaswani et al. 2017), as AnimateDiff stores it."""
    position = torch.arange(max_len).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    table = torch.zeros(1, max_len, dim)
    table[0, :, 0::2] = torch.sin(position * div)
    table[0, :, 1::2] = torch.cos(position * div)
    return table


def seeded_checkpoint(spec: dict[str, list[int]], seed: int) -> dict[str, torch.Tensor]:
    """Weights for every key of `spec` (name -> shape), drawn in sorted key order from one seeded generator.

    Norm scales ~1, biases ~0.1, matrices and kernels ~1/sqrt(fan-in): activations stay O(1) through the UNet,
    and every layer, zero-initialised motion outputs included, affects the output.
    """
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key in sorted(spec):
        shape = tuple(spec[key])
        if key.endswith("pos_encoder.pe"):
            state[key] = sinusoid_table(shape[1], shape[2])
        elif key.endswith("position_ids"):
            state[key] = torch.arange(shape[-1]).expand(shape).clone()
        elif len(shape) == 1:
            offset = 1.0 if "norm" in key and key.endswith("weight") else 0.0
            state[key] = offset + 0.1 * torch.randn(shape, generator=gen)
        else:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
    return state


def load_fixture(path: Path = FIXTURE) -> tuple[dict[str, torch.Tensor], dict]:
    """The fixture's tensors and its metadata (JSON values decoded)."""
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open is not a dict)
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
    return tensors, meta


def write_configs(folder: Path) -> dict[str, Path]:
    """The tiny configs as JSON files, as `insv2v convert --unet-config ...` takes them."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, config in [
        ("unet", TINY_UNET_CONFIG),
        ("vae", TINY_VAE_CONFIG),
        ("text_encoder", TINY_TEXT_ENCODER_CONFIG),
    ]:
        paths[name] = folder / f"{name}.json"
        paths[name].write_text(json.dumps(config))
    return paths
