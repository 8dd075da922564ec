"""TextToVideoPipeline: a video (or an image) from a caption, with classifier-free guidance.

One pipeline for the data engine's text-to-video models: ModelScope (`UNet3DConditionModel`, the paper's
`damo-vilab/text-to-video-ms-1.7b` folder loads as it is), AnimateDiff-style `UNetMotionModel` (the shipped toy
model), and a 2-D `UNet2DConditionModel` whose frames are independent images (the toy text-to-image model).
An optional `kind_classifier` (the toy models') adds classifier guidance towards the shapes' kinds a caption names
(`kind_guidance`, `insv2v.models.kind_classifier`). Video Prompt-to-Prompt (`insv2v.synth.p2p`) samples through the
same `model_output`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel, UNet3DConditionModel, UNetMotionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer

from insv2v.clip_tokenizer import token_ids
from insv2v.loading import (
    ModelCache,
    check_generative_unet,
    default_device,
    default_dtype,
    from_pretrained_explained,
    read_model_sampling,
)

# Every component class a saved folder may name is imported, so that `from_pretrained` finds it.
from insv2v.models.autoencoder import PixelUnshuffleAutoencoder
from insv2v.models.kind_classifier import KindClassifier, kind_guided
from insv2v.models.unet import unet_on_video
from insv2v.pipeline import vae_scale_factor

# Sampling defaults of the reference data engine (docs/DESIGN.md): 16 frames, DDIM 30 steps.
DEFAULT_FRAMES = 16
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 9.0
GUIDANCE_RANGE = (0.0, 30.0)
KIND_GUIDANCE_RANGE = (0.0, 1000.0)
SAMPLING_KEYS = {"guidance_scale": float, "kind_guidance": float}  # what a folder's sampling.json may recommend
MAX_FRAMES = 64
MAX_SIDE = 1024
OUTPUT_TYPES = ("np", "latent")
TEXT_TO_VIDEO_MODELS = ModelCache(size=2)  # what `load_t2v` loaded


@dataclass
class TextToVideoOutput(BaseOutput):
    """`frames`: (b, f, h, w, 3) uint8 for "np", latents (b, c, f, h, w) for "latent"."""

    frames: np.ndarray | torch.Tensor


class TextToVideoPipeline(DiffusionPipeline):
    r"""Generate a video from a caption.

    Components: `vae` (AutoencoderKL-compatible), `text_encoder` (CLIPTextModel, last hidden state), `tokenizer`,
    `unet` (UNet3DConditionModel, UNetMotionModel or UNet2DConditionModel), `scheduler`; optional `kind_classifier`.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components: ClassVar[list[str]] = ["kind_classifier"]

    def __init__(
        self,
        vae: AutoencoderKL | PixelUnshuffleAutoencoder,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet3DConditionModel | UNetMotionModel | UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        kind_classifier: KindClassifier | None = None,
    ):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                              kind_classifier=kind_classifier)  # fmt: skip
        self.vae_scale_factor = vae_scale_factor(self.vae)

    @property
    def default_resolution(self) -> int:
        size = self.unet.config.sample_size
        return (size if isinstance(size, int) else min(size)) * self.vae_scale_factor

    # ---------------------------------------------------------------- helpers (shared with Prompt-to-Prompt)

    def check_inputs(self, prompt, num_frames, height, width, num_inference_steps, guidance_scale, output_type):
        if not isinstance(prompt, str) and not (isinstance(prompt, list) and all(isinstance(p, str) for p in prompt)):
            raise ValueError(f"`prompt` must be a string or a list of strings, got {type(prompt).__name__}")
        if not 1 <= num_frames <= MAX_FRAMES:
            raise ValueError(f"`num_frames` must be in [1, {MAX_FRAMES}], got {num_frames}")
        for name, side in (("height", height), ("width", width)):
            if not (side % self.vae_scale_factor == 0 and 0 < side <= MAX_SIDE):
                raise ValueError(
                    f"`{name}` must be a multiple of {self.vae_scale_factor} in (0, {MAX_SIDE}], got {side}"
                )
        if num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be at least 1, got {num_inference_steps}")
        low, high = GUIDANCE_RANGE
        if not low <= guidance_scale <= high:
            raise ValueError(f"`guidance_scale` must be in [{low}, {high}], got {guidance_scale}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}")

    def check_kind_guidance(self, kind_guidance: float) -> None:
        low, high = KIND_GUIDANCE_RANGE
        if not low <= kind_guidance <= high:
            raise ValueError(f"`kind_guidance` must be in [{low:g}, {high:g}], got {kind_guidance}")
        if kind_guidance and self.kind_classifier is None:
            raise ValueError("`kind_guidance` needs a text-to-video folder with a kind classifier (`kind_classifier/`, "
                             "as the toy text-to-video model has); this one has none")  # fmt: skip
        if kind_guidance and self.scheduler.config.prediction_type != "sample":
            raise ValueError("`kind_guidance` moves the model's x0 prediction: it needs a model that predicts x0 "
                             f"(prediction_type 'sample'), not {self.scheduler.config.prediction_type!r}")  # fmt: skip

    def kind_targets(self, prompt: str, edited_from: str | None = None) -> list[tuple[int, int]]:
        """The (colour, class) targets the kind classifier reads `prompt` to ask for (none without one); with
        `edited_from`, only those that prompt does not ask for (what an edit changes)."""
        if self.kind_classifier is None:
            return []
        if edited_from is not None:
            return self.kind_classifier.edit_targets(edited_from, prompt)
        return self.kind_classifier.targets(prompt)

    def guided_x0(self, x0: torch.Tensor, targets: list[list[tuple[int, int]]], kind_guidance: float) -> torch.Tensor:
        """x0 predictions (n, c, f, h, w) moved towards the kind classifier's `targets`, one list per video
        (`kind_targets`; unchanged at 0)."""
        return kind_guided(self.kind_classifier, self.vae, x0, targets, kind_guidance) if kind_guidance else x0

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """CLIP last hidden states of `prompts`, padded to the tokenizer's max length: (n, L, C)."""
        return self.text_encoder(token_ids(self.tokenizer, prompts).to(self._execution_device))[0]

    def prepare_latents(self, batch, num_frames, height, width, generator, latents=None) -> torch.Tensor:
        """Initial noise (batch, c, f, h, w)."""
        s = self.vae_scale_factor
        shape = (batch, self.unet.config.in_channels, num_frames, height // s, width // s)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=torch.float32)
        if tuple(latents.shape) != shape:
            raise ValueError(f"`latents` must have shape {shape}, got {tuple(latents.shape)}")
        return latents.to(self._execution_device, torch.float32) * self.scheduler.init_noise_sigma

    def model_output(self, sample: torch.Tensor, t, embeds: torch.Tensor) -> torch.Tensor:
        """The UNet on videos (n, c, f, h, w) with one text embedding per video (n, L, C), whatever its kind."""
        return unet_on_video(self.unet, sample.to(self.unet.dtype), t, embeds.to(self.unet.dtype)).float()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, chunk_size: int = 16) -> np.ndarray:
        """Latents (b, c, f, h, w) -> frames (b, f, h, w, 3) uint8, `chunk_size` frames at a time."""
        b = latents.shape[0]
        scaled = latents.transpose(1, 2).flatten(0, 1) / self.vae.config.scaling_factor  # (b*f, c, h, w)
        out = []
        for i in range(0, len(scaled), chunk_size):
            pixels = self.vae.decode(scaled[i : i + chunk_size].to(self.vae.dtype)).sample  # (n, 3, h, w)
            pixels = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            out.append(pixels.permute(0, 2, 3, 1).cpu().numpy())
        frames = np.concatenate(out)
        return frames.reshape(b, -1, *frames.shape[1:])  # (b, f, h, w, 3)

    # ---------------------------------------------------------------- the call

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str = "",
        *,
        num_frames: int = DEFAULT_FRAMES,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        kind_guidance: float = 0.0,
    ) -> TextToVideoOutput:
        """Videos of `prompt` (one per prompt), CFG against `negative_prompt`; `latents` fixes the initial noise;
        `kind_guidance` weighs the kind classifier's guidance (0: none)."""
        # 1. Check inputs
        height = height or self.default_resolution
        width = width or self.default_resolution
        self.check_inputs(prompt, num_frames, height, width, num_inference_steps, guidance_scale, output_type)
        self.check_kind_guidance(kind_guidance)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        n = len(prompts)

        # 2. Encode the prompts: (2n, L, C), unconditional first; the kinds each asks for
        embeds = self.encode_prompt([negative_prompt] * n + prompts)
        targets = [self.kind_targets(p) for p in prompts]

        # 3. Prepare the timesteps and the initial noise
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        latents = self.prepare_latents(n, num_frames, height, width, generator, latents)

        # 4. Denoising loop
        for t in self.progress_bar(self.scheduler.timesteps):
            x_in = self.scheduler.scale_model_input(latents, t)
            uncond, cond = self.model_output(torch.cat([x_in, x_in]), t, embeds).chunk(2)
            guided = self.guided_x0(uncond + guidance_scale * (cond - uncond), targets, kind_guidance)
            latents = self.scheduler.step(guided, t, latents).prev_sample

        # 5. Decode
        frames = latents if output_type == "latent" else self.decode_latents(latents)
        self.maybe_free_model_hooks()
        return TextToVideoOutput(frames=frames)


