"""Clip planning, LVSC and motion compensation against independent ground truth written in the tests."""

import itertools
import math

import pytest
import torch

from insv2v.flow import warp
from insv2v.longvideo import ClipSpan, lvsc_correct, lvsc_delta, motion_compensated_delta, plan_clips


def _rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------------------------------------- plan_clips


def test_plan_clips_reference_example():
    assert plan_clips(32, 16, 4) == [ClipSpan(0, 16, 0), ClipSpan(12, 28, 4), ClipSpan(16, 32, 12)]


@pytest.mark.parametrize(
    "num_frames,frames_per_clip,ref_frames",
    [
        (1, 16, 4),
        (7, 16, 4),
        (16, 16, 4),
        (17, 16, 4),
        (28, 16, 4),
        (29, 16, 4),
        (32, 16, 4),
        (100, 16, 4),
        (10, 4, 3),
        (10, 3, 0),
        (9, 3, 0),
        (5, 2, 1),
        (50, 8, 7),
        (1, 1, 0),
        (6, 1, 0),
    ],
)
def test_plan_clips_invariants(num_frames, frames_per_clip, ref_frames):
    spans = plan_clips(num_frames, frames_per_clip, ref_frames)
    # The "new" frames of all clips partition 0..N-1, in order.
    new_frames = [i for s in spans for i in range(s.start + s.num_ref, s.stop)]
    assert new_frames == list(range(num_frames))
    assert spans[0].start == 0 and spans[0].num_ref == 0
    assert spans[-1].stop == num_frames
    for s in spans:
        assert s.length == min(frames_per_clip, num_frames) == s.stop - s.start
        assert s.start >= 0 and s.stop <= num_frames
        assert 0 <= s.num_ref < s.length  # every clip generates at least one new frame
    for prev, cur in itertools.pairwise(spans):
        assert cur.num_ref == prev.stop - cur.start
        assert cur.num_ref >= ref_frames  # overlap at least R
        assert cur.start > prev.start
    if num_frames <= frames_per_clip:
        assert spans == [ClipSpan(0, num_frames, 0)]
    # Only the last clip may be shifted back to reuse more than R frames.
    assert all(s.num_ref == ref_frames for s in spans[1:-1])
    # Number of clips is the fewest that fit: first clip gives F new frames, each further one F - R.
    expected_clips = 1 + max(0, math.ceil((num_frames - frames_per_clip) / (frames_per_clip - ref_frames)))
    assert len(spans) == expected_clips


@pytest.mark.parametrize(
    "args,name",
    [
        ((32, 16, 16), "ref_frames"),
        ((32, 16, 20), "ref_frames"),
        ((32, 16, -1), "ref_frames"),
        ((0, 16, 4), "num_frames"),
        ((-3, 16, 4), "num_frames"),
    ],
)
def test_plan_clips_rejects_bad_arguments(args, name):
    with pytest.raises(ValueError, match=name):
        plan_clips(*args)


# ---------------------------------------------------------------------------------------------- LVSC


def _case(b, seed=0, c=4, f=6, r=2, h=5, w=7):
    eps, sample = _rand(b, c, f, h, w, seed=seed), _rand(b, c, f, h, w, seed=seed + 1)
    latent_ref = _rand(b, c, r, h, w, seed=seed + 2)
    return eps, sample, latent_ref


@pytest.mark.parametrize("b", [1, 2])
@pytest.mark.parametrize("alpha_bar", [0.02, 0.3, 0.75, 0.995])
def test_lvsc_reference_frames_predict_latent_ref(b, alpha_bar):
    eps, sample, latent_ref = _case(b, seed=b)
    r = latent_ref.shape[2]
    a = torch.tensor(alpha_bar)
    out = lvsc_correct(eps, sample, latent_ref, a)
    assert out.shape == eps.shape
    x0 = (sample[:, :, :r] - math.sqrt(1 - alpha_bar) * out[:, :, :r]) / math.sqrt(alpha_bar)
    torch.testing.assert_close(x0, latent_ref, rtol=0, atol=1e-5)
    # Before the correction the predicted x0 was far from latent_ref: the test is not vacuous.
    x0_before = (sample[:, :, :r] - math.sqrt(1 - alpha_bar) * eps[:, :, :r]) / math.sqrt(alpha_bar)
    assert (x0_before - latent_ref).abs().max() > 0.5


