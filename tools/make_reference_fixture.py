"""Record the reference implementation's outputs on a tiny random checkpoint, for the conversion parity tests.

    python tools/make_reference_fixture.py --reference PATH/TO/instruct-video-to-video

PATH is a checkout of github amazon-science/instruct-video-to-video (its Python files are enough; it needs
`einops`; `pytorch_lightning` is stubbed when missing). Nothing from it is copied: it is imported from PATH.
Writes tests/fixtures/reference_parity.safetensors with
  - the reference checkpoint's key names and shapes (UNet3DConditionModel, LDM autoencoder, CLIP text model in
    transformers 4's names, text_model.transformer.text_model.*, as the reference saves it, whichever transformers
    is installed), whose weights tests/reference_parity.seeded_checkpoint re-makes from a seed;
  - inputs and reference outputs of: one UNet call; a whole LVSC edit (3 clips, deterministic DDIM) by the
    reference sampler; the autoencoder's posterior mean and decoding.
`tests/test_convert.py` checks the converted pipeline against them, and against the live reference code when
$INSV2V_REFERENCE_REPO names a checkout.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from reference_parity import (
    FIXTURE,
    TINY_TEXT_ENCODER_CONFIG,
    TINY_UNET_CONFIG,
    TINY_VAE_CONFIG,
    seeded_checkpoint,
)

SEED = 0
EDIT = {  # the LVSC edit: 8 frames in clips of 4 sharing 2 -> clips 0-4, 2-6, 4-8 in both implementations
    "frames": 8,
    "frames_per_clip": 4,
    "ref_frames": 2,
    "steps": 5,
    "text_cfg": 7.5,
    "video_cfg": 1.5,
    "lvsc_fraction": 0.5,
}
# The reference sampler's DDIM ("ddim" in its Inference class), as a diffusers DDIMScheduler config.
DDIM_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


def import_reference(path: str | Path) -> types.SimpleNamespace:
    """The reference modules this project compares against, imported from a checkout at `path`."""
    path = Path(path).resolve()
    if not (path / "modules" / "video_unet_temporal" / "unet.py").is_file():
        raise SystemExit(f"{path} is not a checkout of instruct-video-to-video (no modules/video_unet_temporal)")
    try:
        import pytorch_lightning  # noqa: F401
    except ImportError:  # only its LightningModule base class is touched, by the LDM autoencoder
        stub = types.ModuleType("pytorch_lightning")
        stub.LightningModule = torch.nn.Module
        sys.modules["pytorch_lightning"] = stub
    sys.path.insert(0, str(path))
    from modules.kl_autoencoder.autoencoder import AutoencoderKL
    from modules.video_unet_temporal.unet import UNet3DConditionModel
    from pl_trainer.inference.inference import InferenceIP2PVideo

    return types.SimpleNamespace(
        UNet3DConditionModel=UNet3DConditionModel, AutoencoderKL=AutoencoderKL, InferenceIP2PVideo=InferenceIP2PVideo
    )


def reference_unet_kwargs(config: dict) -> dict:
    """A diffusers UNetMotionModel config -> the reference UNet3DConditionModel's constructor arguments."""
    blocks = {"CrossAttnDownBlockMotion": "CrossAttnDownBlock3D", "DownBlockMotion": "DownBlock3D",
              "CrossAttnUpBlockMotion": "CrossAttnUpBlock3D", "UpBlockMotion": "UpBlock3D"}  # fmt: skip
    return {
        "sample_size": config["sample_size"],
        "in_channels": config["in_channels"],
        "out_channels": config["out_channels"],
        "down_block_types": [blocks[b] for b in config["down_block_types"]],
        "up_block_types": [blocks[b] for b in config["up_block_types"]],
        "block_out_channels": list(config["block_out_channels"]),
        "layers_per_block": config["layers_per_block"],
        "cross_attention_dim": config["cross_attention_dim"],
        "attention_head_dim": config["num_attention_heads"],  # the reference's name for the head count
        "norm_num_groups": config["norm_num_groups"],
        "norm_eps": config.get("norm_eps", 1e-5),
        "use_motion_module": True,
        "motion_module_resolutions": [1, 2, 4, 8],
        "motion_module_mid_block": config["use_motion_mid_block"],
        "motion_module_type": "Vanilla",
        "motion_module_kwargs": {
            "num_attention_heads": config["motion_num_attention_heads"],
            "num_transformer_block": 1,
            "attention_block_types": ["Temporal_Self", "Temporal_Self"],
            "temporal_position_encoding": True,
            "temporal_position_encoding_max_len": config["motion_max_seq_length"],
            "temporal_attention_dim_div": 1,
        },
    }