def load_t2v(source: str, device: str | None = None) -> TextToVideoPipeline:
    """The text-to-video pipeline at `source` (folder or hub id), loaded once per process and read again when the
    folder's files change (a model saved anew in the same process); float16 on CUDA."""

    def load() -> TextToVideoPipeline:
        target = torch.device(device) if device else default_device()
        what = "text-to-video model"
        pipe = from_pretrained_explained(TextToVideoPipeline, source, what, dtype=default_dtype(target))
        check_generative_unet(source, pipe.unet, what, "damo-vilab/text-to-video-ms-1.7b")
        return pipe.to(target)

    return TEXT_TO_VIDEO_MODELS.get((source, device), source, load)


def recommended_guidance(source: str) -> float:
    """The text guidance a text-to-video folder's sampling.json recommends ({"guidance_scale": 3}: the toy t2v
    draws its captions' colours best at low guidance), else DEFAULT_GUIDANCE."""
    return read_model_sampling(source, SAMPLING_KEYS).get("guidance_scale", DEFAULT_GUIDANCE)


def recommended_kind_guidance(source: str) -> float:
    """The kind guidance a text-to-video folder's sampling.json recommends (the toy t2v's card), else none."""
    return read_model_sampling(source, SAMPLING_KEYS).get("kind_guidance", 0.0)