@pytest.mark.parametrize("b", [1, 2])
@pytest.mark.parametrize("alpha_bar", [0.1, 0.6, 0.9])
def test_lvsc_new_frames_get_mean_reference_delta(b, alpha_bar):
    eps, sample, latent_ref = _case(b, seed=10 + b, r=3)
    r, f = latent_ref.shape[2], eps.shape[2]
    out = lvsc_correct(eps, sample, latent_ref, torch.tensor(alpha_bar))
    # delta_i = noise that explains x_t given x0 = latent_ref, minus the predicted noise; loop over refs by hand.
    total = torch.zeros_like(eps[:, :, 0])
    for i in range(r):
        noise_i = (sample[:, :, i] - math.sqrt(alpha_bar) * latent_ref[:, :, i]) / math.sqrt(1 - alpha_bar)
        delta_i = noise_i - eps[:, :, i]
        torch.testing.assert_close(out[:, :, i] - eps[:, :, i], delta_i, rtol=0, atol=1e-5)
        total += delta_i
    for j in range(r, f):
        torch.testing.assert_close(out[:, :, j] - eps[:, :, j], total / r, rtol=0, atol=1e-5)


@pytest.mark.parametrize("b", [1, 2])
def test_lvsc_motion_compensation_with_zero_flow_equals_plain(b):
    eps, sample, latent_ref = _case(b, seed=20 + b)
    r, f, h, w = latent_ref.shape[2], eps.shape[2], eps.shape[3], eps.shape[4]
    a = torch.tensor(0.4)
    plain = lvsc_correct(eps, sample, latent_ref, a)
    mc = lvsc_correct(eps, sample, latent_ref, a, flows=torch.zeros(f - r, r, 2, h, w))
    assert mc.shape == plain.shape == eps.shape
    torch.testing.assert_close(mc, plain, rtol=0, atol=1e-6)


def test_lvsc_delta_is_zero_when_prediction_already_consistent():
    """If eps is the true forward noise of latent_ref, nothing needs correcting."""
    latent_ref, noise = _rand(2, 4, 3, 5, 5, seed=30), _rand(2, 4, 3, 5, 5, seed=31)
    a = torch.tensor(0.35)
    x_t = a.sqrt() * latent_ref + (1 - a).sqrt() * noise
    torch.testing.assert_close(lvsc_delta(noise, x_t, latent_ref, a), torch.zeros_like(noise), rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------- warp


@pytest.mark.parametrize("h,w", [(5, 7), (8, 8), (13, 29), (64, 40), (96, 160)])
def test_warp_zero_flow_is_identity(h, w):
    x = _rand(2, 3, h, w, seed=40, dtype=torch.float64)
    out, weight = warp(x, torch.zeros(2, 2, h, w, dtype=torch.float64))
    assert out.shape == x.shape and weight.shape == (2, 1, h, w)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-12)
    assert torch.equal(weight, torch.ones_like(weight))


# Integer flows gather exact neighbours, whatever the dtype (fp16 latents on a GPU included).
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_warp_zero_flow_is_exact(dtype):
    h, w = 96, 160  # a 768x1280 video's latents
    x = _rand(1, 4, h, w, seed=43).to(dtype)
    out, _ = warp(x, torch.zeros(1, 2, h, w, dtype=dtype))
    assert torch.equal(out, x)


def test_warp_zero_flow_float32_is_close():
    x = _rand(1, 4, 64, 64, seed=44)
    out, weight = warp(x, torch.zeros(1, 2, 64, 64))
    torch.testing.assert_close(out, x, rtol=0, atol=1e-4)
    assert torch.equal(weight, torch.ones_like(weight))


def test_warp_integer_shift():
    h, w = 6, 9
    x = _rand(1, 3, h, w, seed=41)
    flow = torch.zeros(1, 2, h, w)
    flow[:, 0] = 2.0  # dx = +2: out[x] = in[x + 2]
    out, weight = warp(x, flow)
    torch.testing.assert_close(out[..., : w - 2], x[..., 2:], rtol=0, atol=1e-6)
    torch.testing.assert_close(weight[..., : w - 2], torch.ones(1, 1, h, w - 2), rtol=0, atol=1e-6)
    torch.testing.assert_close(out[..., w - 2 :], torch.zeros(1, 3, h, 2), rtol=0, atol=1e-6)
    torch.testing.assert_close(weight[..., w - 2 :], torch.zeros(1, 1, h, 2), rtol=0, atol=1e-6)


def test_warp_vertical_integer_shift():
    h, w = 7, 5
    x = _rand(1, 2, h, w, seed=42)
    flow = torch.zeros(1, 2, h, w)
    flow[:, 1] = -1.0  # dy = -1: out[y] = in[y - 1]
    out, weight = warp(x, flow)
    torch.testing.assert_close(out[..., 1:, :], x[..., :-1, :], rtol=0, atol=1e-6)
    torch.testing.assert_close(out[..., 0, :], torch.zeros(1, 2, w), rtol=0, atol=1e-6)
    torch.testing.assert_close(weight[:, 0, 0], torch.zeros(1, w), rtol=0, atol=1e-6)


