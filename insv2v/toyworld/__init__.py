"""The toy world: procedural paired videos with exact ground truth, and the models trained on it."""

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "assets"
TOY_EDITOR = ASSETS / "toy-editor"  # the shipped editor: a pipeline folder
TOY_CLIP = ASSETS / "toy-clip"  # the shipped CLIP: a transformers CLIPModel folder
