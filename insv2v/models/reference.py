"""Convert an InsV2V checkpoint in the reference code's format to a diffusers pipeline folder.

The reference implementation (github amazon-science/instruct-video-to-video) saves one state dict:

    unet.*                    its UNet3DConditionModel: diffusers 2-D names plus AnimateDiff motion modules
    vae.*                     the SD KL-f8 autoencoder in the LDM (CompVis) layout
    text_model.transformer.*  a transformers CLIPTextModel (openai/clip-vit-large-patch14), saved by transformers 4:
                              text_model.transformer.text_model.{embeddings,encoder,final_layer_norm}.*

often behind DeepSpeed's `_forward_module.` prefix. `convert_reference_checkpoint` maps each part to its diffusers
or transformers class, checks every key and shape, and sets the UNet's `norm_mode="reference"` (see
insv2v.models.unet). The text encoder may also come in transformers 5's flattened names (no inner `text_model.`);
either layout is mapped to the installed CLIPTextModel's. Tensors are read without unpickling code (safetensors, or
`torch.load(weights_only=True)`). `to_reference_state_dict` is the inverse, for parity checks and benchmarks
against the reference code.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler
from transformers import CLIPTextConfig, CLIPTextModel

from insv2v.models.unet import InsV2VUNetMotionModel

# The reference model's components as diffusers/transformers configs (configs/instruct_v2v_inference.yaml there).
REFERENCE_UNET_CONFIG = {
    "sample_size": 64,
    "in_channels": 8,  # noisy latent + source-frame latent
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlockMotion",) * 3 + ("DownBlockMotion",),
    "up_block_types": ("UpBlockMotion",) + ("CrossAttnUpBlockMotion",) * 3,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "num_attention_heads": 8,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "motion_num_attention_heads": 8,
    "motion_max_seq_length": 32,
    "use_motion_mid_block": False,
    "norm_mode": "reference",
}
REFERENCE_VAE_CONFIG = {  # SD 1.x KL-f8
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
REFERENCE_TEXT_ENCODER_CONFIG = {  # openai/clip-vit-large-patch14, text tower
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "projection_dim": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 1,
}
PREFIXES = {"unet": "unet.", "vae": "vae.", "text_encoder": "text_model.transformer."}
DEEPSPEED_PREFIX = "_forward_module."
IGNORED_KEYS = re.compile(r".*embeddings\.position_ids$")  # a buffer older transformers saved; rebuilt on load
# CLIPTextModel key namings: layout -> the prefix before CLIPTextTransformer's submodules (TEXT_ENCODER_ROOTS).
TEXT_ENCODER_LAYOUTS = {
    "transformers-4": "text_model.",  # transformers 4, as the reference saves it
    "flattened": "",  # transformers 5
}
REFERENCE_TEXT_ENCODER_LAYOUT = "transformers-4"
TEXT_ENCODER_ROOTS = ("embeddings.", "encoder.", "final_layer_norm.")

logger = logging.getLogger(__name__)


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message says why and what to do."""


def reference_scheduler() -> DDPMScheduler:
    """The reference sampler's scheduler: DDPM, scaled-linear betas 0.00085-0.012 over 1000 steps."""
    return DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False
    )


