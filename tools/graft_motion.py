"""An editor of a 2-D stage and another editor's motion modules: what a 2-D stage is worth without its video stage.

    python tools/graft_motion.py runs/2d-swsh3k-diff/final assets/toy-editor-synthetic runs/graft-diff

The new folder is the 2-D stage's (its UNet inflated, text encoder, VAE, tokenizer, scheduler) with EDITOR's motion
modules, pipeline class (model_index.json) and sampling.json. Those motion modules learned beside EDITOR's own 2-D
weights, so the graft is a probe of the 2-D stage's edits (which kinds it gets right), not an editor to ship: its
frames may hold together less well than a video stage trained on it would make them.
"""

import argparse
import shutil
from pathlib import Path

from diffusers import UNet2DConditionModel, UNetMotionModel

from insv2v.files import check_new_folder
from insv2v.models import inflate_unet

TWO_D_PARTS = ("text_encoder", "vae", "tokenizer", "scheduler")
EDITOR_FILES = ("model_index.json", "sampling.json")


def graft(two_d: Path, editor: Path, out: Path) -> int:
    """Write the grafted editor to `out`; the number of motion tensors taken from `editor`."""
    check_new_folder(out)
    unet = inflate_unet(UNet2DConditionModel.from_pretrained(two_d / "unet"))
    donor = UNetMotionModel.from_pretrained(editor / "unet")
    shape = {k: v for k, v in donor.config.items() if "motion" in k or "temporal" in k}
    if shape != {k: unet.config[k] for k in shape}:
        raise ValueError(f"{editor}'s motion modules are not shaped as the inflation makes them: {shape}")
    motion = {name: tensor for name, tensor in donor.state_dict().items() if "motion_modules" in name}
    missing, unexpected = unet.load_state_dict(motion, strict=False)
    if unexpected or any("motion_modules" in name for name in missing):
        raise ValueError(f"{editor}'s motion modules do not fit the inflated {two_d}")
    out.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(out / "unet")
    for part in TWO_D_PARTS:
        shutil.copytree(two_d / part, out / part)
    for name in EDITOR_FILES:  # not its card or logs: they describe the editor, not the graft
        if (editor / name).is_file():
            shutil.copy2(editor / name, out / name)
    return len(motion)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("two_d", type=Path, help="a folder of `insv2v train 2d`")
    parser.add_argument("editor", type=Path, help="an editor folder whose motion modules to take")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(f"{args.out}: {graft(args.two_d, args.editor, args.out)} motion tensors from {args.editor}")


if __name__ == "__main__":
    main()
