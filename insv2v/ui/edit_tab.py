"""The Edit tab: one video, one instruction, every setting; a quick preview (first clip) or the full edit.

The work sits behind `edit()`, also served as Gradio API endpoints `edit` and `preview`; the settings' controls,
defaults and limits come from settings.py.
"""

import dataclasses
import json
from pathlib import Path

import gradio as gr

from insv2v.assets import EXAMPLES
from insv2v.editing import check_instruction, run_edit
from insv2v.files import write_text_atomically
from insv2v.metrics import edit_scores
from insv2v.ui.controls import cancellable, session_of
from insv2v.ui.serving import Job, check_upload, get_pipeline, gpu, logged_warnings, scorer_or_note, user_message
from insv2v.ui.settings import Controls, load_recipe, planned_clips, recipe_from_settings


def examples() -> list[list[str]]:
    """[clip path, instruction] for each example clip in assets/examples (examples.json lists them)."""
    index = EXAMPLES / "examples.json"
    if not index.is_file():
        return []
    return [[str(EXAMPLES / e["file"]), e["instruction"]] for e in json.loads(index.read_text())]


def run(studio, video, instruction, values: dict, preview: bool, session: str | None, progress) -> tuple:
    """Check, edit, score; returns (output, side by side, recipe file, metrics, seed, status)."""
    config = studio.config
    try:
        check_instruction(instruction)
        info = check_upload(video, config)
        recipe, note = recipe_from_settings(studio, info, instruction, values, preview)
        job_dir = studio.cache.new_job("preview" if preview else "edit")
        recipe = dataclasses.replace(recipe, input=str(studio.cache.add_input(job_dir, video)))
        clips = planned_clips(recipe, info)
        job = studio.jobs.start(session, Job(clips * recipe.steps, progress, "preview" if preview else "edit", job_dir))

        def detail(step: int) -> str:
            return f"clip {step // recipe.steps + 1}/{clips}"

        try:
            progress(0, desc="loading the model")
            pipe = get_pipeline(config)
            job.check()  # a Cancel pressed while the model loaded
            with logged_warnings() as warned:
                result = run_edit(
                    recipe,
                    job_dir / f"{Path(video).stem}_edited.mp4",
                    pipe,
                    side_by_side_view=True,
                    callback_on_step_end=job.callback(detail),
                    keep_frames=True,
                )
        finally:
            studio.jobs.finish(session, job)
        progress(1.0, desc="scoring")
        scorer, score_note = scorer_or_note(config)
        scores = edit_scores(result.frames, result.source_frames, recipe.instruction, scorer)
    except InterruptedError:
        raise gr.Error("Cancelled: nothing was written.") from None
    except (ValueError, RuntimeError, OSError, MemoryError) as err:  # VideoError and ModelLoadError are among these
        raise gr.Error(user_message(err)) from None

    recipe_json = json.loads(result.recipe_path.read_text())
    recipe_json["model"] = config.model_name  # a name, not a server path
    write_text_atomically(result.recipe_path, json.dumps(recipe_json, indent=2))  # whole, as run_edit wrote it
    metrics = {name: round(value, 5) for name, value in scores.items()}
    clip_note = "" if config.clip else " · CLIP metrics off (no CLIP configured)"
    clip_note = f" · {score_note}" if score_note else clip_note
    status = (
        f"{'Preview' if preview else 'Edited'} {result.num_frames} frames ({result.width}x{result.height}, "
        f"{result.fps:g} fps) in {result.seconds:.1f} s · seed {result.recipe.seed}"
        + (f" · {note}" if note else "")
        + clip_note
        + "".join(f" · {user_message(message)}" for message in warned)
    )
    return str(result.output), str(result.side_by_side), str(result.recipe_path), metrics, result.recipe.seed, status


def make_handler(studio, preview: bool):
    """The handler of the Edit (or Preview) button and API endpoint; the settings come by name (settings.py)."""

    @gpu(studio.config.gpu_seconds)
    def edit(video: str, instruction: str, request: gr.Request = None, progress=gr.Progress(), **settings):
        session = session_of(request, "edit")
        return run(studio, video, instruction, settings, preview, session, progress)

    edit.__name__ = "preview" if preview else "edit"
    return edit


