"""Tune-A-Video as its official code does it (showlab/Tune-A-Video): tune a few attention projections of an
inflated Stable Diffusion 1.x UNet on one video and its caption, DDIM-invert the video with the tuned UNet and the
empty prompt, then sample the edit from that latent with the edited caption.

    pipe = TuneAVideoPipeline.from_t2i("CompVis/stable-diffusion-v1-4").to("cuda")
    result = tav_edit(pipe, frames, "a man is skiing", "spider man is skiing on the beach", PRESETS["space"],
                      cache_dir="~/.cache/insv2v/tav")

Prediction types are read from the scheduler's config everywhere (the project's toy text-to-image model predicts x0),
and tuned weights are cached per (video, caption, model, tuning settings), so a second prompt does not tune again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDIMInverseScheduler,
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.utils.torch_utils import randn_tensor
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTokenizer

from insv2v.clip_tokenizer import token_ids
from insv2v.files import write_atomically, write_text_atomically
from insv2v.loading import (
    ModelCache,
    ModelLoadError,
    check_generative_unet,
    default_device,
    default_dtype,
    files_signature,
    from_pretrained_explained,
)
from insv2v.models.autoencoder import PixelUnshuffleAutoencoder
from insv2v.pipeline import vae_scale_factor
from insv2v.tav.model import TuneAVideoUNet, inflate_tav, set_trainable, trainable_parameters

# Official optimizer and loop constants (train_tuneavideo.py): AdamW, constant learning rate, gradients clipped.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
MAX_GRAD_NORM = 1.0

# Accepted ranges: the official setting uses 8-24 frames; wider here, narrow enough to catch typos.
MAX_FRAMES = 64
GUIDANCE_RANGE = (0.0, 30.0)
CHUNK_SIZE = 8  # frames through the VAE at a time

# A cache entry (cache_dir/<key>/): the tuned parameters, and a resumable checkpoint while tuning.
TUNED_FILE = "tuned.safetensors"
CHECKPOINT_FILE = "checkpoint.pt"
ENTRY_FILE = "entry.json"  # what the key was made of, for people browsing the cache
VAE_CLASSES = {"AutoencoderKL": AutoencoderKL, "PixelUnshuffleAutoencoder": PixelUnshuffleAutoencoder}


@dataclass(frozen=True)
class TAVSettings:
    tune_steps: int = 500  # one-shot tuning steps (official; its Space: 300)
    lr: float = 3e-5  # AdamW learning rate, constant (official; its Space: 3.5e-5)
    weight_decay: float = 1e-2  # AdamW weight decay (official)
    frames: int = 24  # frames the caller samples from the video, every 2nd (official; its Space: 8)
    inversion_steps: int = 50  # DDIM inversion steps, empty prompt, no guidance (official)
    steps: int = 50  # DDIM sampling steps of the edit (official)
    guidance_scale: float = 12.5  # classifier-free guidance of the edit (official)
    seed: int = 0  # the tuning's noise and timesteps (official configs: 33)
    checkpoint_every: int = 100  # tuning steps between resumable checkpoints in the cache entry


PRESETS = {"official": TAVSettings(), "space": TAVSettings(tune_steps=300, lr=3.5e-5, frames=8)}
TUNING_FIELDS = ("tune_steps", "lr", "weight_decay", "seed")  # the settings that decide the tuned weights


class Cancelled(RuntimeError):
    """An edit stopped by its `cancel` event (tuning, inversion or sampling)."""


class TuningCancelled(Cancelled):
    """Tuning stopped by its `cancel` event; a checkpoint at `step` was saved if a checkpoint folder was given."""

    def __init__(self, step: int, total: int):
        super().__init__(f"tuning cancelled at step {step} of {total}")
        self.step, self.total = step, total


@dataclass
class TAVResult:
    frames: np.ndarray  # (f, h, w, 3) uint8, the edit
    tune_seconds: float  # tuning, or loading the tuned weights
    edit_seconds: float  # inversion, sampling and decoding
    cached: bool  # whether tuned weights were reused (no tuning ran)
    losses: list[float] = field(default_factory=list)  # the tuning's losses, step by step


# ---------------------------------------------------------------- small pure functions


def check_steps(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"`{name}` must be at least 1, got {value}")


def check_guidance(value: float) -> None:
    low, high = GUIDANCE_RANGE
    if not low <= value <= high:
        raise ValueError(f"`guidance_scale` must be in [{low}, {high}], got {value}")


def check_cancel(cancel: threading.Event | None, what: str) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{what} cancelled")


def check_captions(source_prompt: str | None, prompt: str | None) -> None:
    for name, text in (("source_prompt", source_prompt), ("prompt", prompt)):
        if text is not None and not (isinstance(text, str) and text.strip()):
            raise ValueError(f"`{name}` must be a non-empty caption, got {text!r}")


def check_settings(settings: TAVSettings) -> None:
    """Refuse settings out of range, naming the setting, the rule and the value."""
    for name in ("tune_steps", "steps", "inversion_steps", "checkpoint_every"):
        check_steps(name, getattr(settings, name))
    if not 1 <= settings.frames <= MAX_FRAMES:
        raise ValueError(f"`frames` must be in [1, {MAX_FRAMES}], got {settings.frames}")
    check_guidance(settings.guidance_scale)
    if not settings.lr > 0:
        raise ValueError(f"`lr` must be > 0, got {settings.lr}")
    if not settings.weight_decay >= 0:
        raise ValueError(f"`weight_decay` must be >= 0, got {settings.weight_decay}")


def training_target(scheduler: DDPMScheduler, latents, noise, timesteps) -> torch.Tensor:
    """What the UNet learns to predict, by the scheduler's prediction type (diffusers' train_text_to_image.py)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if kind == "sample":
        return latents
    raise ValueError(f"`prediction_type` must be epsilon, v_prediction or sample, got {kind!r}")


