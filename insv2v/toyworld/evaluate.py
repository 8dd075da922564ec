"""Measure an editor on the held-out toy world: edit correctness against exact ground truth, PSNR, and the
paper's temporal claims (inflated vs per-frame model; LVSC off / on / with motion compensation on long clips)."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from collections.abc import Iterator

import numpy as np
import torch

from insv2v.longvideo import plan_clips
from insv2v.metrics import (
    clip_frame_consistency,
    consecutive_flows,
    load_clip,
    pair_warp_errors,
    psnr,
    seam_measures,
    warp_error,
)
from insv2v.models import zero_motion_outputs
from insv2v.pipeline import InsV2VPipeline
from insv2v.stats import bootstrap_interval, wilson_interval
from insv2v.toyworld.world import (
    BACKGROUNDS,
    EDIT_MIX,
    HELDOUT_SEEDS,
    SHAPE_COLOURS,
    Triplet,
    render,
    sample_triplet,
    shape_masks,
)

EDIT_KINDS = tuple(sorted(EDIT_MIX))  # background, colour, shape, style: the eval cycles through them


def _nearest(colour: np.ndarray, palette: dict[str, tuple]) -> str:
    names = list(palette)
    distances = [np.linalg.norm(colour - np.array(palette[n], np.float64)) for n in names]
    return names[int(np.argmin(distances))]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (0 when both are empty)."""
    return (a & b).sum() / max((a | b).sum(), 1)


def edit_correct(triplet: Triplet, output: np.ndarray) -> bool:
    """Did `output` (f, h, w, 3) uint8, frames 0.., make the edit the instruction asked for?

    colour: the edited shape's pixels are nearest the new colour; background: the uncovered pixels match the
    new background better than any other; shape: the shape's pixels overlap the new shape more than the old;
    style: the output is closer to the ground truth than to the input.
    """
    edit, f = triplet.edit, len(output)
    out = output.astype(np.float64)
    if edit.kind == "style":
        source, target = triplet.render(f)
        return np.mean((out - target) ** 2) < np.mean((out - source) ** 2)
    before, after = shape_masks(triplet.scene, f), shape_masks(triplet.edited, f)
    if edit.kind == "colour":
        core = after[edit.target] > 0.9
        return bool(core.any()) and _nearest(out[core].mean(axis=0), SHAPE_COLOURS) == edit.value
    if edit.kind == "background":
        uncovered = (before.max(axis=0) == 0) & (after.max(axis=0) == 0)
        errors = {
            name: np.abs(
                out[uncovered] - render(dataclasses.replace(triplet.edited, background=name), f)[uncovered]
            ).mean()
            for name in BACKGROUNDS
        }
        return min(errors, key=errors.get) == edit.value
    # shape: classify pixels near the shape as "its colour" vs anything else in the scene, compare overlaps
    shape = triplet.scene.shapes[edit.target]
    palette = {"shape": SHAPE_COLOURS[shape.colour]}
    palette.update({f"bg{i}": tone for i, tone in enumerate(BACKGROUNDS[triplet.scene.background])})
    palette.update({f"other{i}": SHAPE_COLOURS[s.colour] for i, s in enumerate(triplet.scene.shapes) if s != shape})
    old, new = before[edit.target] > 0.5, after[edit.target] > 0.5
    region = old | new
    ours = np.zeros_like(region)
    pixels = out[region]
    names = list(palette)
    tones = np.array([palette[n] for n in names], np.float64)  # (k, 3)
    ours[region] = np.argmin(((pixels[:, None] - tones[None]) ** 2).sum(-1), axis=1) == 0
    return _iou(ours, new) > _iou(ours, old)


def seeded_edit(pipe: InsV2VPipeline, frames: np.ndarray, instruction: str, seed: int, **kwargs) -> np.ndarray:
    """The pipeline's edit of `frames` from a generator seeded with `seed`, as uint8 frames: what every row measures."""
    out = pipe(frames, instruction, generator=torch.Generator().manual_seed(seed), **kwargs).frames
    return (out * 255).round().astype(np.uint8)


def per_frame_model(pipe: InsV2VPipeline) -> InsV2VPipeline:
    """The same pipeline with its motion modules silenced: the 2-D model applied frame by frame."""
    model = InsV2VPipeline(**{**pipe.components, "unet": zero_motion_outputs(copy.deepcopy(pipe.unet))})
    model.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))
    return model


