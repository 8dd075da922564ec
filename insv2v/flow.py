"""Optical flow between input frames (OpenCV DIS: no weights to download), and warping along it."""

from __future__ import annotations

import cv2
import numpy as np
import torch

FLOW_MAX_SIDE = 256  # flow is computed at most this large, then resized to latent size: plenty for 1/8 scale
MIN_FLOW_SIDE = 16  # smaller images are enlarged to this for DIS, which refuses 8x8


def _gray(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 (h, w, 3) -> grayscale at `size` (w, h)."""
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA) if gray.shape[::-1] != size else gray


def optical_flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Dense flow (h, w, 2) in pixels such that `source[p] ~ target[p + flow[p]]` (DIS, Kroeger et al. 2016).

    DIS rather than Farneback: it finds larger motions (frames up to a clip apart) and is faster. Images smaller
    than MIN_FLOW_SIDE, which DIS may refuse (8x8), are measured enlarged.
    """
    h, w = source.shape[:2]
    if min(h, w) < MIN_FLOW_SIDE:
        scale = MIN_FLOW_SIDE / min(h, w)
        size = (round(w * scale), round(h * scale))
        larger = [cv2.resize(image, size, interpolation=cv2.INTER_LINEAR) for image in (source, target)]
        return resize_flow(optical_flow(*larger), (w, h))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(np.ascontiguousarray(source), np.ascontiguousarray(target), None)


def resize_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a flow field (h, w, 2) to `size` (w, h), scaling its vectors with the image."""
    h, w = flow.shape[:2]
    out = cv2.resize(flow, size, interpolation=cv2.INTER_AREA if size[0] < w else cv2.INTER_LINEAR)
    return out * np.array([size[0] / w, size[1] / h], dtype=np.float32)


def reference_flows(frames: np.ndarray, new: list[int], refs: list[int], latent_size: tuple[int, int]) -> torch.Tensor:
    """Flows from each new frame to each reference frame, at latent size (w, h).

    frames: (f, h, w, 3) uint8 input frames; `new` and `refs` index into them.
    Returns (len(new), len(refs), 2, h_lat, w_lat) float32, vectors in latent pixels.
    """
    h, w = frames.shape[1:3]
    scale = min(1.0, FLOW_MAX_SIDE / max(h, w))
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    gray = {i: _gray(frames[i], size) for i in set(new) | set(refs)}
    out = np.empty((len(new), len(refs), latent_size[1], latent_size[0], 2), dtype=np.float32)
    for j, n in enumerate(new):
        for i, r in enumerate(refs):
            out[j, i] = resize_flow(optical_flow(gray[n], gray[r]), latent_size)
    return torch.from_numpy(out).permute(0, 1, 4, 2, 3)  # (n, r, 2, h, w)


def warp(x: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward-warp `x` (n, c, h, w) by `flow` (n, 2, h, w): out[p] = x[p + flow[p]], flow in pixels (dx, dy).

    Bilinear, zero outside the image (grid_sample's "zeros" padding, align_corners=True), computed as an explicit
    gather of the four neighbours so that integer flows are exact in any dtype. Returns the warped tensor and
    the warped all-ones image (n, 1, h, w): 1 inside, fractional at borders, 0 outside.
    """
    n, c, h, w = x.shape
    dtype = torch.promote_types(x.dtype, torch.float32)  # positions and weights never in half precision
    ys, xs = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=dtype), torch.arange(w, device=x.device, dtype=dtype), indexing="ij"
    )
    px = xs + flow[:, 0].to(dtype)  # (n, h, w)
    py = ys + flow[:, 1].to(dtype)
    x0, y0 = px.floor(), py.floor()
    fx, fy = px - x0, py - y0
    values = x.reshape(n, c, h * w)
    out = torch.zeros(n, c, h, w, device=x.device, dtype=dtype)
    weight = torch.zeros(n, 1, h, w, device=x.device, dtype=dtype)
    for dy, dx, corner in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        corner = corner * ((xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1))  # (n, h, w)
        index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long().reshape(n, 1, h * w).expand(n, c, h * w)
        out += values.gather(2, index).reshape(n, c, h, w).to(dtype) * corner[:, None]
        weight += corner[:, None]
    return out.to(x.dtype), weight.to(x.dtype)