# ------------------------------------------------------------------------------------------------ reading tensors


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors, .pth, .ckpt, .pt or .bin file, with no code unpickled.

    Unwraps Lightning's "state_dict" and DeepSpeed's "module" entries and strips `_forward_module.` prefixes.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint {path} does not exist or is not a file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(path)
        except Exception as err:  # safetensors raises its own SafetensorError for damaged files
            raise ConversionError(f"cannot read {path}: {err}") from err
    else:
        try:
            state = _torch_load(path)
        except pickle.UnpicklingError as err:
            raise ConversionError(
                f"{path} cannot be read as tensors alone: it holds pickled Python objects besides tensors (loading "
                "them would run code from the file), or it is not a PyTorch checkpoint. Re-save only its state dict "
                f"(torch.save(state_dict, ...)) or convert it to .safetensors. {_unpickler_reason(err)}"
            ) from err
        except (RuntimeError, EOFError, OSError) as err:
            raise ConversionError(f"cannot read {path}: {str(err) or type(err).__name__} (truncated?)") from err
    for wrapper in ("state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return {k.removeprefix(DEEPSPEED_PREFIX): v for k, v in state.items()}


def _unpickler_reason(err: Exception) -> str:
    """The line of torch's weights-only error that names what was refused, e.g. "Unsupported global: ..."."""
    for line in str(err).splitlines():
        reason = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if reason.startswith("Unsupported"):
            return f"({reason.split(' was not')[0]})"
    return ""


def _torch_load(path: Path):
    """`torch.load` of tensors only, memory-mapped when the file format allows it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format


def split_reference_state_dict(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{"unet": ..., "vae": ..., "text_encoder": ...} with the prefixes removed; refuses other architectures."""
    parts = {name: {} for name in PREFIXES}
    unknown = []
    for key, value in state.items():
        for name, prefix in PREFIXES.items():
            if key.startswith(prefix):
                parts[name][key[len(prefix) :]] = value
                break
        else:
            unknown.append(key)
    if not parts["unet"]:
        hint = ""
        if any(k.startswith("model.diffusion_model.") for k in state):
            hint = " It looks like a Stable Diffusion / LDM checkpoint (keys 'model.diffusion_model.*')."
        elif any(k.startswith(("down_blocks.", "conv_in.")) for k in state):
            hint = " It looks like a bare diffusers UNet state dict."
        raise ConversionError(
            f"not an InsV2V reference checkpoint: no 'unet.*' keys among its {len(state)} tensors.{hint}"
        )
    if not any("motion_modules" in k for k in parts["unet"]):
        raise ConversionError(
            "not an InsV2V video checkpoint: its UNet has no motion modules ('unet.*motion_modules*'); "
            "an image (InstructPix2Pix) UNet can be inflated with --model compose:... instead"
        )
    missing = [PREFIXES[name] + "*" for name, part in parts.items() if not part]
    if missing or unknown:
        raise ConversionError(
            "checkpoint layout differs from the reference's"
            + (f"; missing parts: {', '.join(missing)}" if missing else "")
            + (f"; unexpected keys ({len(unknown)}): {_examples(unknown)}" if unknown else "")
        )
    return parts


# ------------------------------------------------------------------------------------------------ key mappings

# Each mapping is one table of (reference name, diffusers name) templates, read in either direction. A template
# matches part of a key; {p} stands for encoder|decoder, {n} and {m} for numbers, {q} for one of q, k, v.
# Rules apply in order forward and in reverse order backward, so a later rule may rewrite an earlier one's output.
_MOTION_NAMES = [  # reference motion module <-> diffusers AnimateDiffTransformer3D
    ("motion_modules.{n}.temporal_transformer.", "motion_modules.{n}."),
    ("transformer_blocks.{n}.attention_blocks.0.pos_encoder.", "transformer_blocks.{n}.pos_embed."),
    ("transformer_blocks.{n}.attention_blocks.0.", "transformer_blocks.{n}.attn1."),
    ("transformer_blocks.{n}.attention_blocks.1.", "transformer_blocks.{n}.attn2."),
    ("transformer_blocks.{n}.norms.0.", "transformer_blocks.{n}.norm1."),
    ("transformer_blocks.{n}.norms.1.", "transformer_blocks.{n}.norm2."),
    ("transformer_blocks.{n}.ff_norm.", "transformer_blocks.{n}.norm3."),
]
_PLACEHOLDERS = {"p": "encoder|decoder", "n": r"\d+", "m": r"\d+", "q": "q|k|v"}


def _pattern(template: str) -> str:
    parts = re.split(r"\{(\w)\}", template)  # literal, placeholder, literal, ...
    return "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>{_PLACEHOLDERS[part]})"
                   for i, part in enumerate(parts))  # fmt: skip


def _rename(names: list[tuple[str, str]], key: str, backward: bool = False) -> str:
    for ref, ours in reversed(names) if backward else names:
        source, target = (ours, ref) if backward else (ref, ours)
        key = re.sub(_pattern(source), re.sub(r"\{(\w)\}", r"\\g<\1>", target), key)
    return key


