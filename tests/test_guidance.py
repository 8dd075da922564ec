"""Dual guidance and prediction-type conversions: exact algebra on random tensors."""

import pytest
import torch
from diffusers import DDPMScheduler

from insv2v.guidance import (
    PREDICTION_TYPES,
    dual_guidance,
    from_epsilon,
    guidance_weights,
    needed_branches,
    predicted_x0,
    to_epsilon,
)


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _alpha_bar(shape, seed=1):
    """Random alpha_bar in (0.02, 0.98), broadcastable against (b, c, f, h, w)."""
    g = torch.Generator().manual_seed(seed)
    return 0.02 + 0.96 * torch.rand(*shape, generator=g, dtype=torch.float64)


@pytest.fixture
def branches():
    shape = (2, 4, 3, 5, 6)  # (b, c, f, h, w)
    return _rand(*shape, seed=0), _rand(*shape, seed=1), _rand(*shape, seed=2)


@pytest.mark.parametrize("video_scale,text_scale", [(1.2, 7.5), (1.8, 3.0), (0.0, 0.0), (-0.5, 2.0)])
def test_dual_guidance_matches_formula(branches, video_scale, text_scale):
    e0, ev, evt = branches
    out = dual_guidance(e0, ev, evt, video_scale, text_scale)
    # Element by element, written out independently of tensor broadcasting.
    expected = torch.empty_like(e0)
    flat_e0, flat_ev, flat_evt, flat_out = e0.flatten(), ev.flatten(), evt.flatten(), expected.view(-1)
    for i in range(flat_e0.numel()):
        a, b, c = flat_e0[i].item(), flat_ev[i].item(), flat_evt[i].item()
        flat_out[i] = (1 - video_scale) * a + (video_scale - text_scale) * b + text_scale * c
    assert out.shape == e0.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_dual_guidance_unit_scales_return_video_text_branch(branches):
    e0, ev, evt = branches
    torch.testing.assert_close(dual_guidance(e0, ev, evt, 1.0, 1.0), evt, rtol=0, atol=1e-12)


def test_dual_guidance_zero_text_scale_is_video_only_guidance(branches):
    e0, ev, evt = branches
    out = dual_guidance(e0, ev, evt, 1.5, 0.0)
    torch.testing.assert_close(out, e0 + 1.5 * (ev - e0), rtol=0, atol=1e-12)
    # ...and therefore does not depend on the text branch at all.
    torch.testing.assert_close(out, dual_guidance(e0, ev, evt + 100.0, 1.5, 0.0), rtol=0, atol=1e-12)


def test_dual_guidance_zero_scales_return_unconditional(branches):
    e0, ev, evt = branches
    torch.testing.assert_close(dual_guidance(e0, ev, evt, 0.0, 0.0), e0, rtol=0, atol=1e-12)


def test_dual_guidance_needs_only_the_branches_of_non_zero_weight(branches):
    e0, ev, evt = branches
    assert guidance_weights(1.0, 7.5) == (0.0, -6.5, 7.5)
    assert needed_branches(1.0, 7.5) == (1, 2) and needed_branches(1.2, 7.5) == (0, 1, 2)
    skipped = dual_guidance(None, ev, evt, 1.0, 7.5)
    torch.testing.assert_close(skipped, dual_guidance(e0, ev, evt, 1.0, 7.5), rtol=0, atol=0)
    torch.testing.assert_close(skipped, ev + 7.5 * (evt - ev), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="non-zero weight is missing"):
        dual_guidance(None, ev, evt, 1.2, 7.5)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_to_from_epsilon_round_trip(prediction_type):
    shape = (2, 4, 3, 5, 6)
    sample, out, eps = _rand(*shape, seed=3), _rand(*shape, seed=4), _rand(*shape, seed=5)
    a = _alpha_bar((2, 1, 1, 1, 1))  # per batch element, like a per-sample timestep
    eps_of_out = to_epsilon(out, sample, a, prediction_type)
    torch.testing.assert_close(from_epsilon(eps_of_out, sample, a, prediction_type), out)
    out_of_eps = from_epsilon(eps, sample, a, prediction_type)
    torch.testing.assert_close(to_epsilon(out_of_eps, sample, a, prediction_type), eps)


@pytest.mark.parametrize("alpha_bar", [0.01, 0.3, 0.7, 0.999])
def test_sample_prediction_recovers_x0(alpha_bar):
    x0_pred, sample = _rand(3, 4, 8, 8, seed=6), _rand(3, 4, 8, 8, seed=7)
    a = torch.tensor(alpha_bar, dtype=torch.float64)
    eps = to_epsilon(x0_pred, sample, a, "sample")
    torch.testing.assert_close(predicted_x0(eps, sample, a), x0_pred)


def test_to_epsilon_recovers_forward_noise_for_every_type():
    """Build x_t = sqrt(a) x0 + sqrt(1-a) eps by hand; each type's ideal output must map back to eps."""
    x0, noise = _rand(2, 4, 6, 6, seed=8), _rand(2, 4, 6, 6, seed=9)
    a = _alpha_bar((2, 1, 1, 1), seed=10)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    ideal = {"epsilon": noise, "sample": x0, "v_prediction": a.sqrt() * noise - (1 - a).sqrt() * x0}
    for prediction_type, output in ideal.items():
        torch.testing.assert_close(to_epsilon(output, x_t, a, prediction_type), noise)
        torch.testing.assert_close(from_epsilon(noise, x_t, a, prediction_type), output)
    torch.testing.assert_close(predicted_x0(noise, x_t, a), x0)


def test_v_prediction_matches_diffusers_ddpm():
    scheduler = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction"
    )
    g = torch.Generator().manual_seed(11)
    x0, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([10, 500, 990])
    x_t = scheduler.add_noise(x0, noise, t)
    v = scheduler.get_velocity(x0, noise, t)
    a = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(to_epsilon(v, x_t, a, "v_prediction"), noise, rtol=0, atol=1e-5)
    torch.testing.assert_close(from_epsilon(noise, x_t, a, "v_prediction"), v, rtol=0, atol=1e-5)


def test_sample_prediction_matches_diffusers_ddpm_x0():
    """diffusers' DDPM step with prediction_type="sample" and our eps give the same predicted x0."""
    scheduler = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="sample", clip_sample=False
    )
    scheduler.set_timesteps(20)
    t = scheduler.timesteps[5]
    g = torch.Generator().manual_seed(12)
    x_t, x0_pred = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    step = scheduler.step(x0_pred, t, x_t, generator=torch.Generator().manual_seed(0))
    a = scheduler.alphas_cumprod[t]
    ours = predicted_x0(to_epsilon(x0_pred, x_t, a, "sample"), x_t, a)
    torch.testing.assert_close(ours, step.pred_original_sample, rtol=0, atol=1e-5)


@pytest.mark.parametrize("fn", [to_epsilon, from_epsilon])
def test_invalid_prediction_type_raises_naming_it(fn):
    x = torch.zeros(1, 4, 2, 2)
    with pytest.raises(ValueError, match="'flow_matching'"):
        fn(x, x, torch.tensor(0.5), "flow_matching")
