"""Model construction: a text-to-image UNet made an InstructPix2Pix one, inflating a 2-D InstructPix2Pix UNet to
video, the video UNet's GroupNorm layout (norm mode), any UNet run on videos, and converting the reference
implementation's checkpoint."""

from insv2v.models.inflate import add_source_channels, inflate_unet, motion_adapter_for, zero_motion_outputs
from insv2v.models.unet import NORM_MODES, InsV2VUNetMotionModel, unet_on_video

__all__ = [
    "NORM_MODES",
    "InsV2VUNetMotionModel",
    "add_source_channels",
    "inflate_unet",
    "motion_adapter_for",
    "unet_on_video",
    "zero_motion_outputs",
]
