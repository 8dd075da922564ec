"""tools/graft_motion.py: a 2-D stage's weights and another editor's motion modules, exactly, in a loadable editor."""

from pathlib import Path

import pytest
import torch
from repo_tools import load_tool

from insv2v.loading import load_pipeline
from insv2v.models import inflate_unet, motion_adapter_for
from insv2v.testing.tiny import save_tiny_pipeline, tiny_components, tiny_unet2d


def save_2d_stage(folder: Path) -> torch.nn.Module:
    """A 2-D stage's folder as `insv2v train 2d` writes one (UNet, text encoder, VAE, tokenizer, scheduler)."""
    parts = tiny_components(seed=1)
    torch.manual_seed(1)
    unet2d = tiny_unet2d()
    unet2d.save_pretrained(folder / "unet")
    for name in ("text_encoder", "vae", "tokenizer", "scheduler"):
        parts[name].save_pretrained(folder / name)
    return unet2d


def test_the_graft_holds_the_2d_stage_and_the_editors_motion_modules(tmp_path):
    editor, two_d, out = tmp_path / "editor", tmp_path / "2d", tmp_path / "graft"
    save_tiny_pipeline(str(editor), seed=0)  # its motion modules have random outputs
    (editor / "sampling.json").write_text('{"text_cfg": 4, "video_cfg": 1.5}')
    (editor / "README.md").write_text("the editor's card")
    unet2d = save_2d_stage(two_d)

    assert load_tool("graft_motion").graft(two_d, editor, out) > 0
    grafted, donor = load_pipeline(str(out)), load_pipeline(str(editor))
    inflated = inflate_unet(unet2d).state_dict()
    motion = 0
    for name, tensor in grafted.unet.state_dict().items():
        source = donor.unet.state_dict()[name] if "motion_modules" in name else inflated[name]
        assert torch.equal(tensor, source), name
        motion += "motion_modules" in name
    donor_outputs = [t for n, t in donor.unet.state_dict().items() if "motion_modules" in n and "proj_out" in n]
    assert motion > 0 and all(t.abs().sum() > 0 for t in donor_outputs)  # not the zeroed outputs of an inflation
    assert not torch.equal(grafted.unet.conv_in.weight, donor.unet.conv_in.weight)  # the 2-D stage's, not the donor's
    expected_text = tiny_components(seed=1)["text_encoder"].state_dict()
    assert all(torch.equal(t, expected_text[n]) for n, t in grafted.text_encoder.state_dict().items())
    assert (out / "sampling.json").read_text() == (editor / "sampling.json").read_text()
    assert not (out / "README.md").exists()  # the editor's card does not describe the graft

    with pytest.raises(ValueError, match="not empty"):
        load_tool("graft_motion").graft(two_d, editor, out)


def test_motion_modules_of_another_shape_are_refused(tmp_path):
    two_d, other = tmp_path / "2d", tmp_path / "other"
    unet2d = save_2d_stage(two_d)
    inflate_unet(unet2d, motion_adapter_for(unet2d, num_attention_heads=4)).save_pretrained(other / "unet")
    with pytest.raises(ValueError, match="not shaped as the inflation makes them"):
        load_tool("graft_motion").graft(two_d, other, tmp_path / "graft")
    assert not (tmp_path / "graft").exists()
