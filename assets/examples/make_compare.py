"""Compute the Compare tab's examples ahead, so a visitor sees a comparison at once: each example clip, InsV2V (the
toy editor, the tab's starting settings on a CPU) and Tune-A-Video (the toy text-to-image model, its Space's preset),
scored and laid out by the tab's own code.

python assets/examples/make_compare.py      # writes assets/examples/compare/{STEM.mp4,compare.json}
"""

import dataclasses
import json
from pathlib import Path

from insv2v.assets import TOY_CLIP, TOY_EDITOR, TOY_T2I
from insv2v.compare import MethodResult, panels, score_methods
from insv2v.editing import model_defaults, run_edit
from insv2v.loading import load_pipeline
from insv2v.metrics import load_clip
from insv2v.synth.prompts import propose_output_caption
from insv2v.tav import PRESETS, TuneAVideoPipeline, tav_edit
from insv2v.ui.compare_tab import exact_target
from insv2v.ui.serving import CPU_STEPS
from insv2v.video import write_video

FRAMES = 16  # the tab's starting length
PRESET = "space"


def compare_example(example: dict, folder: Path, out: Path, insv2v, tav_pipe, scorer) -> dict:
    """One example's comparison: its panels video in `out`, and its record."""
    video = folder / example["file"]
    edited_caption = propose_output_caption(example["caption"], example["instruction"])
    recipe = dataclasses.replace(model_defaults(str(TOY_EDITOR)), input=str(video), instruction=example["instruction"],
                                 model=TOY_EDITOR.name, seed=0, steps=CPU_STEPS, max_frames=FRAMES)  # fmt: skip
    edit = run_edit(recipe, out / "insv2v.mp4", insv2v, keep_frames=True)
    (out / "insv2v.mp4").unlink()
    (out / "insv2v.json").unlink()
    settings = dataclasses.replace(PRESETS[PRESET], seed=0)
    tav = tav_edit(tav_pipe, edit.source_frames, example["caption"], edited_caption, settings)
    results = [
        MethodResult("InsV2V", edit.frames, edit.seconds, f"{edit.num_frames} frames, {recipe.steps} steps"),
        MethodResult("Tune-A-Video", tav.frames, tav.tune_seconds + tav.edit_seconds,
                     f"tuned {settings.tune_steps} steps in {tav.tune_seconds:.0f} s; inverted and sampled in "
                     f"{tav.edit_seconds:.1f} s"),
    ]  # fmt: skip
    target = exact_target(str(video), len(edit.source_frames))
    scores = score_methods(results, edit.source_frames, edited_caption, scorer, scorer, target)
    name = f"{video.stem}.mp4"
    write_video(out / name, panels(edit.source_frames, results), edit.fps)
    return {
        "video": name,
        "instruction": example["instruction"],
        "source_caption": example["caption"],
        "edited_caption": edited_caption,
        "insv2v": {"model": TOY_EDITOR.name, **{k: v for k, v in recipe.to_json().items() if k != "input"}},
        "tav": {"model": TOY_T2I.name, "preset": PRESET, **dataclasses.asdict(settings)},
        "scores": scores,
        "details": {r.method: f"{r.seconds:.1f} s ({r.detail})" for r in results},
        "machine": "2 CPU cores",
    }


if __name__ == "__main__":
    folder = Path(__file__).parent
    out = folder / "compare"
    out.mkdir(exist_ok=True)
    insv2v = load_pipeline(str(TOY_EDITOR), device="cpu")
    tav_pipe = TuneAVideoPipeline.from_t2i(str(TOY_T2I))
    scorer = load_clip(str(TOY_CLIP))
    records = {}
    for example in json.loads((folder / "examples.json").read_text()):
        records[example["file"]] = compare_example(example, folder, out, insv2v, tav_pipe, scorer)
        print(example["file"], json.dumps(records[example["file"]]["details"]))
    (out / "compare.json").write_text(json.dumps(records, indent=2) + "\n")
