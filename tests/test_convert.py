"""Converting the reference checkpoint: parity with the reference code, file formats, refusals, round trip.

Parity is checked against outputs the reference implementation produced on a tiny random checkpoint
(fixtures/reference_parity.safetensors, written by tools/make_reference_fixture.py) in the key layout the reference
saves (its text encoder in transformers 4's names); with $INSV2V_REFERENCE_REPO naming a checkout of the reference
code, the reference also runs live.
"""

import importlib
import logging
import os
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, UNetMotionModel
from reference_parity import load_fixture, seeded_checkpoint, write_configs
from safetensors.torch import save_file

from insv2v import InsV2VPipeline
from insv2v.cli import main
from insv2v.models import InsV2VUNetMotionModel
from insv2v.models.reference import (
    ConversionError,
    build_components,
    convert_reference_checkpoint,
    load_state_dict,
    text_encoder_from_reference,
    to_reference_state_dict,
)

REFERENCE_REPO = os.environ.get("INSV2V_REFERENCE_REPO")
TEXT = "text_model.transformer."  # the reference's prefix for its CLIPTextModel


@pytest.fixture(scope="module")
def fixture():
    return load_fixture()


@pytest.fixture(scope="module")
def checkpoint(fixture):
    _, meta = fixture
    return seeded_checkpoint(meta["spec"], meta["seed"])


def configs(meta) -> dict:
    return {name: meta[name] for name in ("unet_config", "vae_config", "text_encoder_config")}


def flattened(state: dict) -> dict:
    """The checkpoint with its text encoder in transformers 5's names (no inner `text_model.`, no position_ids)."""
    inner = TEXT + "text_model."
    return {k.replace(inner, TEXT): v for k, v in state.items() if not k.endswith("position_ids")}


@pytest.fixture(scope="module")
def converted(fixture, checkpoint):
    _, meta = fixture
    pipe = convert_reference_checkpoint(checkpoint, **configs(meta))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def unet_output(unet, tensors) -> torch.Tensor:
    sample = tensors["unet.sample"]  # (b, c, f, h, w)
    text = tensors["unet.encoder_hidden_states"].repeat_interleave(sample.shape[2], dim=0)  # (b*f, L, C)
    return unet(sample, tensors["unet.timestep"], encoder_hidden_states=text).sample


def lvsc_edit(pipe, tensors, meta) -> torch.Tensor:
    """The recorded edit on our pipeline: same noise, source latents and prompts, the reference's DDIM."""
    ddim = InsV2VPipeline(**{**pipe.components, "scheduler": DDIMScheduler.from_config(meta["ddim"])})
    ddim.set_progress_bar_config(disable=True)
    edit = meta["edit"]
    return ddim(
        video_latents=tensors["edit.video_latents"],
        latents=tensors["edit.latents"],
        prompt_embeds=tensors["edit.prompt_embeds"],
        negative_prompt_embeds=tensors["edit.negative_prompt_embeds"],
        num_inference_steps=edit["steps"],
        guidance_scale=edit["text_cfg"],
        video_guidance_scale=edit["video_cfg"],
        frames_per_clip=edit["frames_per_clip"],
        ref_frames=edit["ref_frames"],
        lvsc_fraction=edit["lvsc_fraction"],
        output_type="latent",
    ).frames


def test_norm_modes_take_statistics_over_the_clip_or_the_frame():
    from insv2v.models.unet import ClipGroupNorm, FrameGroupNorm, _FrameCount

    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(4, 8, affine=True)
    torch.nn.init.normal_(norm.weight)
    clip = torch.randn(2, 8, 3, 5, 6) * torch.arange(1, 4).view(1, 1, 3, 1, 1)  # (b, c, f, h, w), frames differ
    frames = clip.transpose(1, 2).reshape(6, 8, 5, 6)  # (b*f, c, h, w)
    count = _FrameCount()
    count.value = 3
    joint = ClipGroupNorm(norm, count)
    joint.load_state_dict(norm.state_dict())
    per_frame = FrameGroupNorm(norm)
    per_frame.load_state_dict(norm.state_dict())
    # Over the clip: GroupNorm of the 5-D tensor, as the reference's resnets see it.
    torch.testing.assert_close(joint(frames), norm(clip).transpose(1, 2).reshape(6, 8, 5, 6))
    # Per frame: GroupNorm of each frame, as the reference's motion modules see it.
    torch.testing.assert_close(per_frame(clip), norm(frames).view(2, 3, 8, 5, 6).transpose(1, 2))
    assert (joint(frames) - norm(frames)).abs().max() > 0.1


