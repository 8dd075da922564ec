"""Video Prompt-to-Prompt: a source video and its edited twin from one initial noise (docs/DESIGN.md, "The synthetic
data engine, as the reference implements it").

One UNet batch of four videos per step, [source_uncond, target_uncond, source_cond, target_cond], in three phases:

    1. step < sa_end * N    every self-attention (spatial and temporal) of the target uses the source's attention map
                            in both guidance halves: softmax(Qs Ks^T / sqrt(d)) Vt, which is exactly
                            SDPA(q_source, k_source, v_target), so no map is materialised
    2. step < ca_end * N    the target's cross-attention takes keys from a source-aligned embedding and values from
                            the target's embedding with the edited tokens x edit_weight
    3. otherwise            both prompts are sampled as they are

The source is never modified: it equals a plain generation of the source prompt from the same noise.
Optionally (`LocalBlend`, Prompt-to-Prompt's own tool, not used by the InsV2V reference), the target is pulled back to
the source after every step outside a mask drawn from the edited words' cross-attention, so what the edit does not
name stays the source's; or outside DiffEdit's mask: where the target prompt's noise prediction on the source's latents
differs most from the source prompt's.
The reference aligns prompt pieces with a token count that is always 1 (`len(open_clip.tokenize(s))`), so its edit
weight lands on the wrong token; `align_tokens` aligns the tokenizer's real tokens.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from enum import Enum

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from insv2v.synth.t2v import DEFAULT_FRAMES, DEFAULT_STEPS, TextToVideoPipeline

# The reference data engine's random settings (its video_prompt_to_prompt.py), drawn in this order per sample.
GUIDANCE_CHOICES = (5, 13)  # rng.randint(5, 13): CFG 5..12
SA_END_CHOICES = (0.30, 0.35, 0.40, 0.45)  # rng.choice(np.linspace(0.3, 0.45, 4)), rounded to 2 decimals
CA_END_CHOICES = (0.60, 0.65, 0.70, 0.75, 0.80, 0.85)  # rng.choice(np.linspace(0.6, 0.85, 6)), rounded
EDIT_WEIGHT_CHOICES = (1, 6)  # rng.randint(1, 6): 1..5
VIDEOS = 4  # the UNet batch: [source_uncond, target_uncond, source_cond, target_cond]
# InstructPix2Pix's image recipe (its generate_img_dataset.py): the source's self-attention shared for a uniform
# fraction of the steps, no cross-attention edit, CFG uniform in [7.5, 15].
IMAGE_SA_END_RANGE = (0.1, 0.9)
IMAGE_GUIDANCE_RANGE = (7.5, 15.0)
RECIPES = ("video", "image")  # which settings a sample's seed draws: InsV2V's video P2P, or InstructPix2Pix's


# ---------------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class P2PSettings:
    """One sample's Prompt-to-Prompt settings; phase 2 spans steps [sa_end, ca_end) (none if ca_end <= sa_end)."""

    guidance_scale: float  # classifier-free guidance of both videos
    sa_end: float  # fraction of the steps with self-attention injection (phase 1)
    ca_end: float  # fraction of the steps before which cross-attention is edited (phase 2)
    edit_weight: float  # factor on the edited tokens' values in phase 2
    shared_end: float = 0.0  # fraction of the steps the target follows the source's latents (phase 0; 0: none)

    def __post_init__(self):
        for name in ("sa_end", "ca_end", "shared_end"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"`{name}` must be in [0, 1], got {value}")
        if not self.edit_weight > 0:
            raise ValueError(f"`edit_weight` must be > 0, got {self.edit_weight}")
        if not self.guidance_scale >= 0:
            raise ValueError(f"`guidance_scale` must be >= 0, got {self.guidance_scale}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> P2PSettings:
        return cls(**d)

    @classmethod
    def draw(cls, seed: int, guidance_range: tuple[float, float] | None = None) -> P2PSettings:
        """The reference's draw: `np.random.RandomState(seed)`; CFG, sa_end, ca_end, edit weight in that order.
        `guidance_range`: CFG uniform in it (rounded to 2 decimals, drawn after the rest, which stays the seed's)
        instead of the reference's integers."""
        rng = np.random.RandomState(seed)
        guidance = rng.randint(*GUIDANCE_CHOICES)
        sa_end = round(float(rng.choice(np.linspace(SA_END_CHOICES[0], SA_END_CHOICES[-1], len(SA_END_CHOICES)))), 2)
        ca_end = round(float(rng.choice(np.linspace(CA_END_CHOICES[0], CA_END_CHOICES[-1], len(CA_END_CHOICES)))), 2)
        edit_weight = rng.randint(*EDIT_WEIGHT_CHOICES)
        if guidance_range is not None:
            guidance = _uniform(rng, guidance_range)
        return cls(float(guidance), sa_end, ca_end, float(edit_weight))

    @classmethod
    def draw_image(cls, seed: int, guidance_range: tuple[float, float] | None = None) -> P2PSettings:
        """InstructPix2Pix's draw for image pairs: self-attention injection only (ca_end = sa_end), rounded to 2
        decimals so that a record reads as it was drawn. `guidance_range`: CFG uniform in it instead of
        InstructPix2Pix's [7.5, 15] (the same draw: a seed's sa_end is the same either way)."""
        rng = np.random.RandomState(seed)
        sa_end = _uniform(rng, IMAGE_SA_END_RANGE)
        guidance = _uniform(rng, guidance_range or IMAGE_GUIDANCE_RANGE)
        return cls(guidance, sa_end, sa_end, 1.0)

    @classmethod
    def draw_for(cls, recipe: str, seed: int, guidance_range: tuple[float, float] | None = None) -> P2PSettings:
        """The settings `recipe` ("video" or "image") draws from a sample's seed; `guidance_range` as `draw` says."""
        if recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
        check_guidance_range(guidance_range)
        return (cls.draw if recipe == "video" else cls.draw_image)(seed, guidance_range)


def _uniform(rng: np.random.RandomState, bounds: tuple[float, float]) -> float:
    return round(float(rng.uniform(*bounds)), 2)


def check_guidance_range(guidance_range: tuple[float, float] | None) -> None:
    if guidance_range is not None and not 0 <= guidance_range[0] <= guidance_range[1]:
        raise ValueError(f"a CFG range is LOW HIGH with 0 <= LOW <= HIGH, got {guidance_range}")


class Phase(Enum):
    SHARED = "shared"  # phase 0: the target is the source (its latents copied after every step)
    PLAIN = "plain"  # both prompts as they are
    SELF = "self"  # phase 1: the target's self-attention maps are the source's
    CROSS = "cross"  # phase 2: the target's cross-attention keys are source-aligned, its edited values weighted


def phase_at(step: int, total: int, settings: P2PSettings) -> Phase:
    """The phase of denoising step `step` (0-based) of `total`, compared as the reference does."""
    if step < settings.shared_end * total:
        return Phase.SHARED
    if step < settings.sa_end * total:
        return Phase.SELF
    if step < settings.ca_end * total:
        return Phase.CROSS
    return Phase.PLAIN


# ------------------------------------------------------------------------------------------------ token alignment


@dataclass(frozen=True)
class Alignment:
    """Target token positions (the padded sequence) -> source positions.

    `source_index[p]`: the source position whose embedding supplies target position p's key, or -1 (an inserted
    token, or a source token lost to truncation: the target's own). A replaced word's tokens map onto the replaced
    source word's tokens, spread evenly, as the reference and Prompt-to-Prompt's replacement mapper do.
    `edited`: the target positions of replaced and inserted words, whose values carry the edit weight.
    """

    source_index: tuple[int, ...]
    edited: tuple[int, ...]
    source_edited: tuple[int, ...] = ()  # the source positions of replaced and deleted words


def text_tokens(tokenizer, text: str) -> list[int]:
    """The token ids of `text` without special tokens, truncated to the tokenizer's max length."""
    return tokenizer(text, add_special_tokens=False, truncation=True, max_length=tokenizer.model_max_length).input_ids


def word_tokens(tokenizer, text: str) -> list[list[int]] | None:
    """The token ids of each whitespace-separated word of `text`; None unless they add up to the text's tokens
    (CLIP's BPE pre-tokenises within words, so for CLIP they do)."""
    words = [tokenizer(word, add_special_tokens=False).input_ids for word in text.split()]
    flat = [i for word in words for i in word]
    return words if flat[: tokenizer.model_max_length] == text_tokens(tokenizer, text) else None


def token_pairs(
    source_words: list[list[int]], target_words: list[list[int]]
) -> tuple[list[int], list[bool], list[bool]]:
    """Align words by their tokens (difflib); per target token: its source token index (-1: none) and whether edited;
    per source token: whether edited (replaced or deleted).

    Equal words map token to token; a replaced word's tokens spread over the replaced source tokens
    (`linspace(start, end, n, endpoint=False)`, the reference's rule); inserted tokens map to -1; deleted ones vanish.
    """
    a, b = [tuple(w) for w in source_words], [tuple(w) for w in target_words]
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    s_start = np.cumsum([0] + [len(w) for w in source_words])  # token offset of each source word
    t_start = np.cumsum([0] + [len(w) for w in target_words])
    index, edited, source_edited = [], [], []

    def add(tag: str, s1: int, s2: int, n: int) -> None:
        source_edited.extend([tag != "equal"] * (s2 - s1))
        if tag == "equal":
            index.extend(range(s1, s2))
        elif tag == "replace":
            index.extend(np.linspace(s1, s2, n, endpoint=False).astype(int).tolist())
        else:  # insert (delete adds no target tokens)
            index.extend([-1] * n)
        edited.extend([tag != "equal"] * n)

    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        s1, t1 = int(s_start[i1]), int(t_start[j1])
        if tag != "replace":
            add(tag, s1, int(s_start[i2]), int(t_start[j2]) - t1)
            continue
        # Replaced words, token by token: "circle," -> "circle" edits the comma alone, not the word
        source_tokens, target_tokens = [i for w in a[i1:i2] for i in w], [i for w in b[j1:j2] for i in w]
        tokens = difflib.SequenceMatcher(None, source_tokens, target_tokens, autojunk=False)
        for sub, k1, k2, l1, l2 in tokens.get_opcodes():
            add(sub, s1 + k1, s1 + k2, l2 - l1)
    return index, edited, source_edited


def align_tokens(tokenizer, source: str, target: str) -> Alignment:
    """Map every position of the target's padded token sequence (`tokenizer.model_max_length`) to the source's.

    The leading BOS maps to itself; text tokens as `token_pairs` says; the EOS and padding after the target's last
    token map to the source's at the same offset from the end of its text (clamped to the sequence).
    """
    length = tokenizer.model_max_length
    source_words, target_words = word_tokens(tokenizer, source), word_tokens(tokenizer, target)
    if source_words is None or target_words is None:  # the tokenizer merges across words: align single tokens
        source_words, target_words = ([[i] for i in text_tokens(tokenizer, text)] for text in (source, target))
    index, edited, source_edited = token_pairs(source_words, target_words)
    bos = int(tokenizer("").input_ids[:1] == [tokenizer.bos_token_id])  # 1 for CLIP
    room = length - tokenizer.num_special_tokens_to_add()  # text tokens that survive truncation
    n_source = min(sum(len(w) for w in source_words), room)
    n_target = min(len(index), room)

    source_index = list(range(bos))
    for s in index[:n_target]:
        source_index.append(bos + s if 0 <= s < n_source else -1)
    for offset in range(length - len(source_index)):  # EOS and padding
        source_index.append(min(bos + n_source + offset, length - 1))
    positions = tuple(bos + j for j, e in enumerate(edited[:n_target]) if e)
    source_positions = tuple(bos + i for i, e in enumerate(source_edited[:n_source]) if e)
    return Alignment(tuple(source_index), positions, source_positions)


def edit_embeddings(
    source: torch.Tensor, target: torch.Tensor, alignment: Alignment, edit_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Phase 2's (key, value) embeddings (n, L, C): the target's, with aligned positions' keys from the source and
    the edited positions' values x `edit_weight` (= the values x `edit_weight` when `to_v` has no bias)."""
    index = torch.tensor(alignment.source_index, device=target.device)
    aligned = index >= 0
    key = target.clone()
    key[:, aligned] = source[:, index[aligned]]
    value = target.clone()
    value[:, list(alignment.edited)] *= edit_weight
    return key, value


# ------------------------------------------------------------------------------------------------- local blending


BLEND_MAPS = ("attention", "difference")
DEFAULT_BLEND_THRESHOLD = {"attention": 0.3, "difference": 0.5}  # Prompt-to-Prompt's and DiffEdit's
DEFAULT_BLEND_START = 0.2  # Prompt-to-Prompt's


@dataclass(frozen=True)
class LocalBlend:
    """Local blending: from `start` of the steps on (and at least on the last step), after every step the target's
    latents are set back to the source's outside a mask, so that what the edit does not name stays as it was.

    `maps="attention"`: Prompt-to-Prompt's `LocalBlend` rule and defaults, a mask where the edited words draw
    cross-attention (the source's replaced words or the target's new ones), remade every step. Two differences from
    Prompt-to-Prompt: the maps come from the layers at half the latents' resolution and coarser (its 16x16 of Stable
    Diffusion's 64x64 is a quarter), and in the cross-attention phase the target's map is read with the keys it
    attends with (the source's at aligned positions), where Prompt-to-Prompt reads the target's own.

    `maps="difference"`: DiffEdit's mask (Couairon et al., 2022), for models whose words draw attention everywhere:
    where the target prompt's conditional noise prediction on the source's latents differs from the source prompt's,
    summed over the steps before the first blend (at least the first step) and fixed from then on. Its `start`
    defaults to the sample's shared start where it has one, so the differences are read while both samples are one.
    """

    threshold: float | None = None  # of each frame's peak attention or difference; None: the maps' default
    start: float | None = None  # fraction of the steps before the first blend; None: the maps' default
    maps: str = "attention"  # where the mask comes from: BLEND_MAPS

    def __post_init__(self):
        if self.maps not in BLEND_MAPS:
            raise ValueError(f"local blend `maps` must be one of {', '.join(BLEND_MAPS)}, got {self.maps!r}")
        if self.threshold is None:
            object.__setattr__(self, "threshold", DEFAULT_BLEND_THRESHOLD[self.maps])
        if not 0 <= self.threshold < 1:
            raise ValueError(f"local blend `threshold` must be in [0, 1), got {self.threshold}")
        if self.start is not None and not 0 <= self.start <= 1:
            raise ValueError(f"local blend `start` must be in [0, 1], got {self.start}")

    def first_blend(self, settings: P2PSettings, total: int) -> float:
        """The step index from which on the target is blended (compared as the phases are), of `total` steps."""
        start = self.start
        if start is None:
            shared = self.maps == "difference" and settings.shared_end
            start = settings.shared_end if shared else DEFAULT_BLEND_START
        return min(start * total, total - 1)


def blend_mask(maps: torch.Tensor, threshold: float, size: tuple[int, int]) -> torch.Tensor:
    """(2, f, h, w) attention of the source's and the target's edited words -> a (f, H, W) mask of 0 and 1: each map
    dilated by one cell (3x3 max pool), resized to the latents' `size` (nearest), scaled to a peak of 1 per frame,
    above `threshold`; the source's or the target's (Prompt-to-Prompt's rule)."""
    pooled = F.max_pool2d(maps, 3, stride=1, padding=1)
    resized = F.interpolate(pooled, size=size, mode="nearest")
    return above_peak_share(resized, threshold).any(dim=0).to(maps.dtype)


NOISE_FLOOR = 1e-4  # a prediction difference below this share of the predictions' size is float noise, not an edit


def difference_mask(differences: torch.Tensor, threshold: float, scale: float = 0.0) -> torch.Tensor:
    """(f, h, w) summed noise-prediction differences -> a (f, h, w) mask of 0 and 1: scaled to a peak of 1 per frame,
    above `threshold` (DiffEdit's rule; not dilated: at a toy model's 16x16 latents a cell is a quarter of a shape).
    Cells below NOISE_FLOOR x `scale` (the summed mean size of the predictions compared) never pass: identical prompts
    in one batch may differ in their last bits on some CPUs, and scaled to a peak that noise would fill the mask."""
    above_noise = differences > NOISE_FLOOR * scale
    return (above_peak_share(differences, threshold) & above_noise).to(differences.dtype)


def above_peak_share(maps: torch.Tensor, threshold: float) -> torch.Tensor:
    """Where each (h, w) map, scaled to a peak of 1 per frame, is above `threshold` (both masks' rule)."""
    return maps / maps.amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(maps.dtype).tiny) > threshold


def halved(size: tuple[int, int]) -> tuple[int, int]:
    """A latent grid after one downsampling (a stride-2 convolution with padding 1 rounds up)."""
    return -(-size[0] // 2), -(-size[1] // 2)


def layer_shape(n: int, latent_size: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) of an attention layer with `n` positions in a UNet whose latents are `latent_size`."""
    h, w = latent_size
    while h * w > n and (h, w) != (1, 1):
        h, w = halved((h, w))
    if h * w != n:
        raise ValueError(f"an attention layer of {n} positions is no downsampling of {latent_size[0]}x{latent_size[1]}")
    return h, w


def has_coarse_cross_attention(unet: torch.nn.Module) -> bool:
    """Whether `unet` has a cross-attention below its latents' resolution, where `WordMaps` reads: in the mid block,
    a down block after the first or an up block before the last (diffusers' UNets halve the grid per down block)."""
    last_up = len(getattr(unet, "up_blocks", [])) - 1
    for name, module in unet.named_modules():
        if isinstance(module, Attention) and module.is_cross_attention:
            parts = name.split(".")
            if parts[0] == "mid_block" or (parts[0] == "down_blocks" and int(parts[1]) > 0):
                return True
            if parts[0] == "up_blocks" and int(parts[1]) < last_up:
                return True
    return False


def check_local_blend(unet: torch.nn.Module) -> None:
    if not has_coarse_cross_attention(unet):
        raise ValueError("local blending reads cross-attention below the latents' resolution, and this UNet has none")


class WordMaps:
    """The cross-attention that the edited tokens draw in the two conditional videos, per frame, summed over the
    layers at half the latents' resolution and coarser (finer ones cost the most and P2P reads coarse maps too) and
    over the steps so far."""

    def __init__(self, alignment: Alignment, latent_size: tuple[int, int]):
        self.tokens = (list(alignment.source_edited), list(alignment.edited))
        self.latent_size = latent_size
        self.size = halved(latent_size)
        self.total: torch.Tensor | None = None  # (2, f, h, w)

    def add(self, query: torch.Tensor, key: torch.Tensor) -> None:
        """One cross-attention's (4f, heads, n, d) queries and (4f, heads, L, d) keys, video-major."""
        n = query.shape[2]
        if n > self.size[0] * self.size[1]:
            return
        q = query.unflatten(0, (VIDEOS, -1))[2:].float()  # (2, f, heads, n, d): source_cond, target_cond
        k = key.unflatten(0, (VIDEOS, -1))[2:].float()
        probs = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1).mean(dim=2)  # (2, f, n, L)
        words = torch.stack([probs[0][..., self.tokens[0]].sum(-1), probs[1][..., self.tokens[1]].sum(-1)])
        maps = F.interpolate(words.unflatten(-1, layer_shape(n, self.latent_size)), size=self.size, mode="bilinear")
        self.total = maps if self.total is None else self.total + maps

    def mask(self, threshold: float) -> torch.Tensor:
        if self.total is None:
            raise RuntimeError("no cross-attention was recorded at or below half the latents' resolution")
        return blend_mask(self.total, threshold, self.latent_size)


# ---------------------------------------------------------------------------------------------- attention processors


@dataclass
class P2PState:
    """What every processor reads: the phase of the current step, the attention kernel (q, k, v) -> out, and where
    cross-attention maps are recorded for local blending (if anywhere)."""

    phase: Phase = Phase.PLAIN
    attention: Callable = F.scaled_dot_product_attention  # benchmarks/synth.py swaps in materialised maps
    word_maps: WordMaps | None = None


def source_map_inputs(query: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Give the target videos the source's queries and keys (per guidance half): (4k, ...) each, video-major."""
    take = torch.tensor([0, 0, 2, 2], device=query.device)  # target_uncond <- source_uncond, target_cond <- source_cond
    q = query.unflatten(0, (VIDEOS, -1))[take].flatten(0, 1)  # (4k, heads, n, d)
    k = key.unflatten(0, (VIDEOS, -1))[take].flatten(0, 1)
    return q, k


class P2PAttnProcessor:
    r"""diffusers' `AttnProcessor2_0`, plus the two Prompt-to-Prompt edits, switched by a shared `P2PState`.

    Self-attention is told apart from cross-attention by `encoder_hidden_states is None` (diffusers' own rule: the
    temporal layers' second attention is a self-attention too). The batch must be 4 videos, video-major: spatial
    layers see (4*f) images and temporal layers (4*h*w) sequences, so `chunk(4)` splits the videos. In phase 2 every
    cross-attention receives [keys ; values] concatenated along the tokens (2L), which the UNet's own per-frame
    repetition leaves intact, and splits it in half.
    """

    def __init__(self, state: P2PState):
        self.state = state

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if attention_mask is not None:
            raise NotImplementedError("P2PAttnProcessor supports no attention mask")
        phase = self.state.phase
        is_self = encoder_hidden_states is None
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)  # (b, h*w, c)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if is_self:
            key_states = value_states = hidden_states
        else:
            key_states = value_states = encoder_hidden_states
            if phase is Phase.CROSS:
                key_states, value_states = encoder_hidden_states.chunk(2, dim=1)  # (b, 2L, C) -> 2 x (b, L, C)
            if attn.norm_cross:
                key_states = attn.norm_encoder_hidden_states(key_states)
                value_states = attn.norm_encoder_hidden_states(value_states)
        key, value = attn.to_k(key_states), attn.to_v(value_states)

        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (b, heads, n, d)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if is_self and phase is Phase.SELF:
            if batch % VIDEOS:
                raise ValueError(f"self-attention injection needs a batch of {VIDEOS} videos, got {batch} rows")
            query, key = source_map_inputs(query, key)
        if not is_self and self.state.word_maps is not None:
            self.state.word_maps.add(query, key)

        # SDPA by default, at its scale 1/sqrt(d) as in AttnProcessor2_0 (equal to attn.scale in these UNets)
        hidden_states = self.state.attention(query, key, value)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))  # linear, dropout
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)  # (b, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextmanager
def p2p_attention(unet: torch.nn.Module, state: P2PState) -> Iterator[None]:
    """Install a `P2PAttnProcessor` on every attention module of `unet`; restore the original processors after."""
    original = unet.attn_processors
    unet.set_attn_processor(P2PAttnProcessor(state))
    try:
        yield
    finally:
        unet.set_attn_processor(original)