def reference_vae_kwargs(config: dict) -> dict:
    """A diffusers AutoencoderKL config -> the reference (LDM) AutoencoderKL's constructor arguments."""
    channels = list(config["block_out_channels"])
    return {
        "ddconfig": {
            "double_z": True,
            "z_channels": config["latent_channels"],
            "resolution": config["sample_size"],
            "in_channels": 3,
            "out_ch": 3,
            "ch": channels[0],
            "ch_mult": [c // channels[0] for c in channels],
            "num_res_blocks": config["layers_per_block"],
            "attn_resolutions": [],
            "dropout": 0.0,
        },
        "lossconfig": {"target": "torch.nn.Identity"},
        "embed_dim": config["latent_channels"],
    }


def reference_edit(ref, unet, noise, source, text, uncond, settings: dict) -> torch.Tensor:
    """A long-video edit the way the reference's LOVEU-TGVE script samples it (first clip, then each later clip
    with its shared frames' noise and source latents carried over and LVSC against the clip before).
    Tensors are (b, f, c, h, w) as the reference sampler takes them; returns the final latents of all frames."""
    scheduler = settings.get("scheduler", "ddim")  # "ddim" (deterministic) or "ddpm" (the reference's default)
    sampler = ref.InferenceIP2PVideo(unet, scheduler=scheduler, num_ddim_steps=settings["steps"])
    cfg = {"text_cond": text, "text_uncond": uncond, "text_cfg": settings["text_cfg"], "img_cfg": settings["video_cfg"]}
    size, shared, total = settings["frames_per_clip"], settings["ref_frames"], noise.shape[1]
    clip = sampler(latent=noise[:, :size], img_cond=source[:, :size], **cfg)["latent"]
    finished, done = [clip], size
    while done < total:  # the reference's split: F - R new frames, or all that remain when fewer than F do
        new = total - done if total - done < size else size - shared
        refs = size - new
        window = slice(done - refs, done + new)
        clip = sampler.second_clip_forward(
            latent=noise[:, window], img_cond=source[:, window], latent_ref=clip[:, -refs:],
            noise_correct_step=settings["lvsc_fraction"], **cfg,
        )["latent"]  # fmt: skip
        finished.append(clip[:, refs:])
        done += new
    return torch.cat(finished, dim=1)


def reference_models(ref, checkpoint: dict[str, torch.Tensor]):
    """The reference UNet and autoencoder of the tiny configs, loaded strictly from `checkpoint`."""
    unet = ref.UNet3DConditionModel(**reference_unet_kwargs(TINY_UNET_CONFIG)).eval()
    vae = ref.AutoencoderKL(**reference_vae_kwargs(TINY_VAE_CONFIG)).eval()
    for prefix, model in [("unet.", unet), ("vae.", vae)]:
        model.load_state_dict({k[len(prefix) :]: v for k, v in checkpoint.items() if k.startswith(prefix)}, strict=True)
    return unet, vae


def checkpoint_spec(ref) -> dict[str, list[int]]:
    """Key names and shapes of the tiny reference checkpoint, taken from the reference models themselves."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = ref.UNet3DConditionModel(**reference_unet_kwargs(TINY_UNET_CONFIG))
    vae = ref.AutoencoderKL(**reference_vae_kwargs(TINY_VAE_CONFIG))
    text = CLIPTextModel(CLIPTextConfig.from_dict(TINY_TEXT_ENCODER_CONFIG))
    spec = {f"unet.{k}": list(v.shape) for k, v in unet.state_dict().items()}
    spec.update({f"vae.{k}": list(v.shape) for k, v in vae.state_dict().items()})
    # The reference wraps transformers 4's CLIPTextModel, whose names start with an inner `text_model.`;
    # transformers 5 dropped it. Record the names the reference saves, whichever transformers is installed.
    inner = "" if all(k.startswith("text_model.") for k in text.state_dict()) else "text_model."
    spec.update({f"text_model.transformer.{inner}{k}": list(v.shape) for k, v in text.state_dict().items()})
    # Older transformers saved this buffer and so does the reference checkpoint; converters must drop it.
    spec["text_model.transformer.text_model.embeddings.position_ids"] = [
        1,
        TINY_TEXT_ENCODER_CONFIG["max_position_embeddings"],
    ]
    return spec


def make_inputs(seed: int = SEED) -> dict[str, torch.Tensor]:
    """Inputs in our layout (b, c, f, h, w); the reference gets them permuted."""
    g = torch.Generator().manual_seed(seed + 1)
    c, f, h, w = 4, EDIT["frames"], 4, 6
    text_dim = TINY_UNET_CONFIG["cross_attention_dim"]
    return {
        "unet.sample": torch.randn(3, 8, 5, h, w, generator=g),
        "unet.timestep": torch.tensor([981, 500, 21]),
        "unet.encoder_hidden_states": torch.randn(3, 77, text_dim, generator=g),
        "edit.latents": torch.randn(1, c, f, h, w, generator=g),
        "edit.video_latents": torch.randn(1, c, f, h, w, generator=g),
        "edit.prompt_embeds": torch.randn(1, 77, text_dim, generator=g),
        "edit.negative_prompt_embeds": torch.randn(1, 77, text_dim, generator=g),
        "vae.image": torch.rand(2, 3, 16, 16, generator=g) * 2 - 1,
        "vae.latents": torch.randn(2, 4, 8, 8, generator=g),
    }


@torch.no_grad()
def reference_outputs(
    ref, checkpoint: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    unet, vae = reference_models(ref, checkpoint)
    out = {}
    out["unet.expected"] = unet(
        inputs["unet.sample"], inputs["unet.timestep"], encoder_hidden_states=inputs["unet.encoder_hidden_states"]
    ).sample

    def to_ref(x):  # (b, c, f, h, w) <-> (b, f, c, h, w)
        return x.permute(0, 2, 1, 3, 4)

    latents = reference_edit(
        ref, unet, to_ref(inputs["edit.latents"]), to_ref(inputs["edit.video_latents"]),
        inputs["edit.prompt_embeds"], inputs["edit.negative_prompt_embeds"], EDIT,
    )  # fmt: skip
    out["edit.expected"] = to_ref(latents).contiguous()
    moments = vae.quant_conv(vae.encoder(inputs["vae.image"]))
    out["vae.expected_mean"] = moments.chunk(2, dim=1)[0].contiguous()  # the posterior's mode
    out["vae.expected_decoded"] = vae.decode(inputs["vae.latents"])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="checkout of amazon-science/instruct-video-to-video")
    parser.add_argument("--out", default=str(FIXTURE))
    args = parser.parse_args(argv)

    torch.set_num_threads(min(torch.get_num_threads(), 2))
    ref = import_reference(args.reference)
    spec = checkpoint_spec(ref)
    checkpoint = seeded_checkpoint(spec, SEED)
    inputs = make_inputs()
    tensors = {**inputs, **reference_outputs(ref, checkpoint, inputs)}
    meta = {
        "spec": spec,
        "seed": SEED,
        "edit": EDIT,
        "ddim": DDIM_CONFIG,
        "unet_config": TINY_UNET_CONFIG,
        "vae_config": TINY_VAE_CONFIG,
        "text_encoder_config": TINY_TEXT_ENCODER_CONFIG,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, args.out, metadata={k: json.dumps(v) for k, v in meta.items()}
    )
    print(f"wrote {args.out}: {len(spec)} checkpoint keys, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
