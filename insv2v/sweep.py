"""A guidance sweep: one input, one instruction, one seed, a grid of text CFG x video CFG values.

The input is decoded and encoded once and its optical flow (for the warp error) computed once; every cell
reuses them, and each clip's first denoising step, which does not depend on the guidance scales, runs once for
the whole grid. A cell costs its remaining steps, decoding, writing and scoring. With motion compensation on,
each cell passes the pixel frames again (the pipeline computes MC flows from them, once, through the same cache)
and so encodes them again.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from insv2v.editing import EditRecipe, Source, check_instruction, run_edit
from insv2v.metrics import EDIT_SCORES, ClipScorer, consecutive_flows, edit_scores
from insv2v.pipeline import TEXT_GUIDANCE_RANGE, VIDEO_GUIDANCE_RANGE, InsV2VPipeline, SamplingCache

MAX_CELLS = 49  # a 7x7 grid at most


@dataclass
class SweepCell:
    text_cfg: float
    video_cfg: float
    output: Path
    scores: dict[str, float]
    seconds: float  # sampling, decoding, writing and scoring this cell


@dataclass
class SweepResult:
    recipe: EditRecipe  # the shared settings, seed fixed
    text_cfgs: list[float]  # grid rows
    video_cfgs: list[float]  # grid columns
    cells: list[SweepCell]  # row-major
    num_frames: int  # frames of each edit
    shared_seconds: float  # decoding, encoding and flow, done once for all cells
    seconds: float  # the whole sweep

    def rows(self) -> list[dict]:
        """One flat dict per cell: the guidance scales, the scores, the seconds, the output's file name."""
        names = [name for name in EDIT_SCORES if any(name in cell.scores for cell in self.cells)]
        return [
            {
                "text_cfg": cell.text_cfg,
                "video_cfg": cell.video_cfg,
                **{name: cell.scores.get(name) for name in names},
                "seconds": round(cell.seconds, 3),
                "output": cell.output.name,
            }
            for cell in self.cells
        ]

    def write_csv(self, path: str | Path) -> Path:
        rows = self.rows()
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return Path(path)

    def write_json(self, path: str | Path) -> Path:
        data = {
            "recipe": {**self.recipe.to_json(), "input": Path(self.recipe.input).name},
            "text_cfgs": self.text_cfgs,
            "video_cfgs": self.video_cfgs,
            "num_frames": self.num_frames,
            "cells": self.rows(),
            "shared_seconds": round(self.shared_seconds, 3),
            "seconds": round(self.seconds, 3),
        }
        Path(path).write_text(json.dumps(data, indent=2))
        return Path(path)


def score_grid(rows: Sequence[dict], score: str, shape: tuple[int, int]) -> np.ndarray:
    """(text CFGs, video CFGs) values of `score` over a sweep's rows (`SweepResult.rows`, the cells of its JSON);
    NaN where a cell lacks it."""
    return np.array([np.nan if row.get(score) is None else row[score] for row in rows], dtype=float).reshape(shape)


def best_cell(rows: Sequence[dict], score: str) -> int:
    """Index of the row with the best `score` (higher or lower, as EDIT_SCORES says); the first of equals."""
    if score not in EDIT_SCORES:
        raise ValueError(f"score must be one of {list(EDIT_SCORES)}, got {score!r}")
    scored = [i for i, row in enumerate(rows) if row.get(score) is not None]
    if not scored:
        raise ValueError(f"no cell has the score {score!r}")
    return max(scored, key=lambda i: EDIT_SCORES[score] * rows[i][score])


def parse_scales(text: str, name: str) -> list[float]:
    """ "3, 7.5, 12" -> [3.0, 7.5, 12.0]; `name` ("text CFG" or "video CFG") goes into the error message."""
    parts = [p for p in (text or "").replace(";", ",").replace(" ", ",").split(",") if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{name} values must be numbers separated by commas, e.g. 5, 7.5, 10; got {text!r}") from None
    if not values:
        raise ValueError(f"give at least one {name} value, e.g. 5, 7.5, 10")
    return values


def check_grid(text_cfgs: Sequence[float], video_cfgs: Sequence[float]) -> None:
    """Reject a grid that is empty, too large, repeats a value or leaves the accepted ranges, before any work."""
    for name, values, (low, high) in [
        ("text CFG", text_cfgs, TEXT_GUIDANCE_RANGE),
        ("video CFG", video_cfgs, VIDEO_GUIDANCE_RANGE),
    ]:
        if not values:
            raise ValueError(f"give at least one {name} value")
        bad = [v for v in values if not low <= v <= high]
        if bad:
            raise ValueError(f"{name} values must be in [{low}, {high}], got {bad}")
        if len({f"{v:g}" for v in values}) != len(values):  # each cell's file is named by its values so written
            raise ValueError(f"{name} values repeat (to 6 significant digits): {list(values)}")
    if len(text_cfgs) * len(video_cfgs) > MAX_CELLS:
        raise ValueError(f"a sweep has at most {MAX_CELLS} cells, got {len(text_cfgs)} x {len(video_cfgs)}")


def run_sweep(
    recipe: EditRecipe,
    text_cfgs: Sequence[float],
    video_cfgs: Sequence[float],
    pipe: InsV2VPipeline,
    out_dir: str | Path,
    *,
    scorer: ClipScorer | None = None,
    callback_on_step_end=None,
    on_cell: Callable[[int, SweepCell], None] | None = None,
) -> SweepResult:
    """Edit `recipe.input` once per (text CFG, video CFG) pair into `out_dir`, scoring each cell.

    The seed is drawn once (if the recipe has none), so cells differ only in guidance. `on_cell(i, cell)` is
    called after each cell; a cancelled cell (through `callback_on_step_end`) raises InterruptedError.
    """
    began = time.perf_counter()
    text_cfgs, video_cfgs = [float(v) for v in text_cfgs], [float(v) for v in video_cfgs]
    check_grid(text_cfgs, video_cfgs)
    check_instruction(recipe.instruction)
    recipe = recipe.with_seed()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # 1. Decode, encode and measure the input's motion once
    source = Source.read(recipe, pipe)
    if not recipe.motion_compensated:
        source.encode(pipe)
    flows = consecutive_flows(source.clip.frames)
    cache = SamplingCache()  # each clip's first step and the MC flows, computed for the first cell
    shared_seconds = time.perf_counter() - began

    # 2. One edit per cell, reusing all of it
    cells = []
    for i, (text_cfg, video_cfg) in enumerate((t, v) for t in text_cfgs for v in video_cfgs):
        cell_began = time.perf_counter()
        cell_recipe = dataclasses.replace(recipe, text_cfg=text_cfg, video_cfg=video_cfg)
        output = out_dir / f"text{text_cfg:g}_video{video_cfg:g}.mp4"
        result = run_edit(
            cell_recipe, output, pipe, source=source, cache=cache, keep_frames=True,
            callback_on_step_end=callback_on_step_end,
        )  # fmt: skip
        scores = edit_scores(result.frames, result.source_frames, recipe.instruction, scorer, flows)
        cell = SweepCell(text_cfg, video_cfg, output, scores, time.perf_counter() - cell_began)
        cells.append(cell)
        if on_cell is not None:
            on_cell(i, cell)
    frames = len(source.clip.frames)
    return SweepResult(recipe, text_cfgs, video_cfgs, cells, frames, shared_seconds, time.perf_counter() - began)