def _describe(triplet: Triplet) -> dict:
    """What an edit's outcome may depend on, for diagnosing failures: the edited shape, the scene, the motion."""
    scene, edit = triplet.scene, triplet.edit
    row = {"background": scene.background, "pan": list(scene.pan), "shapes": len(scene.shapes)}
    if edit.target is not None:
        shape = scene.shapes[edit.target]
        row.update(shape=shape.kind, colour=shape.colour, radius=shape.radius, motion=shape.motion,
                   speed=float(np.hypot(shape.vx, shape.vy)), front=edit.target == len(scene.shapes) - 1)  # fmt: skip
    return row


def heldout_edits(n: int, seed: int, kinds: tuple[str, ...] = EDIT_KINDS) -> Iterator[tuple[int, Triplet]]:
    """(i, triplet) for the `n` held-out edits at offset `seed`, the kinds in turn; only those of `kinds`, each the
    same edit whichever other kinds are asked for."""
    for i in range(n):
        kind = EDIT_KINDS[i % len(EDIT_KINDS)]
        if kind in kinds:
            yield i, sample_triplet(HELDOUT_SEEDS.start + seed + i, kind=kind)


def evaluate_edits(
    pipe, n: int = 100, frames: int = 16, seed: int = 0, kinds: tuple[str, ...] = EDIT_KINDS, **kwargs
) -> dict:
    """One record per held-out edit (the kinds in turn): correct or not, PSNR against the exact target and of the
    input returned unchanged, and what the scene was. `seed` is the offset into the held-out split, as for
    `insv2v toyworld make --split heldout --seed`; disjoint offsets give disjoint samples. `kinds` measures only
    those of the `n` edits, the very records the whole run gives them."""
    records = []
    for i, triplet in heldout_edits(n, seed, kinds):
        source, target = triplet.render(frames)
        output = seeded_edit(pipe, source, triplet.edit.instruction, seed + i, **kwargs)
        records.append({
            "seed": seed + i,
            "kind": triplet.edit.kind,
            "value": triplet.edit.value,
            "instruction": triplet.edit.instruction,
            "correct": bool(edit_correct(triplet, output)),
            "psnr": psnr(output, target),
            "psnr_identity": psnr(source, target),
            **_describe(triplet),
        })  # fmt: skip
    return {"records": records}


def evaluate_temporal(pipe, clip_source: str, n: int = 12, frames: int = 16, seed: int = 0, **kwargs) -> dict:
    """Frame consistency (toy CLIP) and warp error along the input's motion, per video: per-frame 2-D vs inflated."""
    scorer = load_clip(clip_source)
    rows = {}
    for name, model in (("2-D per frame", per_frame_model(pipe)), ("inflated", pipe)):
        consistency, warp = [], []
        for i in range(n):
            triplet = sample_triplet(HELDOUT_SEEDS.start + seed + i)
            source, _ = triplet.render(frames)
            output = seeded_edit(model, source, triplet.edit.instruction, seed + i, **kwargs)
            consistency.append(clip_frame_consistency(scorer, output))
            warp.append(warp_error(output, flow_frames=source))
        rows[name] = {"frame_consistency": consistency, "warp_error": warp}
    return rows


# Long-video scenes come from this far into the held-out split past the sample's offset, away from its edits.
LONG_OFFSET = 10_000


# The long-video rows: LVSC off, on, and with motion compensation.
LONG_SETTINGS = {
    "LVSC off": {"lvsc_fraction": 0.0},
    "LVSC": {"lvsc_fraction": 0.5},
    "LVSC + MC": {"lvsc_fraction": 0.5, "motion_compensation": True},
}
LONG_FRAMES, LONG_FRAMES_PER_CLIP, LONG_REF_FRAMES = 40, 16, 4  # a long video, and the clips it is edited in


def long_video(seed: int, frames: int = LONG_FRAMES) -> tuple[str, np.ndarray]:
    """The held-out long video of an offset, always with a moving camera: its instruction and its frames."""
    triplet = sample_triplet(HELDOUT_SEEDS.start + LONG_OFFSET + seed)
    pan = triplet.scene.pan if triplet.scene.pan != (0.0, 0.0) else (1.0, 0.0)
    return triplet.edit.instruction, render(dataclasses.replace(triplet.scene, pan=pan), frames)


def clip_seams(frames: int, frames_per_clip: int, ref_frames: int) -> list[int]:
    """The first new frame of each clip after the first: where a long video's clips meet."""
    return [s.start + s.num_ref for s in plan_clips(frames, frames_per_clip, ref_frames)[1:]]


