"""The CFG Sweep tab: a grid of text CFG x video CFG values on one video, instruction and seed.

The input is encoded once and reused by every cell (insv2v.sweep); results come back as a grid of videos with
their metrics, a heatmap of one metric with the best cell outlined, and CSV/JSON exports. Also the API endpoint
`sweep`.
"""

import dataclasses

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from insv2v.editing import check_instruction
from insv2v.metrics import EDIT_SCORES
from insv2v.sweep import best_cell, check_grid, parse_scales, run_sweep, score_grid
from insv2v.ui.controls import cancellable, session_of
from insv2v.ui.serving import Job, check_upload, get_pipeline, get_scorer, gpu, logged_warnings, user_message
from insv2v.ui.settings import Controls, planned_clips, recipe_from_settings

# The settings the sweep shows, in the order its API takes them (README); the grid supplies the guidance scales.
SETTINGS = ("negative_prompt", "seed", "randomize_seed", "steps", "lvsc", "frames_per_clip", "ref_frames",
            "lvsc_fraction", "mc", "resolution", "start", "length", "stride")  # fmt: skip
VIDEO_GRID = "1.0, 1.2, 1.5"

SCORE_LABELS = {
    "clip_text": "CLIP text alignment",
    "clip_consistency": "CLIP frame consistency",
    "warp_error": "warp error",
}
SHORT = {"clip_text": "CLIP-T", "clip_consistency": "CLIP-F", "warp_error": "warp"}
VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], float)


def _colour(t: float) -> tuple[int, int, int]:
    """Viridis-like colour of t in [0, 1]."""
    x = np.clip(t, 0, 1) * (len(VIRIDIS) - 1)
    i = min(int(x), len(VIRIDIS) - 2)
    return tuple(int(v) for v in VIRIDIS[i] + (x - i) * (VIRIDIS[i + 1] - VIRIDIS[i]))


