"""A small blind study of three pretend methods on toy-world scenes, for the Rate tab's tests: "insv2v" returns the
exact edit, "tav" the unedited input, "frame2d" the exact edit brightened, so every preference has a right answer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from insv2v.study.build import build_study, read_items
from insv2v.toyworld.world import HELDOUT_SEEDS, sample_triplet
from insv2v.video import write_video

METHODS = ("insv2v", "tav", "frame2d")


def make_study(folder: Path, items: int = 3, frames: int = 6, per_participant: int | None = 3) -> Path:
    """folder/study.db (and its served files) from `items` toy scenes; one gold comparison."""
    root = folder / "items"
    lines = []
    for i in range(items):
        triplet = sample_triplet(HELDOUT_SEEDS.start + i)
        source, target = triplet.render(frames)
        brighter = np.clip(target.astype(int) + 40, 0, 255).astype(np.uint8)
        outputs = {"insv2v": target, "tav": source, "frame2d": brighter}
        (root / f"{i:04d}").mkdir(parents=True)
        for name, video in {"input": source, "target": target, **outputs}.items():
            write_video(root / f"{i:04d}" / f"{name}.mp4", video, 8)
        files = {m: f"{i:04d}/{m}.mp4" for m in METHODS}
        lines.append({"item": f"{i:04d}", "input": f"{i:04d}/input.mp4", "instruction": triplet.edit.instruction,
                      "outputs": files, "reference": f"{i:04d}/target.mp4"})  # fmt: skip
    (root / "items.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return build_study(read_items(root), METHODS, folder / "study.db", size=(64, 64), gold=1,
                       comparisons_per_participant=per_participant)  # fmt: skip