def evaluate_long(pipe, n: int = 6, frames: int = LONG_FRAMES, frames_per_clip: int = LONG_FRAMES_PER_CLIP,
                  ref_frames: int = LONG_REF_FRAMES, seed: int = 0, **kwargs) -> dict:  # fmt: skip
    """Seam score, warp error at the seams and over the whole clip, per long clip with camera motion, in each of
    `LONG_SETTINGS`."""
    seams = clip_seams(frames, frames_per_clip, ref_frames)
    videos = [long_video(seed + i, frames) for i in range(n)]
    flows = [consecutive_flows(source) for _, source in videos]  # the input's motion: the same for every setting
    rows = {}
    for name, extra in LONG_SETTINGS.items():
        seam, at_seams, warp = [], [], []
        for i, (instruction, source) in enumerate(videos):
            output = seeded_edit(pipe, source, instruction, seed + i, frames_per_clip=frames_per_clip,
                                 ref_frames=ref_frames, **extra, **kwargs)  # fmt: skip
            errors = pair_warp_errors(output, flows=flows[i])  # once, for all three measures
            score, error = seam_measures(errors, seams)
            seam.append(score)
            at_seams.append(error)
            warp.append(float(errors.mean()))
        rows[name] = {"seam_score": seam, "seam_error": at_seams, "warp_error": warp}
    return rows


PARTS = ("edits", "temporal", "long")  # the rows an evaluation measures, each its own key in the results


def shared_parts(results: list[dict]) -> list[str]:
    """The parts that every one of the results holds: the ones that can be pooled."""
    return [part for part in PARTS if all(part in r for r in results)]


def combine(results: list[dict]) -> dict:
    """Several evaluations (disjoint samples, same sampling) as one: the records and per-video values of the parts
    they all hold, pooled (a part only some of them hold would describe a different sample than the rest)."""
    if len({json.dumps(r["sampling"], sort_keys=True) for r in results}) > 1:
        raise ValueError("the results were measured with different sampling settings; pool like with like")
    kinds = {tuple(r.get("kinds", EDIT_KINDS)) for r in results}  # a record of some edit kinds names them
    if len(kinds) > 1:
        named = "; ".join(", ".join(k) for k in sorted(kinds))
        raise ValueError(f"the results hold edits of different kinds ({named}); pool like with like")
    models = {r["model"] for r in results if "model" in r}  # records from before models were recorded: unknown
    weighed = all("weights" in r for r in results)  # then the weights tell, whatever the folders were called
    if len({r["weights"] for r in results} if weighed else models) > 1:
        named = ", ".join(sorted(m or "the shipped toy editor" for m in models))
        what = "models with different weights" if weighed else "different models"
        raise ValueError(f"the results were measured on {what} ({named}); pool like with like")
    parts = shared_parts(results)
    if not parts:
        held = [[part for part in PARTS if part in r] for r in results]
        raise ValueError(f"the results share no rows ({held}); pool like with like")
    seeds = [record["seed"] for r in results for record in r.get("edits", {}).get("records", [])]
    offsets = [o for r in results for o in r.get("seeds", [r.get("seed")])]  # a pooled result holds several
    ranges = {part: [span for r in results for span in scene_ranges(r).get(part, [])] for part in parts}
    shared = [part for part, spans in ranges.items() if _overlap(spans)]
    if len(set(seeds)) < len(seeds) or len(set(offsets)) < len(offsets) or shared:
        where = f"offsets {offsets}" + (f"; the scenes of {', '.join(shared)}" if shared else "")
        raise ValueError(f"the samples overlap ({where}): pooling them would count edits or videos twice")
    pooled = {"sampling": results[0]["sampling"], "seeds": offsets, "ranges": ranges}
    if "kinds" in results[0]:
        pooled["kinds"] = results[0]["kinds"]
    if models:  # the first result's name for its model, and the weights every result was measured on
        pooled["model"] = next(r["model"] for r in results if "model" in r)
    if weighed:
        pooled["weights"] = results[0]["weights"]
    if "edits" in parts:
        pooled["edits"] = {"records": [record for r in results for record in r["edits"]["records"]]}
    for part in (p for p in parts if p != "edits"):  # per-video values, under one name per setting
        pooled[part] = {
            name: {
                measure: [v for r in results for v in r[part][name][measure]]
                for measure in row
                if all(measure in r[part][name] for r in results)  # older records lack the newer measures
            }
            for name, row in results[0][part].items()
        }
    return pooled


