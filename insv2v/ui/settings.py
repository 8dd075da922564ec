"""The edit settings every tab shares, in one table: each setting's control, default and limits, and the recipe
built from their values.

A tab creates the controls it shows with `Controls.add`, where its layout wants them, and passes them to its
event as `inputs_kwargs`: Gradio then names each API parameter after its setting (the control's value is the
API's default), and the handler takes them as `**settings`, so no handler spells out the settings. A setting a
Python caller leaves out gets the table's default (`recipe_from_settings`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from insv2v.editing import EditRecipe
from insv2v.loading import COMPOSE_PREFIX, composition_parts
from insv2v.models.inflate import MOTION_MAX_FRAMES
from insv2v.ui.controls import Slider
from insv2v.ui.serving import AppConfig, user_message

TEXT_CFG_HELP = "Edit too weak? Raise text CFG. Too strong or noisy? Lower it."
VIDEO_CFG_HELP = "Result too far from the input? Raise video CFG (1-1.8; 1 is fastest). Edit too timid? Lower it."


@dataclass
class Setting:
    """One edit setting: its name (the API parameter, and the EditRecipe field where one has that name), its
    control and the control's starting value and limits."""

    name: str
    component: type  # Slider (refuses out-of-range API values naming itself), gr.Number, gr.Checkbox, gr.Textbox
    label: str
    default: Any
    info: str | None = None  # the help line under the label
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    options: dict = field(default_factory=dict)  # the component's other arguments (placeholder, precision)

    def make(self, elem_id: str, **changes) -> gr.components.Component:
        """The control, created in the caller's layout; `changes` override the table (a tab's own label, say)."""
        limits = dict(minimum=self.minimum, maximum=self.maximum, step=self.step)
        kwargs = dict(value=self.default, label=self.label, info=self.info, elem_id=elem_id, **self.options)
        kwargs |= {name: value for name, value in limits.items() if value is not None}  # Checkbox, Textbox: none
        return self.component(**{**kwargs, **changes})


def settings_table(config: AppConfig, defaults: EditRecipe) -> dict[str, Setting]:
    """Every setting by name, in the order the Edit endpoint takes them, with this server's defaults and limits:
    `defaults` (EditRecipe's, with the model's recommended guidance), the app's starting steps and frame limit,
    and frames per clip up to what the model's motion modules take."""
    clip = model_max_frames(config.model)
    frames_per_clip = min(defaults.frames_per_clip, clip)
    table = [
        Setting("negative_prompt", gr.Textbox, "Negative prompt", defaults.negative_prompt,
                options=dict(placeholder="optional: what to avoid")),
        Setting("text_cfg", Slider, "Text CFG", defaults.text_cfg, TEXT_CFG_HELP, 1.0, 20.0, 0.5),
        Setting("video_cfg", Slider, "Video CFG", defaults.video_cfg, VIDEO_CFG_HELP, 1.0, 3.0, 0.05),
        Setting("lvsc", gr.Checkbox, "LVSC: correct each clip towards the clip before", defaults.lvsc),
        Setting("frames_per_clip", Slider, "Frames per clip", frames_per_clip,
                f"Up to {clip}, the most this model's motion modules take", 2, clip, 1),
        Setting("ref_frames", Slider, "Reference frames", min(defaults.ref_frames, frames_per_clip - 1),
                "Frames each clip shares with the one before; fewer than frames per clip", 0, clip - 1, 1),
        Setting("lvsc_fraction", Slider, "Correction fraction", defaults.lvsc_fraction,
                "Share of the steps, from the noisiest, that get the correction", 0.0, 1.0, 0.05),
        Setting("mc", gr.Checkbox, "MC: carry the correction along the input's optical flow", defaults.mc),
        Setting("seed", gr.Number, "Seed", 0, minimum=0, maximum=2**31 - 1, options=dict(precision=0)),
        Setting("randomize_seed", gr.Checkbox, "Randomise seed", True),
        Setting("steps", Slider, "Steps", config.default_steps, None, 1, max(50, config.default_steps), 1),
        Setting("resolution", Slider, "Resolution", 0, "Short side in pixels; 0 = the model's native size", 0, 1024, 8),
        Setting("start", gr.Number, "Start (seconds)", defaults.start, minimum=0),
        Setting("length", Slider, "Length (frames)", min(16, config.max_frames),
                f"0 = all, up to {config.max_frames}", 0, config.max_frames, 1),
        Setting("stride", Slider, "Frame stride", defaults.stride, "Keep every n-th frame", 1, 8, 1),
    ]  # fmt: skip
    return {setting.name: setting for setting in table}


def model_max_frames(model: str) -> int:
    """The most frames per clip `model` takes (its UNet config's motion_max_seq_length, the pipeline's
    max_frames_per_clip), read without loading the model, which loads on the first request: from a folder's
    unet/config.json, or from the Hugging Face cache for a hub id. A composition gets its adapter's positions
    extended to at least MOTION_MAX_FRAMES. When nothing can be read, MOTION_MAX_FRAMES; the pipeline's own check
    then refuses a longer clip at the first request."""
    if model.startswith(COMPOSE_PREFIX):
        adapter = composition_parts(model)[1]
        return max(MOTION_MAX_FRAMES, _motion_max_seq_length(adapter, "config.json") or 0)
    return _motion_max_seq_length(model, "unet/config.json") or MOTION_MAX_FRAMES


