"""The Edit tab: one video, one instruction, every setting; a quick preview (first clip) or the full edit.

The work sits behind `edit()`, also served as Gradio API endpoints `edit` and `preview`.
"""

import dataclasses
import json
from pathlib import Path

import gradio as gr

from insv2v.editing import EditRecipe, check_instruction, run_edit
from insv2v.longvideo import plan_clips
from insv2v.metrics import edit_scores
from insv2v.ui.controls import Slider
from insv2v.assets import EXAMPLES
from insv2v.ui.serving import Job, check_upload, get_pipeline, get_scorer, gpu, user_message

DEFAULTS = EditRecipe(input="", instruction="")
TEXT_CFG_HELP = "Edit too weak? Raise text CFG. Too strong or noisy? Lower it."
VIDEO_CFG_HELP = "Result too far from the input? Raise video CFG (1-1.8; 1 is fastest). Edit too timid? Lower it."

# The settings in the order the controls, the handler and the API take them.
SETTINGS = (
    "negative_prompt", "text_cfg", "video_cfg", "lvsc", "frames_per_clip", "ref_frames", "lvsc_fraction", "mc",
    "seed", "randomize_seed", "steps", "resolution", "start", "length", "stride",
)  # fmt: skip


def examples() -> list[list[str]]:
    """[clip path, instruction] for each example clip in assets/examples (examples.json lists them)."""
    index = EXAMPLES / "examples.json"
    if not index.is_file():
        return []
    return [[str(EXAMPLES / e["file"]), e["instruction"]] for e in json.loads(index.read_text())]


def recipe_from_settings(studio, video: str, instruction: str, values: dict, preview: bool) -> tuple[EditRecipe, str]:
    """The recipe the controls describe, with the server's frame limit applied; and a note when it cut frames."""
    config = studio.config
    length = int(values["length"] or 0)
    max_frames = min(length or config.max_frames, config.max_frames)
    note = f"cut to {config.max_frames} frames, this server's limit" if length > config.max_frames else ""
    if preview:
        max_frames = min(max_frames, int(values["frames_per_clip"]))
    seed = None if values["randomize_seed"] else int(values["seed"] or 0)
    recipe = EditRecipe(
        input=video,
        instruction=(instruction or "").strip(),
        negative_prompt=values["negative_prompt"] or "",
        model=config.model_name,
        text_cfg=float(values["text_cfg"]),
        video_cfg=float(values["video_cfg"]),
        steps=int(values["steps"]),
        seed=seed,
        frames_per_clip=int(values["frames_per_clip"]),
        ref_frames=int(values["ref_frames"]),
        lvsc=bool(values["lvsc"]),
        lvsc_fraction=float(values["lvsc_fraction"]),
        mc=bool(values["mc"]),
        start=float(values["start"] or 0),
        max_frames=max_frames,
        stride=int(values["stride"]),
        resolution=int(values["resolution"]) or None,
    )
    return recipe, note


