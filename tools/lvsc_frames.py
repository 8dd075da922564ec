"""The warp error of every pair of frames of held-out long videos, in each LVSC setting: where LVSC adds or removes
error, at the seams or inside clips (the look behind the README's LVSC paragraphs).

    python tools/lvsc_frames.py --model assets/toy-editor --seed 300000 --videos 1 4 \
        --out docs/results/lvsc_frames_toy_editor_300000.json

Video i is the long video of `insv2v eval --toyworld --parts long --seed SEED`'s i-th row, edited as there (20 steps,
the model's sampling.json unless told). Prints one line per video and setting, the seams marked with *; --out writes
the same numbers (x 1e-3).
"""

import argparse
import json
from pathlib import Path

from insv2v.editing import model_defaults
from insv2v.loading import load_pipeline
from insv2v.metrics import consecutive_flows, pair_warp_errors
from insv2v.toyworld.evaluate import (
    LONG_FRAMES,
    LONG_FRAMES_PER_CLIP,
    LONG_REF_FRAMES,
    LONG_SETTINGS,
    clip_seams,
    long_video,
    seeded_edit,
)


def pair_errors(model: str, seed: int, videos: list[int], settings: list[str], steps: int = 20) -> dict:
    """Per video and setting, the warp error (x 1e-3) of each pair of frames t -> t + 1 along the input's motion."""
    pipe = load_pipeline(model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    defaults = model_defaults(model)
    sampling = {"num_inference_steps": steps, "guidance_scale": defaults.text_cfg,
                "video_guidance_scale": defaults.video_cfg}  # fmt: skip
    seams = clip_seams(LONG_FRAMES, LONG_FRAMES_PER_CLIP, LONG_REF_FRAMES)
    record = {"model": model, "seed": seed, "sampling": sampling, "seams": seams, "videos": {}}
    for i in videos:
        instruction, source = long_video(seed + i)
        flows = consecutive_flows(source)
        rows = record["videos"][str(i)] = {"instruction": instruction}
        for name in settings:
            output = seeded_edit(pipe, source, instruction, seed + i, frames_per_clip=LONG_FRAMES_PER_CLIP,
                                 ref_frames=LONG_REF_FRAMES, **LONG_SETTINGS[name], **sampling)  # fmt: skip
            rows[name] = [round(float(e) * 1e3, 2) for e in pair_warp_errors(output, flows=flows)]
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--seed", type=int, required=True, help="the offset of `insv2v eval --toyworld`")
    parser.add_argument("--videos", type=int, nargs="+", required=True, help="rows of its long-video part")
    parser.add_argument("--settings", nargs="+", default=["LVSC off", "LVSC"], choices=list(LONG_SETTINGS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out")
    args = parser.parse_args()
    record = pair_errors(args.model, args.seed, args.videos, args.settings, args.steps)
    for i, rows in record["videos"].items():
        print(f"video {i}: {rows['instruction']}")
        for name in args.settings:  # a seam s is pair s - 1, marked *
            marked = " ".join(f"{e:.1f}" + ("*" if t + 1 in record["seams"] else "") for t, e in enumerate(rows[name]))
            print(f"  {name:9s} {marked}")
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
