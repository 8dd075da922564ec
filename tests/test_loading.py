"""Model sources: a composition of public parts (tiny random stand-ins saved to local folders), clear errors;
and the memory options of a loaded pipeline."""

import json
import os
import shutil
import time

import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    EulerAncestralDiscreteScheduler,
    MotionAdapter,
    UNet2DConditionModel,
    UNetMotionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from insv2v import InsV2VPipeline
from insv2v.clip_tokenizer import CLIP_VOCAB_SIZE, clip_tokenizer
from insv2v.loading import ModelLoadError, load_pipeline
from insv2v.testing.tiny import tiny_pipeline

OFFLINE = os.environ.get("HF_HUB_OFFLINE") == "1"


def save_image_model(folder, in_channels=8):
    """A tiny InstructPix2Pix stand-in in the hub layout: one subfolder per component."""
    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
    ).save_pretrained(folder / "unet")  # fmt: skip
    AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
    ).save_pretrained(folder / "vae")  # fmt: skip
    text = CLIPTextConfig(vocab_size=CLIP_VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=4, max_position_embeddings=77)  # fmt: skip
    CLIPTextModel(text).save_pretrained(folder / "text_encoder")
    clip_tokenizer().save_pretrained(folder / "tokenizer")
    # InstructPix2Pix ships an Euler ancestral scheduler; the composition keeps its betas and samples with DDPM.
    EulerAncestralDiscreteScheduler(beta_start=0.001, beta_end=0.02, beta_schedule="scaled_linear").save_pretrained(
        folder / "scheduler"
    )
    return folder


def save_motion_adapter(folder):
    """A tiny AnimateDiff v1-style adapter: 24 positions, non-zero outputs."""
    torch.manual_seed(1)
    adapter = MotionAdapter(
        block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=8,
        motion_norm_num_groups=32, motion_max_seq_length=24, use_motion_mid_block=False,
    )  # fmt: skip
    adapter.save_pretrained(folder)
    return adapter


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    image_model = save_image_model(root / "ip2p")
    adapter = save_motion_adapter(root / "adapter")
    return image_model, root / "adapter", adapter


def test_composition_of_local_parts_is_inflated_with_zeroed_motion_outputs(parts):
    image_model, adapter_dir, adapter = parts
    source = f"compose:{image_model}+{adapter_dir}"
    pipe = load_pipeline(source, device="cpu")
    assert load_pipeline(source, device="cpu") is pipe  # loaded once per process
    assert isinstance(pipe, InsV2VPipeline) and type(pipe.unet) is UNetMotionModel
    assert pipe.max_frames_per_clip == 32  # positions extended from the adapter's 24
    assert isinstance(pipe.scheduler, DDPMScheduler) and pipe.scheduler.config.beta_end == 0.02
    assert pipe.scheduler.config.clip_sample is False  # latents reach beyond [-1, 1]; DDPM's default clips them
    unet = pipe.unet.state_dict()  # MotionAdapter keys are the video UNet's keys of the same layers
    motion = {k: v for k, v in adapter.state_dict().items() if not k.endswith("pos_embed.pe")}
    assert motion and all(k in unet for k in motion)
    for key, value in motion.items():
        assert torch.equal(unet[key], torch.zeros_like(value) if "proj_out" in key else value), key

    # Zeroed motion outputs: the video model is the image model, frame by frame.
    unet2d = UNet2DConditionModel.from_pretrained(image_model, subfolder="unet").eval()
    x, text = torch.randn(1, 8, 3, 8, 8), torch.randn(1, 77, 32)  # (b, c, f, h, w)
    with torch.no_grad():
        video = pipe.unet(x, 10, encoder_hidden_states=text.repeat_interleave(3, 0)).sample
        frames = unet2d(x[0].permute(1, 0, 2, 3), 10, encoder_hidden_states=text.repeat(3, 1, 1)).sample
    torch.testing.assert_close(video[0].permute(1, 0, 2, 3), frames, atol=1e-5, rtol=0)

    pipe.set_progress_bar_config(disable=True)
    frames = pipe(
        torch.rand(3, 3, 16, 16), "make it snowy", num_inference_steps=1, frames_per_clip=3, ref_frames=1
    ).frames
    assert frames.shape == (3, 16, 16, 3)


