"""Inflate a 2-D InstructPix2Pix UNet to video with AnimateDiff-style motion modules (InsV2V sec. 3.2)."""

from __future__ import annotations

import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

# InsV2V's motion modules: 8 heads, positions up to 32 frames, none in the mid block (docs/DESIGN.md).
MOTION_HEADS = 8
MOTION_MAX_FRAMES = 32


def motion_adapter_for(
    unet: UNet2DConditionModel,
    num_attention_heads: int = MOTION_HEADS,
    max_seq_length: int = MOTION_MAX_FRAMES,
    use_mid_block: bool = False,
) -> MotionAdapter:
    """A fresh motion adapter shaped for `unet`, with zero-initialised outputs."""
    adapter = MotionAdapter(
        block_out_channels=tuple(unet.config.block_out_channels),
        motion_layers_per_block=unet.config.layers_per_block,
        motion_num_attention_heads=num_attention_heads,
        motion_norm_num_groups=unet.config.norm_num_groups,
        motion_max_seq_length=max_seq_length,
        use_motion_mid_block=use_mid_block,
    )
    zero_motion_outputs(adapter)
    return adapter


@torch.no_grad()
def zero_motion_outputs(model: torch.nn.Module) -> torch.nn.Module:
    """Zero every motion module's output projection, so each temporal layer starts as the identity."""
    for name, module in model.named_modules():
        if "motion_modules" in name and name.endswith("proj_out"):
            module.weight.zero_()
            if module.bias is not None:
                module.bias.zero_()
    return model


def inflate_unet(
    unet: UNet2DConditionModel, motion_adapter: MotionAdapter | None = None, zero_init: bool = True
) -> UNetMotionModel:
    """2-D UNet (+ optional pretrained motion adapter) -> UNetMotionModel.

    With `zero_init` (default) the motion outputs are zeroed, so the inflated model equals the 2-D model
    frame by frame; that is how InsV2V starts training, even from a pretrained AnimateDiff adapter.
    """
    adapter = motion_adapter if motion_adapter is not None else motion_adapter_for(unet)
    video_unet = UNetMotionModel.from_unet2d(unet, adapter)
    if zero_init:
        zero_motion_outputs(video_unet)
    return video_unet


@torch.no_grad()
def add_source_channels(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """A text-to-image UNet -> an InstructPix2Pix UNet that also reads the source image's latents.

    InstructPix2Pix's initialisation: the input convolution gains as many input channels, with zero weights,
    so the editing model starts as the text-to-image model whatever the source is.
    """
    if unet.config.in_channels != unet.config.out_channels:
        raise ValueError(f"the UNet already takes {unet.config.in_channels} input channels for "
                         f"{unet.config.out_channels} outputs: it is not a text-to-image UNet")  # fmt: skip
    editing = UNet2DConditionModel.from_config({**unet.config, "in_channels": 2 * unet.config.in_channels})
    state = unet.state_dict()
    state["conv_in.weight"] = torch.cat([state["conv_in.weight"], torch.zeros_like(state["conv_in.weight"])], dim=1)
    editing.load_state_dict(state)
    return editing  # float32, as training wants it
