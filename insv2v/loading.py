"""Where pipelines come from, loaded once per process and cached. A model source is one of:

    DIR                          a pipeline folder (model_index.json), e.g. one written by `insv2v convert`;
                                 or the toy editor's 2-D stage (`insv2v train 2d`), which edits frame by frame
    OWNER/NAME                   a Hugging Face Hub repo holding such a folder
    compose:IMAGE+MOTION         an InstructPix2Pix image model (folder or hub id, diffusers layout) inflated to
                                 video with an AnimateDiff motion adapter (folder or hub id), e.g.
                                 compose:timbrooks/instruct-pix2pix+guoyww/animatediff-motion-adapter-v1-5

A composition is how InsV2V starts training: the motion modules' outputs are zeroed, so until motion modules
are trained it edits each frame as InstructPix2Pix would. Downloads go through huggingface_hub (its cache and
progress bars); offline, a missing model fails with the command that fetches it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch

from insv2v.assets import TOY_EDITOR
from insv2v.files import file_sha256
from insv2v.pipeline import InsV2VPipeline

MODEL_ENV = "INSV2V_MODEL"  # default model source when none is named
BUNDLED_MODEL = TOY_EDITOR  # the default when no model is named, once the toy editor is shipped
COMPOSE_PREFIX = "compose:"
CHECKPOINT_SUFFIXES = (".pth", ".ckpt", ".pt", ".bin", ".safetensors")

MODEL_SAMPLING_FILE = "sampling.json"  # in a model folder: the settings its card recommends, e.g. {"text_cfg": 4}


class ModelLoadError(RuntimeError):
    """A model source that cannot be loaded; the message says what to do."""


def read_model_sampling(model: str | None, keys: dict[str, type]) -> dict[str, float | bool]:
    """The settings a model folder's MODEL_SAMPLING_FILE recommends, among `keys` (name -> float or bool); {} for hub
    ids, composed models and folders without the file."""
    path = Path(model) / MODEL_SAMPLING_FILE if model else None
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err

    def fits(key, value) -> bool:  # JSON's true is no number here, 1 no boolean, and NaN no guidance
        return isinstance(value, bool) if keys[key] is bool else type(value) in (int, float) and math.isfinite(value)

    if not isinstance(data, dict) or set(data) - set(keys) or not all(fits(k, v) for k, v in data.items()):
        wanted = ", ".join(f"{k} ({'true or false' if t is bool else 'a number'})" for k, t in keys.items())
        raise ValueError(f"{path} must be a JSON object with keys among {wanted}")
    return {k: v if keys[k] is bool else float(v) for k, v in data.items()}


def out_of_memory(err: BaseException) -> str | None:
    """What to tell someone whose run ran out of memory (on a GPU, or allocating on the CPU); None for other errors."""
    text = str(err)
    if not (isinstance(err, MemoryError | torch.OutOfMemoryError) or "can't allocate memory" in text
            or "out of memory" in text.lower()):  # fmt: skip
        return None
    return ("out of memory: this machine cannot hold the edit at this size; a lower resolution, fewer frames per clip "
            "or a shorter video needs less")  # fmt: skip


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """Half precision where it is fast and safe (CUDA), full precision elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.float32


def default_source(source: str | None = None) -> str | None:
    """The model to use: `source`, else $INSV2V_MODEL, else the bundled toy editor if it is shipped, else None."""
    if source or os.environ.get(MODEL_ENV):
        return source or os.environ[MODEL_ENV]
    return str(BUNDLED_MODEL) if (BUNDLED_MODEL / "model_index.json").is_file() else None


def resolve_source(source: str | None) -> str:
    """The model source to load: the argument, else $INSV2V_MODEL, else the bundled toy editor."""
    source = default_source(source)
    if not source:
        raise ModelLoadError(
            f"no model given: pass --model (a pipeline folder or hub id), set {MODEL_ENV}, or ship the toy editor "
            f"at {BUNDLED_MODEL.parent.name}/{BUNDLED_MODEL.name}"
        )
    return source


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _unavailable(source: str, what: str, err: Exception) -> ModelLoadError:
    """The error for a hub model that could not be had, saying what to download and where it goes."""
    from huggingface_hub import constants

    reason = "the hub cannot be reached (HF_HUB_OFFLINE=1)" if _offline() else f"the hub did not provide it ({err})"
    folder = Path(source).expanduser().absolute()  # "models/insv2v" reads as a hub id and as a folder alike
    return ModelLoadError(
        f"could not load {what} {source!r}: it is not a local folder ({folder} does not exist), not in the "
        f"Hugging Face cache ({constants.HF_HUB_CACHE}), and {reason}. Download it where there is network with "
        f"`hf download {source}` (it lands in that cache; set HF_HOME to move it), or "
        f"`hf download {source} --local-dir DIR` and name DIR instead "
        "(older huggingface_hub: `huggingface-cli download`)"
    )