def unet_from_reference(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reference UNet3DConditionModel keys -> UNetMotionModel keys. 2-D layers share diffusers names already.

    The reference keeps a positional-encoding table per temporal attention, diffusers one per transformer block:
    the second table must equal the first and is dropped.
    """
    out = {}
    for key, value in state.items():
        if "motion_modules" not in key:
            out[key] = value
        elif key.endswith("attention_blocks.1.pos_encoder.pe"):
            first = state.get(key.replace("attention_blocks.1.", "attention_blocks.0."))
            if first is None or not torch.equal(first, value):
                raise ConversionError(f"{key} differs from the first attention's table; diffusers shares one")
        else:
            out[_rename(_MOTION_NAMES, key)] = value
    return out


def unet_to_reference(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `unet_from_reference`."""
    out = {}
    for key, value in state.items():
        if "motion_modules" not in key:
            out[key] = value
            continue
        new = _rename(_MOTION_NAMES, key, backward=True)
        out[new] = value
        if new.endswith("attention_blocks.0.pos_encoder.pe"):
            out[new.replace("attention_blocks.0.", "attention_blocks.1.")] = value
    return out


def _vae_names(num_blocks: int) -> list[tuple[str, str]]:
    """LDM autoencoder <-> diffusers AutoencoderKL names; the decoder's LDM `up` list runs in reverse."""
    names = [
        ("{p}.norm_out.", "{p}.conv_norm_out."),
        ("{p}.mid.block_1.", "{p}.mid_block.resnets.0."),
        ("{p}.mid.block_2.", "{p}.mid_block.resnets.1."),
        ("{p}.mid.attn_1.norm.", "{p}.mid_block.attentions.0.group_norm."),
        ("{p}.mid.attn_1.{q}.", "{p}.mid_block.attentions.0.to_{q}."),
        ("{p}.mid.attn_1.proj_out.", "{p}.mid_block.attentions.0.to_out.0."),
        ("encoder.down.{n}.block.{m}.", "encoder.down_blocks.{n}.resnets.{m}."),
        ("encoder.down.{n}.downsample.", "encoder.down_blocks.{n}.downsamplers.0."),
        (".nin_shortcut.", ".conv_shortcut."),
    ]
    for i in range(num_blocks):
        ldm = num_blocks - 1 - i
        names.append((f"decoder.up.{ldm}.block.{{m}}.", f"decoder.up_blocks.{i}.resnets.{{m}}."))
        names.append((f"decoder.up.{ldm}.upsample.", f"decoder.up_blocks.{i}.upsamplers.0."))
    return names


def _is_attention_weight(key: str) -> bool:
    return ".mid.attn_1." in key or ".mid_block.attentions." in key


def vae_from_ldm(state: dict[str, torch.Tensor], num_blocks: int) -> dict[str, torch.Tensor]:
    """LDM autoencoder -> diffusers AutoencoderKL; mid-block attention 1x1 convs become linear layers."""
    out = {}
    for key, value in state.items():
        new = _rename(_vae_names(num_blocks), key)
        if _is_attention_weight(new) and new.endswith("weight") and value.ndim == 4:
            value = value[:, :, 0, 0]  # (c, c, 1, 1) conv -> (c, c) linear
        out[new] = value
    return out


def vae_to_ldm(state: dict[str, torch.Tensor], num_blocks: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        new = _rename(_vae_names(num_blocks), key, backward=True)
        if _is_attention_weight(new) and new.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[new] = value
    return out


def _text_key_layout(key: str) -> str | None:
    """The layout (a TEXT_ENCODER_LAYOUTS name) whose naming `key` follows, or None."""
    for layout, inner in TEXT_ENCODER_LAYOUTS.items():
        if key.startswith(inner) and key[len(inner) :].startswith(TEXT_ENCODER_ROOTS):
            return layout
    return None


def text_encoder_layout(keys, prefix: str = "") -> str:
    """The CLIPTextModel naming all `keys` follow ("transformers-4" or "flattened"); `prefix` is for messages."""
    found = {}
    for key in keys:
        found.setdefault(_text_key_layout(key), []).append(prefix + key)
    if not found:
        raise ConversionError(f"the checkpoint's text encoder ({prefix}*) has no keys")
    if None in found:
        raise ConversionError(
            f"the checkpoint's text encoder is not a CLIPTextModel in a known layout; unexpected keys "
            f"({len(found[None])}): {_examples(found[None])}. Expected {prefix}text_model.{{embeddings,encoder,"
            f"final_layer_norm}}.* (transformers 4, as the reference saves it) or {prefix}{{embeddings,encoder,"
            "final_layer_norm}.* (transformers 5)"
        )
    if len(found) > 1:
        raise ConversionError(
            "the checkpoint's text encoder mixes CLIPTextModel layouts; "
            + "; ".join(f"{layout} keys ({len(found[layout])}): {_examples(found[layout], 3)}" for layout in found)
            + ". Re-save it with one transformers version"
        )
    return next(iter(found))


def _relayout(state: dict[str, torch.Tensor], source: str, target: str) -> dict[str, torch.Tensor]:
    """Rename CLIPTextModel keys from one TEXT_ENCODER_LAYOUTS naming to another."""
    old, new = TEXT_ENCODER_LAYOUTS[source], TEXT_ENCODER_LAYOUTS[target]
    return {new + k[len(old) :]: v for k, v in state.items()}


def text_encoder_from_reference(state: dict[str, torch.Tensor], target: str) -> dict[str, torch.Tensor]:
    """CLIPTextModel keys in either layout -> `target`'s; the `position_ids` buffer older transformers saved goes."""
    source = text_encoder_layout(state, PREFIXES["text_encoder"])
    return _relayout({k: v for k, v in state.items() if not IGNORED_KEYS.match(k)}, source, target)


def text_encoder_to_reference(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPTextModel keys in either layout -> the reference's (transformers 4 names and its `position_ids`)."""
    out = _relayout(state, text_encoder_layout(state), REFERENCE_TEXT_ENCODER_LAYOUT)
    embeddings = TEXT_ENCODER_LAYOUTS[REFERENCE_TEXT_ENCODER_LAYOUT] + "embeddings."
    positions = out[embeddings + "position_embedding.weight"].shape[0]
    out.setdefault(embeddings + "position_ids", torch.arange(positions).unsqueeze(0))
    return out


def to_reference_state_dict(unet, vae, text_encoder) -> dict[str, torch.Tensor]:
    """The reference checkpoint layout of a pipeline's components (the inverse of the conversion)."""
    state = {}
    unet_state = unet_to_reference(unet.state_dict())
    vae_state = vae_to_ldm(vae.state_dict(), len(vae.config.block_out_channels))
    text_state = text_encoder_to_reference(text_encoder.state_dict())
    for name, part in [("unet", unet_state), ("vae", vae_state), ("text_encoder", text_state)]:
        state.update({PREFIXES[name] + k: v for k, v in part.items()})
    return state


# ------------------------------------------------------------------------------------------------ conversion


def _examples(keys, n: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def _load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], part: str, dtype: torch.dtype) -> None:
    """Load every parameter and persistent buffer of `model` from `state`, or say precisely what does not fit."""
    expected = model.state_dict()
    missing = expected.keys() - state.keys()
    unexpected = state.keys() - expected.keys()
    mismatched = [
        f"{k} {tuple(state[k].shape)} (model: {tuple(expected[k].shape)})"
        for k in sorted(expected.keys() & state.keys())
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        option = {"unet": "--unet-config", "vae": "--vae-config", "text_encoder": "--text-encoder-config"}[part]
        raise ConversionError(
            f"the checkpoint's {part} does not match the {part} config"
            + (f"; missing keys ({len(missing)}): {_examples(missing)}" if missing else "")
            + (f"; unexpected keys ({len(unexpected)}): {_examples(unexpected)}" if unexpected else "")
            + (f"; shape mismatches ({len(mismatched)}): {_examples(mismatched, 3)}" if mismatched else "")
            + f". A checkpoint of another size converts with {option} CONFIG.json (its diffusers/transformers config)."
        )
    model.load_state_dict({k: v.to(dtype).contiguous() for k, v in state.items()}, strict=True, assign=True)


def _read_config(config: dict | str | os.PathLike | None, default: dict) -> dict:
    if config is None:
        return dict(default)
    if isinstance(config, dict):
        return dict(config)
    try:
        return json.loads(Path(config).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConversionError(f"cannot read config {config}: {err}") from err


def build_components(
    unet_config: dict | str | os.PathLike | None = None,
    vae_config: dict | str | os.PathLike | None = None,
    text_encoder_config: dict | str | os.PathLike | None = None,
    empty: bool = False,
    device: str | torch.device = "cpu",
) -> dict:
    """Reference-shaped unet (norm_mode "reference"), vae, text encoder, tokenizer and scheduler.

    The models are made on `device` (random weights); with `empty` their parameters are left unallocated (meta), to
    be filled by loading a state dict. The scheduler keeps its tables on the CPU, as diffusers' schedulers expect.
    Configs default to the full-size reference model; each may be a dict or a JSON file.
    """
    from accelerate import init_empty_weights

    from insv2v.clip_tokenizer import clip_tokenizer

    unet_cfg = {**_read_config(unet_config, REFERENCE_UNET_CONFIG), "norm_mode": "reference"}
    vae_cfg = _read_config(vae_config, REFERENCE_VAE_CONFIG)
    text_cfg = _read_config(text_encoder_config, REFERENCE_TEXT_ENCODER_CONFIG)
    text_cfg = text_cfg.get("text_config", text_cfg)  # a whole CLIPConfig works too
    with init_empty_weights() if empty else torch.device(device):
        unet = InsV2VUNetMotionModel.from_config(unet_cfg)
        vae = AutoencoderKL.from_config(vae_cfg)
        text_encoder = CLIPTextModel(CLIPTextConfig.from_dict(text_cfg))
    with torch.device("cpu"):  # whatever device the caller's context names
        scheduler = reference_scheduler()
    return {
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": clip_tokenizer(),
        "unet": unet.eval(),
        "scheduler": scheduler,
    }


def convert_reference_checkpoint(
    checkpoint: str | os.PathLike | dict[str, torch.Tensor],
    out_dir: str | os.PathLike | None = None,
    *,
    unet_config: dict | str | os.PathLike | None = None,
    vae_config: dict | str | os.PathLike | None = None,
    text_encoder_config: dict | str | os.PathLike | None = None,
    torch_dtype: torch.dtype = torch.float32,
):
    """Reference checkpoint (file or state dict) -> InsV2VPipeline, saved as safetensors to `out_dir` if given.

    The text encoder layout found ("transformers-4", as the reference saves it, or "flattened") is logged and
    recorded as the pipeline's `text_encoder_layout`. Raises ConversionError, naming missing, unexpected and
    mis-shaped keys, for anything that does not fit.
    """
    from insv2v.pipeline import InsV2VPipeline

    state = checkpoint if isinstance(checkpoint, dict) else load_state_dict(checkpoint)
    parts = split_reference_state_dict({k.removeprefix(DEEPSPEED_PREFIX): v for k, v in state.items()})
    layout = text_encoder_layout(parts["text_encoder"], PREFIXES["text_encoder"])
    logger.info("text encoder keys in the %s layout", layout)
    components = build_components(unet_config, vae_config, text_encoder_config, empty=True)
    num_vae_blocks = len(components["vae"].config.block_out_channels)
    _load_into(components["unet"], unet_from_reference(parts["unet"]), "unet", torch_dtype)
    _load_into(components["vae"], vae_from_ldm(parts["vae"], num_vae_blocks), "vae", torch_dtype)
    target = text_encoder_layout(components["text_encoder"].state_dict())  # what the installed transformers names
    text_state = text_encoder_from_reference(parts["text_encoder"], target)
    _load_into(components["text_encoder"], text_state, "text_encoder", torch_dtype)
    pipe = InsV2VPipeline(**components)
    pipe.text_encoder_layout = layout
    if out_dir is not None:
        pipe.save_pretrained(out_dir, safe_serialization=True)
    return pipe
