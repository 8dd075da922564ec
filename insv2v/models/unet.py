"""The video UNet with a switchable GroupNorm layout, so that the InsV2V reference checkpoint runs as it was trained.

diffusers' `UNetMotionModel` normalises resnets (and `conv_norm_out`) frame by frame and each motion module over
all frames of a clip jointly. The InsV2V reference implementation does the opposite in both places: its resnets
see (b, c, f, h, w) tensors, so their GroupNorm statistics span every frame of the clip, while its motion modules
normalise (b*f, c, h, w) frames one at a time. Weights trained one way give outputs ~0.3 off when run the other
way (docs/DESIGN.md), so the layout is part of the model: `norm_mode` in the config, saved and restored with it.

    norm_mode="diffusers"  stock UNetMotionModel behaviour (models inflated from diffusers parts)
    norm_mode="reference"  resnet and output norms over all frames jointly, motion-module norms per frame
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from diffusers import ModelMixin, UNetMotionModel  # noqa: F401  ModelMixin: see below
from diffusers.configuration_utils import register_to_config
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

NORM_MODES = ("diffusers", "reference")

# A saved pipeline names this module as the unet's library; diffusers' loader then looks up base classes such as
# `ModelMixin` by name in it, hence the import above.


class _FrameCount:
    """Frames per clip of the batch now running through the UNet, shared by its clip-wide norms."""

    value: int = 1


class ClipGroupNorm(torch.nn.GroupNorm):
    """GroupNorm of per-frame activations (b*f, c, h, w) with statistics over all f frames of each clip."""

    def __init__(self, norm: torch.nn.GroupNorm, frames: _FrameCount):
        super().__init__(norm.num_groups, norm.num_channels, norm.eps, norm.affine)
        self.frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.frames.value
        bf, c, h, w = x.shape
        clip = x.view(bf // f, f, c, h, w).transpose(1, 2)  # (b, c, f, h, w)
        out = F.group_norm(clip, self.num_groups, self.weight, self.bias, self.eps)
        return out.transpose(1, 2).reshape(bf, c, h, w)


class FrameGroupNorm(torch.nn.GroupNorm):
    """GroupNorm of a clip (b, c, f, h, w) with statistics per frame, as if each frame were its own sample."""

    def __init__(self, norm: torch.nn.GroupNorm):
        super().__init__(norm.num_groups, norm.num_channels, norm.eps, norm.affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * f, c, h, w)  # (b*f, c, h, w)
        out = F.group_norm(frames, self.num_groups, self.weight, self.bias, self.eps)
        return out.view(b, f, c, h, w).transpose(1, 2)  # (b, c, f, h, w)


def _signature_with_norm_mode(init):
    """Give `init` UNetMotionModel's signature plus `norm_mode`, so that diffusers' config machinery (which reads
    the signature) records every setting of the subclass and passes them all back on `from_pretrained`."""
    params = list(inspect.signature(UNetMotionModel.__init__).parameters.values())
    params.append(inspect.Parameter("norm_mode", inspect.Parameter.KEYWORD_ONLY, default="diffusers"))
    init.__signature__ = inspect.Signature(params)
    return init


class InsV2VUNetMotionModel(UNetMotionModel):
    r"""`UNetMotionModel` with a `norm_mode` config field: "diffusers" (default, identical to the parent) or
    "reference" (the InsV2V reference implementation's GroupNorm layout; see the module docstring).

    Parameters and weights are the same in both modes; only where GroupNorm takes its statistics differs.
    """

    @register_to_config
    @_signature_with_norm_mode
    def __init__(self, *args, norm_mode: str = "diffusers", **kwargs):
        super().__init__(*args, **kwargs)
        if norm_mode not in NORM_MODES:
            raise ValueError(f"`norm_mode` must be one of {NORM_MODES}, got {norm_mode!r}.")
        self._frames = _FrameCount()
        if norm_mode == "reference":
            self._use_reference_norms()

    def _use_reference_norms(self) -> None:
        for module in list(self.modules()):
            if isinstance(module, ResnetBlock2D):
                module.norm1 = ClipGroupNorm(module.norm1, self._frames)
                module.norm2 = ClipGroupNorm(module.norm2, self._frames)
            elif isinstance(module, AnimateDiffTransformer3D):
                module.norm = FrameGroupNorm(module.norm)
        if self.conv_norm_out is not None:
            self.conv_norm_out = ClipGroupNorm(self.conv_norm_out, self._frames)

    def forward(self, sample: torch.Tensor, *args, **kwargs):
        """As `UNetMotionModel.forward`; `sample` is (b, c, f, h, w)."""
        self._frames.value = sample.shape[2]
        return super().forward(sample, *args, **kwargs)


def unet_on_video(unet, sample: torch.Tensor, timestep, text: torch.Tensor) -> torch.Tensor:
    """A UNet's output for videos (n, c, f, h, w), with one text embedding per video (n, L, C) and a timestep (a
    number, or one per video): a 2-D UNet sees the frames as a batch of images; UNet3DConditionModel repeats the text
    per frame itself; a motion UNet (diffusers' UNetMotionModel, InsV2V's) wants it once per frame."""
    from diffusers import UNet2DConditionModel, UNet3DConditionModel

    kind = type(getattr(unet, "module", unet))  # under DistributedDataParallel, the UNet it wraps (called wrapped)
    if issubclass(kind, UNet3DConditionModel):
        return unet(sample, timestep, encoder_hidden_states=text).sample
    n, f = sample.shape[0], sample.shape[2]
    per_frame = text.repeat_interleave(f, dim=0)  # (n*f, L, C)
    if not issubclass(kind, UNet2DConditionModel):
        return unet(sample, timestep, encoder_hidden_states=per_frame).sample
    if torch.is_tensor(timestep) and timestep.ndim:
        timestep = timestep.repeat_interleave(f)
    images = sample.transpose(1, 2).flatten(0, 1)  # (n*f, c, h, w)
    return unet(images, timestep, encoder_hidden_states=per_frame).sample.unflatten(0, (n, f)).transpose(1, 2)
