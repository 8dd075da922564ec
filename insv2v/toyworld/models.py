"""The toy world's model shapes: a small CLIP (a ViT or a ResNet image tower), and an InstructPix2Pix UNet on
4x4-folded 64x64 pixels (a text-to-image UNet of the family may fold 2x2)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel, CLIPTextModel

from insv2v.clip_tokenizer import CLIP_VOCAB_SIZE, clip_tokenizer
from insv2v.models.autoencoder import PixelUnshuffleAutoencoder
from insv2v.toyworld.world import SIZE

PATCH = 4  # pixels folded into channels: 64x64x3 -> 16x16x48
# Channels per UNet level, finest first, for each fold. The 2x2 fold's extra 32x32 level renders outlines from
# 2x2 patches; at 4x4 a 14-22 px shape spans 4-6 positions whose 48 values must each hold a piece of its outline.
LEVELS = {4: (96, 96, 128), 2: (64, 96, 128, 128)}
TEXT_WIDTH = 64
TEXT_TOKENS = 32  # toy captions are short; shorter sequences are faster


def toy_clip(vision_patch: int = 8) -> CLIPModel:
    """A small CLIP (ViT with 8 px patches on 64 px frames, or `vision_patch`; 2-layer text transformer over the CLIP
    vocabulary)."""
    config = CLIPConfig(
        text_config={
            "vocab_size": CLIP_VOCAB_SIZE,
            "hidden_size": TEXT_WIDTH,
            "intermediate_size": 4 * TEXT_WIDTH,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        },
        vision_config={
            "image_size": SIZE,
            "patch_size": vision_patch,
            "hidden_size": 96,
            "intermediate_size": 384,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
        },
        projection_dim=64,
    )
    return CLIPModel(config)


# open_clip's config of a CLIP whose image tower is a ResNet: CLIP RN50's (a stem of three convolutions, bottleneck
# stages, attention pooling) at width 16 with one block per stage, and the toy CLIP's text transformer.
RESNET_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": SIZE, "layers": [1, 1, 1, 1], "width": 16},
    "text_cfg": {"context_length": TEXT_TOKENS, "vocab_size": CLIP_VOCAB_SIZE, "width": TEXT_WIDTH, "heads": 4,
                 "layers": 2},
}  # fmt: skip
RAW_PIXELS = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # the toy CLIPs see [0, 1] pixels, not normalised


def toy_resnet_clip():
    """A small open_clip CLIP with a ResNet image tower (`RESNET_CLIP`). The ViT of `toy_clip` learns shape outlines
    slowly: taught kinds directly, it read 34% of held-out shapes after 1000 steps where this tower read 62% after 300
    (chance 25%; docs/toy-generators.md)."""
    import open_clip

    return open_clip.CLIP(**RESNET_CLIP)


def resnet_clip_tokenizer():
    """The tokenizer open_clip gives a `save_open_clip` folder: CLIP's BPE, padded with zeros to TEXT_TOKENS."""
    import open_clip

    return open_clip.SimpleTokenizer(context_length=TEXT_TOKENS)


def save_open_clip(clip, folder: Path) -> None:
    """`clip` (built by `toy_resnet_clip`) as a folder open_clip loads (`local-dir:FOLDER`): its config with the
    preprocessing, and safetensors weights."""
    from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME

    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": RESNET_CLIP, "preprocess_cfg": RAW_PIXELS}
    (folder / HF_CONFIG_NAME).write_text(json.dumps(config, indent=2))
    save_file({k: v.detach().contiguous() for k, v in clip.state_dict().items()}, folder / HF_SAFE_WEIGHTS_NAME)


def text_encoder_from_clip(clip: CLIPModel) -> CLIPTextModel:
    """The text tower of `clip` as a standalone CLIPTextModel (the editor's text encoder starts from it)."""
    encoder = CLIPTextModel(clip.config.text_config)
    # transformers 4 nests the transformer under `text_model.` in CLIPTextModel; 5 does not.
    prefix = "text_model." if next(iter(encoder.state_dict())).startswith("text_model.") else ""
    encoder.load_state_dict({prefix + k: v for k, v in clip.text_model.state_dict().items()})
    return encoder