def diffusion_loss(unet, scheduler: DDPMScheduler, latents, noise, timesteps, embeds) -> torch.Tensor:
    """DDPM loss of a video UNet on clean latents (b, c, f, h, w) noised to `timesteps` (b,), text `embeds`."""
    noisy = scheduler.add_noise(latents, noise, timesteps)
    pred = unet(noisy, timesteps, embeds).sample
    return F.mse_loss(pred.float(), training_target(scheduler, latents, noise, timesteps).float())


def inverse_scheduler(config) -> DDIMInverseScheduler:
    """The official `ddim_inversion` as a scheduler: DDIMInverseScheduler on the sampler's config, clip_sample=False.

    Its first step starts from alpha=1 when `set_alpha_to_one`; an x0-predicting model's epsilon there,
    (x - x0) / sqrt(1 - alpha), is 0/0, so such a model starts from the first training noise level instead.
    """
    set_alpha_to_one = config.get("set_alpha_to_one", True) and config.get("prediction_type") != "sample"
    return DDIMInverseScheduler.from_config(config, clip_sample=False, set_alpha_to_one=set_alpha_to_one)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random numbers of tuning step `step`: the same whether a run resumed before it or not."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))


def cache_key(frames: np.ndarray, source_prompt: str, model: str, settings: TAVSettings) -> str:
    """sha256 of what decides the tuned weights: the frames (bytes, shape), caption, model (its name, and a local
    folder's files: one retrained in place is another model) and tuning settings."""
    digest = hashlib.sha256()
    described = {"shape": list(frames.shape), "dtype": str(frames.dtype), "source_prompt": source_prompt,
                 "model": model, "model_files": files_signature(model),
                 "tuning": {name: getattr(settings, name) for name in TUNING_FIELDS}}  # fmt: skip
    digest.update(json.dumps(described, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(frames).tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- the pipeline


class TuneAVideoPipeline(DiffusionPipeline):
    r"""One-shot video tuning, DDIM inversion and editing (Tune-A-Video).

    Components: `vae` (AutoencoderKL-compatible), `text_encoder` (CLIPTextModel), `tokenizer`, `unet`
    (TuneAVideoUNet; kept in float32, the tuned parameters' master copy, run under fp16 autocast on CUDA as the
    official mixed precision does), `scheduler` (DDIMScheduler; inversion and training schedulers share its config).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(
        self,
        vae: AutoencoderKL | PixelUnshuffleAutoencoder,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: TuneAVideoUNet,
        scheduler: DDIMScheduler,
    ):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.vae_scale_factor = vae_scale_factor(self.vae)
        self.source: str | None = None  # the model's identity in cache keys (from_t2i sets it)
        self.tuned_for: str | None = None  # cache key of the video the UNet is tuned on now (None: not known)
        self.tuned_losses: list[float] = []
        # Untuned trainable parameters, so that one pipeline tunes video after video from the same start.
        self._pristine = {name: p.detach().to("cpu", copy=True) for name, p in trainable_parameters(unet).items()}

    @classmethod
    def from_t2i(cls, source: str | os.PathLike, dtype: torch.dtype = torch.float32) -> TuneAVideoPipeline:
        """From a Stable Diffusion 1.x folder or hub id (e.g. CompVis/stable-diffusion-v1-4), or a text-to-image
        TextToVideoPipeline folder such as the toy `assets/toy-t2i`: each component from its subfolder, the UNet
        inflated. `dtype` is the frozen VAE's and text encoder's; the UNet stays float32 (see the class)."""
        source = str(source)
        unet_config = Path(source, "unet", "config.json")  # a local folder's UNet class, before loading it as 2-D
        kind = json.loads(unet_config.read_text()).get("_class_name") if unet_config.is_file() else None
        if kind not in (None, UNet2DConditionModel.__name__):
            raise ModelLoadError(f"{source} holds a {kind}, not a text-to-image model's UNet2DConditionModel")
        unet2d = from_pretrained_explained(UNet2DConditionModel, source, "text-to-image model", subfolder="unet")
        check_generative_unet(source, unet2d, "text-to-image model", "CompVis/stable-diffusion-v1-4")
        vae_name = AutoencoderKL.load_config(source, subfolder="vae")["_class_name"]
        if vae_name not in VAE_CLASSES:
            raise ValueError(f"{source}: the vae must be one of {', '.join(VAE_CLASSES)}, got {vae_name}")
        vae_class = VAE_CLASSES[vae_name]
        pipe = cls(
            vae=vae_class.from_pretrained(source, subfolder="vae", torch_dtype=dtype).eval(),
            text_encoder=CLIPTextModel.from_pretrained(source, subfolder="text_encoder", dtype=dtype).eval(),
            tokenizer=CLIPTokenizer.from_pretrained(source, subfolder="tokenizer"),
            unet=inflate_tav(unet2d.float()).eval(),
            scheduler=DDIMScheduler.from_pretrained(source, subfolder="scheduler"),
        )
        pipe.source = source
        return pipe

    @property
    def default_resolution(self) -> int:
        size = self.unet.config.sample_size
        return (size if isinstance(size, int) else min(size)) * self.vae_scale_factor

    def _autocast(self):
        """fp16 autocast on CUDA (official `mixed_precision: fp16`), full precision elsewhere."""
        device = self._execution_device
        return torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else nullcontext()

    # ---------------------------------------------------------------- checks and encoders

    def check_inputs(self, frames=None, source_prompt=None, prompt=None, settings=None) -> None:
        """Refuse bad inputs before any heavy work; each error names the argument, the rule and the value."""
        if frames is not None:
            if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4
                    and frames.shape[-1] == 3):  # fmt: skip
                shape = getattr(frames, "shape", None)
                raise ValueError(f"`frames` must be a (f, h, w, 3) uint8 array, got {type(frames).__name__} {shape}")
            f, h, w = frames.shape[:3]
            if not 1 <= f <= MAX_FRAMES:
                raise ValueError(f"`frames` must hold 1 to {MAX_FRAMES} frames, got {f}")
            s = self.vae_scale_factor
            if h % s or w % s:
                raise ValueError(f"`frames` height and width must be multiples of {s}, got {h}x{w}")
        check_captions(source_prompt, prompt)
        if settings is not None:
            check_settings(settings)

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """CLIP last hidden states of `prompts`, padded to the tokenizer's max length: (n, L, C) in the UNet's dtype."""
        return self.text_encoder(token_ids(self.tokenizer, prompts).to(self._execution_device))[0].to(self.unet.dtype)

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(f, h, w, 3) uint8 -> the VAE posterior's mean and std as scaled latents, each (1, c, f, h, w)."""
        device, means, stds = self._execution_device, [], []
        for i in range(0, len(frames), CHUNK_SIZE):
            pixels = torch.from_numpy(frames[i : i + CHUNK_SIZE]).to(device).permute(0, 3, 1, 2)  # (n, 3, h, w)
            dist = self.vae.encode((pixels.float() / 127.5 - 1).to(self.vae.dtype)).latent_dist
            means.append(dist.mean.float())
            stds.append(dist.std.float())
        scale = self.vae.config.scaling_factor
        mean, std = (torch.cat(x).transpose(0, 1)[None] * scale for x in (means, stds))  # (1, c, f, h, w)
        return mean, std

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        """Latents (1, c, f, h, w) -> frames (f, h, w, 3) uint8, CHUNK_SIZE frames at a time."""
        scaled = latents[0].transpose(0, 1) / self.vae.config.scaling_factor  # (f, c, h, w)
        out = []
        for i in range(0, len(scaled), CHUNK_SIZE):
            pixels = self.vae.decode(scaled[i : i + CHUNK_SIZE].to(self.vae.dtype)).sample  # (n, 3, h, w)
            pixels = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            out.append(pixels.permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(out)

    # ---------------------------------------------------------------- tuned weights

    def restore_pristine(self) -> None:
        """Put the untuned trainable parameters back."""
        params = trainable_parameters(self.unet)
        with torch.no_grad():
            for name, value in self._pristine.items():
                params[name].copy_(value)
        self.tuned_for, self.tuned_losses = None, []

    def save_tuned(self, path: str | os.PathLike, losses: list[float]) -> None:
        """The trainable parameters (and the tuning's losses) as one safetensors file, written atomically."""
        params = {n: p.detach().to("cpu").contiguous() for n, p in trainable_parameters(self.unet).items()}
        write_atomically(Path(path), lambda tmp: save_file(params, tmp, metadata={"losses": json.dumps(losses)}))

    def load_tuned(self, path: str | os.PathLike) -> list[float]:
        """Load parameters saved by `save_tuned`; returns the tuning's losses."""
        params = trainable_parameters(self.unet)
        with safe_open(str(path), framework="pt") as f, torch.no_grad():
            if set(f.keys()) != set(params):
                raise ValueError(f"{path} does not hold this model's trainable parameters")
            for name in params:
                params[name].copy_(f.get_tensor(name))
            return json.loads(f.metadata()["losses"])

    # ---------------------------------------------------------------- the three stages

    def tune(
        self,
        frames: np.ndarray,
        caption: str,
        settings: TAVSettings = PRESETS["official"],
        callback: Callable[[int, int, float], None] | None = None,
        cancel: threading.Event | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
    ) -> list[float]:
        """One-shot tuning on the clip `frames` (f, h, w, 3) uint8 described by `caption`; returns the losses.

        Starts from the pristine weights, or resumes from `checkpoint_dir`'s checkpoint (saved every
        `settings.checkpoint_every` steps and on cancel). `callback(step, total, loss)` after each step;
        `cancel` is checked before each step and stops with TuningCancelled.
        """
        # 1. Check inputs
        self.check_inputs(frames, source_prompt=caption, settings=settings)
        device = self._execution_device
        on_cuda = device.type == "cuda"

        # 2. Encode the clip and its caption (frozen parts, no gradients)
        mean, std = self.encode_frames(frames)
        embeds = self.encode_prompt([caption])

        # 3. Trainable parameters, optimizer, and where a stopped run left off
        self.restore_pristine()
        params = set_trainable(self.unet)
        optimizer = torch.optim.AdamW(params.values(), lr=settings.lr, betas=ADAM_BETAS,
                                      weight_decay=settings.weight_decay, eps=ADAM_EPS)  # fmt: skip
        scaler = torch.amp.GradScaler("cuda", enabled=on_cuda)
        checkpoint = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
        start, losses = 0, []
        if checkpoint is not None and checkpoint.is_file():
            start, losses = load_checkpoint(checkpoint, params, optimizer, scaler)
        noise_scheduler = DDPMScheduler.from_config(self.scheduler.config)

        # 4. Tuning loop: batch 1 (the whole clip), one random timestep per step
        self.unet.train()
        if on_cuda:
            self.unet.enable_gradient_checkpointing()
        try:
            for step in range(start, settings.tune_steps):
                if cancel is not None and cancel.is_set():
                    if checkpoint is not None:
                        save_checkpoint(checkpoint, step, losses, params, optimizer, scaler)
                    raise TuningCancelled(step, settings.tune_steps)
                generator = step_generator(settings.seed, step)
                latents = mean + std * randn_tensor(mean.shape, generator=generator, device=device)  # a VAE sample
                noise = randn_tensor(mean.shape, generator=generator, device=device)
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (1,), generator=generator)
                with self._autocast():
                    loss = diffusion_loss(self.unet, noise_scheduler, latents, noise, timesteps.to(device), embeds)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params.values(), MAX_GRAD_NORM)
                scaler.step(optimizer)
                scaler.update()
                losses.append(loss.item())
                if callback is not None:
                    callback(step + 1, settings.tune_steps, losses[-1])
                if checkpoint is not None and (step + 1) % settings.checkpoint_every == 0:
                    save_checkpoint(checkpoint, step + 1, losses, params, optimizer, scaler)
        finally:
            self.unet.requires_grad_(False).eval()
            if on_cuda:
                self.unet.disable_gradient_checkpointing()
        return losses

    @torch.no_grad()
    def invert(self, latents: torch.Tensor, steps: int = 50, cancel: threading.Event | None = None) -> torch.Tensor:
        """DDIM inversion of clean latents (1, c, f, h, w) with the (tuned) UNet and the empty prompt, no guidance,
        as the official `ddim_inversion`; returns the final inverted latent. `cancel` set stops it (`Cancelled`)."""
        # 1. Check inputs
        check_steps("steps", steps)

        # 2. Encode the empty prompt; prepare the inverse timesteps (low noise to high)
        embeds = self.encode_prompt([""])
        scheduler = inverse_scheduler(self.scheduler.config)
        scheduler.set_timesteps(steps, device=self._execution_device)

        # 3. Inversion loop
        latents = latents.to(self._execution_device, torch.float32)
        for t in self.progress_bar(scheduler.timesteps):
            check_cancel(cancel, "inversion")
            with self._autocast():
                out = self.unet(scheduler.scale_model_input(latents, t), t, embeds).sample.float()
            latents = scheduler.step(out, t, latents).prev_sample
        return latents

    @torch.no_grad()
    def sample(
        self,
        prompt: str,
        latents: torch.Tensor,
        steps: int = 50,
        guidance_scale: float = 12.5,
        output_type: str = "np",
        cancel: threading.Event | None = None,
    ) -> np.ndarray | torch.Tensor:
        """DDIM (eta 0) from the inverted `latents` (1, c, f, h, w) with `prompt`, classifier-free guidance against
        "" when `guidance_scale` > 1 (as official); frames (f, h, w, 3) uint8, or the latents for "latent". `cancel`
        set stops it (`Cancelled`)."""
        # 1. Check inputs
        if not isinstance(prompt, str):
            raise ValueError(f"`prompt` must be a string, got {type(prompt).__name__}")
        check_steps("steps", steps)
        check_guidance(guidance_scale)
        if output_type not in ("np", "latent"):
            raise ValueError(f"`output_type` must be 'np' or 'latent', got {output_type!r}")
        guided = guidance_scale > 1.0

        # 2. Encode the prompt, unconditional first
        embeds = self.encode_prompt(["", prompt] if guided else [prompt])

        # 3. Prepare the timesteps and the initial latent
        self.scheduler.set_timesteps(steps, device=self._execution_device)
        latents = latents.to(self._execution_device, torch.float32) * self.scheduler.init_noise_sigma

        # 4. Denoising loop
        for t in self.progress_bar(self.scheduler.timesteps):
            check_cancel(cancel, "sampling")
            x_in = self.scheduler.scale_model_input(latents, t)
            with self._autocast():
                out = self.unet(torch.cat([x_in] * len(embeds)), t, embeds).sample.float()
            if guided:
                uncond, cond = out.chunk(2)
                out = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(out, t, latents).prev_sample

        # 5. Decode
        frames = latents if output_type == "latent" else self.decode_latents(latents)
        self.maybe_free_model_hooks()
        return frames


# ---------------------------------------------------------------- checkpoints


TAV_MODELS = ModelCache(size=2)  # what `load_tav` loaded


def load_tav(source: str, device: str | torch.device | None = None) -> TuneAVideoPipeline:
    """`TuneAVideoPipeline.from_t2i(source)` on `device`, loaded once per process and read again when the folder's
    files change; shared by every video, as tuning restores the untuned weights first. Frozen parts in float16 on
    CUDA."""

    def load() -> TuneAVideoPipeline:
        target = torch.device(device) if device is not None else default_device()
        return TuneAVideoPipeline.from_t2i(source, dtype=default_dtype(target)).to(target)

    return TAV_MODELS.get((str(source), str(device)), str(source), load)


def save_checkpoint(path: Path, step: int, losses: list[float], params: dict, optimizer, scaler) -> None:
    """Tensors, numbers and lists only (loaded with weights_only=True), in one file written atomically."""
    state = {
        "step": step,
        "losses": list(losses),
        "params": {name: p.detach().to("cpu") for name, p in params.items()},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
    }
    write_atomically(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, params: dict, optimizer, scaler) -> tuple[int, list[float]]:
    """Restore a `save_checkpoint` file into `params`, `optimizer` and `scaler`; returns (step, losses so far). A file
    a crash left damaged restores nothing: it is removed with a warning, and tuning starts from step 0."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError) as err:  # a zip archive cut short
        warnings.warn(f"the tuning checkpoint {path} is damaged ({err}); tuning from the start", stacklevel=3)
        path.unlink()
        return 0, []
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state["params"][name])
    optimizer.load_state_dict(state["optimizer"])
    if state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    return state["step"], list(state["losses"])


# ---------------------------------------------------------------- one edit


def cached_tuning(pipe: TuneAVideoPipeline, entry: Path | None) -> list[float] | None:
    """The losses of the tuning cached in `entry`, its weights loaded into `pipe`; None when there is none, or when
    it is damaged (a crash mid-write on a disk that lost it), which is then removed to be tuned again."""
    if entry is None or not (entry / TUNED_FILE).is_file():
        return None
    try:
        losses = pipe.load_tuned(entry / TUNED_FILE)
    except (SafetensorError, ValueError, KeyError, OSError) as err:
        warnings.warn(f"the cached tuning {entry / TUNED_FILE} is damaged ({err}); tuning again", stacklevel=3)
        (entry / TUNED_FILE).unlink()
        return None
    with suppress(OSError):  # a read-only shared cache serves; it just cannot be told it was used
        os.utime(entry)  # used now: a cache that evicts the least recently used keeps it
    return losses


def tav_edit(
    pipe: TuneAVideoPipeline,
    frames: np.ndarray,
    source_prompt: str,
    prompt: str,
    settings: TAVSettings = PRESETS["official"],
    cache_dir: str | os.PathLike | None = None,
    callback: Callable[[int, int, float], None] | None = None,
    cancel: threading.Event | None = None,
) -> TAVResult:
    """Edit the clip `frames` (f, h, w, 3) uint8, described by `source_prompt`, to match `prompt`: tune (or reuse the
    weights tuned on this clip, in memory or in `cache_dir`), DDIM-invert, sample."""
    # 1. Check inputs
    pipe.check_inputs(frames, source_prompt, prompt, settings)
    model = pipe.source or pipe.name_or_path
    if cache_dir is not None and not model:
        raise ValueError("a cache needs the model's identity: load with TuneAVideoPipeline.from_t2i or set pipe.source")
    key = cache_key(frames, source_prompt, str(model), settings)
    entry = Path(cache_dir).expanduser() / key if cache_dir is not None else None

    # 2. Tune, or reuse tuned weights: in memory, else from the cache
    began = time.perf_counter()
    losses = pipe.tuned_losses if pipe.tuned_for == key else cached_tuning(pipe, entry)
    cached = losses is not None
    if losses is None:
        if entry is not None:
            description = {"source_prompt": source_prompt, "model": str(model), "frames": list(frames.shape),
                           "settings": asdict(settings)}  # fmt: skip
            write_text_atomically(entry / ENTRY_FILE, json.dumps(description, indent=2))
        losses = pipe.tune(frames, source_prompt, settings, callback, cancel, checkpoint_dir=entry)
        if entry is not None:
            pipe.save_tuned(entry / TUNED_FILE, losses)
            (entry / CHECKPOINT_FILE).unlink(missing_ok=True)
    pipe.tuned_for, pipe.tuned_losses = key, losses
    tune_seconds = time.perf_counter() - began

    # 3. Invert the clip with the tuned UNet (the posterior's mean: the official code inverts its last training
    # batch's sample of the posterior, which differs by the VAE's small posterior noise and from run to run)
    began = time.perf_counter()
    inverted = pipe.invert(pipe.encode_frames(frames)[0], settings.inversion_steps, cancel)

    # 4. Sample the edit from the inverted latent
    edited = pipe.sample(prompt, inverted, settings.steps, settings.guidance_scale, cancel=cancel)
    return TAVResult(edited, tune_seconds, time.perf_counter() - began, cached, list(losses))
