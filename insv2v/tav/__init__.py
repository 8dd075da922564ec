"""Tune-A-Video (Wu et al., ICCV 2023), the baseline: a sparse-causal video UNet (model), one-shot tuning, DDIM
inversion and editing (pipeline), and `insv2v tav edit` (cli).

The names below load on first use, so that `from insv2v.tav import cli` (the `insv2v` command) imports no torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Cancelled": "pipeline",
    "TuneAVideoUNet": "model",
    "inflate_tav": "model",
    "load_tav": "pipeline",
    "set_trainable": "model",
    "trainable_parameters": "model",
    "PRESETS": "pipeline",
    "TAVResult": "pipeline",
    "TAVSettings": "pipeline",
    "TuneAVideoPipeline": "pipeline",
    "TuningCancelled": "pipeline",
    "tav_edit": "pipeline",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"insv2v.tav.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
