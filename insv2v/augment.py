"""Motion augmentation for training clips: synthetic camera pans and zooms, the same for the input and the target.

The synthetic pairs come from a text-to-video model whose camera rarely moves; the reference training moves it
afterwards: a crop window that slides linearly across the clip (a pan, in 70% of clips, up to 20% of the frame
along each axis) and grows or shrinks (a zoom, in 20% of clips, up to 1.25x), resized back to the full frame
(the reference's `VideoPromptToPromptMotionAug`). Input and target must move alike, or the model would learn to
move the camera as part of the edit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

PAN_PROB = 0.7  # share of clips panned
PAN_MAX = 0.2  # largest travel of the window's centre along each axis, a fraction of the frame
ZOOM_PROB = 0.2  # share of clips zoomed
ZOOM_MAX = 1.25  # largest zoom, at the first or the last frame


@dataclass(frozen=True)
class CameraMove:
    """A crop window per frame: its centre travels `pan` (dy, dx: signed fractions of the frame) from the first
    frame to the last, and its zoom goes linearly from `zoom[0]` to `zoom[1]` (1: the pan's window, >1: closer)."""

    pan: tuple[float, float] = (0.0, 0.0)
    zoom: tuple[float, float] = (1.0, 1.0)


STILL = CameraMove()


def draw_move(rng: np.random.Generator, pan_prob: float = PAN_PROB, zoom_prob: float = ZOOM_PROB) -> CameraMove:
    """A random camera move, as the reference draws them: each axis's travel uniform in [0, PAN_MAX] with a random
    sign; the zoom uniform in [1, ZOOM_MAX], in or out."""
    pan, zoom = (0.0, 0.0), (1.0, 1.0)
    if rng.random() < pan_prob:
        dy, dx = rng.uniform(0, PAN_MAX, 2) * rng.choice((-1.0, 1.0), 2)
        pan = (float(dy), float(dx))
    if rng.random() < zoom_prob:
        scale = float(rng.uniform(1, ZOOM_MAX))
        zoom = (1.0, scale) if rng.random() < 0.5 else (scale, 1.0)
    return CameraMove(pan, zoom)


def crop_windows(move: CameraMove, frames: int) -> torch.Tensor:
    """(f, 2, 3) affine maps from output to input coordinates (normalised to [-1, 1], as `F.affine_grid` takes):
    per frame, the window of size (1 - |d|) / zoom whose centre goes from -d/2 to +d/2 of the frame."""
    t = torch.linspace(0, 1, frames, dtype=torch.float64) if frames > 1 else torch.zeros(1, dtype=torch.float64)
    zoom = move.zoom[0] + (move.zoom[1] - move.zoom[0]) * t  # (f,)
    theta = torch.zeros(frames, 2, 3, dtype=torch.float64)
    for row, travel in zip((1, 0), move.pan, strict=True):  # row 0 maps x (the second axis), row 1 maps y
        theta[:, row, row] = (1 - abs(travel)) / zoom  # window size, a fraction of the frame
        theta[:, row, 2] = 2 * travel * (t - 0.5)  # window centre; the frame spans 2 normalised units
    return theta.float()


def apply_move(clip: torch.Tensor, move: CameraMove) -> torch.Tensor:
    """`clip` (c, f, h, w) seen through the moving window: each frame's window resized back to h x w (bilinear)."""
    if move == STILL:
        return clip
    c, f, h, w = clip.shape
    theta = crop_windows(move, f).to(clip.device)
    grid = F.affine_grid(theta, [f, c, h, w], align_corners=False)  # (f, h, w, 2)
    frames = clip.transpose(0, 1).float()  # (f, c, h, w)
    out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.to(clip.dtype).transpose(0, 1)  # (c, f, h, w)


def augment_pairs(
    rng: np.random.Generator,
    source: torch.Tensor,
    target: torch.Tensor,
    pan_prob: float = PAN_PROB,
    zoom_prob: float = ZOOM_PROB,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and target clips (n, c, f, h, w), each pair moved by one random camera move, the same for both."""
    moves = [draw_move(rng, pan_prob, zoom_prob) for _ in range(len(source))]
    both = torch.cat([source, target], dim=1)  # (n, 2c, f, h, w): one warp moves input and target alike
    moved = torch.stack([apply_move(pair, move) for pair, move in zip(both, moves, strict=True)])
    return moved[:, : source.shape[1]], moved[:, source.shape[1] :]
