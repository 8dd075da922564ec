"""Paired comparisons behind the docs' "paired, 95%" figures: two editors on the same held-out edits, or two pair sets
made from the same prompts and seeds.

    python tools/paired.py --edits docs/results/synthetic_swapshared3k_v256aug_editor_vcfg15_100000_edits.json \
        docs/results/synthetic_cfg24_editor_vcfg15_100000_edits.json
    python tools/paired.py --pairs runs/data/img-heldout-diff runs/data/img-heldout-swap-cfg24-diff
    python tools/paired.py --long docs/results/toyworld_heldout_320000_long.json

--edits A B: records of `insv2v eval --toyworld --out`; B's PSNR less A's per edit, its mean with a bootstrap interval,
and per kind how many edits each got right and how many only one did. --pairs A B: datasets of `insv2v synth generate`
judged by the toy judge; B's right pairs less A's (points of 100, bootstrap interval), on everything and without
kinds, per kind. Rows are matched by edit seed (edits) or sample index with the same prompt and seed (pairs).
--long RECORD: one record's long videos; each LVSC setting's seam score, seam error and warp error less those with
LVSC off, video by video (x 1e-3 for the errors), and in how many videos it is higher.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from insv2v.stats import bootstrap_interval
from insv2v.synth import dataset

KINDS = ("background", "colour", "shape", "style")


def matched(a: dict, b: dict) -> list:
    """Keys of both, in order."""
    return sorted(set(a) & set(b))


def difference(values: np.ndarray) -> str:
    low, high = bootstrap_interval(values)
    return f"{values.mean():+.2f} (95% {low:+.2f} to {high:+.2f})"


def right_counts(a: list[bool], b: list[bool]) -> str:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return f"{a.sum()} and {b.sum()} of {len(a)} (only A {(a & ~b).sum()}, only B {(b & ~a).sum()})"


def compare_edits(path_a: Path, path_b: Path) -> list[str]:
    """Lines: B's PSNR less A's over the edits both records hold, and per kind the edits right."""
    a, b = ({r["seed"]: r for r in json.loads(Path(p).read_text())["edits"]["records"]} for p in (path_a, path_b))
    seeds = matched(a, b)
    psnr = np.array([b[s]["psnr"] - a[s]["psnr"] for s in seeds])
    lines = [f"{len(seeds)} edits: PSNR, B less A (dB): {difference(psnr)}"]
    for kind in KINDS:
        of_kind = [s for s in seeds if a[s]["kind"] == kind]
        if of_kind:
            right = right_counts([a[s]["correct"] for s in of_kind], [b[s]["correct"] for s in of_kind])
            lines.append(f"  {kind}: right {right}")
    return lines


def compare_pairs(root_a: Path, root_b: Path) -> list[str]:
    """Lines: B's right pairs less A's, on everything the judge reads and without shape kinds, and per kind."""
    a, b = ({r["index"]: r for r in dataset.read_manifest(root)} for root in (root_a, root_b))
    indices = matched(a, b)
    for i in indices:
        if (a[i]["input"], a[i]["seed"]) != (b[i]["input"], b[i]["seed"]):
            raise ValueError(f"sample {i}: the two datasets differ in prompt or seed; they are not paired")
    lines = []
    for verdict in ("edit_right", "edit_right_ignoring_kinds"):
        judged = [i for i in indices if None not in (a[i]["judge"].get(verdict), b[i]["judge"].get(verdict))]
        right_a, right_b = ([x[i]["judge"][verdict] for i in judged] for x in (a, b))
        points = 100 * (np.array(right_b, float) - np.array(right_a, float))
        lines.append(f"{verdict}: {len(judged)} pairs, right {right_counts(right_a, right_b)}; "
                     f"B less A (points): {difference(points)}")  # fmt: skip
        for kind in KINDS:
            of_kind = [k for k, i in enumerate(judged) if a[i]["kind"] == kind]
            if of_kind:
                lines.append(f"  {kind}: {right_counts([right_a[k] for k in of_kind], [right_b[k] for k in of_kind])}")
    return lines


def compare_long(path: Path, baseline: str = "LVSC off") -> list[str]:
    """Lines: per LVSC setting and long-video measure, the setting's value less the baseline's over the same videos."""
    long = json.loads(Path(path).read_text())["long"]
    lines = []
    for setting in (name for name in long if name != baseline):
        for measure, base in long[baseline].items():
            if len(long[setting].get(measure, ())) != len(base):
                raise ValueError(f"{path}: {setting} has no {measure} for each of the {len(base)} videos")
            scale = 1.0 if measure == "seam_score" else 1e3  # errors read as x 1e-3, as the README quotes them
            values = scale * (np.array(long[setting][measure], float) - np.array(base, float))
            lines.append(f"{setting} less {baseline}, {measure}{'' if scale == 1 else ' (x 1e-3)'}: "
                         f"{difference(values)}, higher in {(values > 0).sum()} of {len(values)} videos")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--edits", nargs=2, type=Path, metavar=("A", "B"), help="two `insv2v eval --toyworld` records")
    group.add_argument("--pairs", nargs=2, type=Path, metavar=("A", "B"), help="two judged `synth generate` datasets")
    group.add_argument("--long", type=Path, metavar="RECORD", help="a record with long-video rows (--parts long)")
    args = parser.parse_args(argv)
    if args.long:
        lines = compare_long(args.long)
    else:
        lines = compare_edits(*args.edits) if args.edits else compare_pairs(*args.pairs)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
