"""Tune-A-Video's video UNet: a Stable Diffusion 1.x UNet with frames folded into the batch, as the official code
(showlab/Tune-A-Video, `tuneavideo/models/`) inflates it.

- Spatial self-attention (`attn1`) is sparse-causal: frame i's queries attend to the keys and values of frame 0 and
  frame i-1 (frame 0 to frame 0 twice, as the official code concatenates; duplicated keys change nothing).
- After each transformer block's feed-forward, a temporal self-attention over the frames at each spatial position:
  `h = h + attn_temp(norm_temp(h))`, no positional encoding, `attn_temp.to_out[0]` zeroed.
- Resnet GroupNorms and `conv_norm_out` take their statistics over all frames of a clip (the official 3-D resnets see
  (b, c, f, h, w) tensors); the transformers' input GroupNorm stays per frame.

Parameter names are the official ones (`...transformer_blocks.N.attn_temp.to_q.weight`, `...norm_temp.weight`), so a
Tune-A-Video checkpoint's state dict loads strictly into `TuneAVideoUNet`.
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F
from diffusers import ModelMixin, UNet2DConditionModel  # noqa: F401  ModelMixin: looked up by name when loading
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from insv2v.models.unet import ClipGroupNorm, _FrameCount

# Official train_tuneavideo.py unfreezes every module whose name ends in one of these (all of attn_temp's submodules
# with it); norm_temp's name ends in "norm_temp", so it stays frozen there, and here.
TRAINABLE_SUFFIXES = ("attn1.to_q", "attn2.to_q", "attn_temp")


# ---------------------------------------------------------------- attention: the math as small functions


def sparse_causal_context(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Per-frame tokens (b*f, d, c) -> for each frame i the tokens of frames 0 and max(i-1, 0): (b*f, 2d, c)."""
    clip = x.unflatten(0, (-1, frames))  # (b, f, d, c)
    former = (torch.arange(frames, device=x.device) - 1).clamp(min=0)
    first = torch.zeros(frames, dtype=torch.long, device=x.device)
    return torch.cat([clip[:, first], clip[:, former]], dim=2).flatten(0, 1)  # (b*f, 2d, c)


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """SDPA of (n, lq, c) queries over (n, lk, c) keys/values split into `heads` heads: (n, lq, c)."""
    n, _, c = q.shape
    q, k, v = (x.unflatten(-1, (heads, c // heads)).transpose(1, 2) for x in (q, k, v))  # (n, heads, l, c/heads)
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    return out.transpose(1, 2).reshape(n, -1, c)  # (n, lq, c)


class SparseCausalAttnProcessor:
    """`attn1` of a Tune-A-Video transformer block: each frame's queries over frame 0's and the previous frame's
    keys and values (official `SparseCausalAttention`), on `F.scaled_dot_product_attention`."""

    def __init__(self, frames: _FrameCount):
        self.frames = frames

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs) -> torch.Tensor:  # fmt: skip
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("sparse-causal attention is self-attention without a mask; got a context or a mask")
        f = self.frames.value
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)  # (b*f, d, c)
        key = sparse_causal_context(attn.to_k(hidden_states), f)  # (b*f, 2d, c)
        value = sparse_causal_context(attn.to_v(hidden_states), f)
        out = multi_head_attention(query, key, value, attn.heads, attn.scale).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))  # projection, dropout


def temporal_attention(block: BasicTransformerBlock, hidden_states: torch.Tensor, frames: int) -> torch.Tensor:
    """The official block's last step: h + attn_temp(norm_temp(h)) over the frames at each spatial position."""
    d = hidden_states.shape[1]
    x = hidden_states.unflatten(0, (-1, frames)).transpose(1, 2).flatten(0, 1)  # (b*d, f, c)
    x = x + block.attn_temp(block.norm_temp(x))
    return x.unflatten(0, (-1, d)).transpose(1, 2).flatten(0, 1)  # (b*f, d, c)


def _temporal_attention_hook(block, args, output, *, frames: _FrameCount):
    """Forward hook running `temporal_attention` after a BasicTransformerBlock's own forward (inside gradient
    checkpointing, where diffusers calls the block)."""
    return temporal_attention(block, output, frames.value)


