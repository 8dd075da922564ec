"""One edit, file to file: the typed function behind `insv2v edit` and the app.

A recipe holds every setting of an edit and its seed; the same recipe on the same model and input gives the
same output, and it is saved next to every output.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import insv2v
from insv2v.argtypes import SEED_LIMIT
from insv2v.files import file_sha256, write_text_atomically
from insv2v.loading import default_source, read_model_sampling
from insv2v.pipeline import (
    DEFAULT_FRAMES_PER_CLIP,
    DEFAULT_LVSC_FRACTION,
    DEFAULT_REF_FRAMES,
    DEFAULT_STEPS,
    DEFAULT_TEXT_GUIDANCE,
    DEFAULT_VIDEO_GUIDANCE,
    InsV2VPipeline,
    SamplingCache,
)
from insv2v.video import Clip, VideoWriter, read_video, side_by_side, write_gif

OUTPUT_SUFFIXES = (".mp4", ".gif")


_JSON_TYPES = {"str": (str,), "float": (int, float), "int": (int,), "bool": (bool,)}


def _json_fits(value, annotation: str) -> bool:
    """Whether a JSON value fits a field annotated `annotation` ("float", "int | None", ...); a bool is no number."""
    kinds = [kind.strip() for kind in annotation.split("|")]
    if value is None:
        return "None" in kinds
    if isinstance(value, bool) and "bool" not in kinds:
        return False
    return any(isinstance(value, _JSON_TYPES[kind]) for kind in kinds if kind != "None")


@dataclass
class EditRecipe:
    """Everything that decides an edit's output (given the model weights and the input file)."""

    input: str
    instruction: str
    negative_prompt: str = ""
    model: str | None = None
    text_cfg: float = DEFAULT_TEXT_GUIDANCE  # raise when the edit is too weak
    video_cfg: float = DEFAULT_VIDEO_GUIDANCE  # raise when the result strays too far from the input
    steps: int = DEFAULT_STEPS
    seed: int | None = None  # None: drawn at random by `with_seed`, then recorded
    frames_per_clip: int = DEFAULT_FRAMES_PER_CLIP
    ref_frames: int = DEFAULT_REF_FRAMES
    lvsc: bool = True
    lvsc_fraction: float = DEFAULT_LVSC_FRACTION
    mc: bool = False
    start: float = 0.0  # seconds
    max_frames: int | None = None
    stride: int = 1
    fps: float | None = None  # sample at this rate instead of every `stride`-th frame
    resolution: int | None = None  # short side in pixels; None: the model's native size

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def motion_compensated(self) -> bool:
        """Whether the edit warps LVSC's correction along the input's motion (nothing to warp with LVSC off)."""
        return self.mc and self.lvsc and self.lvsc_fraction > 0

    def with_seed(self) -> EditRecipe:
        """This recipe, its seed drawn at random if it has none, so that the output can be reproduced."""
        return self if self.seed is not None else dataclasses.replace(self, seed=random.randrange(2**31))

    @classmethod
    def from_json(cls, data: dict) -> EditRecipe:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - {"_meta"})
        if unknown:
            raise ValueError(f"recipe has unknown settings: {', '.join(unknown)}")
        wrong = [f"{f.name} must be {f.type}, got {json.dumps(data[f.name])}" for f in dataclasses.fields(cls)
                 if f.name in data and not _json_fits(data[f.name], f.type)]  # fmt: skip
        if wrong:
            raise ValueError(f"recipe settings of the wrong type: {'; '.join(wrong)}")
        if data.get("seed") is not None and not 0 <= data["seed"] < SEED_LIMIT:  # edited by hand: what torch takes
            raise ValueError(f"seed must be between 0 and 2**63 - 1, got {data['seed']}")
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def load(cls, path: str | Path) -> tuple[EditRecipe, dict]:
        """Read a recipe (a relative file path in it is taken from its folder where a file is there, else as given)
        and what its run recorded (`_meta`: input hash, precision, device; {} for a recipe written by hand)."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:  # ValueError: not JSON, or not text at all (UnicodeDecodeError)
            raise ValueError(f"cannot read recipe {path}: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"recipe {path} is not a JSON object")
        recipe = cls.from_json(data)
        folder = Path(path).parent
        for name in ("input", "model"):
            value = getattr(recipe, name)
            if value and not Path(value).is_absolute() and (folder / value).exists():
                recipe = dataclasses.replace(recipe, **{name: str(folder / value)})
        # A setting the file leaves out (written by hand) is the model's, as for an edit given by flags
        recommended = read_model_sampling(default_source(recipe.model), MODEL_SAMPLING_KEYS)
        recipe = dataclasses.replace(recipe, **{k: v for k, v in recommended.items() if k not in data})
        meta = data.get("_meta")
        return recipe, meta if isinstance(meta, dict) else {}

    def save(self, path: str | Path, meta: dict) -> None:
        """Write the recipe, local files inside its folder by their path from there (they move with it), others by
        where they are, so that the recipe replays wherever its folder goes."""
        folder = Path(path).resolve().parent
        data = self.to_json()
        for name in ("input", "model"):
            if data[name] and Path(data[name]).exists():
                where = Path(data[name]).resolve()
                data[name] = where.relative_to(folder).as_posix() if where.is_relative_to(folder) else str(where)
        text = json.dumps({**data, "_meta": meta}, indent=2, default=str)
        write_text_atomically(path, text)  # whole or not at all, as the videos


MODEL_SAMPLING_KEYS = {"text_cfg": float, "video_cfg": float, "lvsc": bool}  # what an editor's sampling.json may hold


def model_defaults(model: str | None) -> EditRecipe:
    """EditRecipe's defaults, with the settings an editor folder's sampling.json recommends (the toy editor: text CFG
    4, where the real model's 7.5 saturates its colours; the synthetic toy editor: LVSC off, as it roughens that
    model's long videos)."""
    return dataclasses.replace(EditRecipe(input="", instruction=""), **read_model_sampling(model, MODEL_SAMPLING_KEYS))


@dataclass
class EditResult:
    output: Path
    recipe_path: Path
    side_by_side: Path | None
    recipe: EditRecipe
    num_frames: int
    fps: float
    width: int
    height: int
    seconds: float
    frames: np.ndarray | None = None  # (f, h, w, 3) uint8 edited frames, with keep_frames=True
    source_frames: np.ndarray | None = None  # (f, h, w, 3) uint8 input frames as edited, with keep_frames=True


def _sampling(recipe: EditRecipe, resolution: int) -> tuple:
    """The settings that decide which input frames an edit sees, and at what size."""
    return (str(Path(recipe.input).resolve()), recipe.start, recipe.max_frames, recipe.stride, recipe.fps, resolution)


@dataclass
class Source:
    """An input decoded for an edit and, once encoded, its latents: what edits of it share."""

    clip: Clip
    sampling: tuple  # _sampling() of the recipe it was read for
    latents: torch.Tensor | None = None  # (1, c, f, h, w) once `encode` has run

    @classmethod
    def read(cls, recipe: EditRecipe, pipe: InsV2VPipeline) -> Source:
        resolution = recipe.resolution or pipe.default_resolution
        clip = read_video(
            recipe.input,
            start=recipe.start,
            max_frames=recipe.max_frames,
            stride=recipe.stride,
            fps=recipe.fps,
            resolution=resolution,
            multiple=pipe.vae_scale_factor,
        )
        return cls(clip, _sampling(recipe, resolution))

    def encode(self, pipe: InsV2VPipeline) -> Source:
        """Encode the frames once; edits of this source without motion compensation then skip encoding."""
        self.latents = pipe.encode_video(self.clip.frames)
        return self


def check_instruction(instruction: str | None) -> None:
    """Refuse an empty instruction before any work."""
    if not (instruction or "").strip():
        raise ValueError('the instruction is empty: say what to change, e.g. "make it snowy"')


def sidecar_paths(output: Path) -> tuple[Path, Path]:
    """Where the recipe JSON and the side-by-side video of `output` go."""
    return output.with_suffix(".json"), output.with_name(output.stem + "_side_by_side" + output.suffix)


def replay_dtype(meta: dict, device: torch.device) -> torch.dtype | None:
    """The precision a recipe ran in, to run it again the same way (None: unrecorded, or float16 on a CPU)."""
    name = str(meta.get("torch_dtype", "")).removeprefix("torch.")
    if name not in ("float32", "float16", "bfloat16") or (name == "float16" and device.type == "cpu"):
        return None
    return getattr(torch, name)


def replay_differences(meta: dict, recipe: EditRecipe, pipe) -> list[str]:
    """Why running `recipe` again with `pipe` will not give the recorded video bit for bit (empty: it should)."""
    notes = []
    if meta.get("input_sha256") and Path(recipe.input).is_file() and meta["input_sha256"] != file_sha256(recipe.input):
        notes.append(f"{Path(recipe.input).name} is not the file this recipe was made from (its contents changed)")
    ran = (meta.get("torch_dtype"), torch.device(meta["device"]).type if meta.get("device") else None)
    now = (str(pipe.unet.dtype), pipe.device.type)
    if None not in ran and ran != now:
        then, here = (f"{dtype.removeprefix('torch.')} on {kind}" for dtype, kind in (ran, now))
        notes.append(f"the recipe ran in {then}, this run in {here}: the video comes out close, not identical")
    return notes


class _Sink:
    """Writes streamed frames to the output (and the side-by-side view) as mp4 or GIF."""

    def __init__(self, path: Path, fps: float, audio: dict, source: np.ndarray | None):
        self.path, self.fps, self.source = path, fps, source
        self.gif = path.suffix.lower() == ".gif"
        self.frames: list[np.ndarray] = []  # GIF only: written at the end
        self.writer = None if self.gif else VideoWriter(path, fps, **audio)

    def write(self, first: int, frames: np.ndarray) -> None:
        if self.source is not None:
            frames = side_by_side(self.source[first : first + len(frames)], frames)
        if self.gif:
            self.frames.append(frames)
        else:
            self.writer.write(frames)

    def close(self, ok: bool) -> None:
        if self.gif:
            if ok:
                write_gif(self.path, np.concatenate(self.frames), self.fps)
        else:
            self.writer.__exit__(None if ok else RuntimeError, None, None)


# The pipeline's arguments as an edit's settings are called (its recipe's fields; the CLI's flags), for its messages.
SETTINGS = {
    "guidance_scale": "text_cfg",
    "video_guidance_scale": "video_cfg",
    "num_inference_steps": "steps",
    "frames_per_clip": "frames_per_clip",
    "ref_frames": "ref_frames",
    "lvsc_fraction": "lvsc_fraction",
}


def name_settings(message: str, names: dict[str, str]) -> str:
    """`message` with the pipeline's argument names (SETTINGS' keys, `quoted` or not) replaced by `names`' values."""
    pattern = re.compile(r"`?\b(" + "|".join(sorted(names, key=len, reverse=True)) + r")\b`?")
    return pattern.sub(lambda m: names[m.group(1)], message)


def check_output(
    output: Path,
    input_path: str | Path | None = None,
    sidecars: Iterable[Path] = (),
    suffixes: Iterable[str] = OUTPUT_SUFFIXES,
) -> None:
    """An output video the writer can make (`suffixes`: the edit's .mp4 or .gif) in a folder that is or can be made
    and written to, that, with its sidecars, would not overwrite the input (if any) nor a folder: checked before any
    work."""
    if output.suffix.lower() not in suffixes:
        raise ValueError(f"output must end in {' or '.join(suffixes)}, got {output.name}")
    for path in (output, *sidecars):
        if input_path is not None and (path.resolve() == Path(input_path).resolve() or same_file(path, input_path)):
            raise ValueError(f"output {path} would overwrite the input")
        if path.is_dir():
            raise ValueError(f"output {path} is a folder; name a file")
    blocked = next((folder for folder in output.parents if folder.exists()), None)  # the nearest that is there
    if blocked is not None and not blocked.is_dir():
        raise ValueError(f"output {output}: {blocked} is a file, not a folder")
    if blocked is not None and not os.access(blocked, os.W_OK):
        raise ValueError(f"output {output}: {blocked} is not writable")


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two existing paths name one file: a hard link, or another spelling on a case-insensitive disk."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # either does not exist (yet)
        return False


def check_recipe_sidecar(recipe_path: Path, output: Path) -> None:
    """Refuse to replace a JSON file beside `output` that is not this output's recipe: out.mp4's when the edit writes
    out.gif (both record to out.json), or a file the edit never wrote. A recipe from before the video's name was
    recorded is taken for this output's."""
    if not recipe_path.exists():
        return
    try:
        video = str(json.loads(recipe_path.read_text())["_meta"].get("video", output.name))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        video = None
    if video is None or (video != output.name and (output.parent / video).exists()):
        whose = "exists and is no recipe" if video is None else f"is the recipe of {video}"
        raise ValueError(f"{recipe_path} {whose}; the edit would replace it: name the output otherwise")


def check_edit_files(recipe: EditRecipe, output: Path, side_by_side_view: bool = False) -> tuple[Path, Path]:
    """The recipe's and side-by-side paths beside `output`, once the output, its sidecars and the instruction are
    known to be fine: checked before any model loads or frame is decoded."""
    recipe_path, sbs_path = sidecar_paths(output)
    check_output(output, recipe.input, [recipe_path, *([sbs_path] if side_by_side_view else [])])
    check_recipe_sidecar(recipe_path, output)
    check_instruction(recipe.instruction)
    return recipe_path, sbs_path


def edit_meta(recipe: EditRecipe, output: Path, pipe: InsV2VPipeline, clip) -> dict:
    """What an edit's recipe records of its run (`_meta`), so that a replay can say what differs."""
    return {
        "insv2v_version": insv2v.__version__,
        "video": output.name,  # whose recipe this is: out.mp4 and out.gif would share out.json
        "input_sha256": file_sha256(recipe.input),
        "size": [clip.frames.shape[2], clip.frames.shape[1]],
        "num_frames": len(clip.frames),
        "fps": clip.fps,
        "scheduler": {"class": type(pipe.scheduler).__name__, **dict(pipe.scheduler.config)},
        "torch_dtype": str(pipe.unet.dtype),
        "device": str(pipe.device),
    }


def run_edit(
    recipe: EditRecipe,
    output: str | Path,
    pipe: InsV2VPipeline,
    *,
    side_by_side_view: bool = False,
    callback_on_step_end=None,
    source: Source | None = None,
    cache: SamplingCache | None = None,
    keep_frames: bool = False,
) -> EditResult:
    """Edit `recipe.input` into `output` (.mp4 keeps fps and audio; .gif loops), with its recipe beside it.

    Nothing is replaced unless the whole edit succeeds: outputs are written to temporary files first.
    `source` (from `Source.read` with the same input and sampling) reuses decoded frames and, without motion
    compensation, encoded latents. `cache` is for edits of one source that differ only in guidance (a sweep): they
    share each clip's first step and the MC flows. `keep_frames` returns the edited and input frames in the result.
    """
    began = time.perf_counter()
    output = Path(output)
    recipe_path, sbs_path = check_edit_files(recipe, output, side_by_side_view)
    if recipe.seed is not None and not 0 <= recipe.seed < SEED_LIMIT:  # torch's generator takes no other
        raise ValueError(f"seed must be between 0 and 2**63 - 1, got {recipe.seed}")
    recipe = recipe.with_seed()
    resolution = recipe.resolution or pipe.default_resolution

    # Decode, sample and resize the input (or reuse it); the pipeline checks every other setting before heavy work.
    if source is None:
        source = Source.read(recipe, pipe)
    elif source.sampling != _sampling(recipe, resolution):
        wanted = _sampling(recipe, resolution)
        raise ValueError(f"`source` was read with {source.sampling}, the recipe asks for {wanted}")
    clip = source.clip
    frames = clip.frames  # (f, h, w, 3) uint8
    output.parent.mkdir(parents=True, exist_ok=True)
    audio = {"audio_from": recipe.input, "audio_start": clip.start, "audio_end": clip.end}
    sinks = [_Sink(output, clip.fps, audio, None)]
    if side_by_side_view:
        sinks.append(_Sink(sbs_path, clip.fps, audio, frames))

    kept: list[np.ndarray] = []

    def on_frames(first: int, edited: np.ndarray) -> None:
        for sink in sinks:
            sink.write(first, edited)
        if keep_frames:
            kept.append(edited)

    # Encoded latents, where the source has them, stand in for the frames (motion compensation needs the pixels).
    use_latents = source.latents is not None and not recipe.motion_compensated
    video_input = {"video_latents": source.latents} if use_latents else {"video": frames}

    ok = False
    try:
        pipe(
            **video_input,
            prompt=recipe.instruction,
            negative_prompt=recipe.negative_prompt or None,
            num_inference_steps=recipe.steps,
            guidance_scale=recipe.text_cfg,
            video_guidance_scale=recipe.video_cfg,
            frames_per_clip=recipe.frames_per_clip,
            ref_frames=recipe.ref_frames,
            lvsc_fraction=recipe.lvsc_fraction if recipe.lvsc else 0.0,
            motion_compensation=recipe.motion_compensated,
            generator=torch.Generator("cpu").manual_seed(recipe.seed),
            output_type="latent",
            on_frames=on_frames,
            cache=cache,
            callback_on_step_end=callback_on_step_end,
        )
        if not pipe.interrupt:
            meta = edit_meta(recipe, output, pipe, clip)  # known before any output replaces an earlier one
            ok = True
    finally:
        failed = None
        for sink in sinks:  # each one closed, so that no temporary file stays behind when another fails
            try:
                sink.close(ok and failed is None)
                if sink is sinks[0] and ok and failed is None:  # the recipe next to the video it describes, before
                    recipe.save(recipe_path, meta)  # the side-by-side view: a later failure leaves them matching
            except Exception as err:
                failed = failed or err
        if failed is not None:
            raise failed
    if not ok:
        raise InterruptedError("the edit was cancelled; nothing was written")
    return EditResult(
        output=output,
        recipe_path=recipe_path,
        side_by_side=sbs_path if side_by_side_view else None,
        recipe=recipe,
        num_frames=len(frames),
        fps=clip.fps,
        width=frames.shape[2],
        height=frames.shape[1],
        seconds=time.perf_counter() - began,
        frames=np.concatenate(kept) if keep_frames else None,
        source_frames=frames if keep_frames else None,
    )