def test_components_are_made_on_the_device_asked_and_the_scheduler_on_the_cpu():
    from reference_parity import TINY_TEXT_ENCODER_CONFIG, TINY_UNET_CONFIG, TINY_VAE_CONFIG

    # Under a caller's device context too: a scheduler with tables on the GPU and models on the CPU broke the
    # benchmarks' CUDA runs ("two devices" in scheduler.step).
    with torch.device("meta"):
        parts = build_components(TINY_UNET_CONFIG, TINY_VAE_CONFIG, TINY_TEXT_ENCODER_CONFIG, device="meta")
    assert {next(parts[name].parameters()).device.type for name in ("unet", "vae", "text_encoder")} == {"meta"}
    assert parts["scheduler"].alphas_cumprod.device.type == "cpu"
    with torch.device("meta"):  # the device asked wins over the caller's context
        on_cpu = build_components(TINY_UNET_CONFIG, TINY_VAE_CONFIG, TINY_TEXT_ENCODER_CONFIG, device="cpu")
    assert next(on_cpu["unet"].parameters()).device.type == "cpu"
    default = build_components(TINY_UNET_CONFIG, TINY_VAE_CONFIG, TINY_TEXT_ENCODER_CONFIG)
    assert next(default["unet"].parameters()).device.type == "cpu"


def test_default_norm_mode_is_stock_diffusers(fixture):
    _, meta = fixture
    torch.manual_seed(0)
    stock = UNetMotionModel.from_config(meta["unet_config"]).eval()
    ours = InsV2VUNetMotionModel.from_config(meta["unet_config"]).eval()
    assert ours.config.norm_mode == "diffusers"
    ours.load_state_dict(stock.state_dict())
    x, text = torch.randn(1, 8, 3, 4, 6), torch.randn(3, 7, 32)
    with torch.no_grad():
        assert torch.equal(
            ours(x, 10, encoder_hidden_states=text).sample, stock(x, 10, encoder_hidden_states=text).sample
        )
    with pytest.raises(ValueError, match="`norm_mode` must be one of"):
        InsV2VUNetMotionModel.from_config({**meta["unet_config"], "norm_mode": "frames"})


def test_the_fixture_is_in_the_layout_the_reference_saves(checkpoint, converted):
    """transformers 4's CLIPTextModel names under text_model.transformer., with the position_ids buffer."""
    text = [k for k in checkpoint if k.startswith(TEXT)]
    assert len(text) == 37 and all(k.startswith(TEXT + "text_model.") for k in text)
    assert TEXT + "text_model.embeddings.position_ids" in text
    assert TEXT + "text_model.encoder.layers.1.self_attn.q_proj.weight" in text
    assert converted.text_encoder_layout == "transformers-4"


def test_both_text_encoder_layouts_convert_to_identical_weights(fixture, checkpoint, converted, caplog):
    _, meta = fixture
    with caplog.at_level(logging.INFO, logger="insv2v.models.reference"):
        flat = convert_reference_checkpoint(flattened(checkpoint), **configs(meta))
    assert flat.text_encoder_layout == "flattened" and "flattened layout" in caplog.text
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(converted, name).state_dict(), getattr(flat, name).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(value, theirs[key]) for key, value in ours.items()), name
    ids = torch.tensor([[49406, 320, 1125, 49407]])
    with torch.no_grad():
        assert torch.equal(converted.text_encoder(ids)[0], flat.text_encoder(ids)[0])


def test_text_encoder_keys_map_to_either_installed_naming(checkpoint):
    """Whichever naming the installed transformers' CLIPTextModel uses (4: inner text_model., 5: flattened)."""
    reference = {k[len(TEXT) :]: v for k, v in checkpoint.items() if k.startswith(TEXT)}
    flat = {k[len(TEXT) :]: v for k, v in flattened(checkpoint).items() if k.startswith(TEXT)}
    names = {k.removeprefix("text_model."): k for k in reference if not k.endswith("position_ids")}
    for state in (reference, flat):
        assert text_encoder_from_reference(state, "flattened").keys() == names.keys()
        assert text_encoder_from_reference(state, "transformers-4").keys() == set(names.values())
    assert all(torch.equal(text_encoder_from_reference(reference, "flattened")[k], flat[k]) for k in names)


def _renamed(state, old, new):
    return {k.replace(old, new): v for k, v in state.items()}


