"""InsV2VPipeline: instruction-based video editing with an inflated InstructPix2Pix UNet (InsV2V, ICLR 2024).

One call edits a whole video: its frames are encoded in chunks, split into overlapping clips, each clip is
sampled with dual (video, text) guidance and Long Video Sampling Correction against the clip before it,
and each clip's new frames are decoded as soon as they are final.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNetMotionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer

from insv2v.clip_tokenizer import token_ids
from insv2v.flow import reference_flows
from insv2v.guidance import dual_guidance, from_epsilon, needed_branches, to_epsilon
from insv2v.longvideo import ClipSpan, lvsc_correct, plan_clips

# Every component class a saved pipeline folder may name must be imported here, so that `from_pretrained` finds
# it after `from insv2v import InsV2VPipeline` alone (diffusers never imports a module a folder names).
from insv2v.models.autoencoder import PixelUnshuffleAutoencoder
from insv2v.models.unet import InsV2VUNetMotionModel  # noqa: F401

# Sampling defaults of the reference implementation (docs/DESIGN.md); EditRecipe starts from the same values.
DEFAULT_STEPS = 20
DEFAULT_TEXT_GUIDANCE = 7.5
DEFAULT_VIDEO_GUIDANCE = 1.2
DEFAULT_FRAMES_PER_CLIP = 16
DEFAULT_REF_FRAMES = 4
DEFAULT_LVSC_FRACTION = 0.5

# Accepted ranges of the user-facing settings: wide enough for any sweep, narrow enough to catch typos.
TEXT_GUIDANCE_RANGE = (0.0, 30.0)
VIDEO_GUIDANCE_RANGE = (0.0, 10.0)
MAX_STEPS = 1000
OUTPUT_TYPES = ("np", "pt", "pil", "latent")

VideoInput = np.ndarray | torch.Tensor | list[PIL.Image.Image]
FramesCallback = Callable[[int, np.ndarray], None]


@dataclass
class InsV2VPipelineOutput(BaseOutput):
    """`frames`: (f, h, w, 3) float in [0, 1] for "np", (f, 3, h, w) for "pt", PIL images for "pil",
    or latents (1, c, f, h, w) for "latent". Only finished frames are returned after an interrupt."""

    frames: np.ndarray | torch.Tensor | list[PIL.Image.Image]


@dataclass
class SamplingCache:
    """What calls on one video differing only in guidance scales, LVSC fraction or MC can share (a CFG sweep).

    Each clip's first step sees the same noise, source latents, prompts and timestep in every such call, so its UNet
    branches are computed once per set the guidance needs (all three, or two at video CFG 1); motion-compensation
    flows depend only on the input frames. Pass one instance as `cache=` to each call. An entry is reused only if it
    came from the same UNet and its inputs are equal to the current ones.
    """

    first_steps: dict = field(default_factory=dict)  # (start, stop, t, branches) -> (unet, x_in, source, embeds, out)
    flows: dict = field(default_factory=dict)  # (start, stop, references, latent size) -> (frames, flows)
    hits: int = 0  # reuses, for tests and benchmarks

    def first_step(self, key, unet, x_in, source, embeds, compute):
        entry = self.first_steps.get(key)
        inputs = (x_in, source, embeds)
        if entry is not None and entry[0] is unet and all(map(torch.equal, entry[1:4], inputs)):
            self.hits += 1
            return entry[4]
        branches = compute()
        self.first_steps[key] = (unet, *inputs, branches)
        return branches

    def motion_flows(self, key, frames: np.ndarray, compute):
        entry = self.flows.get(key)
        if entry is not None and entry[0].shape == frames.shape and np.array_equal(entry[0], frames):
            self.hits += 1
            return entry[1]
        flows = compute()
        self.flows[key] = (frames, flows)
        return flows


def vae_scale_factor(vae) -> int:
    """Pixels per latent pixel: the VAE's own ratio if it states one, else 2 per AutoencoderKL down block."""
    return getattr(vae, "spatial_compression_ratio", None) or 2 ** (len(vae.config.block_out_channels) - 1)


