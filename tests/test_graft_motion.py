"""tools/graft_motion.py: a 2-D stage's weights and another editor's motion modules, exactly, in a loadable editor."""

import importlib.util
from pathlib import Path

import pytest
import torch

from insv2v.loading import load_pipeline
from insv2v.models import inflate_unet
from insv2v.testing.tiny import save_tiny_pipeline, tiny_components, tiny_unet2d

TOOL = Path(__file__).resolve().parents[1] / "tools" / "graft_motion.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("graft_motion", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_graft_holds_the_2d_stage_and_the_editors_motion_modules(tmp_path):
    editor, two_d, out = tmp_path / "editor", tmp_path / "2d", tmp_path / "graft"
    save_tiny_pipeline(str(editor), seed=0)  # its motion modules have random outputs
    (editor / "sampling.json").write_text('{"text_cfg": 4, "video_cfg": 1.5}')
    (editor / "README.md").write_text("the editor's card")
    torch.manual_seed(1)
    unet2d = tiny_unet2d()
    unet2d.save_pretrained(two_d / "unet")
    tiny_components(seed=1)["text_encoder"].save_pretrained(two_d / "text_encoder")

    assert load_tool().graft(two_d, editor, out) > 0
    grafted, donor = load_pipeline(str(out)), load_pipeline(str(editor))
    inflated = inflate_unet(unet2d).state_dict()
    motion = 0
    for name, tensor in grafted.unet.state_dict().items():
        source = donor.unet.state_dict()[name] if "motion_modules" in name else inflated[name]
        assert torch.equal(tensor, source), name
        motion += "motion_modules" in name
    assert motion > 0 and any(t.abs().sum() > 0 for n, t in inflated.items() if "motion_modules" not in n)
    assert not torch.equal(grafted.unet.conv_in.weight, donor.unet.conv_in.weight)  # the 2-D stage's, not the donor's
    expected_text = tiny_components(seed=1)["text_encoder"].state_dict()
    assert all(torch.equal(t, expected_text[n]) for n, t in grafted.text_encoder.state_dict().items())
    assert (out / "sampling.json").read_text() == (editor / "sampling.json").read_text()
    assert not (out / "README.md").exists()  # the editor's card does not describe the graft

    with pytest.raises(ValueError, match="not empty"):
        load_tool().graft(two_d, editor, out)