def make_example_handler(studio):
    """An example's run, cached on first use: the default settings and seed 0, so that its result is reproducible."""
    handler = make_handler(studio, False)

    def edit_example(video: str, instruction: str, request: gr.Request = None):
        studio.jobs.submit(session_of(request, "edit"))  # a request of its own: an earlier Cancel does not stop it
        return handler(video, instruction, seed=0, randomize_seed=False, request=request)

    return edit_example


def describe_upload(studio, video: str | None) -> str:
    from insv2v.ui.serving import describe

    if not video:
        return ""
    try:
        return describe(check_upload(video, studio.config))
    except ValueError as err:
        raise gr.Error(user_message(err)) from None


def build(studio) -> None:
    """The Edit tab's layout and wiring, inside the caller's `gr.Tab`."""
    config = studio.config
    with gr.Row():
        with gr.Column(scale=1):
            video = gr.Video(label="Input video", sources=["upload"], height=280, elem_id="edit-input")
            video_info = gr.Markdown(elem_id="edit-input-info")
            instruction = gr.Textbox(label="Instruction", placeholder="make it snowy", elem_id="edit-instruction")
            controls = Controls(studio.settings, "edit")
            controls.add("negative_prompt")
            controls.add("text_cfg")
            controls.add("video_cfg")
            with gr.Row():
                preview_button = gr.Button("Preview (first clip)", elem_id="edit-preview")
                run_button = gr.Button("Edit video", variant="primary", elem_id="edit-run")
                cancel_button = gr.Button("Cancel", variant="stop", elem_id="edit-cancel")
            cancel_note = gr.Markdown(elem_id="edit-cancel-note")
            with gr.Accordion("Sampling", open=False):
                with gr.Row():
                    controls.add("seed")
                    controls.add("randomize_seed")
                controls.add("steps")
                controls.add("resolution")
            with gr.Accordion("Long video (LVSC) and motion compensation", open=False):
                for name in ("lvsc", "frames_per_clip", "ref_frames", "lvsc_fraction", "mc"):
                    controls.add(name)
            with gr.Accordion("Which frames", open=False):
                for name in ("start", "length", "stride"):
                    controls.add(name)
            load_button = gr.UploadButton("Load recipe", file_types=[".json"], elem_id="edit-load-recipe")
        with gr.Column(scale=1):
            output = gr.Video(label="Edited video", elem_id="edit-output", buttons=["download"], height=280)
            side_by_side = gr.Video(label="Side by side (input | edit)", elem_id="edit-side-by-side", height=200)
            metrics = gr.JSON(label="Metrics", elem_id="edit-metrics")
            status = gr.Markdown(elem_id="edit-status")
            recipe_file = gr.File(label="Recipe (JSON): download, or load back with Load recipe", elem_id="edit-recipe")

    names = list(studio.settings)  # every setting, in the table's order: the API's (README)
    settings = controls.inputs(names)
    inputs = [video, instruction]
    outputs = [output, side_by_side, recipe_file, metrics, controls["seed"], status]
    # The settings go by name: the API names each parameter after its setting (its default: the control's value).
    heavy = dict(inputs_kwargs=settings, concurrency_limit=1, concurrency_id="model", show_progress="full")
    buttons = [preview_button.click, run_button.click, instruction.submit]
    preview, edit, enter = cancellable(studio.jobs, buttons, cancel_button, cancel_note, "the edit", "edit")
    preview.then(make_handler(studio, True), inputs, outputs, api_name="preview", **heavy)
    edit.then(make_handler(studio, False), inputs, outputs, api_name="edit", **heavy)
    enter.then(make_handler(studio, False), inputs, outputs, api_name=False, **heavy)
    video.upload(lambda v: describe_upload(studio, v), video, video_info, api_name=False)

    def fill(path: str | None) -> list:
        values = load_recipe(path, studio.settings)
        return [values.get(name, gr.update()) for name in ["instruction", *names]]

    load_button.upload(fill, load_button, [instruction, *settings.values()], api_name=False)

    if examples():
        shown = gr.Examples(
            examples(),
            [video, instruction],
            outputs,
            fn=make_example_handler(studio),
            cache_examples=config.cache_examples,
            cache_mode="lazy",
            api_name=False,
            label="Examples (toy world)",
        )
        if shown.cache_event is not None:  # an example cached on first use runs the model in Gradio's own event:
            caching = studio.demo.fns[shown.cache_event["id"]]  # it waits its turn with the edits and sweeps,
            caching.concurrency_id, caching.concurrency_limit = "model", 1  # which share the pipeline's scheduler