def test_warp_subpixel_shift_of_linear_ramp():
    h, w = 6, 8
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    ramp = (3.0 * xs - 2.0 * ys + 1.0)[None, None]  # (1, 1, h, w)
    dx, dy = 0.3, -0.25
    flow = torch.stack([torch.full((h, w), dx), torch.full((h, w), dy)])[None]
    out, weight = warp(ramp, flow)
    # Interior: bilinear interpolation of a linear function is exact.
    inner = (slice(None), slice(None), slice(1, None), slice(0, w - 1))
    expected = 3.0 * (xs + dx) - 2.0 * (ys + dy) + 1.0
    torch.testing.assert_close(out[inner], expected[None, None][inner], rtol=0, atol=1e-5)
    torch.testing.assert_close(weight[inner], torch.ones_like(weight[inner]), rtol=0, atol=1e-6)
    # Border: the weight is the in-image share of the bilinear kernel, per axis.
    wx = torch.ones(w)
    wx[-1] = 1 - dx
    wy = torch.ones(h)
    wy[0] = 1 + dy
    torch.testing.assert_close(weight[0, 0], wy[:, None] * wx[None, :], rtol=0, atol=1e-6)
    # Last column: 0.7 of the ramp at (w - 1, y + dy) and nothing from outside.
    last = (1 - dx) * (3.0 * (w - 1) - 2.0 * (ys[1:, -1] + dy) + 1.0)
    torch.testing.assert_close(out[0, 0, 1:, -1], last, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------- motion compensation


def _bilinear_slow(img, x, y):
    """Bilinear sample of img (h, w) at (x, y) with zeros outside; returns (value, in-image weight)."""
    h, w = img.shape
    x0, y0 = math.floor(x), math.floor(y)
    value = weight = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                value += wy * wx * float(img[yy, xx])
                weight += wy * wx
    return value, weight


def _mc_slow(delta_ref, flows, min_weight=0.5):
    b, c, r, h, w = delta_ref.shape
    n = flows.shape[0]
    out = torch.zeros(b, c, n, h, w, dtype=torch.float64)
    for j in range(n):
        for py in range(h):
            for px in range(w):
                sums = torch.zeros(b, c, dtype=torch.float64)
                weight_sum = 0.0
                for i in range(r):
                    sx = px + float(flows[j, i, 0, py, px])
                    sy = py + float(flows[j, i, 1, py, px])
                    for bb in range(b):
                        for cc in range(c):
                            value, weight = _bilinear_slow(delta_ref[bb, cc, i], sx, sy)
                            sums[bb, cc] += value
                    weight_sum += weight
                if weight_sum > min_weight:
                    out[:, :, j, py, px] = sums / weight_sum
    return out


@pytest.mark.parametrize("b", [1, 2])
def test_motion_compensated_delta_matches_slow_reference(b):
    c, r, n, h, w = 2, 3, 2, 5, 6
    delta_ref = _rand(b, c, r, h, w, seed=50 + b, dtype=torch.float64)
    g = torch.Generator().manual_seed(60 + b)
    flows = (torch.rand(n, r, 2, h, w, generator=g, dtype=torch.float64) - 0.5) * 7.0  # up to +-3.5 px, non-integer
    out = motion_compensated_delta(delta_ref, flows)
    expected = _mc_slow(delta_ref, flows)
    assert out.shape == (b, c, n, h, w)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-9)
    # The case exercises both sides of the threshold, including pixels averaged from partial weights.
    zeroed = (expected == 0).all(dim=(0, 1))
    assert zeroed.any() and (~zeroed).any()


def test_motion_compensated_delta_threshold_edges():
    """One reference, flows placing the sample so its in-image weight is just above / below 0.5."""
    delta_ref = torch.full((1, 1, 1, 4, 4), 2.0)
    flows = torch.zeros(2, 1, 2, 4, 4)
    flows[0, 0, 0] = 3.4  # at x=0: samples x=3.4 -> weight 0.6 from column 3; x>=1 reads outside
    flows[1, 0, 0] = 3.6  # at x=0: weight 0.4 -> dropped
    out = motion_compensated_delta(delta_ref, flows)
    # Weighted average of a constant is the constant wherever it is kept.
    torch.testing.assert_close(out[0, 0, 0, :, 0], torch.full((4,), 2.0), rtol=0, atol=1e-5)
    torch.testing.assert_close(out[0, 0, 0, :, 1:], torch.zeros(4, 3), rtol=0, atol=0)
    torch.testing.assert_close(out[0, 0, 1], torch.zeros(4, 4), rtol=0, atol=0)
