"""Compute the Compare tab's example ahead, so a visitor sees a comparison at once: the colour example clip, InsV2V
(the toy editor, the tab's starting settings on a CPU) and Tune-A-Video (the toy text-to-image model, its Space's
preset), scored and laid out by the tab's own code.

python assets/examples/make_compare.py      # writes assets/examples/compare/{compare.mp4,compare.json}
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

EXAMPLE = 1  # the colour edit of examples.json
FRAMES = 16  # the tab's starting length
PRESET = "space"

if __name__ == "__main__":
    folder = Path(__file__).parent
    example = json.loads((folder / "examples.json").read_text())[EXAMPLE]
    video = folder / example["file"]
    edited_caption = propose_output_caption(example["caption"], example["instruction"])
    out = folder / "compare"
    out.mkdir(exist_ok=True)

    recipe = dataclasses.replace(model_defaults(str(TOY_EDITOR)), input=str(video), instruction=example["instruction"],
                                 model=TOY_EDITOR.name, seed=0, steps=CPU_STEPS, max_frames=FRAMES)  # fmt: skip
    edit = run_edit(recipe, out / "insv2v.mp4", load_pipeline(str(TOY_EDITOR), device="cpu"), keep_frames=True)
    (out / "insv2v.mp4").unlink()
    (out / "insv2v.json").unlink()

    tav_pipe = TuneAVideoPipeline.from_t2i(str(TOY_T2I))
    settings = dataclasses.replace(PRESETS[PRESET], seed=0)
    tav = tav_edit(tav_pipe, edit.source_frames, example["caption"], edited_caption, settings)

    results = [
        MethodResult("InsV2V", edit.frames, edit.seconds, f"{edit.num_frames} frames, {recipe.steps} steps"),
        MethodResult("Tune-A-Video", tav.frames, tav.tune_seconds + tav.edit_seconds,
                     f"tuned {settings.tune_steps} steps in {tav.tune_seconds:.0f} s; inverted and sampled in "
                     f"{tav.edit_seconds:.1f} s"),
    ]  # fmt: skip
    scorer = load_clip(str(TOY_CLIP))
    target = exact_target(str(video), len(edit.source_frames))
    scores = score_methods(results, edit.source_frames, edited_caption, scorer, scorer, target)
    write_video(out / "compare.mp4", panels(edit.source_frames, results), edit.fps)
    record = {
        "video": "compare.mp4",
        "example": example["file"],
        "instruction": example["instruction"],
        "source_caption": example["caption"],
        "edited_caption": edited_caption,
        "insv2v": {"model": TOY_EDITOR.name, **{k: v for k, v in recipe.to_json().items() if k != "input"}},
        "tav": {"model": TOY_T2I.name, "preset": PRESET, **dataclasses.asdict(settings)},
        "scores": scores,
        "details": {r.method: f"{r.seconds:.1f} s ({r.detail})" for r in results},
        "machine": "2 CPU cores",
    }
    (out / "compare.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["details"], indent=2))