def test_composition_needs_an_instruct_pix2pix_unet(tmp_path, parts):
    _, adapter_dir, _ = parts
    image_model = save_image_model(tmp_path / "sd", in_channels=4)
    with pytest.raises(ModelLoadError, match="4 input channels; InsV2V needs an InstructPix2Pix UNet"):
        load_pipeline(f"compose:{image_model}+{adapter_dir}", device="cpu")


@pytest.mark.parametrize("source", ["compose:only-one-part", "compose:+guoyww/animatediff-motion-adapter-v1-5"])
def test_composition_syntax_errors_show_the_form(source):
    with pytest.raises(ModelLoadError, match=r"compose:IMAGE_MODEL\+MOTION_ADAPTER"):
        load_pipeline(source, device="cpu")


@pytest.mark.skipif(not OFFLINE, reason="only runs offline (HF_HUB_OFFLINE=1), so that it never downloads")
@pytest.mark.parametrize(
    "source, what", [("someone/not-cached", "model"), ("compose:{image}+someone/no-adapter", "motion adapter")]
)
def test_offline_hub_ids_say_what_to_download_and_where(parts, source, what):
    from huggingface_hub import constants

    image_model, _, _ = parts
    with pytest.raises(ModelLoadError) as err:
        load_pipeline(source.format(image=image_model), device="cpu")
    message = str(err.value)
    name = source.rsplit("+", 1)[-1]
    assert f"could not load {what} {name!r}" in message and "HF_HUB_OFFLINE=1" in message
    assert f"`hf download {name}`" in message and constants.HF_HUB_CACHE in message


@pytest.mark.skipif(not OFFLINE, reason="only runs offline (HF_HUB_OFFLINE=1), so that it never downloads")
def test_a_relative_folder_not_made_yet_is_named_as_a_folder_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "models/insv2v" (the README's): a hub id, or a folder not made yet
    with pytest.raises(ModelLoadError, match=rf"not a local folder \({tmp_path}/models/insv2v does not exist\)"):
        load_pipeline("models/insv2v", device="cpu")


@pytest.mark.skipif(not OFFLINE, reason="only runs offline (HF_HUB_OFFLINE=1), so that it never downloads")
def test_a_damaged_download_is_named_as_such(tmp_path, monkeypatch):
    from huggingface_hub import constants

    # A pipeline whose download stopped after model_index.json: the cache holds it, its parts are missing
    repo = tmp_path / "hub" / "models--someone--cut-short"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    (snapshot / "model_index.json").write_text(json.dumps({"_class_name": "InsV2VPipeline", "unet": ["diffusers",
                                                           "UNetMotionModel"]}))  # fmt: skip
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelLoadError) as err:
        load_pipeline("someone/cut-short", device="cpu")
    message = str(err.value)
    assert f"from the Hugging Face cache ({snapshot})" in message and "not in the Hugging Face cache" not in message
    assert "`hf download someone/cut-short --force-download`" in message


def test_an_image_model_from_the_hub_points_to_composition(tmp_path, parts, monkeypatch):
    from huggingface_hub import constants

    # InstructPix2Pix by its hub id, without compose: it loads (a 2-D UNet in the video pipeline), then is refused.
    repo = tmp_path / "hub" / "models--someone--ip2p"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(parts[0], snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    index = {"_class_name": "StableDiffusionInstructPix2PixPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"],
             "scheduler": ["diffusers", "EulerAncestralDiscreteScheduler"]}  # fmt: skip
    (snapshot / "model_index.json").write_text(json.dumps(index))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelLoadError, match=r"holds a UNet2DConditionModel .*--model compose:someone/ip2p\+"):
        load_pipeline("someone/ip2p", device="cpu")


def test_a_checkpoint_file_is_converted_first(tmp_path):
    path = tmp_path / "insv2v.pth"
    path.write_bytes(b"")
    with pytest.raises(ModelLoadError, match=f"convert it once with `insv2v convert {path} DIR`"):
        load_pipeline(str(path), device="cpu")


