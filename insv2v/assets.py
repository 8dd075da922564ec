"""Where the shipped assets live: the toy editor, the toy CLIP and the example clips.

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
