"""The CLIP filter of the synthetic data engine: four scores per pair, each a mean over frames (docs/DESIGN.md).

    sim_0     input frames vs the input caption
    sim_1     edited frames vs the output caption
    sim_dir   edited minus input frames vs output minus input caption (directional similarity)
    sim_image input vs edited frames, frame by frame

A pair is kept when all four reach their thresholds. The reference's thresholds (0.2, 0.2, 0.2, 0.5) belong to
CLIP ViT-L/14; another CLIP carries its own in `filter_thresholds.json` in its folder (the toy CLIP does,
calibrated as its card says), and explicit values override both.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from insv2v.metrics import ClipScorer, direction_similarity, image_similarity, text_similarity

THRESHOLDS_FILE = "filter_thresholds.json"  # in a CLIP folder: the thresholds calibrated for that CLIP
REAL_CLIP = "open_clip:ViT-L-14/openai"  # the reference's filter CLIP
SCORE_NAMES = ("sim_0", "sim_1", "sim_dir", "sim_image")


@dataclass(frozen=True)
class Thresholds:
    """Minimum of each score for a pair to be kept; the defaults are the reference's, for CLIP ViT-L/14."""

    sim_0: float = 0.2
    sim_1: float = 0.2
    sim_dir: float = 0.2
    sim_image: float = 0.5

    def __post_init__(self):
        for name in SCORE_NAMES:
            value = getattr(self, name)
            # the scores are cosine similarities; NaN fails the comparison too (it would keep every pair)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1 <= value <= 1:
                raise ValueError(f"threshold {name} must be a number in [-1, 1] (a cosine similarity), got {value!r}")

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Thresholds:
        unknown = set(values) - set(SCORE_NAMES)
        if unknown:
            raise ValueError(f"unknown threshold(s) {sorted(unknown)}; thresholds: {', '.join(SCORE_NAMES)}")
        return cls(**{k: float(v) if isinstance(v, (int, float)) else v for k, v in values.items()})

    @classmethod
    def for_clip(cls, clip_source: str | None, **overrides: float | None) -> Thresholds:
        """The thresholds a CLIP folder carries (else the reference's), with non-None `overrides` on top."""
        from insv2v.loading import names_missing_folder

        if clip_source and names_missing_folder(clip_source):
            raise ValueError(f"CLIP folder {clip_source!r} does not exist")
        path = Path(clip_source) / THRESHOLDS_FILE if clip_source else None
        base = cls.from_dict(json.loads(path.read_text())["thresholds"]) if path and path.is_file() else cls()
        return dataclasses.replace(base, **{k: float(v) for k, v in overrides.items() if v is not None})


def default_clip(t2v: str) -> str:
    """The toy CLIP for a toy-world model (its "VAE" is the pixel fold: it draws the toy world, which the toy CLIP
    knows), CLIP ViT-L/14 for any other text-to-video model."""
    from insv2v.assets import TOY_CLIP

    index = Path(t2v) / "model_index.json"
    vae = json.loads(index.read_text()).get("vae", [None, None])[1] if index.is_file() else None
    return str(TOY_CLIP) if vae == "PixelUnshuffleAutoencoder" else REAL_CLIP


@dataclass(frozen=True)
class PairScores:
    sim_0: float
    sim_1: float
    sim_dir: float
    sim_image: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in dataclasses.asdict(self).items()}

    def failed(self, thresholds: Thresholds) -> list[str]:
        """The scores below their thresholds, or not numbers (empty: the pair is kept)."""
        return [name for name in SCORE_NAMES if not getattr(self, name) >= getattr(thresholds, name)]

    def passes(self, thresholds: Thresholds) -> bool:
        return not self.failed(thresholds)


def score_pair(
    scorer: ClipScorer, input_frames: np.ndarray, edited_frames: np.ndarray, input_caption: str, output_caption: str
) -> PairScores:
    """The four filter scores of one pair of (f, h, w, 3) uint8 videos; the texts are the captions, not the edit."""
    images = scorer.images(np.concatenate([input_frames, edited_frames]))  # (2f, d): one batch, as the reference
    images_0, images_1 = images.chunk(2)
    text_0, text_1 = scorer.texts([input_caption, output_caption])
    return PairScores(
        sim_0=text_similarity(images_0, text_0),
        sim_1=text_similarity(images_1, text_1),
        sim_dir=direction_similarity(images_0, images_1, text_0, text_1),
        sim_image=image_similarity(images_0, images_1),
    )
