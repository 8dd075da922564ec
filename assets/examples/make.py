"""Write the demo's example clips: held-out toy-world scenes (64x64, 8 fps), their instructions and captions, and
where they come from (held-out offset and edit kind: the Compare tab renders the exact edit from them for PSNR).

python assets/examples/make.py
"""

import json
from pathlib import Path

from insv2v.toyworld.dataset import FPS
from insv2v.toyworld.world import HELDOUT_SEEDS, sample_triplet
from insv2v.video import write_video

FRAMES = 24  # 3 s at 8 fps: two clips of 16 frames overlapping by 4 in a full edit
PICKS = [(7, "background"), (11, "colour"), (23, "shape")]  # (held-out offset, edit kind)

if __name__ == "__main__":
    folder = Path(__file__).parent
    index = []
    for offset, kind in PICKS:
        triplet = sample_triplet(HELDOUT_SEEDS.start + offset, kind)
        source, _ = triplet.render(FRAMES)
        name = f"toy_{kind}_{offset}.mp4"
        write_video(folder / name, source, FPS)
        index.append({"file": name, "instruction": triplet.edit.instruction, "caption": triplet.input_caption,
                      "heldout_offset": offset, "kind": kind})  # fmt: skip
    (folder / "examples.json").write_text(json.dumps(index, indent=2) + "\n")
    print(f"wrote {len(index)} examples to {folder}")
