"""Editors trained on ground-truth and on synthetic pairs, on the same held-out edits: the README's table.

    python tools/synthetic_table.py "ground truth=docs/results/toyworld_heldout_100000_edits.json" \
        "synthetic, kept pairs=runs/eval/kept.json@runs/2d-kept" "synthetic, all pairs=runs/eval/all.json@runs/2d-all"

A row is NAME=EVAL_JSON[@RUN_DIR[,RUN_DIR]]: EVAL_JSON written by `insv2v eval --toyworld --parts edits --out`,
RUN_DIR the training runs that made the editor (`insv2v train 2d OUT_DIR`, then `insv2v train video`); a run trained
with --data adds its dataset's pairs (made / kept) and the hours of making them, and every run its hours of training
(wall clock on the machine that ran them). Every EVAL_JSON must hold the same edits under the same sampling.
"""

import argparse
import json
from pathlib import Path

from insv2v.synth import dataset
from insv2v.toyworld.evaluate import summarise_edits

KINDS = ("background", "colour", "shape", "style")


def run_costs(run_dir: Path) -> dict:
    """Hours of training (the run's log) and, for a run on --data, its dataset's pairs and hours of making them."""
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    costs = {"train_hours": log[-1]["seconds"] / 3600, "pairs": [], "data_hours": 0.0}
    data = json.loads((run_dir / "final" / "training.json").read_text()).get("data")
    if data:
        records = dataset.read_manifest(Path(data["dir"]))
        costs["pairs"].append(f"{len(records)} / {data['counts']['kept']} {stage_pairs(run_dir)}")
        costs["data_hours"] = sum(r["seconds"] for r in records) / 3600
    return costs


def stage_pairs(run_dir: Path) -> str:
    """What kind of pairs a run trained on: image pairs for the 2-D stage, video pairs for the motion modules."""
    stage = json.loads((run_dir / "final" / "training.json").read_text())["config"]["stage"]
    return "image" if stage == "2d" else "video"


def editor_costs(run_dirs: list[Path]) -> dict:
    """The costs of every run that made an editor, summed."""
    costs = [run_costs(d) for d in run_dirs]
    return {"pairs": [p for c in costs for p in c["pairs"]], "data_hours": sum(c["data_hours"] for c in costs),
            "train_hours": sum(c["train_hours"] for c in costs)}  # fmt: skip


def row(name: str, results: dict, costs: dict) -> str:
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
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", metavar="NAME=EVAL_JSON[@RUN_DIR[,RUN_DIR]]")
    args = parser.parse_args()
    lines = [
        "| editor | background | colour | shape | style | PSNR (dB) | gain over the input (dB) | pairs made / kept "
        "| hours (data + training) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    edits = None
    for spec in args.rows:
        name, _, rest = spec.partition("=")
        path, _, run = rest.partition("@")
        results = json.loads(Path(path).read_text())
        these = [(r["seed"], r["instruction"]) for r in results["edits"]["records"]], results["sampling"]
        if edits is not None and these != edits:
            raise SystemExit(f"{path} holds other edits or sampling than the first row's: compare like with like")
        edits = these
        lines.append(row(name, results, editor_costs([Path(d) for d in run.split(",")]) if run else {}))
    print("\n".join(lines))