def test_an_image_pipeline_folder_points_to_composition(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionInstructPix2PixPipeline"}))
    with pytest.raises(ModelLoadError, match=f"holds a StableDiffusionInstructPix2PixPipeline.*compose:{tmp_path}\\+"):
        load_pipeline(str(tmp_path), device="cpu")


def test_a_text_to_video_folder_is_not_sent_to_composition(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "TextToVideoPipeline"}))
    with pytest.raises(ModelLoadError, match="holds a TextToVideoPipeline, not an InsV2V pipeline") as err:
        load_pipeline(str(tmp_path), device="cpu")
    assert "compose:" not in str(err.value)  # a motion adapter would not make it an editor


def test_an_editor_is_refused_where_a_model_that_draws_from_text_is_wanted(tmp_path):
    from insv2v.synth.t2v import load_t2v
    from insv2v.tav.pipeline import TuneAVideoPipeline

    tiny_pipeline().save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="not a text-to-video model: its UNet takes 8 input channels and gives 4"):
        load_t2v(str(tmp_path), device="cpu")  # it ran, then failed on a tensor size
    with pytest.raises(ModelLoadError, match="holds a UNetMotionModel, not a text-to-image model's"):
        TuneAVideoPipeline.from_t2i(tmp_path)


def test_a_composition_is_split_at_its_first_plus_everywhere(tmp_path):
    from insv2v.loading import composition_parts, files_signature

    assert composition_parts("compose:ip2p+adapter+v2") == ("ip2p", "adapter+v2")  # what the loader loads
    (tmp_path / "adapter+v2").mkdir()
    (tmp_path / "adapter+v2" / "config.json").write_text("{}")
    watched = files_signature(f"compose:{tmp_path / 'ip2p'}+{tmp_path / 'adapter+v2'}")
    assert watched[0] == () and [name for name, *_ in watched[1]] == ["config.json"]  # the adapter it loads
    with pytest.raises(ModelLoadError, match=r"a composition is compose:IMAGE_MODEL\+MOTION_ADAPTER"):
        composition_parts("compose:only-one")


