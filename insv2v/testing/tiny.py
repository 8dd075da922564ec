"""A tiny random InsV2VPipeline: same classes and data flow as the real model, a few hundred kB of weights.

python -m insv2v.testing.tiny OUT_DIR     # saves one that `insv2v edit --model OUT_DIR` loads offline
"""

from __future__ import annotations

import argparse

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel, UNet3DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from insv2v.clip_tokenizer import CLIP_VOCAB_SIZE, clip_tokenizer
from insv2v.files import check_new_folder
from insv2v.models import inflate_unet
from insv2v.models.reference import reference_scheduler
from insv2v.pipeline import InsV2VPipeline
from insv2v.synth.t2v import TextToVideoPipeline


def tiny_components(seed: int = 0, sample_size: int = 8) -> dict:
    """vae (factor 8), CLIP text encoder (width 32), inflated UNet (32/64 channels), scheduler."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=sample_size * 8,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    unet = inflate_unet(tiny_unet2d(sample_size))
    # Give the motion modules random outputs too, so tests see temporal mixing (a fresh inflation has none).
    for name, param in unet.named_parameters():
        if "motion_modules" in name and "proj_out" in name:
            torch.nn.init.normal_(param, std=0.02)
    return {
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": clip_tokenizer(),
        "unet": unet.eval(),
        "scheduler": reference_scheduler(),
    }


def tiny_unet2d(sample_size: int = 8) -> UNet2DConditionModel:
    """The tiny pipeline's 2-D editing UNet (32/64 channels, 8 input channels), before inflation."""
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def tiny_pipeline(seed: int = 0) -> InsV2VPipeline:
    pipe = InsV2VPipeline(**tiny_components(seed))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_t2v_pipeline(kind: str = "motion", seed: int = 0) -> TextToVideoPipeline:
    """A tiny random text-to-video pipeline (4-channel UNet, 32/64 channels) with the reference data engine's DDIM.

    kind: "motion" (UNetMotionModel, random motion outputs), "3d" (UNet3DConditionModel, ModelScope's class) or
    "2d" (UNet2DConditionModel: frames as independent images).
    """
    if kind not in ("motion", "3d", "2d"):
        raise ValueError(f"`kind` must be one of 'motion', '3d', '2d', got {kind!r}")
    parts = tiny_components(seed)
    unet_config = dict(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
    )  # fmt: skip
    if kind == "3d":
        unet = UNet3DConditionModel(
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
            **unet_config,
        )
    else:
        unet = UNet2DConditionModel(
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            **unet_config,
        )
    if kind == "motion":
        unet = inflate_unet(unet)
        for name, param in unet.named_parameters():  # random motion outputs, so temporal attention matters
            if "motion_modules" in name and "proj_out" in name:
                torch.nn.init.normal_(param, std=0.02)
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        steps_offset=1, set_alpha_to_one=False, clip_sample=False,
    )  # fmt: skip
    pipe = TextToVideoPipeline(
        vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"], unet=unet.eval(),
        scheduler=scheduler,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Save a tiny random InsV2V pipeline for tests and smoke runs.")
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        save_tiny_pipeline(args.out_dir, args.seed)
    except ValueError as err:
        parser.error(str(err))


def save_tiny_pipeline(out_dir: str, seed: int = 0) -> None:
    """A tiny random InsV2V pipeline saved to `out_dir`, a new or empty folder (ValueError otherwise)."""
    check_new_folder(out_dir)
    InsV2VPipeline(**tiny_components(seed)).save_pretrained(out_dir)
    print(f"saved a tiny random InsV2V pipeline to {out_dir}")


if __name__ == "__main__":
    main()