@pytest.mark.parametrize(
    "change, words",
    [
        (
            lambda s: _renamed(s, TEXT + "text_model.final_layer_norm.", TEXT + "final_layer_norm."),
            "mixes CLIPTextModel layouts; transformers-4 keys (35): text_model.transformer.text_model.embeddings",
        ),
        (
            lambda s: {**s, TEXT + "embeddings.position_ids": torch.arange(77)[None]},
            "flattened keys (1): text_model.transformer.embeddings.position_ids",
        ),
        (
            lambda s: {**s, TEXT + "text_projection.weight": torch.zeros(32, 32)},
            "not a CLIPTextModel in a known layout; unexpected keys (1): text_model.transformer.text_projection.weight",
        ),
    ],
    ids=["mixed", "mixed-buffer", "unknown"],
)
def test_mixed_or_unknown_text_encoder_layouts_are_refused(fixture, checkpoint, change, words):
    _, meta = fixture
    with pytest.raises(ConversionError) as err:
        convert_reference_checkpoint(change(checkpoint), **configs(meta))
    assert words in str(err.value)


def test_converted_unet_matches_the_reference_unet(fixture, converted):
    tensors, _ = fixture
    assert converted.unet.config.norm_mode == "reference"
    torch.testing.assert_close(unet_output(converted.unet, tensors), tensors["unet.expected"], atol=1e-4, rtol=0)


def test_stock_diffusers_norms_do_not_reproduce_the_reference(fixture, converted):
    """The GroupNorm trap (docs/DESIGN.md): the same weights with diffusers' norm layout are far off."""
    tensors, _ = fixture
    stock = InsV2VUNetMotionModel.from_config({**converted.unet.config, "norm_mode": "diffusers"}).eval()
    stock.load_state_dict(converted.unet.state_dict())
    assert (unet_output(stock, tensors) - tensors["unet.expected"]).abs().max() > 0.05


def test_lvsc_edit_matches_the_reference_sampler(fixture, converted):
    tensors, meta = fixture
    latents = lvsc_edit(converted, tensors, meta)  # 8 frames: clips 0-4, 2-6, 4-8
    assert latents.shape == tensors["edit.expected"].shape == (1, 4, 8, 4, 6)
    torch.testing.assert_close(latents, tensors["edit.expected"], atol=1e-3, rtol=0)


@torch.no_grad()
def test_converted_vae_matches_the_reference_autoencoder(fixture, checkpoint, converted):
    tensors, _ = fixture
    assert any(".nin_shortcut." in k for k in checkpoint)  # LDM's name for the shortcut conv is mapped too
    mean = converted.vae.encode(tensors["vae.image"]).latent_dist.mode()
    torch.testing.assert_close(mean, tensors["vae.expected_mean"], atol=1e-5, rtol=0)
    decoded = converted.vae.decode(tensors["vae.latents"]).sample
    torch.testing.assert_close(decoded, tensors["vae.expected_decoded"], atol=1e-5, rtol=0)


def test_cli_convert_then_load_save_load_is_bit_exact(tmp_path, fixture, checkpoint, converted, capsys):
    source = tmp_path / "insv2v.pth"  # as DeepSpeed saves it
    torch.save({f"_forward_module.{k}": v for k, v in checkpoint.items()}, source)
    paths = write_configs(tmp_path / "configs")
    out = tmp_path / "converted"
    argv = ["convert", str(source), str(out), "--unet-config", str(paths["unet"]),
            "--vae-config", str(paths["vae"]), "--text-encoder-config", str(paths["text_encoder"])]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"--model {out}" in printed and "text encoder keys: transformers-4 layout" in printed
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(out.rglob("*.bin"))

    loaded = InsV2VPipeline.from_pretrained(out)
    assert type(loaded.unet) is InsV2VUNetMotionModel and loaded.unet.config.norm_mode == "reference"
    loaded.save_pretrained(tmp_path / "again")
    again = InsV2VPipeline.from_pretrained(tmp_path / "again")
    for name in ("unet", "vae", "text_encoder"):
        states = [getattr(p, name).state_dict() for p in (converted, loaded, again)]
        assert states[0].keys() == states[1].keys() == states[2].keys()
        for key, value in states[0].items():
            assert all(torch.equal(value, s[key]) and value.dtype == s[key].dtype for s in states[1:]), key

    def public(config):
        return {k: v for k, v in config.items() if not k.startswith("_")}

    assert public(loaded.unet.config) == public(again.unet.config) == public(converted.unet.config)
    tensors, _ = fixture
    torch.testing.assert_close(unet_output(again.unet.eval(), tensors), tensors["unet.expected"], atol=1e-4, rtol=0)


def test_export_to_reference_layout_is_the_inverse(fixture, checkpoint, converted):
    """The export is the reference's layout, position_ids buffer included, and converts back bit-exactly."""
    exported = to_reference_state_dict(converted.unet, converted.vae, converted.text_encoder)
    assert exported.keys() == checkpoint.keys()
    assert all(torch.equal(exported[k], v) and exported[k].dtype == v.dtype for k, v in checkpoint.items())
    _, meta = fixture
    again = convert_reference_checkpoint(exported, **configs(meta))
    assert again.text_encoder_layout == "transformers-4"
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(converted, name).state_dict(), getattr(again, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(v, theirs[k]) for k, v in ours.items()), name