def add_temporal_attention(block: BasicTransformerBlock, frames: _FrameCount) -> None:
    """Give `block` the official `attn_temp` (heads as attn1, zeroed output) and `norm_temp`, run after its forward.

    The official code zeroes `attn_temp.to_out[0].weight` only, leaving a random bias, so its fresh model is the 2-D
    model plus a constant per block; the bias is zeroed here too, so that a fresh model equals the 2-D one.
    """
    attn1 = block.attn1
    dim = attn1.to_q.in_features
    block.attn_temp = Attention(
        query_dim=dim,
        heads=attn1.heads,
        dim_head=attn1.inner_dim // attn1.heads,
        dropout=attn1.dropout,
        bias=attn1.to_q.bias is not None,
        upcast_attention=attn1.upcast_attention,
    )
    torch.nn.init.zeros_(block.attn_temp.to_out[0].weight)
    torch.nn.init.zeros_(block.attn_temp.to_out[0].bias)
    block.norm_temp = torch.nn.LayerNorm(dim)
    block.register_forward_hook(functools.partial(_temporal_attention_hook, frames=frames))


# ---------------------------------------------------------------- the model


def _signature_of(parent_init):
    """Give a subclass's `__init__(*args, **kwargs)` the parent's signature, which diffusers' config machinery reads to
    pass every saved setting back on `from_pretrained`."""

    def decorate(init):
        init.__signature__ = inspect.signature(parent_init)
        return init

    return decorate


def _processor(name: str, frames: _FrameCount):
    """Sparse-causal for spatial self-attention (attn1), plain SDPA for cross (attn2) and temporal attention."""
    return SparseCausalAttnProcessor(frames) if name.endswith("attn1.processor") else AttnProcessor2_0()


class TuneAVideoUNet(UNet2DConditionModel):
    r"""Tune-A-Video's video UNet: `UNet2DConditionModel` with frames folded into the batch (module docstring).

    `forward` takes `sample` (b, c, f, h, w) and `encoder_hidden_states` (b, n, d) and returns (b, c, f, h, w). The
    config is UNet2DConditionModel's, unchanged; the video parts are built from it.
    """

    @_signature_of(UNet2DConditionModel.__init__)
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._frames = _FrameCount()  # frames per clip of the batch now running, shared by the video parts
        for module in list(self.modules()):
            if isinstance(module, ResnetBlock2D):
                module.norm1 = ClipGroupNorm(module.norm1, self._frames)
                module.norm2 = ClipGroupNorm(module.norm2, self._frames)
            elif isinstance(module, BasicTransformerBlock):
                add_temporal_attention(module, self._frames)
        if self.conv_norm_out is not None:
            self.conv_norm_out = ClipGroupNorm(self.conv_norm_out, self._frames)
        self.set_attn_processor({name: _processor(name, self._frames) for name in self.attn_processors})

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, *args,
                return_dict: bool = True, **kwargs):  # fmt: skip
        """As `UNet2DConditionModel.forward` on clips: `sample` (b, c, f, h, w), one text (b, n, d) per clip,
        `timestep` a number or one per clip."""
        b, _, f = sample.shape[:3]
        self._frames.value = f
        frames = sample.transpose(1, 2).flatten(0, 1)  # (b*f, c, h, w)
        text = encoder_hidden_states.repeat_interleave(f, dim=0)  # (b*f, n, d)
        if torch.is_tensor(timestep) and timestep.ndim == 1 and len(timestep) == b:
            timestep = timestep.repeat_interleave(f)  # (b*f,)
        out = super().forward(frames, timestep, text, *args, **kwargs).sample  # (b*f, c, h, w)
        out = out.unflatten(0, (b, f)).transpose(1, 2)  # (b, c, f, h, w)
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)


def inflate_tav(unet2d: UNet2DConditionModel, seed: int = 0) -> TuneAVideoUNet:
    """A 2-D Stable Diffusion UNet -> TuneAVideoUNet with its weights (strict load) and fresh temporal attention,
    initialised from `seed` (the official code leaves it unseeded), so that tuning a video is reproducible."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = TuneAVideoUNet.from_config(unet2d.config)
    state = unet2d.state_dict()
    state.update({k: v for k, v in unet.state_dict().items() if "_temp." in k})  # as official `from_pretrained_2d`
    unet.load_state_dict(state, strict=True)
    return unet.to(unet2d.device) if unet2d.dtype == unet.dtype else unet.to(unet2d.device, unet2d.dtype)


# ---------------------------------------------------------------- what one-shot tuning trains


def trainable_parameters(unet: TuneAVideoUNet) -> dict[str, torch.nn.Parameter]:
    """The parameters official Tune-A-Video tunes: those of modules whose names end in TRAINABLE_SUFFIXES."""
    modules = [name for name, _ in unet.named_modules() if name.endswith(TRAINABLE_SUFFIXES)]
    return {
        name: param
        for name, param in unet.named_parameters()
        if any(name.startswith(module + ".") for module in modules)
    }


def set_trainable(unet: TuneAVideoUNet) -> dict[str, torch.nn.Parameter]:
    """Freeze `unet` except its trainable parameters, which it returns."""
    unet.requires_grad_(False)
    params = trainable_parameters(unet)
    for param in params.values():
        param.requires_grad_(True)
    return params
