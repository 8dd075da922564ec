"""Editors side by side on one video: InsV2V from an instruction, Tune-A-Video from a pair of captions, scored alike.

The Compare tab and `insv2v eval --toyworld --baseline tav` both score through `score_methods`, so a number means
the same in both places.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from insv2v.metrics import ClipScorer, compare_scores, consecutive_flows
from insv2v.video import side_by_side

LABEL_HEIGHT = 16  # pixels of the caption strip above each panel of the side-by-side video


@dataclass
class MethodResult:
    """One method's edit of the source: its frames and its end-to-end wall time (tuning included)."""

    method: str  # "InsV2V", "Tune-A-Video", "2-D per frame"
    frames: np.ndarray  # (f, h, w, 3) uint8
    seconds: float
    detail: str = ""  # how the time was spent, for the page ("tuned 300 steps in 84 s; inverted and sampled in 6 s")


def score_methods(
    results: list[MethodResult],
    source: np.ndarray,
    caption: str,
    scorer: ClipScorer | None = None,
    pick_scorer: ClipScorer | None = None,
    target: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """Per method, metrics.COMPARE_SCORES against the edited `caption` plus `seconds`; the input's optical flow
    (for warp error) is computed once for all of them."""
    flows = consecutive_flows(source)
    scores = {r.method: compare_scores(r.frames, source, caption, scorer, pick_scorer, flows, target) for r in results}
    return {r.method: {**scores[r.method], "seconds": r.seconds} for r in results}


def labelled(frames: np.ndarray, label: str) -> np.ndarray:
    """(f, h, w, 3) uint8 frames under a dark strip naming them, so a viewer knows which panel is which."""
    f, _, w, _ = frames.shape
    strip = np.full((LABEL_HEIGHT, w, 3), 32, np.uint8)
    width_at_1 = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1)[0][0]
    scale = min(0.4, (w - 4) / max(width_at_1, 1))  # as large as fits, small panels (the toy world's 64 px) too
    cv2.putText(strip, label, (2, LABEL_HEIGHT - 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([np.broadcast_to(strip, (f, *strip.shape)), frames], axis=1)  # (f, 16 + h, w, 3)


def panels(source: np.ndarray, results: list[MethodResult]) -> np.ndarray:
    """Input | each method, labelled, as one video: one player keeps them in sync (one play, pause and seek).

    Methods that returned fewer frames than the input (none should) are padded with their last frame."""
    f = len(source)
    videos = [labelled(source, "input")]
    for r in results:
        frames = np.asarray(r.frames)
        if len(frames) < f:
            frames = np.concatenate([frames, np.repeat(frames[-1:], f - len(frames), axis=0)])
        videos.append(labelled(frames[:f], r.method))
    out = videos[0]
    for video in videos[1:]:
        out = side_by_side(out, video)  # (f, 16 + h, sum of widths, 3)
    return out
