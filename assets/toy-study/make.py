"""Build the shipped toy study from the toy-scale comparison's videos: the first 12 held-out edits, three methods
(InsV2V, its 2-D model frame by frame, Tune-A-Video), 2 gold checks, 20 comparisons per participant; and the exact
edits beside it (truth/: each item's input and exact edit), for simulated raters.

insv2v eval --toyworld --baseline tav --tav-preset official --edits 20 --seed 700000 --save-outputs runs/baseline
python assets/toy-study/make.py runs/baseline
"""

import json
import shutil
import sys
from pathlib import Path

from insv2v.study.build import build_study, read_items

ITEMS = 12  # a dozen (video, instruction) items
METHODS = ("insv2v", "frame2d", "tav")
SIZE = (128, 128)  # served videos: the toy world's 64 px, doubled
PER_PARTICIPANT = 18  # regular comparisons per participant; with the 2 gold ones, 20 screens

if __name__ == "__main__":
    source = Path(sys.argv[1])
    folder = Path(__file__).parent
    items = read_items(source)[:ITEMS]
    build_study(items, METHODS, folder / "study.db", size=SIZE, gold=2, comparisons_per_participant=PER_PARTICIPANT)
    truth = folder / "truth"
    truth.mkdir(exist_ok=True)
    lines = []
    for item in items:
        shutil.copyfile(item.input, truth / f"{item.item}_input.mp4")
        shutil.copyfile(item.reference, truth / f"{item.item}_edit.mp4")
        lines.append({"item": item.item, "input": f"{item.item}_input.mp4", "instruction": item.instruction,
                      "reference": f"{item.item}_edit.mp4"})  # fmt: skip
    (truth / "items.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    print(f"built {folder / 'study.db'} from {len(items)} items of {source}")