def video_to_uint8(video: VideoInput) -> np.ndarray:
    """Any accepted video input -> (f, h, w, 3) uint8 RGB; tensors are (f, 3, h, w) in [0, 1]."""
    if isinstance(video, list):
        return np.stack([np.asarray(im.convert("RGB")) for im in video])
    if isinstance(video, torch.Tensor):
        return (video.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return np.ascontiguousarray(video)


@dataclass(frozen=True)
class _Run:
    """What every clip of one call shares: the whole video's tensors and the call's settings."""

    video_latents: torch.Tensor  # (1, c, f, h, w) source latents
    noise: torch.Tensor  # (1, c, f, h, w) initial noise
    result: torch.Tensor  # (1, c, f, h, w) final latents, filled clip by clip
    embeds: torch.Tensor  # (3, L, C) the three guidance branches' text embeddings
    prompt_embeds: torch.Tensor
    frames: np.ndarray | None  # (f, h, w, 3) uint8 source frames, for motion compensation
    num_inference_steps: int
    guidance_scale: float
    video_guidance_scale: float
    lvsc_fraction: float
    motion_compensation: bool
    generator: torch.Generator | None
    cache: SamplingCache | None
    callback_on_step_end: Callable | None
    callback_inputs: tuple[str, ...]


class InsV2VPipeline(DiffusionPipeline):
    r"""Edit a video from a text instruction ("make it snowy") with a video InstructPix2Pix model.

    Components: `vae` (AutoencoderKL-compatible), `text_encoder` (CLIPTextModel, last hidden state),
    `tokenizer`, `unet` (UNetMotionModel with 8 input channels: noisy latent + source latent), `scheduler`.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _callback_tensor_inputs = ("latents", "prompt_embeds", "video_latents")

    def __init__(
        self,
        vae: AutoencoderKL | PixelUnshuffleAutoencoder,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNetMotionModel,
        scheduler: KarrasDiffusionSchedulers,
    ):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.vae_scale_factor = vae_scale_factor(self.vae)
        self._interrupt = False

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    @property
    def default_resolution(self) -> int:
        """The short side, in pixels, the model was trained at."""
        size = self.unet.config.sample_size
        return (size if isinstance(size, int) else min(size)) * self.vae_scale_factor

    @property
    def max_frames_per_clip(self) -> int:
        return self.unet.config.motion_max_seq_length

    def enable_vae_tiling(self) -> None:
        """Encode and decode each frame in overlapping tiles: less memory at high resolution, faint seams possible."""
        self.vae.enable_tiling()

    def disable_vae_tiling(self) -> None:
        """Encode and decode whole frames again (the default)."""
        self.vae.disable_tiling()

    # ---------------------------------------------------------------- helpers (each one step of __call__)

    def check_inputs(
        self,
        video,
        video_latents,
        prompt,
        prompt_embeds,
        negative_prompt,
        negative_prompt_embeds,
        guidance_scale,
        video_guidance_scale,
        num_inference_steps,
        frames_per_clip,
        ref_frames,
        lvsc_fraction,
        motion_compensation,
        latents,
        output_type,
        callback_on_step_end_tensor_inputs,
    ) -> None:
        """Validate every argument before any heavy work; errors name the argument, the rule and the value."""
        if (video is None) == (video_latents is None):
            raise ValueError("Pass exactly one of `video` and `video_latents`.")
        if video is not None:
            if isinstance(video, list):
                if not video or not all(isinstance(im, PIL.Image.Image) for im in video):
                    raise ValueError("`video` as a list must be a non-empty list of PIL images.")
            elif isinstance(video, np.ndarray):
                if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8 or len(video) == 0:
                    raise ValueError(
                        "`video` as an array must be (frames, height, width, 3) uint8, "
                        f"got {video.shape} {video.dtype}."
                    )
            elif isinstance(video, torch.Tensor):
                if video.ndim != 4 or video.shape[1] != 3 or len(video) == 0 or not video.is_floating_point():
                    raise ValueError(
                        "`video` as a tensor must be (frames, 3, height, width) floats in [0, 1], "
                        f"got {tuple(video.shape)} {video.dtype}."
                    )
                if video.min() < 0 or video.max() > 1:  # 0-255 pixels would be clipped to black and white
                    raise ValueError(f"`video` as a tensor must be in [0, 1], got [{video.min():g}, {video.max():g}].")
            else:
                raise ValueError(f"`video` must be a uint8 array, a tensor or a list of PIL images, got {type(video)}.")
            height, width = self._video_size(video)
            if height % self.vae_scale_factor or width % self.vae_scale_factor:
                raise ValueError(
                    f"`video` frames must have sides divisible by {self.vae_scale_factor}, got {width}x{height}; "
                    "resize them first (insv2v.video.read_video does)."
                )
        if video_latents is not None:
            channels = self.unet.config.in_channels - self.unet.config.out_channels
            if video_latents.ndim != 5 or video_latents.shape[0] != 1 or video_latents.shape[1] != channels:
                raise ValueError(f"`video_latents` must be (1, {channels}, f, h, w), got {tuple(video_latents.shape)}.")
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("Pass either `prompt` or `prompt_embeds`, not both.")
        if prompt_embeds is None and (not isinstance(prompt, str) or not prompt.strip()):
            raise ValueError(f"`prompt` must be a non-empty instruction, got {prompt!r}.")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("Pass either `negative_prompt` or `negative_prompt_embeds`, not both.")
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise ValueError(f"`negative_prompt` must be a string, got {type(negative_prompt)}.")
        for name, value, (low, high) in [
            ("guidance_scale", guidance_scale, TEXT_GUIDANCE_RANGE),
            ("video_guidance_scale", video_guidance_scale, VIDEO_GUIDANCE_RANGE),
        ]:
            if not low <= value <= high:
                raise ValueError(f"`{name}` must be in [{low}, {high}], got {value}.")
        if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= MAX_STEPS:
            raise ValueError(
                f"`num_inference_steps` must be an integer in [1, {MAX_STEPS}], got {num_inference_steps}."
            )
        for name, value in (("frames_per_clip", frames_per_clip), ("ref_frames", ref_frames)):
            if isinstance(value, bool) or not isinstance(value, int):  # a float slices nothing, later
                raise ValueError(f"`{name}` must be an integer, got {value!r}.")
        if not 2 <= frames_per_clip <= self.max_frames_per_clip:
            raise ValueError(
                f"`frames_per_clip` must be in [2, {self.max_frames_per_clip}] for this model, got {frames_per_clip}."
            )
        if not 0 <= ref_frames < frames_per_clip:
            raise ValueError(
                f"`ref_frames` must be in [0, frames_per_clip) = [0, {frames_per_clip}), got {ref_frames}."
            )
        if not 0.0 <= lvsc_fraction <= 1.0:
            raise ValueError(f"`lvsc_fraction` must be in [0, 1], got {lvsc_fraction}.")
        if motion_compensation and video is None:
            raise ValueError("`motion_compensation` needs the pixel `video` to compute optical flow.")
        if latents is not None:
            expected = self._latent_shape(video, video_latents)
            if tuple(latents.shape) != expected:
                raise ValueError(f"`latents` must have shape {expected} (b, c, f, h, w), got {tuple(latents.shape)}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` must be in {self._callback_tensor_inputs}, got {unknown}."
            )

    @staticmethod
    def _video_size(video: VideoInput) -> tuple[int, int]:
        if isinstance(video, list):
            return video[0].height, video[0].width
        if isinstance(video, torch.Tensor):
            return tuple(video.shape[-2:])
        return tuple(video.shape[1:3])

    def _latent_shape(self, video, video_latents) -> tuple[int, ...]:
        if video_latents is not None:
            return (1, self.unet.config.out_channels, *video_latents.shape[2:])
        height, width = self._video_size(video)
        s = self.vae_scale_factor
        return (1, self.unet.config.out_channels, len(video), height // s, width // s)

    def encode_prompt(self, prompt: str, device: torch.device) -> torch.Tensor:
        """CLIP last hidden state of `prompt`, padded to the tokenizer's max length: (1, L, C)."""
        return self.text_encoder(token_ids(self.tokenizer, prompt).to(device))[0]

    @torch.no_grad()
    def encode_video(self, video: VideoInput, chunk_size: int = 16) -> torch.Tensor:
        """Source-frame latents for conditioning, (1, c, f, h, w), encoded `chunk_size` frames at a time.

        The mode of the posterior, unscaled: InstructPix2Pix conditions on unscaled latents.
        """
        frames = video_to_uint8(video)  # (f, h, w, 3) uint8
        device, dtype = self._execution_device, self.vae.dtype
        chunks = []
        for i in range(0, len(frames), chunk_size):
            pixels = torch.from_numpy(frames[i : i + chunk_size]).to(device).permute(0, 3, 1, 2)  # (n, 3, h, w)
            pixels = pixels.to(dtype) / 127.5 - 1
            chunks.append(self.vae.encode(pixels).latent_dist.mode().float())
        return torch.cat(chunks).permute(1, 0, 2, 3).unsqueeze(0)  # (1, c, f, h, w)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, chunk_size: int = 16) -> np.ndarray:
        """Latents (1, c, f, h, w) -> frames (f, h, w, 3) uint8, decoded `chunk_size` frames at a time."""
        scaled = latents[0].permute(1, 0, 2, 3) / self.vae.config.scaling_factor  # (f, c, h, w)
        out = []
        for i in range(0, len(scaled), chunk_size):
            pixels = self.vae.decode(scaled[i : i + chunk_size].to(self.vae.dtype)).sample  # (n, 3, h, w)
            pixels = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            out.append(pixels.permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(out)

    def prepare_latents(self, shape, dtype, device, generator, latents) -> torch.Tensor:
        """Initial noise for every frame of the video (b, c, f, h, w); clips share it where they overlap."""
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        return latents.to(device=device, dtype=torch.float32)

    def _alpha_bar(self, t: torch.Tensor, device) -> torch.Tensor:
        """The noise level of this step: from the scheduler's own sigma where it steps by sigmas (Euler, Heun,
        DPM-Solver; their timesteps may fall between the table's), alpha_bar = 1 / (1 + sigma^2); else the table's."""
        sigmas, index = getattr(self.scheduler, "sigmas", None), getattr(self.scheduler, "step_index", None)
        interpolated = getattr(self.scheduler, "sigmas_interpol", None)
        if interpolated is not None and not getattr(self.scheduler, "state_in_first_order", True):
            sigmas = interpolated  # KDPM2's second stage evaluates the model at the interpolated sigma
        if sigmas is not None and index is not None:
            return (1 / (1 + sigmas[index].float() ** 2)).to(device)
        return self.scheduler.alphas_cumprod[int(t)].to(device=device, dtype=torch.float32)

    def _branches(self, x_in, source, empty_source, embeds, t, wanted=(0, 1, 2)) -> tuple[torch.Tensor | None, ...]:
        """The UNet branches (no video, no text), (video), (video, text) for one clip, those `wanted` in one batch;
        the others are None."""
        frames, n = x_in.shape[2], len(wanted)
        sample = torch.cat([x_in] * n)  # (n, c, f, h, w)
        cond = torch.cat([(empty_source, source, source)[i] for i in wanted])  # (n, c, f, h, w)
        unet_in = torch.cat([sample, cond], dim=1).to(self.unet.dtype)  # (n, 2c, f, h, w)
        text = embeds[list(wanted)].repeat_interleave(frames, dim=0)  # (n*f, L, C): per-frame text for the UNet
        out = self.unet(unet_in, t, encoder_hidden_states=text).sample.float().chunk(n)  # each (1, c, f, h, w)
        branches = [None, None, None]
        for i, branch in zip(wanted, out, strict=True):
            branches[i] = branch
        return tuple(branches)

    def _step_kwargs(self, generator) -> dict:
        """The generator, for the schedulers whose `step` draws noise with one (UniPC, Heun, PNDM, ... take none)."""
        return {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}

    def _lvsc(self, model_output, x_in, latent_ref, t, flows):
        """LVSC on a model output of any parameterisation, through the equivalent noise prediction."""
        a = self._alpha_bar(t, x_in.device)
        kind = self.scheduler.config.prediction_type
        eps = lvsc_correct(to_epsilon(model_output, x_in, a, kind), x_in, latent_ref, a, flows)
        return from_epsilon(eps, x_in, a, kind)

    # ---------------------------------------------------------------- the call

    @torch.no_grad()
    def __call__(
        self,
        video: VideoInput | None = None,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        *,
        video_latents: torch.Tensor | None = None,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_TEXT_GUIDANCE,
        video_guidance_scale: float = DEFAULT_VIDEO_GUIDANCE,
        frames_per_clip: int = DEFAULT_FRAMES_PER_CLIP,
        ref_frames: int = DEFAULT_REF_FRAMES,
        lvsc_fraction: float = DEFAULT_LVSC_FRACTION,
        motion_compensation: bool = False,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        cache: SamplingCache | None = None,
        encode_chunk_size: int = 16,
        decode_chunk_size: int = 16,
        on_frames: FramesCallback | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
    ):
        r"""Edit `video` following the instruction `prompt`.

        Args:
            video: (f, h, w, 3) uint8 RGB array, (f, 3, h, w) tensor in [0, 1], or list of PIL images; sides
                divisible by the VAE factor (8). Or pass `video_latents` from `encode_video` instead.
            prompt / negative_prompt: the instruction, and the text of the "no text" branch (default "").
            guidance_scale: text guidance; raise it when the edit is too weak.
            video_guidance_scale: video guidance; raise it when the result strays from the input.
            frames_per_clip, ref_frames: clip length F and overlap R of long-video sampling.
            lvsc_fraction: fraction of steps, from the noisiest, with LVSC on; 0 turns it off.
            motion_compensation: warp the correction along optical flow of the input frames.
            generator, latents: the initial noise (1, c, f, h, w) of the whole video, for reproducibility.
            on_frames: called as `on_frames(first_index, frames)` with each clip's finished frames as
                (n, h, w, 3) uint8; with `output_type="latent"` that is the only decoding, so a long video
                streams to a writer without its frames held in memory (its latents, noise and result are, on the
                device: 48 bytes per latent pixel and frame, 0.7 MB a frame at 720p).
            cache: a SamplingCache shared by calls on the same video, prompts, seed, steps and clip plan that differ
                only in guidance scales, LVSC fraction or MC: each clip's first step and MC flows run once.
            callback_on_step_end: `fn(pipe, step, timestep, callback_kwargs) -> dict` after every step;
                step counts over all clips. Set `pipe._interrupt = True` in it to stop after this clip step.
        """
        # 1. Check inputs
        self.check_inputs(
            video, video_latents, prompt, prompt_embeds, negative_prompt, negative_prompt_embeds,
            guidance_scale, video_guidance_scale, num_inference_steps, frames_per_clip, ref_frames,
            lvsc_fraction, motion_compensation, latents, output_type, callback_on_step_end_tensor_inputs,
        )  # fmt: skip
        self._interrupt = False
        device = self._execution_device
        frames = video_to_uint8(video) if video is not None else None  # (f, h, w, 3) uint8

        # 2. Encode the instruction and the "no text" prompt
        if prompt_embeds is None:
            prompt_embeds = self.encode_prompt(prompt, device)
        if negative_prompt_embeds is None:
            negative_prompt_embeds = self.encode_prompt(negative_prompt or "", device)
        embeds = torch.cat([negative_prompt_embeds, negative_prompt_embeds, prompt_embeds])
        embeds = embeds.to(device=device, dtype=self.unet.dtype)  # given embeddings may live elsewhere

        # 3. Encode the source video (unless given)
        if video_latents is None:
            video_latents = self.encode_video(frames, encode_chunk_size)
        video_latents = video_latents.to(device=device, dtype=torch.float32)  # (1, c, f, h, w)
        num_frames = video_latents.shape[2]

        # 4. Plan the clips
        spans = plan_clips(num_frames, frames_per_clip, ref_frames)

        # 5. Prepare the initial noise of the whole video
        shape = self._latent_shape(None, video_latents)
        noise = self.prepare_latents(shape, torch.float32, device, generator, latents)
        result = torch.zeros_like(noise)  # final latents, filled clip by clip

        # 6. Sample clip by clip
        run = _Run(
            video_latents, noise, result, embeds, prompt_embeds, frames, num_inference_steps, guidance_scale,
            video_guidance_scale, lvsc_fraction, motion_compensation, generator, cache, callback_on_step_end,
            tuple(callback_on_step_end_tensor_inputs),
        )  # fmt: skip
        decoded = []
        done = 0  # frames finished
        with self.progress_bar(total=len(spans) * num_inference_steps) as progress:
            for k, span in enumerate(spans):
                clip = self._sample_clip(span, k, run, progress)
                if clip is None:  # interrupted
                    break
                # 7. Keep the new frames; reference frames keep what the earlier clip made
                result[:, :, span.start + span.num_ref : span.stop] = clip[:, :, span.num_ref :]
                # 8. Decode the finished frames and hand them on
                new = result[:, :, done : span.stop]
                if on_frames is not None or output_type != "latent":
                    pixels = self.decode_latents(new, decode_chunk_size)  # (n, h, w, 3) uint8
                    if on_frames is not None:
                        on_frames(done, pixels)
                    if output_type != "latent":
                        decoded.append(pixels)
                done = span.stop

        # 9. Format the output
        if output_type == "latent":
            frames_out = result[:, :, :done]
        else:
            pixels = (
                np.concatenate(decoded) if decoded else np.zeros((0, *self._video_size_px(video_latents), 3), np.uint8)
            )
            if output_type == "np":
                frames_out = pixels.astype(np.float32) / 255
            elif output_type == "pt":
                frames_out = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255  # (f, 3, h, w)
            else:
                frames_out = [PIL.Image.fromarray(p) for p in pixels]

        # 10. Offload
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames_out,)
        return InsV2VPipelineOutput(frames=frames_out)

    def _video_size_px(self, video_latents: torch.Tensor) -> tuple[int, int]:
        return video_latents.shape[3] * self.vae_scale_factor, video_latents.shape[4] * self.vae_scale_factor

    def _sample_clip(self, span: ClipSpan, k: int, run: _Run, progress) -> torch.Tensor | None:
        """Denoise one clip; returns its final latents (1, c, F, h, w), or None when interrupted."""
        window = slice(span.start, span.stop)
        source = run.video_latents[:, :, window]  # (1, c, F, h, w)
        empty_source = torch.zeros_like(source)
        latent_ref = run.result[:, :, span.start : span.start + span.num_ref]  # (1, c, R, h, w)
        flows = None
        if run.motion_compensation and span.num_ref > 0 and run.lvsc_fraction > 0:  # the flows serve LVSC alone
            new = list(range(span.start + span.num_ref, span.stop))
            refs = list(range(span.start, span.start + span.num_ref))
            latent_size = (source.shape[4], source.shape[3])
            compute = lambda: reference_flows(run.frames, new, refs, latent_size)  # noqa: E731
            if run.cache is not None:
                key = (span.start, span.stop, span.num_ref, latent_size)  # another plan: other reference frames
                flows = run.cache.motion_flows(key, run.frames[span.start : span.stop], compute)
            else:
                flows = compute()
            flows = flows.to(source.device)  # (n, R, 2, h, w)

        self.scheduler.set_timesteps(run.num_inference_steps, device=source.device)  # also resets multistep state
        timesteps = self.scheduler.timesteps
        corrected_steps = run.lvsc_fraction * len(timesteps) if span.num_ref > 0 else 0  # steps i < this
        wanted = needed_branches(run.video_guidance_scale, run.guidance_scale)  # video CFG 1: no unconditional one
        x = run.noise[:, :, window] * self.scheduler.init_noise_sigma  # (1, c, F, h, w)
        for i, t in enumerate(timesteps):
            if self.interrupt:
                return None
            x_in = self.scheduler.scale_model_input(x, t)
            if i == 0 and run.cache is not None:  # the same in every call sharing the cache and the branches it needs
                branches = run.cache.first_step(  # (batched as a call without the cache batches them: equal outputs)
                    (span.start, span.stop, int(t), wanted), self.unet, x_in, source, run.embeds,
                    functools.partial(self._branches, x_in, source, empty_source, run.embeds, t, wanted),
                )  # fmt: skip
            else:
                branches = self._branches(x_in, source, empty_source, run.embeds, t, wanted)
            model_output = dual_guidance(*branches, run.video_guidance_scale, run.guidance_scale)
            if i < corrected_steps:
                model_output = self._lvsc(model_output, x_in, latent_ref, t, flows)
            x = self.scheduler.step(model_output, t, x, **self._step_kwargs(run.generator), return_dict=False)[0]

            if run.callback_on_step_end is not None:
                names = {"latents": x, "prompt_embeds": run.prompt_embeds, "video_latents": run.video_latents}
                inputs = {n: names[n] for n in run.callback_inputs}
                outputs = run.callback_on_step_end(self, k * len(timesteps) + i, t, inputs)
                x = outputs.pop("latents", x)
            progress.update()
        return x  # whole even if interrupted at its last step: the next clip stops before its first
