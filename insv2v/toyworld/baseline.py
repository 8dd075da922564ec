"""The paper's comparison at toy scale: InsV2V against Tune-A-Video and against its own 2-D model frame by frame, on
the same held-out edits, scored by the same code as the Compare tab (insv2v/compare.py).

Tune-A-Video tunes the toy text-to-image model (the toy world's Stable Diffusion) on each input video with the
input's exact caption, then samples the edited caption the toy grammar derives from the instruction. Seconds are
each method's end-to-end time on frames in memory: for Tune-A-Video, tuning, inversion and sampling.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from insv2v.compare import MethodResult, score_methods
from insv2v.files import write_text_atomically
from insv2v.metrics import load_clip, psnr
from insv2v.stats import bootstrap_interval, wilson_interval
from insv2v.toyworld.dataset import FPS
from insv2v.toyworld.evaluate import EDIT_KINDS, edit_correct, heldout_edits, per_frame_model, seeded_edit
from insv2v.video import write_video

METHODS = ("InsV2V", "2-D per frame", "Tune-A-Video")
METHOD_KEYS = {"InsV2V": "insv2v", "2-D per frame": "frame2d", "Tune-A-Video": "tav"}  # file and study names
MEASURES = ("psnr", "warp_error", "clip_consistency", "loveu_consistency", "loveu_text", "pick_score", "seconds")


def evaluate_baseline(pipe, tav_pipe, tav_settings, clip_source: str, n: int = 20, frames: int = 16, seed: int = 0,
                      kinds: tuple[str, ...] = EDIT_KINDS, save_dir: str | Path | None = None,
                      **sampling) -> dict:  # fmt: skip
    """One record per held-out edit (the kinds in turn; only those of `kinds`), each method's correctness and
    scores; `seed` is the offset into the held-out split, as for `insv2v eval --toyworld --seed`. With `save_dir`,
    every video too (`save_outputs`: the layout `insv2v study build --inputs` imports)."""
    from insv2v.synth.prompts import propose_output_caption
    from insv2v.tav import tav_edit

    scorer = load_clip(clip_source)  # the toy CLIP scores CLIP and PickScore alike: the toy world has no PickScore
    flat = per_frame_model(pipe)
    records = []
    for i, triplet in heldout_edits(n, seed, kinds):
        source, target = triplet.render(frames)
        edited_caption = propose_output_caption(triplet.input_caption, triplet.edit.instruction)
        runs = []
        for name, model in (("InsV2V", pipe), ("2-D per frame", flat)):
            began = time.perf_counter()
            output = seeded_edit(model, source, triplet.edit.instruction, seed + i, **sampling)
            runs.append(MethodResult(name, output, time.perf_counter() - began))
        began = time.perf_counter()
        tav = tav_edit(tav_pipe, source, triplet.input_caption, edited_caption, tav_settings)
        runs.append(MethodResult("Tune-A-Video", tav.frames, time.perf_counter() - began))
        scores = score_methods(runs, source, triplet.edited_caption, scorer, scorer, target)
        if save_dir is not None:
            save_outputs(Path(save_dir), seed + i, triplet, source, target, runs)
        records.append({
            "seed": seed + i,
            "kind": triplet.edit.kind,
            "instruction": triplet.edit.instruction,
            "edited_caption": edited_caption,
            "psnr_identity": psnr(source, target),  # the input returned unchanged
            "methods": {
                r.method: {"correct": bool(edit_correct(triplet, r.frames)), **scores[r.method]} for r in runs
            },
        })  # fmt: skip
    return {"records": records}


def save_outputs(folder: Path, offset: int, triplet, source, target, runs: list[MethodResult]) -> None:
    """ITEM/{input,target,<method key>}.mp4 and a line of `items.jsonl`: {item, input, instruction, outputs:
    {method key: file}, reference: the exact edit, caption, edited_caption, heldout_offset, kind}, paths relative
    to `folder` (the held-out offset and kind say which toy scene it is: `sample_triplet` renders it again)."""
    item = f"{offset:06d}"
    (folder / item).mkdir(parents=True, exist_ok=True)
    files = {"input": source, "target": target, **{METHOD_KEYS[r.method]: r.frames for r in runs}}
    for name, frames in files.items():
        write_video(folder / item / f"{name}.mp4", frames, FPS)
    line = {"item": item, "input": f"{item}/input.mp4", "instruction": triplet.edit.instruction,
            "outputs": {METHOD_KEYS[r.method]: f"{item}/{METHOD_KEYS[r.method]}.mp4" for r in runs},
            "reference": f"{item}/target.mp4", "caption": triplet.input_caption,
            "edited_caption": triplet.edited_caption, "heldout_offset": offset, "kind": triplet.edit.kind}  # fmt: skip
    path = folder / "items.jsonl"  # one line per item: a run made again replaces its items' lines
    lines = [json.loads(text) for text in path.read_text().splitlines() if text.strip()] if path.exists() else []
    lines = sorted([old for old in lines if old.get("item") != item] + [line], key=lambda entry: entry["item"])
    text = "".join(json.dumps(entry) + "\n" for entry in lines)
    write_text_atomically(path, text)


def summarise(records: list[dict]) -> dict:
    """Per method: correct rate per edit kind (Wilson 95%), and each measure's mean with a bootstrap 95% interval
    (seconds: the median too)."""
    summary = {}
    kinds = sorted({r["kind"] for r in records})
    for method in METHODS:
        rows = [r["methods"][method] for r in records if method in r["methods"]]
        if not rows:
            continue
        out = {}
        for kind in [*kinds, "all"]:
            hits = [r["methods"][method]["correct"] for r in records if kind in ("all", r["kind"])]
            out[f"correct_{kind}"] = {"k": sum(hits), "n": len(hits), "interval": wilson_interval(sum(hits), len(hits))}
        for measure in MEASURES:
            values = [row[measure] for row in rows if measure in row and np.isfinite(row[measure])]
            if values:
                mean, interval = float(np.mean(values)), bootstrap_interval(values)
                out[measure] = {"mean": mean, "interval": interval, "n": len(values)}
        out["seconds"]["median"] = float(np.median([row["seconds"] for row in rows]))
        summary[method] = out
    return summary


def markdown_table(records: list[dict]) -> str:
    """The README's comparison table: a row per method, correctness per kind and the scores with their intervals."""
    summary = summarise(records)
    kinds = sorted({r["kind"] for r in records})
    head = ["method", *[f"{k} correct" for k in kinds], "PSNR (dB)", "warp error", "CLIP consistency x100 (all pairs)",
            "CLIP text x100", "PickScore (toy CLIP)", "seconds per edit (median)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, out in summary.items():
        cells = [method]
        for kind in kinds:
            c = out[f"correct_{kind}"]
            low, high = c["interval"]
            cells.append(f"{c['k']}/{c['n']} ({low:.0%}-{high:.0%})")
        for measure, digits in (("psnr", 2), ("warp_error", 5), ("loveu_consistency", 2), ("loveu_text", 2),
                                ("pick_score", 2)):  # fmt: skip
            m = out.get(measure)
            cells.append("" if m is None else f"{m['mean']:.{digits}f} ({m['interval'][0]:.{digits}f}-"
                                                 f"{m['interval'][1]:.{digits}f})")  # fmt: skip
        cells.append(f"{out['seconds']['median']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
