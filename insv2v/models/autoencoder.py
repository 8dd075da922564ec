"""A lossless pixel-space "autoencoder" behind the AutoencoderKL interface: 4x4 space-to-depth.

The toy editor runs diffusion directly on pixels, folded so a 64x64 frame is a 48x16x16 latent; encode and
decode are exact inverses, so the toy world measures the editor, not a VAE's reconstruction error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput


class PixelUnshuffleAutoencoder(ModelMixin, ConfigMixin):
    """encode: (n, 3, H, W) in [-1, 1] -> latent (n, 3 p^2, H/p, W/p); decode is its exact inverse."""

    @register_to_config
    def __init__(self, patch_size: int = 4, in_channels: int = 3, scaling_factor: float = 1.0):
        super().__init__()
        # No weights; a buffer gives the module a dtype and device like any other component.
        self.register_buffer("unit", torch.ones(()))

    @property
    def spatial_compression_ratio(self) -> int:
        return self.config.patch_size

    @property
    def latent_channels(self) -> int:
        return self.config.in_channels * self.config.patch_size**2

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        mean = F.pixel_unshuffle(x, self.config.patch_size) * self.unit  # (n, 3 p^2, H/p, W/p)
        logvar = torch.full_like(mean, -30.0)  # a point mass: sample() == mode() up to 3e-7
        dist = DiagonalGaussianDistribution(torch.cat([mean, logvar], dim=1))
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        pixels = F.pixel_shuffle(z, self.config.patch_size)  # (n, 3, H, W)
        return DecoderOutput(sample=pixels) if return_dict else (pixels,)

    def enable_tiling(self) -> None:
        """Nothing to tile: the fold takes each pixel on its own, in no more memory than the frame."""

    def disable_tiling(self) -> None:
        """Nothing to tile (see `enable_tiling`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x).latent_dist.mode()).sample
