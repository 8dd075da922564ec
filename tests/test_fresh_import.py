"""A saved pipeline folder loads after `from insv2v import InsV2VPipeline` alone, in a fresh interpreter.

diffusers never imports the module a folder's model_index.json names, so every component class (our UNet, the
pixel autoencoder) must be imported by insv2v.pipeline itself; a test process that imported them already would
hide a missing import, hence the subprocess.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from reference_parity import load_fixture, seeded_checkpoint

from insv2v.assets import TOY_EDITOR
from insv2v.models.reference import convert_reference_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# Runs with nothing imported before it; prints what was loaded, as JSON on its last line.
LOAD = """
import json, sys
from insv2v import InsV2VPipeline
pipe = InsV2VPipeline.from_pretrained(sys.argv[1])
print(json.dumps({
    "pipeline": type(pipe).__name__,
    "classes": {name: type(c).__name__ for name, c in pipe.components.items()},
    "norm_mode": getattr(pipe.unet.config, "norm_mode", None),
}))
"""


def load_in_fresh_python(folder: Path) -> dict:
    """What `InsV2VPipeline.from_pretrained(folder)` loads in a new interpreter, offline."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", LOAD, str(folder)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # a fresh interpreter
def test_a_converted_reference_checkpoint_loads_after_a_plain_import(tmp_path):
    _, meta = load_fixture()
    checkpoint = seeded_checkpoint(meta["spec"], meta["seed"])  # the layout the reference saves
    configs = {name: meta[name] for name in ("unet_config", "vae_config", "text_encoder_config")}
    folder = tmp_path / "converted"
    convert_reference_checkpoint(checkpoint, folder, **configs)
    loaded = load_in_fresh_python(folder)
    assert loaded["pipeline"] == "InsV2VPipeline"
    assert loaded["classes"]["unet"] == "InsV2VUNetMotionModel" and loaded["norm_mode"] == "reference"
    assert loaded["classes"]["vae"] == "AutoencoderKL" and loaded["classes"]["text_encoder"] == "CLIPTextModel"


@pytest.mark.slow  # a fresh interpreter
def test_the_shipped_toy_editor_loads_after_a_plain_import():
    loaded = load_in_fresh_python(TOY_EDITOR)
    assert loaded["pipeline"] == "InsV2VPipeline"
    assert loaded["classes"]["vae"] == "PixelUnshuffleAutoencoder"
    assert loaded["classes"]["unet"] == "UNetMotionModel"  # the toy editor is a stock diffusers UNet
    assert loaded["classes"]["text_encoder"] == "CLIPTextModel"
