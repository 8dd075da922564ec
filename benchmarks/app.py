"""Time the demo's Edit tab and a 3x3 CFG sweep through the same handlers the page calls.

    python benchmarks/app.py                     # the bundled toy editor, or a random model of its exact shape
    python benchmarks/app.py --model DIR --threads 2

Reports: one edit (decode, encode, sample, write output and side by side, score), the work a sweep shares
(decode, encode, optical flow), a 3x3 sweep, and the sweep against nine edits less the shared work.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "assets" / "examples" / "toy_background_7.mp4"


def toy_shaped_pipeline(folder: Path) -> str:
    """An untrained pipeline with the toy editor's exact architecture (so the same compute), saved to `folder`."""
    from insv2v.models import inflate_unet
    from insv2v.pipeline import InsV2VPipeline
    from insv2v.toyworld import models

    torch.manual_seed(0)
    pipe = InsV2VPipeline(
        vae=models.toy_autoencoder(),
        text_encoder=models.text_encoder_from_clip(models.toy_clip()),
        tokenizer=models.toy_tokenizer(),
        unet=inflate_unet(models.toy_unet2d()),
        scheduler=models.toy_sample_scheduler(),
    )
    pipe.save_pretrained(folder)
    return str(folder)


def no_progress(*args, **kwargs) -> None:
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="pipeline folder (default: assets/toy-editor, else a toy-shaped random one)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the app's default on this machine)")
    parser.add_argument("--length", type=int, default=16, help="frames edited (the Edit tab's default: 16)")
    parser.add_argument("--repeat", type=int, default=3, help="edits timed; the median is reported")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from insv2v.editing import EditRecipe, Source
    from insv2v.loading import default_source
    from insv2v.metrics import consecutive_flows
    from insv2v.ui import build_demo, edit_tab, sweep_tab
    from insv2v.ui.serving import AppConfig, get_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = default_source(args.model) or toy_shaped_pipeline(tmp / "toy-shaped")
        config = AppConfig.from_env(model, cache_dir=tmp / "cache", cache_examples=False)
        steps = args.steps or config.default_steps
        studio = build_demo(config).studio

        began = time.perf_counter()
        pipe = get_pipeline(config)
        load = time.perf_counter() - began

        settings = dict(steps=steps, length=args.length, randomize_seed=False, seed=0)
        edit = edit_tab.make_handler(studio, preview=False)
        sweep = sweep_tab.make_handler(studio)
        instruction = "replace the beach with an ocean"

        def time_edits(n: int) -> list[float]:
            times = []
            for _ in range(n):
                began = time.perf_counter()
                edit(str(EXAMPLE), instruction, **settings, progress=no_progress)
                times.append(time.perf_counter() - began)
            return times

        time_edits(1)  # warm-up
        edits = time_edits(args.repeat)

        began = time.perf_counter()
        recipe = EditRecipe(input=str(EXAMPLE), instruction=instruction, max_frames=args.length)
        source = Source.read(recipe, pipe).encode(pipe)
        consecutive_flows(source.clip.frames)
        shared_s = time.perf_counter() - began

        began = time.perf_counter()
        sweep(str(EXAMPLE), instruction, "5, 7.5, 10", "1.0, 1.2, 1.5", **settings, progress=no_progress)
        sweep_s = time.perf_counter() - began
        edits += time_edits(args.repeat)  # before and after the sweep, so that a change in load shows
        edit_s = sorted(edits)[len(edits) // 2]

    report = {
        "model": config.model_name,
        "threads": torch.get_num_threads(),
        "frames": args.length,
        "steps": steps,
        "load_s": round(load, 2),
        "edit_s": round(edit_s, 2),
        "edit_runs_s": [round(e, 2) for e in edits],
        "shared_s": round(shared_s, 3),
        "sweep_3x3_s": round(sweep_s, 2),
        "sweep_over_9_edits_less_8_shared": round(sweep_s / (9 * edit_s - 8 * shared_s), 3),
        "sweep_over_9x_edit_less_shared": round(sweep_s / (9 * (edit_s - shared_s)), 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
