"""Model construction: inflating a 2-D InstructPix2Pix UNet to video."""

from insv2v.models.inflate import inflate_unet, motion_adapter_for, zero_motion_outputs

__all__ = ["inflate_unet", "motion_adapter_for", "zero_motion_outputs"]
