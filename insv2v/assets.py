"""Where the shipped assets live: the toy editor, the toy CLIP, the toy text-to-image and text-to-video models,
the example clips and the toy synthetic dataset.

In a source checkout (or an editable install) they sit in the repository's `assets/` folder; a wheel carries the
same folder as package data in `insv2v/_assets/` (see pyproject.toml), so the defaults work however the package
was installed.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _assets_dir() -> Path:
    installed = _PACKAGE / "_assets"  # a wheel: package data
    return installed if installed.is_dir() else _PACKAGE.parent / "assets"  # a checkout


ASSETS = _assets_dir()
TOY_EDITOR = ASSETS / "toy-editor"  # the shipped editor: a pipeline folder
TOY_CLIP = ASSETS / "toy-clip"  # the shipped CLIP: a transformers CLIPModel folder
EXAMPLES = ASSETS / "examples"  # example clips and their instructions (examples.json)
TOY_T2I = ASSETS / "toy-t2i"  # the data engine's toy text-to-image model: a TextToVideoPipeline folder (2-D UNet)
TOY_T2V = ASSETS / "toy-t2v"  # the data engine's toy text-to-video model: the same, inflated with motion modules
TOY_PAIRS = ASSETS / "toy-pairs"  # a synthetic paired-video dataset made by the toy text-to-video model
TOY_STUDY = ASSETS / "toy-study" / "study.db"  # a blind study of three toy editors, with its served videos
