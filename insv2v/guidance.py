"""Dual classifier-free guidance (InstructPix2Pix, Brooks et al. 2023, eq. 3) and parameterisation changes.

Pure functions of tensors: no model, no scheduler state.
"""

from __future__ import annotations

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def guidance_weights(video_scale: float, text_scale: float) -> tuple[float, float, float]:
    """The weights of the branches (no video, no text), (video), (video, text) in `dual_guidance`."""
    return 1 - video_scale, video_scale - text_scale, text_scale


def needed_branches(video_scale: float, text_scale: float) -> tuple[int, ...]:
    """Indices of the branches `dual_guidance` needs: those of non-zero weight (at s_V = 1, not the first)."""
    return tuple(i for i, w in enumerate(guidance_weights(video_scale, text_scale)) if w != 0)


def dual_guidance(
    e0: torch.Tensor | None,
    e_video: torch.Tensor | None,
    e_video_text: torch.Tensor | None,
    video_scale: float,
    text_scale: float,
) -> torch.Tensor:
    """`e0 + s_V (e_V - e0) + s_T (e_VT - e_V)` — InstructPix2Pix eq. 3; linear, so any parameterisation works.

    Summed branch by branch (`guidance_weights`): a branch of weight 0 may be None, as it need not be computed —
    at s_V = 1, the unconditional one (a third of the UNet's work).
    """
    weights = guidance_weights(video_scale, text_scale)
    # Never empty: the weights sum to 1.
    terms = [(w, e) for w, e in zip(weights, (e0, e_video, e_video_text), strict=True) if w != 0]
    if any(e is None for _, e in terms):
        raise ValueError(f"a guidance branch of non-zero weight is missing (weights {weights})")
    (w, e), *rest = terms
    out = w * e
    for w, e in rest:
        out = out + w * e
    return out


def to_epsilon(model_output: torch.Tensor, sample: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str):
    """The noise implied by a model output, for `sample = sqrt(a) x0 + sqrt(1 - a) eps` (DDPM/DDIM forward process)."""
    a = alpha_bar
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "sample":  # x0 = model_output
        return (sample - a.sqrt() * model_output) / (1 - a).sqrt()
    if prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1-a) x0  (Salimans & Ho 2022)
        return (1 - a).sqrt() * sample + a.sqrt() * model_output
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def from_epsilon(eps: torch.Tensor, sample: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str):
    """Inverse of `to_epsilon`: the model output that implies noise `eps` at `sample`."""
    a = alpha_bar
    if prediction_type == "epsilon":
        return eps
    x0 = predicted_x0(eps, sample, a)
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        return a.sqrt() * eps - (1 - a).sqrt() * x0
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def predicted_x0(eps: torch.Tensor, sample: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """`x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)` (DDPM, Ho et al. 2020, eq. 15)."""
    return (sample - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
