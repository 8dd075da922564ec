"""Where pipelines come from: a local folder or a hub id, loaded once per process and cached."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch

from insv2v.pipeline import InsV2VPipeline

MODEL_ENV = "INSV2V_MODEL"  # default model source when none is named


class ModelLoadError(RuntimeError):
    """A model source that cannot be loaded; the message says what to do."""


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """Half precision where it is fast and safe (CUDA), full precision elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.float32


def resolve_source(source: str | None) -> str:
    """The model source to load: the argument, else $INSV2V_MODEL."""
    source = source or os.environ.get(MODEL_ENV)
    if not source:
        raise ModelLoadError(f"no model given: pass --model (a pipeline folder or hub id) or set {MODEL_ENV}")
    return source


def _load(source: str, device: torch.device, dtype: torch.dtype) -> InsV2VPipeline:
    path = Path(source).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(f"{source} is not a pipeline folder (no model_index.json in it)")
        pipe = InsV2VPipeline.from_pretrained(path, torch_dtype=dtype)
    else:
        try:
            pipe = InsV2VPipeline.from_pretrained(source, torch_dtype=dtype)
        except (OSError, ValueError) as err:  # offline, unknown id, gated repo: all surface as OSError here
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            raise ModelLoadError(
                f"could not load model {source!r}: it is not a local folder, and the hub "
                + ("cannot be reached (HF_HUB_OFFLINE=1)" if offline else "did not provide it")
                + f"; download it with `huggingface-cli download {source} --local-dir DIR` and pass --model DIR"
            ) from err
    return pipe.to(device)


@lru_cache(maxsize=4)
def _cached(source: str, device: str, dtype: torch.dtype) -> InsV2VPipeline:
    return _load(source, torch.device(device), dtype)


def load_pipeline(
    source: str | None = None, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> InsV2VPipeline:
    """The pipeline at `source` (folder or hub id) on `device`, loaded once per process and then shared."""
    source = resolve_source(source)
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    return _cached(source, str(device), dtype)
