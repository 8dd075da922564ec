"""The Compare tab: one video edited by InsV2V (from an instruction, in seconds) and by Tune-A-Video (from a source
and an edited caption, after minutes of tuning on the video), played in sync beside the input, with one table of the
same scores for both (insv2v/compare.py).

InsV2V runs first and shows its result while Tune-A-Video tunes, each with its own progress; the API endpoint
`compare` runs both in one call. Tune-A-Video's tuned weights are cached per video and caption, so another edited
caption on the same video skips the tuning. The examples' comparisons are computed ahead
(`python assets/examples/make_compare.py`): the first is shown when the page opens, each when its example is picked.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from insv2v.assets import EXAMPLES
from insv2v.compare import MethodResult, panels, score_methods
from insv2v.editing import check_instruction, run_edit
from insv2v.files import file_sha256
from insv2v.ui.controls import cancellable, session_of
from insv2v.ui.serving import (
    Job,
    check_upload,
    get_pipeline,
    get_tav_pipeline,
    gpu,
    logged_warnings,
    scorer_or_note,
    tav_source,
    user_message,
)
from insv2v.ui.settings import Controls, planned_clips, recipe_from_settings
from insv2v.video import write_video

COLUMNS = {  # score -> column title of the table
    "seconds": "Wall time (s)",
    "clip_text": "CLIP text",
    "clip_consistency": "CLIP frame consistency",
    "loveu_text": "LOVEU text x100",
    "loveu_consistency": "LOVEU consistency x100",
    "pick_score": "PickScore",
    "warp_error": "Warp error",
    "psnr": "PSNR to target (dB)",
}
SETTINGS = ("steps", "length", "seed")  # the edit settings this tab shows; the rest keep their defaults
# Tune-A-Video's tuning, on InsV2V's frames, and its steps: its Space's, its paper's (insv2v.tav.PRESETS, named here
# so that building the tab imports no torch)
PRESET_STEPS = {"space": 300, "official": 500}
PRESETS = tuple(PRESET_STEPS)
MAX_TUNE_STEPS = 1000  # a request holds the one model slot while it tunes (the slider bounds API calls too)
COMPARE_DIR = EXAMPLES / "compare"  # the examples' comparisons, computed ahead


def example_rows() -> list[list[str]]:
    """[clip, instruction, source caption, edited caption] per example clip; the edited caption as proposed."""
    from insv2v.synth.prompts import propose_output_caption

    index = EXAMPLES / "examples.json"
    if not index.is_file():
        return []
    rows = []
    for e in json.loads(index.read_text()):
        edited = propose_output_caption(e["caption"], e["instruction"]) or ""
        rows.append([str(EXAMPLES / e["file"]), e["instruction"], e["caption"], edited])
    return rows


def exact_target(video: str, num_frames: int) -> np.ndarray | None:
    """The toy world's exact edit of an example clip (found by the clip's content), rendered for PSNR; else None."""
    from insv2v.toyworld.world import HELDOUT_SEEDS, sample_triplet

    index = EXAMPLES / "examples.json"
    if not index.is_file():
        return None
    digest = file_sha256(video)
    for e in json.loads(index.read_text()):
        if "heldout_offset" in e and file_sha256(EXAMPLES / e["file"]) == digest:
            return sample_triplet(HELDOUT_SEEDS.start + e["heldout_offset"], e["kind"]).render(num_frames)[1]
    return None


def propose(source_caption: str, instruction: str) -> str:
    """The edited caption for Tune-A-Video, from the source caption and the instruction (editable afterwards)."""
    from insv2v.synth.prompts import propose_output_caption

    if not (source_caption or "").strip() or not (instruction or "").strip():
        raise gr.Error("write the source caption and the instruction first")
    proposed = propose_output_caption(source_caption.strip(), instruction.strip())
    if proposed is None:
        raise gr.Error("no edited caption could be proposed for this instruction: write it yourself")
    return proposed


def table(scores: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One row per method, the scores it has (PSNR only where an exact target exists)."""
    shown = [name for name in COLUMNS if any(name in row for row in scores.values())]
    rows = [[method, *[round(row.get(name, np.nan), 4) for name in shown]] for method, row in scores.items()]
    return pd.DataFrame(rows, columns=["Method", *[COLUMNS[name] for name in shown]])


