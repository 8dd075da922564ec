"""A noise-aware classifier of each coloured shape's kind, and the guidance it gives a text-to-video model.

The toy text-to-image and text-to-video models draw the colour a caption names but the outline their noise suggests,
and keep an outline their noisy sample already holds (docs/toy-generators.md). Classifier guidance (Dhariwal & Nichol
2021) gives them that outline: the model's x0 prediction moves along the gradient of log p(each named shape's kind),
read from the prediction as a frame, at every step. The classifier is an optional component of a text-to-video
folder (`kind_classifier/`); its config names the colours and kinds it reads, so it parses captions on its own.
"""

from __future__ import annotations

import itertools
import re

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn


class KindClassifier(ModelMixin, ConfigMixin):
    """Frames (n, 3, H, W) in [-1, 1] and their noise levels sqrt(1 - abar) (n,) -> kind logits (n, colours, classes):
    the kinds, and with `absence` one more class, "no shape of this colour".

    Four stride-2 stages after the first, each told the noise level (a scale and shift per channel); max and mean
    pooling keep a small shape's evidence, and one linear head reads every colour's kind from the pooled features.
    `unseen`: phrases of captions whose frames it never saw (a pencil sketch shows no colours): those are not guided.
    With `absence` a caption says every colour's class, so guidance also draws a named colour that is missing and
    takes away one it does not name; without it, only the named colours' kinds are read.
    """

    @register_to_config
    def __init__(
        self,
        colours: tuple[str, ...] = (),
        kinds: tuple[str, ...] = (),
        unseen: tuple[str, ...] = (),
        width: int = 64,
        absence: bool = False,
    ):
        super().__init__()
        chans = [3, width // 2, width, 2 * width, 2 * width]
        self.stages = nn.ModuleList(
            nn.Conv2d(a, b, 3, stride=2 if i else 1, padding=1) for i, (a, b) in enumerate(itertools.pairwise(chans))
        )
        self.norms = nn.ModuleList(nn.GroupNorm(8, c) for c in chans[1:])
        self.levels = nn.ModuleList(nn.Linear(1, 2 * c) for c in chans[1:])
        self.head = nn.Linear(2 * chans[-1], len(colours) * (len(kinds) + absence))

    def forward(self, pixels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        h, level = pixels, noise.view(-1, 1).to(pixels.dtype)
        for conv, norm, film in zip(self.stages, self.norms, self.levels, strict=True):
            scale, shift = film(level)[:, :, None, None].chunk(2, dim=1)
            h = F.silu(norm(conv(h)) * (1 + scale) + shift)
        pooled = torch.cat([h.amax(dim=(2, 3)), h.mean(dim=(2, 3))], dim=1)
        return self.head(pooled).view(-1, len(self.config.colours), len(self.config.kinds) + self.config.absence)

    @property
    def absent(self) -> int:
        """The class index of "no shape of this colour" (with `absence`)."""
        return len(self.config.kinds)

    def targets(self, caption: str) -> list[tuple[int, int]]:
        """(colour, class) indices of each "COLOUR KIND" the caption names ("a red circle ..."), and with `absence`
        (colour, `absent`) of every colour it does not name; none for a caption of frames it never saw."""
        if any(phrase in caption for phrase in self.config.unseen):
            return []
        colours, kinds = self.config.colours, self.config.kinds
        pattern = rf"\b({'|'.join(map(re.escape, colours))}) ({'|'.join(map(re.escape, kinds))})\b"
        named = [(colours.index(c), kinds.index(k)) for c, k in re.findall(pattern, caption)]
        if not self.config.absence:
            return named
        return named + [(c, self.absent) for c in range(len(colours)) if c not in {c for c, _ in named}]

    def edit_targets(self, source: str, target: str) -> list[tuple[int, int]]:
        """What the target caption asks of a frame that the source caption does not: the edited shapes' classes."""
        before = set(self.targets(source))
        return [t for t in self.targets(target) if t not in before]


def kind_log_likelihood_gradient(
    classifier: KindClassifier, vae, x0: torch.Tensor, targets: list[tuple[int, int]]
) -> torch.Tensor:
    """grad over latents x0 (c, f, h, w) of sum log p(kind | frame) over `targets` and frames, x0 read as clean."""
    with torch.enable_grad():
        x = x0.detach().float().requires_grad_(True)
        frames = x.transpose(0, 1) / vae.config.scaling_factor  # (f, c, h, w)
        pixels = vae.decode(frames.to(vae.dtype)).sample
        log_p = classifier(pixels.to(classifier.dtype), pixels.new_zeros(len(pixels))).float().log_softmax(-1)
        total = sum(log_p[:, c, k].sum() for c, k in targets)
        (grad,) = torch.autograd.grad(total, x)
    return grad


def kind_guided(
    classifier: KindClassifier, vae, x0: torch.Tensor, targets: list[list[tuple[int, int]]], weight: float
) -> torch.Tensor:
    """x0 predictions (n, c, f, h, w), video i moved `weight` along the gradient of log p(targets[i])."""
    out = x0.clone()
    for i, wanted in enumerate(targets):
        if wanted:
            out[i] = x0[i] + weight * kind_log_likelihood_gradient(classifier, vae, x0[i], wanted).to(x0.dtype)
    return out