def left_out_measures(results: list[dict], pooled: dict) -> list[str]:
    """The per-video measures some of `results` hold that `combine` left out of `pooled` (newer than other records,
    as the seams' own warp error), as "part measure"."""
    return sorted(
        {f"{part} {measure}" for r in results for part in pooled.keys() & {"temporal", "long"}
         for name, row in r[part].items() for measure in row if measure not in pooled[part][name]}
    )  # fmt: skip


def scene_ranges(result: dict) -> dict[str, list[list[int]]]:
    """The held-out scene offsets [start, end) each video part of a result measured (a pooled one records them)."""
    if "ranges" in result:
        return result["ranges"]
    if result.get("seed") is None:
        return {}
    rows = {part: next(iter(result[part].values())) for part in ("temporal", "long") if part in result}
    counts = {part: len(next(iter(row.values()))) for part, row in rows.items()}  # any measure: one value a video
    first = {"temporal": result["seed"], "long": LONG_OFFSET + result["seed"]}
    return {part: [[first[part], first[part] + count]] for part, count in counts.items()}


def _overlap(spans: list[list[int]]) -> bool:
    spans = sorted(spans)
    return any(b[0] < a[1] for a, b in itertools.pairwise(spans))


def summarise_edits(records: list[dict]) -> dict:
    """Per edit kind: correct count, rate and its Wilson 95% interval; PSNR and its gain over returning the input,
    with bootstrap 95% intervals; and the same over all edits."""
    kinds = {}
    for kind in [*sorted({r["kind"] for r in records}), "all"]:
        rows = [r for r in records if kind in ("all", r["kind"])]
        k, n = sum(r["correct"] for r in rows), len(rows)
        gains = [r["psnr"] - r["psnr_identity"] for r in rows]
        kinds[kind] = {
            "correct": k, "count": n, "rate": k / n, "rate_ci": wilson_interval(k, n),
            "psnr": float(np.mean([r["psnr"] for r in rows])), "psnr_ci": bootstrap_interval([r["psnr"] for r in rows]),
            "psnr_identity": float(np.mean([r["psnr_identity"] for r in rows])),
            "gain": float(np.mean(gains)), "gain_ci": bootstrap_interval(gains),
        }  # fmt: skip
    return kinds


def _mean_ci(values: list[float], digits: int) -> str:
    low, high = bootstrap_interval(values)
    return f"{np.mean(values):.{digits}f} ({low:.{digits}f}-{high:.{digits}f}, n={len(values)})"


def markdown_table(results: dict) -> str:
    """The evaluation results as the README's table: each value with its count and 95% interval."""
    lines = ["| claim | setting | measure | value |", "|---|---|---|---|"]
    summary = summarise_edits(results["edits"]["records"]) if "edits" in results else {}
    kinds = [kind for kind in summary if kind != "all"]
    pooled = "all" if len(kinds) > 1 else "".join(kinds)  # a record of one kind (`--kinds`) pools only that kind
    for kind, row in summary.items():
        if kind == "all":
            continue
        low, high = row["rate_ci"]
        value = f"{row['rate']:.0%} of {row['count']} ({low:.0%}-{high:.0%})"
        lines.append(f"| edits follow the instruction | {kind} | correct | {value} |")
    for kind, row in summary.items():
        if kind == "all" and pooled != "all":
            continue  # the one kind's row again
        low, high = row["gain_ci"]
        value = f"{row['gain']:+.2f} ({low:+.2f} to {high:+.2f}, n={row['count']})"
        lines.append(f"| edits match ground truth | {kind} | PSNR gain over the input (dB) | {value} |")
    if summary:
        everything = summary["all"]
        low, high = everything["psnr_ci"]
        lines.append(f"| | {pooled} | PSNR (dB) | {everything['psnr']:.2f} ({low:.2f}-{high:.2f}) |")
        lines.append(f"| | input returned unchanged | PSNR (dB) | {everything['psnr_identity']:.2f} |")
    for name, row in results.get("temporal", {}).items():
        consistency = _mean_ci(row["frame_consistency"], 4)
        lines.append(f"| inflation makes frames consistent | {name} | frame consistency | {consistency} |")
        lines.append(f"| | {name} | warp error | {_mean_ci(row['warp_error'], 5)} |")
    for name, row in results.get("long", {}).items():
        lines.append(f"| LVSC hides clip seams | {name} | seam score | {_mean_ci(row['seam_score'], 3)} |")
        if "seam_error" in row:  # records from before it was measured hold the ratio alone
            lines.append(f"| | {name} | warp error at the seams | {_mean_ci(row['seam_error'], 5)} |")
        lines.append(f"| | {name} | warp error | {_mean_ci(row['warp_error'], 5)} |")
    return "\n".join(lines)
