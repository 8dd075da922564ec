"""What a participant sees of a comparison: the input, edit A and edit B as one labelled video, so that one player
keeps them in sync. Made on first view, beside the study's served files, under a name derived from the served
files' (random) names alone, so it tells nothing the page does not already show."""

from __future__ import annotations

import hashlib
from pathlib import Path

from insv2v.compare import MethodResult, panels
from insv2v.study.store import VIEWS, Comparison, StudyStore
from insv2v.video import read_video, write_video


def view_name(comparison: Comparison) -> str:
    digest = hashlib.sha256(f"{comparison.input_file}|{comparison.file_a}|{comparison.file_b}".encode()).hexdigest()
    return digest[:32] + ".mp4"


def comparison_video(store: StudyStore, comparison: Comparison) -> Path:
    """input | A | B of `comparison` as one mp4 (made once; concurrent first views write it once)."""
    path = store.files_dir / VIEWS / view_name(comparison)
    if path.is_file():
        return path
    path.parent.mkdir(exist_ok=True)
    source = read_video(str(store.path_of(comparison.input_file)))
    a = read_video(str(store.path_of(comparison.file_a))).frames
    b = read_video(str(store.path_of(comparison.file_b))).frames
    frames = panels(source.frames, [MethodResult("A", a, 0.0), MethodResult("B", b, 0.0)])
    write_video(path, frames, source.fps)  # whole or not at all: a concurrent first view replaces it with its equal
    return path