def run(studio, video, instruction, values: dict, preview: bool, session: str | None, progress) -> tuple:
    """Check, edit, score; returns (output, side by side, recipe file, metrics, seed, status)."""
    config = studio.config
    try:
        check_instruction(instruction)
        info = check_upload(video, config)
        recipe, note = recipe_from_settings(studio, video, instruction, values, preview)
        job_dir = studio.cache.new_job("preview" if preview else "edit")
        recipe = dataclasses.replace(recipe, input=str(studio.cache.add_input(job_dir, video)))
        progress(0, desc="loading the model")
        pipe = get_pipeline(config)
        expected = min(recipe.max_frames, max(1, int((info.duration - recipe.start) * info.fps / recipe.stride + 0.5)))
        clips = len(plan_clips(expected, recipe.frames_per_clip, recipe.ref_frames))
        job = studio.jobs.start(session, Job(clips * recipe.steps, progress, "preview" if preview else "edit"))

        def detail(step: int) -> str:
            return f"clip {step // recipe.steps + 1}/{clips}"

        try:
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
        scores = edit_scores(result.frames, result.source_frames, recipe.instruction, get_scorer(config))
    except InterruptedError:
        raise gr.Error("Cancelled: nothing was written.") from None
    except (ValueError, RuntimeError, OSError) as err:  # VideoError and ModelLoadError are among these
        raise gr.Error(user_message(err)) from None

    recipe_json = json.loads(result.recipe_path.read_text())
    recipe_json["model"] = config.model_name  # a name, not a server path
    result.recipe_path.write_text(json.dumps(recipe_json, indent=2))
    metrics = {name: round(value, 5) for name, value in scores.items()}
    clip_note = "" if config.clip else " · CLIP metrics off (no CLIP configured)"
    status = (
        f"{'Preview' if preview else 'Edited'} {result.num_frames} frames ({result.width}x{result.height}, "
        f"{result.fps:g} fps) in {result.seconds:.1f} s · seed {result.recipe.seed}"
        + (f" · {note}" if note else "")
        + clip_note
    )
    return str(result.output), str(result.side_by_side), str(result.recipe_path), metrics, result.recipe.seed, status


def make_handler(studio, preview: bool):
    @gpu(studio.config.gpu_seconds)
    def edit(
        video: str,
        instruction: str,
        negative_prompt: str = "",
        text_cfg: float = studio.defaults.text_cfg,
        video_cfg: float = studio.defaults.video_cfg,
        lvsc: bool = True,
        frames_per_clip: int = DEFAULTS.frames_per_clip,
        ref_frames: int = DEFAULTS.ref_frames,
        lvsc_fraction: float = DEFAULTS.lvsc_fraction,
        mc: bool = False,
        seed: int = 0,
        randomize_seed: bool = True,
        steps: int = 20,
        resolution: int = 0,
        start: float = 0.0,
        length: int = 16,
        stride: int = 1,
        request: gr.Request = None,
        progress=gr.Progress(),
    ):
        values = {name: value for name, value in locals().items() if name in SETTINGS}
        session = request.session_hash if request is not None else None
        return run(studio, video, instruction, values, preview, session, progress)

    edit.__name__ = "preview" if preview else "edit"
    return edit