def test_a_copied_folder_has_the_same_weights_digest_and_a_resaved_one_another(tmp_path):
    """What pools evaluations: the weights' contents, not the folder's name or its other files."""
    from insv2v.loading import weights_digest

    tiny_pipeline().save_pretrained(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b" / "README.md").write_text("a card")  # not weights
    assert weights_digest(str(tmp_path / "a")) == weights_digest(str(tmp_path / "b"))
    unet = next((tmp_path / "b" / "unet").glob("*.safetensors"))
    data = bytearray(unet.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    unet.write_bytes(bytes(data))
    assert weights_digest(str(tmp_path / "a")) != weights_digest(str(tmp_path / "b"))
    assert weights_digest("owner/name") is None  # a hub id: nothing local to hash
    (tmp_path / "empty").mkdir()
    assert weights_digest(str(tmp_path / "empty")) is None  # no weights: not "the same" as every other such folder


def test_float16_on_the_cpu_is_said_once_in_a_line(tmp_path, caplog, capfd):
    tiny_pipeline().save_pretrained(tmp_path / "tiny")
    pipe = load_pipeline(str(tmp_path / "tiny"), "cpu", torch.float16)
    assert pipe.unet.dtype == torch.float16
    said = [r.getMessage() for r in caplog.records if "float16 on the CPU" in r.getMessage()]
    assert said == ["float16 on the CPU: it runs, but rarely faster and less precisely than float32, the CPU's default"]
    assert "cannot run with `cpu` device" not in capfd.readouterr().err + caplog.text  # diffusers' paragraph held back


def test_a_missing_local_folder_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_pipeline(str(tmp_path / "nowhere" / "model"), device="cpu")


def test_vae_tiling_asked_of_the_pixel_fold_changes_nothing():
    from insv2v.toyworld.models import toy_autoencoder

    pipe = tiny_pipeline()
    pipe.vae = toy_autoencoder()  # the toy models' lossless fold: nothing to tile
    video = torch.rand(2, 3, 16, 16)
    base = pipe.encode_video(video)
    pipe.enable_vae_tiling()
    assert torch.equal(pipe.encode_video(video), base)
    pipe.disable_vae_tiling()


def test_vae_tiling_can_be_switched_off_again():
    pipe = tiny_pipeline()
    pipe.vae.tile_sample_min_size, pipe.vae.tile_latent_min_size = 32, 4  # tiles smaller than the frames
    video = torch.rand(2, 3, 48, 64)  # (f, 3, h, w)
    base = pipe.encode_video(video)
    pipe.enable_vae_tiling()
    tiled = pipe.encode_video(video)
    assert tiled.shape == base.shape and not torch.equal(tiled, base)
    pipe.disable_vae_tiling()
    assert torch.equal(pipe.encode_video(video), base)


def _save_toy_clip(folder, seed: int) -> None:
    from insv2v.toyworld.models import toy_clip, toy_tokenizer

    torch.manual_seed(seed)
    toy_clip().save_pretrained(folder)
    toy_tokenizer().save_pretrained(folder)


def _reloadable(kind: str):
    """(save a model of this kind with a seed into a folder, load it through its cache, what tells two apart)."""
    from insv2v.metrics import load_clip
    from insv2v.synth.t2v import load_t2v
    from insv2v.tav import load_tav
    from insv2v.testing.tiny import tiny_t2v_pipeline

    conv_in = lambda pipe: pipe.unet.conv_in.weight.detach().clone()  # noqa: E731
    return {
        "editor": (lambda folder, seed: tiny_pipeline(seed=seed).save_pretrained(folder), load_pipeline, conv_in),
        "text-to-video": (lambda folder, seed: tiny_t2v_pipeline(seed=seed).save_pretrained(folder), load_t2v, conv_in),
        "tune-a-video": (
            lambda folder, seed: tiny_t2v_pipeline("2d", seed=seed).save_pretrained(folder),
            load_tav,
            conv_in,
        ),
        "clip": (
            _save_toy_clip,
            lambda source, device: load_clip(source),
            lambda scorer: scorer.texts(["a red circle"]),
        ),
        "composition": (
            _save_composition,
            lambda source, device: load_pipeline(f"compose:{source}/ip2p+{source}/adapter", device=device),
            conv_in,
        ),
    }[kind]


def _save_composition(folder, seed: int) -> None:
    """An InstructPix2Pix stand-in and a motion adapter, the image model's first layer set by `seed`."""
    save_image_model(folder / "ip2p")
    unet = UNet2DConditionModel.from_pretrained(folder / "ip2p", subfolder="unet")
    with torch.no_grad():
        unet.conv_in.weight.fill_(seed)
    unet.save_pretrained(folder / "ip2p" / "unet")
    save_motion_adapter(folder / "adapter")


@pytest.mark.parametrize("kind", ["editor", "text-to-video", "tune-a-video", "clip", "composition"])
def test_a_model_folder_saved_anew_is_read_again_and_the_old_one_let_go(tmp_path, kind):
    """A model retrained in place while a server runs is what the server uses next, and only one copy is held."""
    import gc
    import weakref

    save, load, fingerprint = _reloadable(kind)
    folder = tmp_path / "model"
    save(folder, 0)
    first = load(str(folder), device="cpu")
    assert load(str(folder), device="cpu") is first  # files unchanged: the loaded model is shared
    first_print, first_ref = fingerprint(first), weakref.ref(first)
    del first
    save(folder, 1)
    later = time.time() + 10  # a new time whatever the file system's timestamp resolution
    for path in folder.rglob("*"):
        os.utime(path, (later, later))
    second = load(str(folder), device="cpu")
    assert not torch.equal(fingerprint(second), first_print)
    fresh = tmp_path / "fresh"  # the same seed loaded where no cache has seen it
    save(fresh, 1)
    torch.testing.assert_close(fingerprint(second), fingerprint(load(str(fresh), device="cpu")), rtol=0, atol=0)
    gc.collect()
    assert first_ref() is None  # the replaced model is not kept beside its successor


def test_an_edit_with_a_composed_model_records_the_composition(parts, tmp_path, monkeypatch):
    import json

    from media import make_video

    from insv2v.cli import main

    image_model, adapter_dir, _ = parts
    source = f"compose:{image_model}+{adapter_dir}"
    monkeypatch.setenv("INSV2V_MODEL", source)  # no --model: the recipe names what ran, so that it replays
    video = make_video(tmp_path / "in.mp4", num_frames=4)
    assert main(["edit", str(video), "make it snowy", "-o", str(tmp_path / "out.mp4"), "--steps", "1"]) == 0
    assert json.loads((tmp_path / "out.json").read_text())["model"] == source