def check_value_weighting(unet: torch.nn.Module) -> None:
    """Weighting the embedding weights the values only if every cross-attention's `to_v` is linear without bias and
    without a norm in front (true of the SD, ModelScope and AnimateDiff UNets)."""
    for name, module in unet.named_modules():
        cross = isinstance(module, Attention) and module.is_cross_attention
        if cross and (module.to_v.bias is not None or module.norm_cross):
            raise ValueError(f"`edit_weight` != 1 needs bias-free, unnormalised cross-attention values; {name} is not")


# -------------------------------------------------------------------------------------------------------- sampler


@dataclass
class PairOutput:
    """`source`, `target`: frames (f, h, w, 3) uint8 for "np", latents (c, f, h, w) for "latent"; `blend_mask`: the
    last local-blend mask (f, h, w) over the latents, 1 where the target may differ (None without local blending)."""

    source: np.ndarray | torch.Tensor
    target: np.ndarray | torch.Tensor
    blend_mask: torch.Tensor | None = None


def prompt_difference(predictions: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(2, c, f, h, w) noise predictions of the source and the target prompt on the same latents -> how far apart they
    are, over the channels (f, h, w), and the predictions' mean size (what a difference is float noise against)."""
    return (predictions[1] - predictions[0]).abs().mean(dim=0), float(predictions.abs().mean())


def predict_plainly(pipe: TextToVideoPipeline, state: P2PState, sample: torch.Tensor, t, embeds: torch.Tensor):
    """The UNet on `sample` with `embeds`, with no attention edit (the P2P processors stay installed)."""
    phase, state.phase = state.phase, Phase.PLAIN
    try:
        return pipe.model_output(sample, t, embeds)
    finally:
        state.phase = phase


def check_kind_edit_only(kind_edit_only: bool, shared_end: float) -> None:
    if kind_edit_only and not shared_end:
        raise ValueError("kind_edit_only guides the kept shapes while the two videos share their path: it needs a "
                         "shared start (shared_end above 0)")  # fmt: skip


@torch.no_grad()
def generate_pair(
    pipe: TextToVideoPipeline,
    source_prompt: str,
    target_prompt: str,
    settings: P2PSettings,
    *,
    negative_prompt: str = "",
    num_frames: int = DEFAULT_FRAMES,
    height: int | None = None,
    width: int | None = None,
    num_inference_steps: int = DEFAULT_STEPS,
    generator: torch.Generator | None = None,
    latents: torch.Tensor | None = None,
    output_type: str = "np",
    callback: Callable[[int, int], None] | None = None,
    attention: Callable | None = None,
    local_blend: LocalBlend | None = None,
    kind_guidance: float = 0.0,
    kind_edit_only: bool = False,
) -> PairOutput:
    """A source video of `source_prompt` and its Prompt-to-Prompt edit for `target_prompt`, from one initial noise.

    `latents` (1, c, f, h, w) fixes that noise. `callback(step, total)` runs after every step. The scheduler is used
    as it is; a stochastic one draws independent step noise per video (the reference's DDIM draws none).
    `attention(q, k, v)` replaces SDPA as the attention kernel (a benchmark's materialised maps). `local_blend`
    keeps the target the source's outside the edited words' attention or DiffEdit's mask (`LocalBlend`).
    `kind_guidance` guides each video towards the shape kinds its own prompt names (the pipeline's kind classifier);
    with `kind_edit_only`, only while the two share their path (`shared_end`), and after it only the shapes the edit
    changes, in the target, so that each kept shape follows the same dynamics in both videos.
    """
    # 1. Check inputs
    height = height or pipe.default_resolution
    width = width or pipe.default_resolution
    pipe.check_inputs(
        [source_prompt, target_prompt], num_frames, height, width, num_inference_steps, settings.guidance_scale,
        output_type,
    )  # fmt: skip
    pipe.check_kind_guidance(kind_guidance)
    check_kind_edit_only(kind_edit_only, settings.shared_end)
    if settings.edit_weight != 1:
        check_value_weighting(pipe.unet)
    if local_blend is not None and local_blend.maps == "attention":
        check_local_blend(pipe.unet)

    # 2. Encode the prompts; phase 2's keys and values; the four videos' embeddings (4, L, C) and (4, 2L, C)
    negative, source, target = pipe.encode_prompt([negative_prompt, source_prompt, target_prompt]).split(1)
    alignment = align_tokens(pipe.tokenizer, source_prompt, target_prompt)
    key, value = edit_embeddings(source, target, alignment, settings.edit_weight)
    plain_embeds = torch.cat([negative, negative, source, target])  # (4, L, C)
    edit_keys = torch.cat([negative, negative, source, key])
    edit_values = torch.cat([negative, negative, source, value])
    cross_embeds = torch.cat([edit_keys, edit_values], dim=1)  # (4, 2L, C): the processor splits it in half
    # What kind guidance asks of the videos while they share their start, and of each after it.
    shared_kinds = [pipe.kind_targets(source_prompt)]
    if kind_edit_only:
        kinds = [[], pipe.kind_targets(target_prompt, edited_from=source_prompt)]
    else:
        kinds = [pipe.kind_targets(source_prompt), pipe.kind_targets(target_prompt)]

    # 3. Prepare the timesteps and the shared initial noise
    pipe.scheduler.set_timesteps(num_inference_steps, device=pipe._execution_device)
    timesteps = pipe.scheduler.timesteps
    noise = pipe.prepare_latents(1, num_frames, height, width, generator, latents)
    latents = torch.cat([noise, noise])  # (2, c, f, h, w): source, target

    # 4. Denoising loop, with the Prompt-to-Prompt processors installed
    maps = local_blend.maps if local_blend is not None else None
    word_maps = WordMaps(alignment, tuple(noise.shape[-2:])) if maps == "attention" else None
    differences = noise.new_zeros(noise.shape[2:], dtype=torch.float32) if maps == "difference" else None  # (f, h, w)
    scale = 0.0  # the summed size of the predictions read
    blend_from = local_blend.first_blend(settings, len(timesteps)) if local_blend is not None else None
    shared_embeds = torch.cat([negative, source])  # phase 0 runs the source's half, plus the target prompt to read
    reading_embeds = torch.cat([negative, source, target])
    state = P2PState(attention=attention or F.scaled_dot_product_attention, word_maps=word_maps)
    mask = None
    with p2p_attention(pipe.unet, state):
        for i, t in enumerate(pipe.progress_bar(timesteps)):
            state.phase = phase_at(i, len(timesteps), settings)
            x_in = pipe.scheduler.scale_model_input(latents, t)
            reading = differences is not None and i < max(blend_from, 1)  # DiffEdit: what the target prompt changes
            if state.phase is Phase.SHARED and word_maps is None:  # the target is the source: run its half only
                embeds = reading_embeds if reading else shared_embeds
                out = pipe.model_output(torch.cat([x_in[:1]] * len(embeds)), t, embeds)
                if reading:
                    difference, size = prompt_difference(out[1:])
                    differences, scale = differences + difference, scale + size
                uncond, cond = out[:1].expand_as(latents), out[1:2].expand_as(latents)  # (2, c, f, h, w): the same
            else:
                embeds = cross_embeds if state.phase is Phase.CROSS else plain_embeds
                uncond, cond = pipe.model_output(torch.cat([x_in, x_in]), t, embeds).chunk(2)  # (2, c, f, h, w) each
                if reading:
                    both = predict_plainly(pipe, state, torch.cat([x_in[:1], x_in[:1]]), t, plain_embeds[2:])
                    difference, size = prompt_difference(both)
                    differences, scale = differences + difference, scale + size
            guided = uncond + settings.guidance_scale * (cond - uncond)
            if state.phase is Phase.SHARED:  # both halves are the source's
                guided = pipe.guided_x0(guided[:1], shared_kinds, kind_guidance).expand_as(latents)
            else:
                guided = pipe.guided_x0(guided, kinds, kind_guidance)
            latents = pipe.scheduler.step(guided, t, latents).prev_sample
            if state.phase is Phase.SHARED:
                latents[1] = latents[0]
            if local_blend is not None and i >= blend_from:
                if word_maps is not None:
                    mask = word_maps.mask(local_blend.threshold)  # (f, h, w) of 0 and 1, over the channels
                elif mask is None:
                    mask = difference_mask(differences, local_blend.threshold, scale)
                latents[1] = torch.where(mask.bool(), latents[1], latents[0])  # a choice, exact: no arithmetic
            if callback is not None:
                callback(i + 1, len(timesteps))

    # 5. Decode
    out = latents if output_type == "latent" else pipe.decode_latents(latents)
    pipe.maybe_free_model_hooks()
    return PairOutput(source=out[0], target=out[1], blend_mask=mask)