def _motion_max_seq_length(source: str, config_file: str) -> int | None:
    """motion_max_seq_length in `config_file` of the folder `source`, or in the Hugging Face cache of the hub id
    `source` (never downloaded); None when neither has it."""
    path = Path(source).expanduser() / config_file
    if not path.is_file():
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(source, config_file)
        except ValueError:  # not a hub id either
            return None
        if not isinstance(cached, str):  # not cached, or cached as missing
            return None
        path = Path(cached)
    try:
        return int(json.loads(path.read_text())["motion_max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Controls(dict):
    """One tab's settings controls by name, each created where the tab's layout calls `add`."""

    def __init__(self, table: dict[str, Setting], tab: str):
        super().__init__()
        self.table, self.tab = table, tab

    def add(self, name: str, **changes) -> gr.components.Component:
        """The control of setting `name` as the table describes it (elem_id TAB-NAME); `changes` are the tab's own."""
        self[name] = self.table[name].make(f"{self.tab}-{name.replace('_', '-')}", **changes)
        return self[name]

    def inputs(self, names) -> dict:
        """`inputs_kwargs` for an event: the controls of `names`, in the order its API takes them."""
        return {name: self[name] for name in names}


def recipe_from_settings(studio, info, instruction: str, values: dict, preview: bool) -> tuple[EditRecipe, str]:
    """The recipe the settings describe (one not in `values`: its default) for the upload that `info` (VideoInfo)
    describes, with the server's frame limit applied and, for a preview, only the first clip; and a note
    when the limit cut the selection short."""
    unknown = set(values) - set(studio.settings)
    if unknown:  # only a Python caller can pass these: the API takes the names it was wired with
        raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
    values = {name: setting.default for name, setting in studio.settings.items()} | values
    config = studio.config
    length = int(values["length"] or 0)  # 0: all of it
    max_frames = min(length or config.max_frames, config.max_frames)
    start = float(values["start"] or 0)
    if not math.isfinite(start):  # NaN passes every comparison with the video's length
        raise ValueError(f"Start (seconds) must be a finite number; got {start:g}")
    available = selected_frames(info, start, int(values["stride"]))
    cut = min(length or available, available) > config.max_frames
    note = f"cut to {config.max_frames} frames, this server's limit" if cut else ""
    if preview:
        max_frames = min(max_frames, int(values["frames_per_clip"]))
    seed = None if values["randomize_seed"] else int(values["seed"] or 0)
    recipe = EditRecipe(
        input=info.path,
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
        start=start,
        max_frames=max_frames,
        stride=int(values["stride"]),
        resolution=int(values["resolution"]) or None,
    )
    return recipe, note


def planned_clips(recipe: EditRecipe, info) -> int:
    """How many clips the edit of `recipe` on the upload described by `info` (VideoInfo) denoises: for progress."""
    from insv2v.longvideo import plan_clips

    expected = min(recipe.max_frames, selected_frames(info, recipe.start, recipe.stride))
    return len(plan_clips(expected, recipe.frames_per_clip, recipe.ref_frames))


def selected_frames(info, start: float, stride: int) -> int:
    """About how many frames an edit from `start` seconds taking every `stride`-th frame reads from the upload."""
    return max(1, int(max(info.duration - start, 0.0) * info.fps / stride + 0.5))  # past the end: the video says so


def load_recipe(path: str | None, table: dict[str, Setting] | None = None) -> dict:
    """The instruction and settings of a recipe JSON by name, for the controls; nothing without a file. The input
    and model named in it are ignored: they are server-side paths. With the settings `table`, a value outside its
    control's range (a CLI recipe may hold one) is refused here, naming the control, not at the next edit."""
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError("it is not a JSON object")
        recipe = EditRecipe.from_json({"input": "", "instruction": "", **data})
    except (OSError, ValueError, TypeError) as err:
        raise gr.Error(f"cannot load this recipe: {user_message(err)}") from None
    if recipe.fps:
        gr.Warning(f"This recipe samples the video at {recipe.fps:g} fps, which the app does not: it takes every "
                   "Stride-th frame, so the edit will differ (`insv2v edit --recipe` reproduces it).")  # fmt: skip
    values = recipe.to_json()
    for name in ("input", "model", "instruction", "fps", "max_frames"):  # no control for these, or another name
        del values[name]
    values.update(
        seed=recipe.seed or 0,
        randomize_seed=recipe.seed is None,
        resolution=recipe.resolution or 0,
        length=recipe.max_frames or 0,
    )
    most = int(table["length"].maximum) if table else None
    if most is not None and values["length"] > most:  # the Edit tab cuts a longer selection too
        gr.Warning(f"This recipe edits {values['length']} frames; this server edits {most} at most.")
        values["length"] = most
    limited = {name: setting for name, setting in (table or {}).items() if not _within(setting, values.get(name))}
    outside = [f"{s.label} {_show(values[name])} (this app takes {_show(s.minimum)} to {_show(s.maximum)})"
               for name, s in limited.items()]  # fmt: skip
    if outside:
        raise gr.Error(f"this recipe cannot be run here: {'; '.join(outside)}")
    if recipe.instruction:
        values["instruction"] = recipe.instruction
    return values


def _show(number: float) -> str:
    """A number as its control shows it: whole ones in full (a seed), others short."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _within(setting: Setting, value) -> bool:
    """Whether a numeric setting's value lies in its control's range (a setting without one: always)."""
    if setting.minimum is None or setting.maximum is None or isinstance(value, bool) or value is None:
        return True
    return setting.minimum <= value <= setting.maximum