def names_missing_folder(source: str) -> bool:
    """Whether `source` is a local path (not a hub id such as "owner/name") that does not exist."""
    return not Path(source).expanduser().exists() and (source.startswith((".", "/", "~")) or source.count("/") > 1)


def from_pretrained_explained(cls, source: str, what: str, **kwargs):
    """`cls.from_pretrained(source)` with missing local folders and unreachable hub ids explained."""
    path = Path(source).expanduser()
    if path.exists():
        return cls.from_pretrained(path, **kwargs)
    if names_missing_folder(source):
        raise ModelLoadError(f"{what} {source!r} does not exist")
    try:
        return cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:  # offline, unknown id, gated repo: all surface as OSError here
        snapshot = _cached_snapshot(source)
        if snapshot is not None:  # downloaded, but cut short or damaged
            raise ModelLoadError(
                f"could not load {what} {source!r} from the Hugging Face cache ({snapshot}): {err}. The download may "
                f"be incomplete or damaged: fetch it again with `hf download {source} --force-download`"
            ) from err
        raise _unavailable(source, what, err) from err


def _cached_snapshot(source: str) -> str | None:
    """The folder of a hub model's snapshot in the Hugging Face cache, if one is there (whole or not)."""
    from huggingface_hub import try_to_load_from_cache

    for name in ("model_index.json", "config.json"):  # a pipeline's, a single model's
        hit = try_to_load_from_cache(source, name)
        if isinstance(hit, str):
            return str(Path(hit).parent)
    return None


def _load_folder_or_hub(source: str, dtype: torch.dtype) -> InsV2VPipeline:
    from diffusers import UNetMotionModel

    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix in CHECKPOINT_SUFFIXES:
            raise ModelLoadError(
                f"{source} is a checkpoint file: convert it once with `insv2v convert {source} DIR`, "
                "then use --model DIR"
            )
        raise ModelLoadError(f"{source} is a file, not a pipeline folder")
    if is_2d_folder(source):
        return _per_frame_pipeline(path, dtype)
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise ModelLoadError(f"{source} is not a pipeline folder (no model_index.json in it)")
        kind = json.loads(index.read_text()).get("_class_name")
        if kind != InsV2VPipeline.__name__:
            raise _not_a_video_model(source, kind)
    pipe = from_pretrained_explained(InsV2VPipeline, source, "model", dtype=dtype)
    if not isinstance(pipe.unet, UNetMotionModel):  # a hub image model loads, with another class's UNet
        raise _not_a_video_model(source, f"{type(pipe.unet).__name__} (an image model's UNet)")
    return pipe


def _not_a_video_model(source: str, kind: str) -> ModelLoadError:
    if "InstructPix2Pix" in kind or "image model" in kind:
        hint = (f"an InstructPix2Pix image model becomes a video model with --model {COMPOSE_PREFIX}{source}"
                "+MOTION_ADAPTER (e.g. guoyww/animatediff-motion-adapter-v1-5)")  # fmt: skip
    else:  # a text-to-video or text-to-image model draws from text; it does not edit
        hint = "an editor is a folder of `insv2v train video` or `insv2v convert`, or a hub id of one"
    return ModelLoadError(f"{source} holds a {kind}, not an InsV2V pipeline; {hint}")


