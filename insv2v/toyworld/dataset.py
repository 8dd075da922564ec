"""Toy-world triplets as files anyone can open: NNNN/input.mp4, NNNN/target.mp4, NNNN/meta.json."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from insv2v.toyworld.world import sample_triplet, split_range
from insv2v.video import write_video

FPS = 8


def split_seeds(split: str, n: int, seed: int = 0) -> range:
    """The n triplet seeds of a split, starting `seed` into it: the held-out split is fixed by its range."""
    seeds = split_range(split)
    if n < 1 or seed < 0 or seed + n > len(seeds):
        raise ValueError(f"n={n} triplets from offset {seed} do not fit in the {split} split")
    start = seeds.start + seed
    return range(start, start + n)


def write_triplets(out_dir: str | Path, n: int, seed: int = 0, split: str = "train", frames: int = 16) -> list[Path]:
    """Render n triplets of `split` into numbered folders; returns the folders."""
    if not 1 <= frames <= 256:
        raise ValueError(f"frames must be in [1, 256], got {frames}")
    out_dir = Path(out_dir)
    folders = []
    for i, triplet_seed in enumerate(split_seeds(split, n, seed)):
        triplet = sample_triplet(triplet_seed)
        source, target = triplet.render(frames)
        folder = out_dir / f"{i:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        write_video(folder / "input.mp4", source, FPS)
        write_video(folder / "target.mp4", target, FPS)
        meta = {
            "instruction": triplet.edit.instruction,
            "edit_type": triplet.edit.kind,
            "edit_value": triplet.edit.value,
            "input_caption": triplet.input_caption,
            "edited_caption": triplet.edited_caption,
            "split": split,
            "seed": triplet_seed,
            "frames": frames,
            "fps": FPS,
            "scene": dataclasses.asdict(triplet.scene),
        }
        (folder / "meta.json").write_text(json.dumps(meta, indent=2))
        folders.append(folder)
    return folders