class NotATensor:
    pass


@pytest.mark.parametrize("form", ["safetensors", "lightning", "deepspeed_module"])
def test_checkpoint_files_of_each_form_load_the_same_tensors(tmp_path, checkpoint, form):
    part = {k: v for k, v in checkpoint.items() if k.startswith("vae.")}
    if form == "safetensors":
        path = tmp_path / "model.safetensors"
        save_file(part, path)
    else:
        path = tmp_path / "model.ckpt"
        wrapper = "state_dict" if form == "lightning" else "module"
        torch.save({wrapper: {f"_forward_module.{k}": v for k, v in part.items()}, "epoch": 3}, path)
    loaded = load_state_dict(path)
    assert loaded.keys() == part.keys() and all(torch.equal(loaded[k], v) for k, v in part.items())


def test_checkpoints_with_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"unet.x": torch.zeros(1)}, "callback": NotATensor()}, path)
    with pytest.raises(ConversionError, match=r"pickled Python objects besides tensors.*Unsupported global"):
        load_state_dict(path)


@pytest.mark.parametrize(
    "name, content", [("cut.pth", None), ("junk.pth", b"not a checkpoint"), ("junk.safetensors", b"xx")]
)
def test_damaged_files_are_named(tmp_path, name, content):
    path = tmp_path / name
    if content is None:  # a checkpoint cut short
        torch.save({"vae.x": torch.ones(100)}, path)
        content = path.read_bytes()[:100]
    path.write_bytes(content)
    with pytest.raises(ConversionError, match=f"{name}"):
        load_state_dict(path)


def _without(state, word):
    return {k: v for k, v in state.items() if word not in k}


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda s: {"model.diffusion_model." + k[5:]: v for k, v in s.items()}, "Stable Diffusion / LDM checkpoint"),
        (lambda s: _without(s, "motion_modules"), "no motion modules"),
        (lambda s: _without(s, "vae."), "missing parts: vae.*"),
        (lambda s: {**s, "ema.unet.conv_in.weight": torch.zeros(1)}, "unexpected keys (1): ema.unet.conv_in.weight"),
        (
            lambda s: {**_without(s, "unet.conv_out.bias"), "unet.extra.weight": torch.zeros(1)},
            "missing keys (1): conv_out.bias; unexpected keys (1): extra.weight",
        ),
        (
            lambda s: {**s, "unet.conv_in.weight": torch.zeros(32, 4, 3, 3)},
            "conv_in.weight (32, 4, 3, 3) (model: (32, 8, 3, 3))",
        ),
    ],
    ids=["sd", "image-unet", "no-vae", "unknown-prefix", "missing-unexpected", "shape"],
)
def test_other_architectures_are_refused_with_the_keys_named(fixture, checkpoint, change, words):
    _, meta = fixture
    with pytest.raises(ConversionError) as err:
        convert_reference_checkpoint(change(checkpoint), **configs(meta))
    assert words in str(err.value)


def test_default_configs_describe_the_full_size_model(checkpoint, tmp_path, capsys):
    """A tiny checkpoint against the (full-size) defaults: refused, pointing at --unet-config."""
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in checkpoint.items()}, path)
    assert main(["convert", str(path), str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err
    assert message.startswith("insv2v: error: the checkpoint's unet does not match")
    assert "conv_in.weight (32, 8, 3, 3) (model: (320, 8, 3, 3))" in message and "--unet-config" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not REFERENCE_REPO, reason="set INSV2V_REFERENCE_REPO to a checkout of the reference code")
def test_the_live_reference_code_agrees(fixture, checkpoint, converted):
    """Re-run the reference: it still produces the recorded outputs, and matches us on fresh inputs too."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    tool = importlib.import_module("make_reference_fixture")
    ref = tool.import_reference(REFERENCE_REPO)
    tensors, meta = fixture
    assert tool.checkpoint_spec(ref) == meta["spec"]
    recorded = tool.reference_outputs(ref, checkpoint, {k: v for k, v in tensors.items() if "expected" not in k})
    for key, value in recorded.items():  # the sampler amplifies float rounding (thread count, BLAS) ~1e-4
        torch.testing.assert_close(value, tensors[key], atol=1e-3 if key.startswith("edit") else 1e-5, rtol=0)
    fresh = tool.make_inputs(seed=1)
    live = {**fresh, **tool.reference_outputs(ref, checkpoint, fresh)}
    torch.testing.assert_close(unet_output(converted.unet, live), live["unet.expected"], atol=1e-4, rtol=0)
    torch.testing.assert_close(lvsc_edit(converted, live, meta), live["edit.expected"], atol=1e-3, rtol=0)
