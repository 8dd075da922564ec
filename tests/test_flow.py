"""Optical flow on synthetic translated textures: known ground-truth motion, direction and latent scaling."""

import cv2
import numpy as np
import pytest
import torch

from insv2v.flow import FLOW_MAX_SIDE, optical_flow, reference_flows, warp


def _texture(h, w, sigma, seed=0, channels=1):
    """Smoothed random noise as uint8, (h, w) or (h, w, 3): textured everywhere, no periodicity."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((h, w, 3) if channels == 3 else (h, w)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    noise = (noise - noise.min()) / (noise.max() - noise.min()) * 255
    return noise.round().astype(np.uint8)


def _shifted_frames(base, size, offsets, margin):
    """Crops of `base` with frame k[p] = base[p + offsets[k]] (offsets as (dx, dy)), so that the flow from
    frame n to frame r (`frame_n[p] = frame_r[p + flow]`) is offsets[n] - offsets[r]."""
    h, w = size
    return np.stack([base[margin + oy : margin + oy + h, margin + ox : margin + ox + w] for ox, oy in offsets])


@pytest.mark.parametrize("shift", [(3, 0), (0, 3), (-3, 0), (3, -2)])
def test_optical_flow_recovers_translation(shift):
    source, target = _shifted_frames(_texture(168, 168, 2.0), (128, 128), [shift, (0, 0)], margin=20)
    flow = optical_flow(source, target)
    assert flow.shape == (128, 128, 2) and flow.dtype == np.float32
    interior = flow[16:-16, 16:-16].reshape(-1, 2)  # (pixels, 2) as (dx, dy)
    np.testing.assert_allclose(np.median(interior, axis=0), shift, atol=0.5)
    assert np.abs(interior - shift).max() < 0.25


def test_optical_flow_of_an_image_too_small_for_dis_is_measured_enlarged():
    """DIS refuses an 8x8 image (a latent-sized toy frame under MC, or the warp error of a tiny video)."""
    base = _texture(48, 48, 2.0)
    source, target = _shifted_frames(base, (8, 8), [(2, 0), (0, 0)], margin=16)
    flow = optical_flow(source, target)
    assert flow.shape == (8, 8, 2) and flow.dtype == np.float32
    np.testing.assert_allclose(np.median(flow[2:-2, 2:-2].reshape(-1, 2), axis=0), (2, 0), atol=0.75)
    assert np.abs(optical_flow(source, source)).max() < 0.05


def test_optical_flow_direction_warps_target_onto_source():
    """source[p] ~ target[p + flow[p]]: backward-warping the target by the flow reconstructs the source."""
    source, target = _shifted_frames(_texture(168, 168, 2.0, seed=1), (128, 128), [(3, -2), (0, 0)], margin=20)
    flow = optical_flow(source, target)
    warped, weight = warp(torch.from_numpy(target).float()[None, None], torch.from_numpy(flow).permute(2, 0, 1)[None])
    inner = (slice(16, -16), slice(16, -16))
    err = np.abs(warped[0, 0].numpy() - source)[inner].mean()
    err_unwarped = np.abs(target.astype(np.float32) - source)[inner].mean()
    assert err_unwarped > 10  # the frames really differ
    assert err < 0.5  # in gray levels out of 255
    np.testing.assert_allclose(weight[0, 0].numpy()[inner], 1.0, atol=1e-6)  # inside: full weight
    # The opposite sign convention would make it worse than not warping at all.
    wrong, _ = warp(torch.from_numpy(target).float()[None, None], -torch.from_numpy(flow).permute(2, 0, 1)[None])
    assert np.abs(wrong[0, 0].numpy() - source)[inner].mean() > err_unwarped


def test_reference_flows_identical_frames_give_zero_flow():
    frame = _texture(64, 96, 3.0, channels=3)
    flows = reference_flows(np.stack([frame, frame, frame]), [2], [0, 1], (12, 8))
    assert flows.shape == (1, 2, 2, 8, 12)
    assert flows.abs().max() < 0.01  # Farneback is not exactly zero on identical frames, but close


# Frame offsets (dx, dy) in image pixels; flows from new frames 2, 3 to references 0, 1 are at most 8 px per axis.
OFFSETS = [(0, 0), (4, 0), (-4, 4), (2, -6)]


@pytest.mark.parametrize("seed", [0, 1])
def test_reference_flows_shape_order_and_latent_scaling(seed):
    """Non-square frames with motion in both axes: catches swapped (w, h) or (dx, dy) and unscaled vectors."""
    h, w = 96, 160
    frames = _shifted_frames(_texture(h + 40, w + 40, 3.0, seed=seed, channels=3), (h, w), OFFSETS, margin=20)
    new, refs, latent_size = [2, 3], [0, 1], (w // 8, h // 8)  # latent_size is (w, h)
    flows = reference_flows(frames, new, refs, latent_size)
    assert flows.shape == (2, 2, 2, h // 8, w // 8) and flows.dtype == torch.float32
    for j, n in enumerate(new):
        for i, r in enumerate(refs):
            expected = (np.array(OFFSETS[n]) - np.array(OFFSETS[r])) / 8  # latent pixels, (dx, dy)
            interior = flows[j, i, :, 3:-3, 3:-3].reshape(2, -1).numpy()  # (2, pixels)
            np.testing.assert_allclose(np.median(interior, axis=1), expected, atol=0.05)


def test_reference_flows_scaling_when_computed_below_input_size():
    """Frames larger than FLOW_MAX_SIDE: flow runs on a downscaled copy and must still come out in latent px."""
    h, w = 256, 384
    assert max(h, w) > FLOW_MAX_SIDE
    offsets = [(6 * ox // 4, 6 * oy // 4) for ox, oy in OFFSETS]  # up to 12 px here, 8 px at flow resolution
    frames = _shifted_frames(_texture(h + 60, w + 60, 4.5, seed=2, channels=3), (h, w), offsets, margin=30)
    flows = reference_flows(frames, [2, 3], [0, 1], (w // 8, h // 8))
    assert flows.shape == (2, 2, 2, h // 8, w // 8)
    for j, n in enumerate([2, 3]):
        for i, r in enumerate([0, 1]):
            expected = (np.array(offsets[n]) - np.array(offsets[r])) / 8
            interior = flows[j, i, :, 4:-4, 4:-4].reshape(2, -1).numpy()
            np.testing.assert_allclose(np.median(interior, axis=1), expected, atol=0.05)


def test_reference_flows_scales_each_axis_separately():
    """latent_size (w, h) with different x and y factors: dx scales by w_lat / w, dy by h_lat / h."""
    frames = _shifted_frames(_texture(168, 168, 3.0, seed=4, channels=3), (128, 128), [(8, -8), (0, 0)], margin=20)
    flows = reference_flows(frames, [0], [1], (16, 32))  # x / 8, y / 4
    assert flows.shape == (1, 1, 2, 32, 16)
    interior = flows[0, 0, :, 6:-6, 3:-3].reshape(2, -1).numpy()
    np.testing.assert_allclose(np.median(interior, axis=1), [1.0, -2.0], atol=0.05)


def test_reference_flows_8px_at_128_is_1_latent_px():
    frames = _shifted_frames(_texture(168, 168, 3.0, seed=3, channels=3), (128, 128), [(8, 0), (0, 0)], margin=20)
    flows = reference_flows(frames, [0], [1], (16, 16))
    interior = flows[0, 0, :, 3:-3, 3:-3].reshape(2, -1).numpy()
    np.testing.assert_allclose(np.median(interior, axis=1), [1.0, 0.0], atol=0.05)


# Large motion (12% of the frame): frames a whole clip apart move this much.
def test_reference_flows_16px_at_128_is_2_latent_px():
    for seed in range(4):
        frames = _shifted_frames(_texture(168, 168, 3.0, seed=seed, channels=3), (128, 128), [(16, 0), (0, 0)], 20)
        flows = reference_flows(frames, [0], [1], (16, 16))
        interior = flows[0, 0, :, 4:-4, 4:-4].reshape(2, -1).numpy()
        np.testing.assert_allclose(np.median(interior, axis=1), [2.0, 0.0], atol=0.25)