# ---------------------------------------------------------------- the two halves of a comparison


def run_insv2v(studio, video, instruction, values: dict, session, progress) -> dict:
    """Edit with InsV2V (the Edit tab's path); returns the comparison so far, for `run_tav`, whose job then counts as
    waiting in the queue (a Cancel pressed between the two halves says so, and stops it)."""
    config = studio.config
    check_instruction(instruction)
    info = check_upload(video, config)
    values = {"randomize_seed": False, **values}  # both methods start from the seed shown
    recipe, note = recipe_from_settings(studio, info, instruction, values, preview=False)
    job_dir = studio.cache.new_job("compare")
    recipe = dataclasses.replace(recipe, input=str(studio.cache.add_input(job_dir, video)))
    job = studio.jobs.start(session, Job(planned_clips(recipe, info) * recipe.steps, progress, "InsV2V", job_dir))
    result = None
    try:
        progress(0, desc="InsV2V: loading the model")
        pipe = get_pipeline(config)
        job.check()  # a Cancel pressed while the model loaded
        output = job_dir / f"{Path(video).stem}_insv2v.mp4"  # never the upload's own name, linked beside it
        with logged_warnings() as warned:  # a video that ends early, audio cut short: said as the Edit tab says it
            result = run_edit(recipe, output, pipe, callback_on_step_end=job.callback(), keep_frames=True)
    finally:
        studio.jobs.finish(session, job, more=result is not None)
    return {
        "job": str(job_dir),
        "source": result.source_frames,
        "fps": result.fps,
        "notes": [line for line in (note, *map(user_message, warned)) if line],
        "seed": result.recipe.seed,
        "target": exact_target(video, len(result.source_frames)),
        "results": [MethodResult("InsV2V", result.frames, result.seconds, f"{result.num_frames} frames")],
    }


