"""Optical flow between input frames for motion compensation (OpenCV DIS: no weights to download)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

FLOW_MAX_SIDE = 256  # flow is computed at most this large, then resized to latent size: plenty for 1/8 scale


def _gray(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 (h, w, 3) -> grayscale at `size` (w, h)."""
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA) if gray.shape[::-1] != size else gray


def optical_flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Dense flow (h, w, 2) in pixels such that `source[p] ~ target[p + flow[p]]` (DIS, Kroeger et al. 2016).

    DIS rather than Farneback: it finds larger motions (frames up to a clip apart) and is faster.
    """
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(np.ascontiguousarray(source), np.ascontiguousarray(target), None)


def resize_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a flow field (h, w, 2) to `size` (w, h), scaling its vectors with the image."""
    h, w = flow.shape[:2]
    out = cv2.resize(flow, size, interpolation=cv2.INTER_AREA if size[0] < w else cv2.INTER_LINEAR)
    return out * np.array([size[0] / w, size[1] / h], dtype=np.float32)


def reference_flows(
    frames: np.ndarray, new: list[int], refs: list[int], latent_size: tuple[int, int]
) -> torch.Tensor:
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