def heatmap(
    text_cfgs: list, video_cfgs: list, values: np.ndarray, score: str, best: tuple[int, int] | None
) -> Image.Image:
    """A labelled heatmap of `values` (rows: text CFG, columns: video CFG), better = brighter, best cell outlined."""
    cell, left, top = 84, 84, 56
    rows, cols = values.shape
    image = Image.new("RGB", (left + cols * cell + 8, top + rows * cell + 8), "white")
    draw = ImageDraw.Draw(image)
    draw.font = ImageFont.load_default(size=13)
    better = "higher" if EDIT_SCORES[score] > 0 else "lower"
    draw.text((8, 6), f"{SCORE_LABELS[score]} ({better} is better)", fill="black")
    draw.text((left, 24), "video CFG ->", fill="black")
    draw.text((8, top - 14), "text CFG", fill="black")
    finite = values[np.isfinite(values)]
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    for r in range(rows):
        draw.text((8, top + r * cell + cell // 2 - 6), f"{text_cfgs[r]:g}", fill="black")
        for c in range(cols):
            if r == 0:
                draw.text((left + c * cell + cell // 2 - 10, top - 14), f"{video_cfgs[c]:g}", fill="black")
            value = values[r, c]
            t = 0.5 if high == low else (value - low) / (high - low)
            t = t if EDIT_SCORES[score] > 0 else 1 - t
            box = (left + c * cell, top + r * cell, left + (c + 1) * cell - 2, top + (r + 1) * cell - 2)
            draw.rectangle(box, fill=_colour(t) if np.isfinite(value) else (200, 200, 200))
            label = f"{value:.4g}" if np.isfinite(value) else "n/a"
            draw.text((box[0] + 8, box[1] + cell // 2 - 6), label, fill="white" if t < 0.6 else "black")
            if best == (r, c):
                draw.rectangle(box, outline=(230, 30, 30), width=4)
    return image


def present(data: dict, score: str) -> tuple[Image.Image, list, str]:
    """Heatmap, gallery items and a one-line summary of a sweep's `data` (SweepResult.write_json's layout)."""
    text_cfgs, video_cfgs, cells = data["text_cfgs"], data["video_cfgs"], data["cells"]
    if not any(cell.get(score) is not None for cell in cells):
        score = "warp_error"
    values = score_grid(cells, score, (len(text_cfgs), len(video_cfgs)))
    best = best_cell(cells, score)
    best_rc = divmod(best, len(video_cfgs))
    gallery = []
    for i, c in enumerate(cells):
        scores = " · ".join(f"{SHORT[n]} {c[n]:.4g}" for n in EDIT_SCORES if c.get(n) is not None)
        star = "★ best · " if i == best else ""
        gallery.append((c["path"], f"{star}text {c['text_cfg']:g} · video {c['video_cfg']:g} · {scores}"))
    b = cells[best]
    summary = f"Best {SCORE_LABELS[score]}: text CFG {b['text_cfg']:g}, video CFG {b['video_cfg']:g} ({b[score]:.4g})"
    return heatmap(text_cfgs, video_cfgs, values, score, best_rc), gallery, summary


def run(studio, video, instruction, text_values, video_values, score, values, session, progress) -> tuple:
    config = studio.config
    try:
        check_instruction(instruction)
        text_cfgs, video_cfgs = parse_scales(text_values, "text CFG"), parse_scales(video_values, "video CFG")
        check_grid(text_cfgs, video_cfgs)
        info = check_upload(video, config)
        recipe, note = recipe_from_settings(studio, info, instruction, values, preview=False)
        job_dir = studio.cache.new_job("sweep")
        recipe = dataclasses.replace(recipe, input=str(studio.cache.add_input(job_dir, video)))
        per_cell = planned_clips(recipe, info) * recipe.steps
        n = len(text_cfgs) * len(video_cfgs)
        grid = [(t, v) for t in text_cfgs for v in video_cfgs]
        job = studio.jobs.start(session, Job(n * per_cell, progress, "sweep", job_dir))

        def detail(step: int) -> str:
            i = min((job.done - 1) // per_cell, n - 1)
            return f"cell {i + 1}/{n} (text {grid[i][0]:g}, video {grid[i][1]:g})"

        try:
            progress(0, desc="loading the model")
            pipe = get_pipeline(config)
            job.check()  # a Cancel pressed while the model loaded
            with logged_warnings() as warned:  # a video that ends early: said as the Edit tab says it
                result = run_sweep(
                    recipe, text_cfgs, video_cfgs, pipe, job_dir / "cells",
                    scorer=get_scorer(config), callback_on_step_end=job.callback(detail),
                )  # fmt: skip
        finally:
            studio.jobs.finish(session, job)
    except InterruptedError:
        raise gr.Error("Cancelled: the sweep stopped.") from None
    except (ValueError, RuntimeError, OSError, MemoryError) as err:
        raise gr.Error(user_message(err)) from None

    result.recipe = dataclasses.replace(result.recipe, model=config.model_name)
    csv_path = result.write_csv(job_dir / "sweep.csv")
    json_path = result.write_json(job_dir / "sweep.json")
    data = {
        "text_cfgs": result.text_cfgs,
        "video_cfgs": result.video_cfgs,
        "cells": [{**row, "path": str(cell.output)} for row, cell in zip(result.rows(), result.cells, strict=True)],
    }
    image, gallery, summary = present(data, score)
    table = pd.DataFrame(result.rows()).drop(columns="output").round(5)
    data["status"] = [  # around the best cell's summary, which a change of the heatmap's score redoes
        f"{n} cells of {result.num_frames} frames in {result.seconds:.1f} s "
        f"(shared decoding, encoding and flow {result.shared_seconds:.1f} s) · seed {result.recipe.seed} · ",
        (f" · {note}" if note else "")
        + "".join(f" · {user_message(message)}" for message in dict.fromkeys(warned)),  # each once, not once a cell
    ]
    status = summary.join(data["status"])
    return (
        gr.Gallery(value=gallery, columns=len(video_cfgs)),
        image,
        table,
        [str(csv_path), str(json_path)],
        data,
        status,
    )


def text_grid(centre: float) -> str:
    """The starting rows of the grid: the model's text CFG and 2.5 either side (7.5 -> "5, 7.5, 10")."""
    return ", ".join(f"{value:g}" for value in (max(1.0, centre - 2.5), centre, centre + 2.5))


def make_handler(studio):
    """The handler of the Run sweep button and API endpoint; the settings come by name (settings.py)."""

    @gpu(studio.config.gpu_seconds * 4)
    def sweep(
        video: str,
        instruction: str,
        text_cfgs: str = text_grid(studio.defaults.text_cfg),
        video_cfgs: str = VIDEO_GRID,
        score: str = "clip_text",
        request: gr.Request = None,
        progress=gr.Progress(),
        **settings,
    ):
        # The recipe's own guidance scales are left at their defaults: placeholders, as the grid supplies them.
        session = session_of(request, "sweep")
        return run(studio, video, instruction, text_cfgs, video_cfgs, score, settings, session, progress)

    return sweep


def rescore(data: dict | None, score: str):
    if not data:
        return gr.update(), gr.update()
    image, _, summary = present(data, score)
    return image, summary.join(data.get("status", ["", ""]))


def build(studio) -> None:
    """The CFG Sweep tab's layout and wiring, inside the caller's `gr.Tab`."""
    config = studio.config
    default_score = "clip_text" if config.clip else "warp_error"
    with gr.Row():
        with gr.Column(scale=1):
            video = gr.Video(label="Input video", sources=["upload"], height=280, elem_id="sweep-input")
            instruction = gr.Textbox(label="Instruction", placeholder="make it snowy", elem_id="sweep-instruction")
            controls = Controls(studio.settings, "sweep")
            controls.add("negative_prompt", placeholder="optional")
            text_cfgs = gr.Textbox(
                text_grid(studio.defaults.text_cfg), label="Text CFG values (rows)", elem_id="sweep-text-cfgs",
                info="Comma-separated; raise when the edit is too weak",
            )  # fmt: skip
            video_cfgs = gr.Textbox(
                VIDEO_GRID, label="Video CFG values (columns)", elem_id="sweep-video-cfgs",
                info="Comma-separated; raise when the result strays from the input",
            )  # fmt: skip
            score = gr.Dropdown(
                [(label, name) for name, label in SCORE_LABELS.items()], value=default_score,
                label="Metric for the heatmap and the best cell",
            )  # fmt: skip
            with gr.Row():
                run_button = gr.Button("Run sweep", variant="primary", elem_id="sweep-run")
                cancel_button = gr.Button("Cancel", variant="stop", elem_id="sweep-cancel")
            cancel_note = gr.Markdown(elem_id="sweep-cancel-note")
            with gr.Accordion("Settings shared by every cell", open=False):
                with gr.Row():
                    controls.add("seed")
                    controls.add("randomize_seed", label="Randomise seed (drawn once for the whole grid)")
                for name in ("steps", "resolution", "lvsc", "frames_per_clip", "ref_frames", "lvsc_fraction"):
                    controls.add(name)
                controls.add("mc", label="MC (each cell then encodes the input again)")
                for name in ("start", "length", "stride"):
                    controls.add(name)
        with gr.Column(scale=2):
            status = gr.Markdown(elem_id="sweep-status")
            gallery = gr.Gallery(label="Results (rows: text CFG, columns: video CFG)", columns=3, elem_id="sweep-grid")
            heat = gr.Image(label="Heatmap", type="pil", elem_id="sweep-heatmap", format="png", height=320)
            table = gr.Dataframe(label="Metrics", elem_id="sweep-table")
            files = gr.File(label="Export (CSV, JSON)", file_count="multiple", elem_id="sweep-files")
            state = gr.State()

    (submitted,) = cancellable(studio.jobs, [run_button.click], cancel_button, cancel_note, "the sweep", "sweep")
    submitted.then(
        make_handler(studio), [video, instruction, text_cfgs, video_cfgs, score],
        [gallery, heat, table, files, state, status], inputs_kwargs=controls.inputs(SETTINGS),
        api_name="sweep", concurrency_limit=1, concurrency_id="model", show_progress="full",
    )  # fmt: skip

    score.change(rescore, [state, score], [heat, status], api_name=False, queue=False)
