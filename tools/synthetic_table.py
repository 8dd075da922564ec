"""Editors trained on ground-truth and on synthetic pairs, on the same held-out edits: the table of
docs/synthetic-editor.md (the README's keeps some of its rows).

    python tools/synthetic_table.py "ground truth=docs/results/toyworld_heldout_100000_edits.json" \
        "synthetic, kept pairs=runs/eval/kept.json@runs/2d-kept" "synthetic, all pairs=runs/eval/all.json@runs/2d-all"

A row is NAME=EVAL_JSON[+EVAL_JSON][@RUN_DIR[,RUN_DIR]]: EVAL_JSON written by `insv2v eval --toyworld --out`, the
first with the edits, a second (optional) with the temporal and long-video parts (warp error of the inflated editor
and of its 2-D model run per frame, seam score with LVSC on and off); RUN_DIR the training runs that made the editor
(`insv2v train 2d OUT_DIR`, then `insv2v train video`). A run trained with --data adds its dataset's pairs (made /
kept) and the hours of making them, and every run its hours of training (wall clock on the machine that ran them);
a row without a run trained with --data is read as trained on the toy world's exact triplets.
Every row's edits, and every row's videos, must be the same ones under the same sampling.
"""

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from insv2v.synth import dataset
from insv2v.toyworld.evaluate import summarise_edits

KINDS = ("background", "colour", "shape", "style")


def run_costs(run_dir: Path) -> dict:
    """Hours of training (the run's log) and, for a run on --data, its dataset's pairs and hours of making them."""
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    costs = {"train_hours": training_seconds(log) / 3600, "pairs": [], "data_hours": 0.0}
    data = json.loads((run_dir / "final" / "training.json").read_text()).get("data")
    if data:
        records = dataset.read_manifest(Path(data["dir"]))
        costs["pairs"].append(f"{len(records)} / {data['counts']['kept']} {stage_pairs(run_dir)}")
        costs["data_hours"] = sum(r["seconds"] for r in records) / 3600
    return costs


def training_seconds(log: list[dict]) -> float:
    """Seconds a run's log spent, over all its starts: a resumed run's clock starts again from 0."""
    ends = [a["seconds"] for a, b in itertools.pairwise(log) if b["seconds"] < a["seconds"]]
    return sum(ends) + log[-1]["seconds"]


def stage_pairs(run_dir: Path) -> str:
    """What kind of pairs a run trained on: image pairs for the 2-D stage, video pairs for the motion modules."""
    stage = json.loads((run_dir / "final" / "training.json").read_text())["config"]["stage"]
    return "image" if stage == "2d" else "video"


def editor_costs(run_dirs: list[Path]) -> dict:
    """The costs of every run that made an editor, summed."""
    costs = [run_costs(d) for d in run_dirs]
    return {"pairs": [p for c in costs for p in c["pairs"]], "data_hours": sum(c["data_hours"] for c in costs),
            "train_hours": sum(c["train_hours"] for c in costs)}  # fmt: skip


def row(name: str, results: dict, videos: dict, costs: dict) -> str:
    summary = summarise_edits(results["edits"]["records"])
    cells = [name]
    for kind in KINDS:
        r = summary[kind]
        cells.append(f"{r['correct']}/{r['count']}")
    everything = summary["all"]
    low, high = everything["gain_ci"]
    cells.append(f"{everything['psnr']:.2f}")
    cells.append(f"{everything['gain']:+.2f} ({low:+.2f} to {high:+.2f})")
    cells.append(" + ".join(costs["pairs"]) if costs.get("pairs") else "exact triplets")
    hours = f"{costs['data_hours']:.1f} + " if costs.get("pairs") else ""
    cells.append(f"{hours}{costs['train_hours']:.1f}" if costs else "")
    cells.append(pair_of_means(videos.get("temporal", {}), ("inflated", "2-D per frame"), "warp_error", 1000))
    cells.append(pair_of_means(videos.get("long", {}), ("LVSC", "LVSC off"), "seam_score", 1))
    return "| " + " | ".join(cells) + " |"


def pair_of_means(part: dict, settings: tuple[str, str], measure: str, scale: float) -> str:
    """'a / b': the mean of one measure under two settings of an evaluation part, or nothing when it was not run."""
    if not part:
        return ""
    return " / ".join(f"{scale * np.mean(part[name][measure]):.2f}" for name in settings)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", metavar="NAME=EVAL_JSON[+EVAL_JSON][@RUN_DIR[,RUN_DIR]]")
    args = parser.parse_args()
    lines = [
        "| editor | background | colour | shape | style | PSNR (dB) | gain over the input (dB) | pairs made / kept "
        "| hours (data + training) | warp error x1000: inflated / 2-D | seam score: LVSC / off |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    seen = {}
    for spec in args.rows:
        name, _, rest = spec.partition("=")
        paths, _, run = rest.partition("@")
        edits_path, _, videos_path = paths.partition("+")
        results = json.loads(Path(edits_path).read_text())
        videos = json.loads(Path(videos_path).read_text()) if videos_path else {}
        for part, path, loaded in (("edits", edits_path, results), ("videos", videos_path, videos)):
            if not loaded:
                continue
            these = (
                loaded["seed"],
                loaded["sampling"],
                [(r["seed"], r["instruction"]) for r in loaded.get(part, {}).get("records", [])],
            )
            if seen.setdefault(part, these) != these:
                raise SystemExit(f"{path} holds other {part} or sampling than an earlier row's: compare like with like")
        lines.append(row(name, results, videos, editor_costs([Path(d) for d in run.split(",")]) if run else {}))
    print("\n".join(lines))