def check_tav_request(config, source_caption: str | None, edited_caption: str | None, preset: str) -> tuple[str, str]:
    """The captions, stripped, if this server can run Tune-A-Video with them and the preset; else a ValueError."""
    source_caption, edited_caption = (source_caption or "").strip(), (edited_caption or "").strip()
    if not source_caption or not edited_caption:
        raise ValueError("Tune-A-Video needs the source video's caption and the edited caption")
    if preset not in PRESETS:
        raise ValueError(f"Tune-A-Video preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    tav_source(config)
    return source_caption, edited_caption


def run_tav(studio, state: dict, source_caption, edited_caption, preset, tune_steps, session, progress) -> dict:
    """Tune-A-Video on the frames InsV2V edited: tune (or reuse the cached tuning), invert, sample."""
    from insv2v.tav import PRESETS as TAV_PRESETS
    from insv2v.tav import Cancelled, tav_edit

    source_caption, edited_caption = check_tav_request(studio.config, source_caption, edited_caption, preset)
    steps = PRESET_STEPS[preset] if tune_steps is None else int(tune_steps)  # None: an API call that named none
    settings = dataclasses.replace(TAV_PRESETS[preset], tune_steps=steps, seed=int(state["seed"]))
    job = studio.jobs.start(session, Job(settings.tune_steps, progress, "Tune-A-Video: tuning", Path(state["job"])))

    def on_tune_step(step: int, total: int, loss: float) -> None:
        job.done = step
        job.update(f"loss {loss:.4f}")

    try:
        progress(0, desc="Tune-A-Video: loading the model")
        pipe = get_tav_pipeline(studio.config)
        job.check()  # a Cancel pressed while the model loaded
        out = tav_edit(pipe, state["source"], source_caption, edited_caption, settings,
                       cache_dir=studio.cache.tav, callback=on_tune_step, cancel=job)  # fmt: skip
    except Cancelled:  # tuning, inversion or sampling
        raise InterruptedError from None
    finally:
        studio.jobs.finish(session, job)
    tuned = f"tuned {settings.tune_steps} steps in {out.tune_seconds:.0f} s"
    tuned = "tuning reused from the cache" if out.cached else tuned
    detail = f"{tuned}; inverted and sampled in {out.edit_seconds:.1f} s"
    seconds = out.tune_seconds + out.edit_seconds  # as InsV2V's: the model loaded already is not counted
    return {**state, "results": [*state["results"], MethodResult("Tune-A-Video", out.frames, seconds, detail)]}


def finish(studio, state: dict, caption: str) -> tuple[str, pd.DataFrame, str]:
    """The panels video (input | each method so far), the table and the status line."""
    source, results = state["source"], state["results"]
    target = state["target"]
    if target is not None and target.shape != source.shape:  # the example read from another start or stride
        target = None
    scorer, score_note = scorer_or_note(studio.config)  # the toy world has no PickScore model: its CLIP scores both
    scores = score_methods(results, source, caption, scorer, scorer, target=target)
    path = Path(state["job"]) / "panels" / f"compare-{len(results)}.mp4"  # never the upload linked in the job
    path.parent.mkdir(exist_ok=True)
    write_video(path, panels(source, results), state["fps"])
    lines = [f"**{r.method}**: {r.seconds:.1f} s ({r.detail})" for r in results]
    lines += state["notes"] + ([score_note] if score_note else [])
    return str(path), table(scores), "  \n".join(lines)


# ---------------------------------------------------------------- handlers


def _errors(fn):
    """Turn the expected failures into messages on the page."""

    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InterruptedError:
            raise gr.Error("Cancelled: nothing was written.") from None
        except (ValueError, RuntimeError, OSError, MemoryError) as err:
            raise gr.Error(user_message(err)) from None

    return wrapped


def make_handlers(studio):
    """(InsV2V half, Tune-A-Video half, whole comparison) for the button's two events and the API endpoint."""
    seconds = studio.config.gpu_seconds

    @gpu(seconds)
    def compare_insv2v(video, instruction, source_caption, edited_caption, preset, request: gr.Request = None,
                       progress=gr.Progress(), **settings):  # fmt: skip
        session = session_of(request, "compare")
        _errors(check_tav_request)(studio.config, source_caption, edited_caption, preset)  # before minutes of InsV2V
        state = _errors(run_insv2v)(studio, video, instruction, settings, session, progress)
        return (*_errors(finish)(studio, state, (edited_caption or instruction or "").strip()), state)

    @gpu(seconds * 5)
    def compare_tav(state, source_caption, edited_caption, preset, tune_steps, request: gr.Request = None,
                    progress=gr.Progress()):  # fmt: skip
        if not state:
            raise gr.Error("run InsV2V first")
        session = session_of(request, "compare")
        state = _errors(run_tav)(studio, state, source_caption, edited_caption, preset, tune_steps, session, progress)
        return _errors(finish)(studio, state, edited_caption.strip())

    @gpu(seconds * 6)
    def compare(video: str, instruction: str, source_caption: str, edited_caption: str, preset: str = "space",
                tune_steps: int | None = None, request: gr.Request = None, progress=gr.Progress(),
                **settings):  # fmt: skip
        """InsV2V and Tune-A-Video on one video: (panels video, table, status)."""
        session = session_of(request, "compare")
        _errors(check_tav_request)(studio.config, source_caption, edited_caption, preset)  # before minutes of InsV2V
        state = _errors(run_insv2v)(studio, video, instruction, settings, session, progress)
        state = _errors(run_tav)(studio, state, source_caption, edited_caption, preset, tune_steps, session, progress)
        return _errors(finish)(studio, state, (edited_caption or "").strip())

    return compare_insv2v, compare_tav, compare


def shipped_comparisons() -> dict[str, dict]:
    """The examples' comparisons computed ahead (assets/examples/make_compare.py), by example clip file name."""
    record = COMPARE_DIR / "compare.json"
    return json.loads(record.read_text()) if record.is_file() else {}


def shipped_comparison(video: str | None = None) -> tuple[str | None, pd.DataFrame | None, str]:
    """The comparison computed ahead for the example clip `video` (found by content; None: the first example), as
    (panels video, table, status); Nones when there is none."""
    computed = shipped_comparisons()
    name = next(iter(computed), None) if video is None else None
    if video is not None:
        digest = file_sha256(video)
        name = next((n for n in computed if file_sha256(EXAMPLES / n) == digest), None)
    if name is None:
        return None, None, ""
    data = computed[name]
    status = "Example, computed ahead: " + " · ".join(f"{m}: {d}" for m, d in data["details"].items())
    return str(COMPARE_DIR / data["video"]), table(data["scores"]), status


def build(studio) -> None:
    """The Compare tab's layout and wiring, inside the caller's `gr.Tab`."""
    shipped_video, shipped_table, shipped_status = shipped_comparison()
    with gr.Row():
        with gr.Column(scale=1):
            video = gr.Video(label="Input video", sources=["upload"], height=240, elem_id="compare-input")
            instruction = gr.Textbox(label="Instruction (InsV2V)", placeholder="make it snowy",
                                     elem_id="compare-instruction")  # fmt: skip
            source_caption = gr.Textbox(label="Source caption (Tune-A-Video)", elem_id="compare-source-caption",
                                        placeholder="what the input video shows")  # fmt: skip
            with gr.Row():
                edited_caption = gr.Textbox(
                    label="Edited caption (Tune-A-Video)", elem_id="compare-edited-caption", scale=4,
                    placeholder="proposed from the instruction; edit freely",
                )  # fmt: skip
                propose_button = gr.Button("Propose", elem_id="compare-propose", scale=1)
            with gr.Row():
                preset = gr.Dropdown(list(PRESETS), value="space", label="Tune-A-Video preset",
                                     info="space: 300 steps (its demo); official: 500 (its paper)",
                                     elem_id="compare-preset")  # fmt: skip
                tune_steps = gr.Slider(1, MAX_TUNE_STEPS, value=PRESET_STEPS["space"], step=1, label="Tuning steps",
                                       elem_id="compare-tune-steps")  # fmt: skip
            controls = Controls(studio.settings, "compare")
            with gr.Accordion("InsV2V and frames", open=False):
                for name in SETTINGS:
                    controls.add(name)
            with gr.Row():
                run_button = gr.Button("Compare", variant="primary", elem_id="compare-run")
                cancel_button = gr.Button("Cancel", variant="stop", elem_id="compare-cancel")
            cancel_note = gr.Markdown(elem_id="compare-cancel-note")
            api_button = gr.Button(visible=False)  # the `compare` API endpoint: both methods in one call
            api_tune_steps = gr.Number(None, minimum=1, maximum=MAX_TUNE_STEPS, precision=0, visible=False,
                                       label="Tuning steps (default: the preset's)")  # fmt: skip
        with gr.Column(scale=2):
            output = gr.Video(value=shipped_video, label="Input | InsV2V | Tune-A-Video", autoplay=True, loop=True,
                              elem_id="compare-video", height=300)  # fmt: skip
            scores = gr.Dataframe(value=shipped_table, label="Scores", interactive=False, elem_id="compare-table")
            status = gr.Markdown(shipped_status, elem_id="compare-status")
    state = gr.State()

    compare_insv2v, compare_tav, compare = make_handlers(studio)
    settings = controls.inputs(SETTINGS)
    heavy = dict(concurrency_limit=1, concurrency_id="model", show_progress="full")
    preset.change(lambda name: PRESET_STEPS[name], preset, tune_steps, api_name=False, queue=False)
    propose_button.click(propose, [source_caption, instruction], edited_caption, api_name=False)
    (submitted,) = cancellable(studio.jobs, [run_button.click], cancel_button, cancel_note, "the comparison", "compare")
    submitted.then(
        compare_insv2v, [video, instruction, source_caption, edited_caption, preset], [output, scores, status, state],
        api_name=False, inputs_kwargs=settings, **heavy,
    ).success(
        compare_tav, [state, source_caption, edited_caption, preset, tune_steps], [output, scores, status],
        api_name=False, **heavy,
    )  # fmt: skip
    api_button.click(
        compare, [video, instruction, source_caption, edited_caption, preset, api_tune_steps], [output, scores, status],
        api_name="compare", inputs_kwargs=settings, **heavy,
    )  # fmt: skip

    rows = example_rows()
    if rows:  # picking one shows its comparison computed ahead; Compare runs it live

        def show(clip: str, *captions):
            return shipped_comparison(clip)

        gr.Examples(rows, [video, instruction, source_caption, edited_caption], [output, scores, status], fn=show,
                    run_on_click=True, cache_examples=False, api_visibility="private",
                    label="Examples (toy world)")  # fmt: skip