def compose_pipeline(image_model: str, motion_adapter: str, dtype: torch.dtype = torch.float32) -> InsV2VPipeline:
    """InstructPix2Pix parts (unet, vae, text encoder, tokenizer, scheduler config) + an AnimateDiff motion adapter
    -> an InsV2V pipeline with zero-initialised motion outputs, sampling with DDPM as the reference does."""
    from diffusers import AutoencoderKL, DDPMScheduler, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from insv2v.models import inflate_unet
    from insv2v.models.inflate import MOTION_MAX_FRAMES

    def part(cls, name: str):
        return from_pretrained_explained(cls, image_model, "image model", subfolder=name)

    unet2d = part(UNet2DConditionModel, "unet")
    if unet2d.config.in_channels != 8:
        raise ModelLoadError(
            f"image model {image_model!r} has a UNet with {unet2d.config.in_channels} input channels; InsV2V needs an "
            "InstructPix2Pix UNet (8: noisy latent + source latent), e.g. timbrooks/instruct-pix2pix"
        )
    adapter = from_pretrained_explained(MotionAdapter, motion_adapter, "motion adapter")
    adapter = _with_positions(adapter, MOTION_MAX_FRAMES)
    components = {
        "unet": inflate_unet(unet2d, adapter, zero_init=True),
        "vae": part(AutoencoderKL, "vae"),
        "text_encoder": part(CLIPTextModel, "text_encoder"),
        "tokenizer": part(CLIPTokenizer, "tokenizer"),
        # The image model's betas, sampled with DDPM; DDPM's default clip_sample (absent from InstructPix2Pix's Euler
        # config) would clip every predicted x0 to [-1, 1], where Stable Diffusion's latents reach beyond.
        "scheduler": DDPMScheduler.from_config(part(DDPMScheduler, "scheduler").config, clip_sample=False),
    }
    for name in ("unet", "vae", "text_encoder"):
        components[name].eval()
        if dtype != torch.float32:
            components[name].to(dtype)
    return InsV2VPipeline(**components)


def _with_positions(adapter, max_frames: int):
    """The adapter with sinusoidal position tables for `max_frames` frames (AnimateDiff v1 adapters have 24; InsV2V
    uses 32). The tables are fixed sinusoids, so the longer one starts with the shorter one."""
    from diffusers import MotionAdapter

    if adapter.config.motion_max_seq_length >= max_frames:
        return adapter
    longer = MotionAdapter.from_config({**adapter.config, "motion_max_seq_length": max_frames})
    state = {k: v for k, v in adapter.state_dict().items() if not k.endswith("pos_embed.pe")}
    missing, unexpected = longer.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("pos_embed.pe") for k in missing), (missing, unexpected)
    return longer


def is_2d_folder(source: str) -> bool:
    """Whether `source` is a folder written by stage 2d (unet/, text_encoder/, tokenizer/, scheduler/, vae/; no
    pipeline index)."""
    path = Path(source).expanduser()
    return (path / "unet").is_dir() and not (path / "model_index.json").is_file()


