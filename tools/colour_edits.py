"""Colour edits by the colour they start from: where an editor fails, and whether its training pairs failed there too.

    python tools/colour_edits.py --pairs runs/data/img-swsh3k \
        --edits docs/results/synthetic_swapshared3k_v256aug_editor_vcfg15_{550000,750000,450000,350000}_edits.json

--edits: records of `insv2v eval --toyworld --out` (the colour edits of every file, pooled): per source colour, how
many the editor got right. --pairs: datasets of `insv2v synth generate` whose manifest holds the toy judge's
verdicts: per source colour of their colour pairs, how many draw the old colour in the input (the generator drew the
caption), how many draw the new one in the edited video (the edit is shown), how many of those whose input draws it
show the edit (both), how many still show the old colour in the edited video (old kept), and how many are right
(judged without kinds, as the synthetic editors' pairs are counted), read from the reasons the judge gives
(`insv2v.toyworld.reader.judge_edit`). --kept: of the pairs the dataset's filter keeps.
"""

import argparse
import json
from collections import Counter
from pathlib import Path

from insv2v.synth import dataset
from insv2v.toyworld.reader import read_caption


def changed_colour(input_caption: str, output_caption: str) -> tuple[str, str]:
    """(old, new) colour of a colour edit's captions, as the judge reads them: the one shape colour each has alone."""
    before, after = (set(read_caption(caption).shapes) for caption in (input_caption, output_caption))
    if len(before - after) != 1 or len(after - before) != 1:
        raise ValueError(f"not a colour edit: {input_caption!r} -> {output_caption!r}")
    return (before - after).pop(), (after - before).pop()


def pair_counts(root: Path, kept_only: bool = False) -> dict[str, Counter]:
    """Per source colour: colour pairs, input drawn, edit shown, both, old kept, right (the module's docstring); with
    `kept_only`, of the pairs the dataset's filter keeps."""
    counts: dict[str, Counter] = {}
    for record in dataset.read_manifest(root):
        if record["kind"] != "colour" or (kept_only and not record["kept"]):
            continue
        old, new = changed_colour(record["input"], record["output"])
        reason = record["judge"]["reason_ignoring_kinds"]
        row = counts.setdefault(old, Counter())
        drawn = f"shape:{old}: the input video shows" not in reason
        shown = f"shape:{new}: the edited video shows" not in reason
        row["pairs"] += 1
        row["input drawn"] += drawn
        row["edit shown"] += shown
        row["both"] += drawn and shown
        row["old kept"] += f"shape:{old}: the edited video shows present" in reason
        row["right"] += record["judge"]["edit_right_ignoring_kinds"]
    return counts


def edit_counts(paths: list[Path]) -> dict[str, Counter]:
    """Per source colour: the editor's colour edits and how many it got right."""
    counts: dict[str, Counter] = {}
    for path in paths:
        for record in json.loads(path.read_text())["edits"]["records"]:
            if record["kind"] == "colour":
                row = counts.setdefault(record["colour"], Counter())
                row["edits"] += 1
                row["right"] += record["correct"]
    return counts


def print_table(title: str, counts: dict[str, Counter], of: dict[str, str]) -> None:
    """One row per source colour and one for all; a column c counts out of column of[c] (else the first)."""
    if not counts:
        print(f"\n{title}: no colour edits")
        return
    columns = list(next(iter(counts.values())))
    print(f"\n{title}\n| from | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    total = sum(counts.values(), Counter())
    for colour, row in [*sorted(counts.items()), ("all", total)]:
        cells = [str(row[columns[0]])]
        for c in columns[1:]:
            n = row[of.get(c, columns[0])]
            cells.append(f"{row[c]} of {n} ({row[c] / max(n, 1):.0%})")
        print(f"| {colour} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edits", nargs="*", type=Path, default=[])
    parser.add_argument("--pairs", nargs="*", type=Path, default=[])
    parser.add_argument("--kept", action="store_true", help="--pairs: only those the dataset's filter keeps")
    args = parser.parse_args()
    if args.edits:
        print_table(f"colour edits of {len(args.edits)} eval records", edit_counts(args.edits), {})
    for root in args.pairs:  # both: the edit shown where the input draws the old colour
        which = "kept colour pairs" if args.kept else "colour pairs"
        print_table(f"{which} of {root}", pair_counts(root, args.kept), {"both": "input drawn"})


if __name__ == "__main__":
    main()