def load_recipe(path: str | None) -> list:
    """Settings from a recipe JSON (the input and model named in it are ignored: they are server-side paths)."""
    if not path:
        return [gr.update()] * len(SETTINGS)
    try:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError("it is not a JSON object")
        recipe = EditRecipe.from_json({"input": "", "instruction": "", **data})
    except (OSError, ValueError, TypeError) as err:
        raise gr.Error(f"cannot load this recipe: {user_message(err)}") from None
    values = {
        **{f: getattr(recipe, f) for f in SETTINGS if hasattr(recipe, f)},
        "negative_prompt": recipe.negative_prompt,
        "seed": recipe.seed or 0,
        "randomize_seed": recipe.seed is None,
        "resolution": recipe.resolution or 0,
        "length": recipe.max_frames or 0,
    }
    return [recipe.instruction or gr.update()] + [values[name] for name in SETTINGS]


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
            negative_prompt = gr.Textbox("", label="Negative prompt", placeholder="optional: what to avoid")
            text_cfg = Slider(1.0, 20.0, studio.defaults.text_cfg, step=0.5, label="Text CFG", info=TEXT_CFG_HELP)
            video_cfg = Slider(1.0, 3.0, studio.defaults.video_cfg, step=0.05, label="Video CFG", info=VIDEO_CFG_HELP)
            with gr.Row():
                preview_button = gr.Button("Preview (first clip)", elem_id="edit-preview")
                run_button = gr.Button("Edit video", variant="primary", elem_id="edit-run")
                cancel_button = gr.Button("Cancel", variant="stop", elem_id="edit-cancel")
            with gr.Accordion("Sampling", open=False):
                with gr.Row():
                    seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=2**31 - 1)
                    randomize_seed = gr.Checkbox(True, label="Randomise seed")
                steps = Slider(1, 50, config.default_steps, step=1, label="Steps", elem_id="edit-steps")
                resolution = Slider(
                    0, 1024, 0, step=8, label="Resolution", info="Short side in pixels; 0 = the model's native size"
                )
            with gr.Accordion("Long video (LVSC) and motion compensation", open=False):
                lvsc = gr.Checkbox(True, label="LVSC: correct each clip towards the clip before")
                frames_per_clip = Slider(
                    2, 32, DEFAULTS.frames_per_clip, step=1, label="Frames per clip", elem_id="edit-frames-per-clip"
                )
                ref_frames = Slider(
                    0, 16, DEFAULTS.ref_frames, step=1, label="Reference frames",
                    info="Frames each clip shares with the one before; fewer than frames per clip",
                    elem_id="edit-ref-frames",
                )  # fmt: skip
                lvsc_fraction = Slider(
                    0.0, 1.0, DEFAULTS.lvsc_fraction, step=0.05, label="Correction fraction",
                    info="Share of the steps, from the noisiest, that get the correction",
                )  # fmt: skip
                mc = gr.Checkbox(False, label="MC: carry the correction along the input's optical flow")
            with gr.Accordion("Which frames", open=False):
                start = gr.Number(0.0, label="Start (seconds)", minimum=0)
                length = Slider(
                    0, config.max_frames, min(16, config.max_frames), step=1, label="Length (frames)",
                    info=f"0 = all, up to {config.max_frames}",
                )  # fmt: skip
                stride = Slider(1, 8, 1, step=1, label="Frame stride", info="Keep every n-th frame")
            load_button = gr.UploadButton("Load recipe", file_types=[".json"], elem_id="edit-load-recipe")
        with gr.Column(scale=1):
            output = gr.Video(label="Edited video", elem_id="edit-output", buttons=["download"], height=280)
            side_by_side = gr.Video(label="Side by side (input | edit)", elem_id="edit-side-by-side", height=200)
            metrics = gr.JSON(label="Metrics", elem_id="edit-metrics")
            status = gr.Markdown(elem_id="edit-status")
            recipe_file = gr.File(label="Recipe (JSON): download, or load back with Load recipe", elem_id="edit-recipe")

    settings = [negative_prompt, text_cfg, video_cfg, lvsc, frames_per_clip, ref_frames, lvsc_fraction, mc,
                seed, randomize_seed, steps, resolution, start, length, stride]  # fmt: skip
    inputs = [video, instruction, *settings]
    outputs = [output, side_by_side, recipe_file, metrics, seed, status]
    heavy = dict(concurrency_limit=1, concurrency_id="model", show_progress="full")
    preview_button.click(make_handler(studio, True), inputs, outputs, api_name="preview", **heavy)
    run_button.click(make_handler(studio, False), inputs, outputs, api_name="edit", **heavy)
    instruction.submit(make_handler(studio, False), inputs, outputs, api_name=False, **heavy)

    def cancel(request: gr.Request):
        if studio.jobs.cancel(request.session_hash if request else None):
            gr.Info("Cancelling: the edit stops after its current step.")

    # Cooperative only: Gradio's `cancels=` on a running event left the next heavy event of the session stuck.
    cancel_button.click(cancel, None, None, api_name=False)
    video.upload(lambda v: describe_upload(studio, v), video, video_info, api_name=False)
    load_button.upload(load_recipe, load_button, [instruction, *settings], api_name=False)

    if examples():
        handler = make_handler(studio, False)

        def edit_example(video: str, instruction: str, request: gr.Request = None):
            """An example with the default settings and seed 0, so that its cached result is reproducible."""
            return handler(
                video, instruction, seed=0, randomize_seed=False, steps=config.default_steps, request=request
            )

        gr.Examples(
            examples(),
            [video, instruction],
            outputs,
            fn=edit_example,
            cache_examples=config.cache_examples,
            cache_mode="lazy",
            api_name=False,
            label="Examples (toy world)",
        )