def _per_frame_pipeline(path: Path, dtype: torch.dtype) -> InsV2VPipeline:
    """The toy editor's 2-D stage as a pipeline: its UNet inflated with zero-output motion modules, so it edits
    each frame as the 2-D model does (what the video stage starts from)."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from insv2v.models import inflate_unet
    from insv2v.models.autoencoder import PixelUnshuffleAutoencoder

    if not (path / "vae").is_dir():
        raise ModelLoadError(f"{path} is a 2-D stage folder without its vae/ (written before the 2-D stage saved "
                             "it): continue it with `insv2v train video --init` instead")  # fmt: skip
    unet = UNet2DConditionModel.from_pretrained(path / "unet")
    pipe = InsV2VPipeline(
        vae=PixelUnshuffleAutoencoder.from_pretrained(path / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(path / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(path / "tokenizer"), unet=inflate_unet(unet),
        scheduler=DDIMScheduler.from_pretrained(path / "scheduler"),
    )  # fmt: skip
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)  # saved in float32


def load_fresh(source: str, device: torch.device, dtype: torch.dtype) -> InsV2VPipeline:
    """The pipeline at `source`, loaded anew: its own weights, for whoever changes them (training)."""
    half_on_cpu = device.type == "cpu" and dtype == torch.float16
    if half_on_cpu:  # said once, in a line, instead of diffusers' paragraph three times
        logging.getLogger("insv2v").warning("float16 on the CPU: it runs, but rarely faster and less precisely than "
                                            "float32, the CPU's default")  # fmt: skip
    with _diffusers_quiet() if half_on_cpu else contextlib.nullcontext():
        if source.startswith(COMPOSE_PREFIX):
            image_model, motion_adapter = composition_parts(source)
            pipe = compose_pipeline(image_model, motion_adapter, dtype)
        else:
            pipe = _load_folder_or_hub(source, dtype)
        return pipe.to(device)


def composition_parts(source: str) -> tuple[str, str]:
    """(IMAGE_MODEL, MOTION_ADAPTER) of `compose:IMAGE_MODEL+MOTION_ADAPTER` (split at the first +)."""
    image_model, plus, motion_adapter = source.removeprefix(COMPOSE_PREFIX).partition("+")
    if not source.startswith(COMPOSE_PREFIX) or not plus or not image_model or not motion_adapter:
        raise ModelLoadError(f"a composition is {COMPOSE_PREFIX}IMAGE_MODEL+MOTION_ADAPTER, got {source!r}")
    return image_model, motion_adapter


def files_signature(source: str) -> tuple:
    """Each file of a local model folder (hidden ones aside) with its size and modification time, or () for a hub
    id: what tells a model saved anew from the one loaded (a save within the file system's timestamp resolution
    that keeps every size goes unseen)."""
    if source.startswith(COMPOSE_PREFIX):  # both parts: either saved anew is a new model
        return tuple(files_signature(part) for part in composition_parts(source))
    root = Path(source).expanduser()
    if not root.is_dir():
        return ()
    signature = []
    for path, relative in _model_files(root):
        try:
            info = path.stat()
        except FileNotFoundError:  # removed while being saved again: the next call sees the new files
            continue
        if stat.S_ISREG(info.st_mode):
            signature.append((str(relative), info.st_size, info.st_mtime_ns))
    return tuple(signature)


def weights_digest(source: str | None) -> str | None:
    """SHA-256 over a local model folder's weights (each .safetensors file's place in the folder and contents), or
    None for a hub id, a composition or a folder without safetensors weights (nothing to tell it by): a copy of a
    folder is the same model, a folder saved anew another."""
    root = Path(resolve_source(source)).expanduser()
    weights = _model_files(root, "*.safetensors") if root.is_dir() else []
    if not weights:
        return None
    digest = hashlib.sha256()
    for path, relative in weights:
        digest.update(f"{relative.as_posix()} {file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _model_files(root: Path, pattern: str = "*") -> list[tuple[Path, Path]]:
    """(path, path relative to `root`) of what in a model folder matches `pattern`, sorted; hidden ones (.cache/,
    .DS_Store) are not the model."""
    files = ((path, path.relative_to(root)) for path in sorted(root.rglob(pattern)))
    return [(path, relative) for path, relative in files if not any(p.startswith(".") for p in relative.parts)]


class ModelCache:
    """Models loaded once per process and then shared: at most `size` of them, the least recently used dropped
    first, and one per key, replaced (not kept beside) when its source's files change (`files_signature`)."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[tuple, tuple[tuple, object]] = OrderedDict()  # key -> (signature, model)
        self._lock = threading.Lock()  # held while loading: one copy of a model, however many ask at once

    def get(self, key: tuple, source: str, load: Callable[[], object]):
        signature = files_signature(source)
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None or entry[0] != signature:
                entry = None  # a replaced model is freed before its successor loads
                entry = (signature, load())
            self._entries[key] = entry  # the most recently used last
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
            return entry[1]


PIPELINES = ModelCache(size=4)


def load_pipeline(
    source: str | None = None, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> InsV2VPipeline:
    """The pipeline at `source` (see the module docstring) on `device`, loaded once per process and then shared
    while its files are unchanged."""
    source = resolve_source(source)
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    return PIPELINES.get((source, str(device), dtype), source, lambda: load_fresh(source, device, dtype))


@contextlib.contextmanager
def _diffusers_quiet():
    """diffusers' warnings held back while the block runs (its errors still show)."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


def check_generative_unet(source: str, unet, what: str, example: str) -> None:
    """Refuse a model whose UNet does not map a latent to a latent, as text-to-image and text-to-video UNets do:
    an editor's also takes the source's latent (twice the channels in)."""
    config = unet.config
    if config.in_channels != config.out_channels:
        raise ModelLoadError(
            f"{source} is not a {what}: its UNet takes {config.in_channels} input channels and gives "
            f"{config.out_channels} (an editor's, which also takes the source video); name a {what} such as {example}"
        )