def toy_tokenizer():
    tokenizer = clip_tokenizer()
    tokenizer.model_max_length = TEXT_TOKENS
    return tokenizer


def toy_unet2d(
    source_conditioned: bool = True, fine_attention: bool = False, patch: int = PATCH
) -> UNet2DConditionModel:
    """InstructPix2Pix-style 2-D UNet: 96 input channels (noisy frame + source frame, folded), 48 out; without
    `source_conditioned`, a text-to-image UNet of the same family (48 in: the noisy frame alone).

    Cross-attention sits at 8x8 and 4x4 only: at 16x16 it doubled the time of a step (256 tokens) while the
    text decides what to paint (colour, shape, background), which the coarse levels carry to the fine ones.
    The 16x16 level has twice the channels of the 48 values it reproduces per position: at 48 the loss was
    0.031 after 7000 steps, at 96 it is 0.027 after 5500, each step 1.2x slower (measured, 2 CPU cores).

    `fine_attention` adds attention at 16x16 too (a step 2.7x slower): Prompt-to-Prompt holds a layout by
    injecting self-attention maps, so a generator whose layout is decided at 16x16 needs attention there.
    `patch` 2 folds 2x2 pixels (12 channels at 32x32) and adds a 32x32 level without attention (LEVELS).
    """
    channels = 3 * patch * patch
    finest = 16 if fine_attention else 8  # the finest level with attention
    attended = [(SIZE // patch) >> i <= finest for i in range(len(LEVELS[patch]))]
    return UNet2DConditionModel(
        sample_size=SIZE // patch,
        in_channels=2 * channels if source_conditioned else channels,
        out_channels=channels,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else FINE_BLOCKS[0] for a in attended),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else FINE_BLOCKS[1] for a in reversed(attended)),
        block_out_channels=LEVELS[patch],
        layers_per_block=1,
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=16,  # heads of 16 channels
        norm_num_groups=16,
    )


FINE_BLOCKS = ("DownBlock2D", "UpBlock2D")  # a level without attention


def has_fine_attention(unet: UNet2DConditionModel) -> bool:
    return unet.config.down_block_types[0] != FINE_BLOCKS[0]


def grow_fine_attention(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """`unet` with attention added at 16x16, computing exactly what `unet` computes until the new layers learn.

    Every weight is carried over; the new transformers' output projections start at zero, and a transformer
    adds its output to its input, so each new layer starts as the identity.
    """
    if patch_of(unet) != PATCH:
        raise ValueError(f"attention at 16x16 is grown into {PATCH}x{PATCH}-fold UNets only, not a {patch_of(unet)}x"
                         f"{patch_of(unet)}-fold one")  # fmt: skip
    if has_fine_attention(unet):
        return unet
    grown = toy_unet2d(source_conditioned=unet.config.in_channels != unet.config.out_channels, fine_attention=True)
    missing, unexpected = grown.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or any(".attentions." not in key for key in missing):
        raise ValueError(f"not a toy UNet: unexpected {unexpected[:3]}, missing {missing[:3]}")
    for blocks in (grown.down_blocks[:1], grown.up_blocks[-1:]):
        for attention in blocks[0].attentions:
            torch.nn.init.zeros_(attention.proj_out.weight)
            torch.nn.init.zeros_(attention.proj_out.bias)
    return grown


def patch_of(unet) -> int:
    """The pixel fold a toy UNet works in, from its output channels (3 p^2)."""
    return math.isqrt(unet.config.out_channels // 3)


def toy_autoencoder(patch: int = PATCH) -> PixelUnshuffleAutoencoder:
    return PixelUnshuffleAutoencoder(patch_size=patch)


def toy_train_scheduler(prediction_type: str = "sample") -> DDPMScheduler:
    """A cosine schedule; x0-prediction by default: in pixel space, epsilon-prediction leaves pixel noise (measured)."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type,
                         clip_sample=False)  # fmt: skip


def toy_sample_scheduler(prediction_type: str = "sample") -> DDIMScheduler:
    return DDIMScheduler.from_config(toy_train_scheduler(prediction_type).config, set_alpha_to_one=True)
