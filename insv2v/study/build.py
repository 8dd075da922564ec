"""Build a blind pairwise study from (video, instruction) items and each method's output on them.

insv2v study build --inputs runs/baseline --methods insv2v,tav,frame2d --out STUDY.db

Items come from `items.jsonl` (the layout `insv2v.toyworld.baseline.save_outputs` writes): one JSON object a line,
{item, input, instruction, outputs: {method: file}, reference: the exact edit (optional), caption and
edited_caption (optional; Tune-A-Video needs them)}, paths relative to the file. An item without outputs has each
method run on it (`run_method`), its outputs kept in STUDY_outputs/.

Every served video (inputs, outputs, and the references of gold items) is decoded and re-encoded to one codec,
size, frame rate and length by `insv2v.video.write_video`, which copies no tag from its source (its files carry only
the muxer's fixed tags), under a random name in STUDY_files/; only the database's `files` table says which is which.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import combinations
from pathlib import Path

import numpy as np

from insv2v.study.store import ROLES, StudyStore, balanced_sides
from insv2v.video import MIN_RESOLUTION, probe, read_video, resize, write_video

logger = logging.getLogger(__name__)

ITEMS_FILE = "items.jsonl"  # in an inputs folder
METHOD_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # method keys (they name output files of the run path)
NAME_BYTES = 16  # served names: secrets.token_hex(NAME_BYTES) + ".mp4", 32 random hex digits
DEFAULT_SIZE = (256, 256)  # (width, height) of every served video
DEFAULT_FPS = 8.0  # frame rate of every served video
DEFAULT_GOLD = 2  # gold items (attention checks) when enough items have a reference


@dataclass(frozen=True)
class StudyItem:
    """One (video, instruction) item and what the study shows of it."""

    item: str  # its id, unique in the study
    input: Path  # the unedited video
    instruction: str
    outputs: dict[str, Path] = dataclasses.field(default_factory=dict)  # method key -> its edit; empty: run them
    reference: Path | None = None  # the exact edit, if known: makes the item usable as an attention check
    caption: str | None = None  # what the input shows (Tune-A-Video's source prompt)
    edited_caption: str | None = None  # what the edit should show (Tune-A-Video's prompt)


@dataclass(frozen=True)
class RunSettings:
    """How `run_method` runs the methods on items that come without outputs."""

    model: str | None = None  # InsV2V pipeline (insv2v, frame2d); None: $INSV2V_MODEL, else the shipped toy editor
    tav_model: str | None = None  # Tune-A-Video's text-to-image base; None: the shipped toy text-to-image model
    tav_preset: str = "space"  # Tune-A-Video's settings: "space" (300 tuning steps, 8 frames) or "official"
    tav_settings: object | None = None  # a TAVSettings that replaces the preset (tests: a step or two)
    steps: int | None = None  # denoising steps of insv2v and frame2d; None: the recipe's default
    max_frames: int | None = None  # input frames edited by insv2v and frame2d; None: all
    seed: int = 0  # every method's noise
    device: str | None = None  # None: the best available


# ----------------------------------------------------------------------------------------------------------------------
# Items


def _item_from_json(line: dict, base: Path, where: str) -> StudyItem:
    """A StudyItem from one parsed items.jsonl line; paths relative to `base`; `where` names the line in errors."""
    if not isinstance(line, dict):
        raise ValueError(f"{where}: must be a JSON object, got {type(line).__name__}")
    missing = [key for key in ("item", "input", "instruction") if line.get(key) in (None, "")]
    if missing:
        raise ValueError(f"{where}: needs {', '.join(missing)}")
    for key in ("input", "instruction", "reference", "caption", "edited_caption"):  # paths and words: text only
        if line.get(key) is not None and not (isinstance(line[key], str) and line[key].strip()):
            raise ValueError(f"{where}: {key} must be a non-empty string, got {line[key]!r}")
    outputs = line.get("outputs") or {}
    if not isinstance(outputs, dict) or not all(isinstance(v, str) for v in outputs.values()):
        raise ValueError(f"{where}: outputs must be an object of method -> file, got {outputs!r}")
    return StudyItem(
        item=str(line["item"]),
        input=base / line["input"],
        instruction=str(line["instruction"]),
        outputs={str(method): base / path for method, path in outputs.items()},
        reference=base / line["reference"] if line.get("reference") else None,
        caption=line.get("caption"),
        edited_caption=line.get("edited_caption"),
    )


def read_items(path: str | os.PathLike) -> list[StudyItem]:
    """Items from a folder holding items.jsonl, or from a .jsonl file of the same lines; paths relative to it."""
    path = Path(path)
    file = path / ITEMS_FILE if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"--inputs {path}: no {ITEMS_FILE} there" if path.is_dir() else f"--inputs {path}: not found")
    items, seen = [], set()
    for number, text in enumerate(file.read_text().splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{file}:{number}: not JSON ({err})") from err
        item = _item_from_json(line, file.parent, f"{file}:{number}")
        if item.item in seen:
            raise ValueError(f"{file}:{number}: item {item.item!r} appears twice")
        seen.add(item.item)
        items.append(item)
    if not items:
        raise ValueError(f"{file}: has no items")
    return items


# ----------------------------------------------------------------------------------------------------------------------
# Running the methods on items without outputs


def _insv2v(input_path: Path, instruction: str, out_path: Path, item: StudyItem, run: RunSettings, flat=False):
    """InsV2V's edit of the file (or, `flat`, its 2-D model frame by frame), with the model's recommended guidance."""
    from insv2v.editing import model_defaults, run_edit
    from insv2v.loading import load_pipeline, resolve_source

    source = resolve_source(run.model)
    pipe = _per_frame(source, run.device) if flat else load_pipeline(source, run.device)
    changes = {"steps": run.steps} if run.steps else {}
    recipe = dataclasses.replace(model_defaults(source), input=str(input_path), instruction=instruction, model=source,
                                 seed=run.seed, max_frames=run.max_frames, **changes)  # fmt: skip
    run_edit(recipe, out_path, pipe)


def _per_frame(source: str, device: str | None):
    """The InsV2V pipeline with its motion modules silenced (the 2-D model frame by frame), built once per version
    of the model's files."""
    from insv2v.loading import load_pipeline
    from insv2v.toyworld.evaluate import per_frame_model

    return _per_frame_models().get((source, device), source, lambda: per_frame_model(load_pipeline(source, device)))


@cache
def _per_frame_models():
    """The per-frame models' cache, made on first use (this module loads without torch)."""
    from insv2v.loading import ModelCache

    return ModelCache(size=1)


def _tav(input_path: Path, instruction: str, out_path: Path, item: StudyItem, run: RunSettings) -> None:
    """Tune-A-Video, as `insv2v tav edit` runs it: every 2nd frame, tuned on the caption, sampled with the edited."""
    from insv2v.assets import TOY_T2I
    from insv2v.tav import PRESETS, load_tav, tav_edit

    settings = run.tav_settings or dataclasses.replace(PRESETS[run.tav_preset], seed=run.seed)
    pipe = load_tav(str(run.tav_model or TOY_T2I), run.device)
    pipe.set_progress_bar_config(disable=True)
    clip = read_video(input_path, max_frames=settings.frames, stride=2, resolution=pipe.default_resolution,
                      multiple=pipe.vae_scale_factor)  # fmt: skip
    result = tav_edit(pipe, clip.frames, item.caption, item.edited_caption, settings)
    write_video(out_path, result.frames, clip.fps)


METHOD_RUNNERS: dict[str, Callable[..., None]] = {  # method key -> runner(input, instruction, out, item, run)
    "insv2v": _insv2v,
    "frame2d": lambda *args: _insv2v(*args, flat=True),
    "tav": _tav,
}
NEEDS_CAPTIONS = {"tav"}  # methods that need the item's caption and edited_caption


def run_method(method: str, input_path, instruction: str, out_path, *, item: StudyItem | None = None,
               run: RunSettings = RunSettings()) -> Path:  # fmt: skip
    """Run `method` (a key of METHOD_RUNNERS, which a caller may extend) on one video and instruction, writing its
    edit to `out_path`; `item` gives the captions Tune-A-Video needs."""
    if method not in METHOD_RUNNERS:
        raise ValueError(f"no runner for method {method!r}: give its outputs in {ITEMS_FILE} (outputs: {{{method!r}: "
                         f"FILE}}) or use one of {', '.join(METHOD_RUNNERS)}")  # fmt: skip
    item = item or StudyItem(item="", input=Path(input_path), instruction=instruction)
    if method in NEEDS_CAPTIONS and not (item.caption and item.edited_caption):
        raise ValueError(f"item {item.item!r}: method {method} needs `caption` and `edited_caption` in its line")
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    METHOD_RUNNERS[method](Path(input_path), instruction, Path(out_path), item, run)
    return Path(out_path)


# ----------------------------------------------------------------------------------------------------------------------
# Pure helpers


def served_name() -> str:
    """A random file name that says nothing about what the file shows."""
    return secrets.token_hex(NAME_BYTES) + ".mp4"


def check_build_args(methods: Sequence[str], out_db: Path, size, fps: float, frames, per_participant, gold) -> None:
    """Refuse bad settings before any work; each message names the argument, the rule and the value."""
    if len(methods) < 2:
        raise ValueError(f"methods: a pairwise study needs at least 2, got {list(methods)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods: each may appear once, got {list(methods)}")
    for method in methods:
        if method in ROLES or not METHOD_PATTERN.fullmatch(method):
            raise ValueError(f"methods: {method!r} must be 1-64 letters, digits, '_', '.', '-' and not one of "
                             f"{', '.join(ROLES)}")  # fmt: skip
    if out_db.exists():
        raise ValueError(f"out: {out_db} exists; a study is never overwritten (its ratings would be lost)")
    if not out_db.parent.is_dir():
        raise ValueError(f"out: folder {out_db.parent} does not exist")
    if files_dir_of(out_db).exists():
        raise ValueError(f"out: {files_dir_of(out_db)} exists (left by an earlier build?); move it away first")
    if size is not None and (len(size) != 2 or any(s < MIN_RESOLUTION or s % 2 for s in size)):
        raise ValueError(f"size: (width, height), each even and >= {MIN_RESOLUTION}, or None, got {size}")
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be > 0, got {fps}")
    if frames is not None and frames < 1:
        raise ValueError(f"frames must be >= 1 or None (the shortest), got {frames}")
    if per_participant is not None and per_participant < 1:
        raise ValueError(f"comparisons_per_participant must be >= 1 or None (all), got {per_participant}")
    if gold < 0:
        raise ValueError(f"gold must be >= 0, got {gold}")


def files_dir_of(out_db: Path) -> Path:
    """The served files' folder of a study: STUDY.db -> STUDY_files/."""
    return out_db.with_name(f"{out_db.stem}_files")


def outputs_dir_of(out_db: Path) -> Path:
    """Where the run path keeps the methods' outputs (never served): STUDY.db -> STUDY_outputs/."""
    return out_db.with_name(f"{out_db.stem}_outputs")


def _check_items(items: Sequence[StudyItem], methods: Sequence[str]) -> None:
    """Refuse duplicate ids, missing files, and items with outputs for some methods but not all of `methods`."""
    if not items:
        raise ValueError("items: none given")
    seen = set()
    for item in items:
        if item.item in seen:
            raise ValueError(f"items: {item.item!r} appears twice")
        seen.add(item.item)
        if not item.instruction.strip():
            raise ValueError(f"item {item.item!r}: the instruction is empty")
        missing = [m for m in methods if m not in item.outputs]
        if item.outputs and missing:
            raise ValueError(f"item {item.item!r}: no output of {', '.join(missing)} (it has "
                             f"{', '.join(item.outputs)}); give every method's or none (then they run)")  # fmt: skip
        if not item.outputs:
            for method in methods:
                if method not in METHOD_RUNNERS:
                    raise ValueError(f"item {item.item!r} has no outputs and there is no runner for {method!r} "
                                     f"(runners: {', '.join(METHOD_RUNNERS)})")  # fmt: skip
                if method in NEEDS_CAPTIONS and not (item.caption and item.edited_caption):
                    raise ValueError(f"item {item.item!r}: running {method} needs `caption` and `edited_caption`")
        files = {"input": item.input, **{m: item.outputs[m] for m in methods if m in item.outputs}}
        if item.reference is not None:
            files["reference"] = item.reference
        for role, path in files.items():
            if not Path(path).is_file():
                raise ValueError(f"item {item.item!r}: {role} file {path} not found")


# ----------------------------------------------------------------------------------------------------------------------
# Re-encoding


def _frame_count(path: Path, fps: float) -> int:
    """Frames the video has when resampled to `fps` (decoded small: only the count matters)."""
    return len(read_video(path, fps=fps, resolution=MIN_RESOLUTION, multiple=2).frames)


def _even_size(path: Path) -> tuple[int, int]:
    """(width, height) of a video, each rounded down to even (yuv420p)."""
    info = probe(path)
    return max(2, info.width // 2 * 2), max(2, info.height // 2 * 2)


def _reencode(src: Path, folder: Path, size: tuple[int, int], fps: float, frames: int) -> str:
    """Write `frames` frames of `src`, resampled to `fps` and resized to `size`, under a new random name; its name."""
    clip = read_video(src, fps=fps, max_frames=frames, multiple=2)
    if len(clip.frames) < frames:
        raise ValueError(f"{src}: has {len(clip.frames)} frames at {fps:g} fps, the study serves {frames}")
    width, height = size
    resized = np.stack([resize(frame, width, height) for frame in clip.frames])  # (frames, height, width, 3)
    name = served_name()
    write_video(folder / name, resized, fps)
    return name


# ----------------------------------------------------------------------------------------------------------------------
# The study


def build_study(
    items: Iterable[StudyItem],
    methods: Sequence[str],
    out_db: str | os.PathLike,
    *,
    seed: int = 0,
    size: tuple[int, int] | None = DEFAULT_SIZE,
    fps: float = DEFAULT_FPS,
    frames: int | None = None,
    comparisons_per_participant: int | None = None,
    gold: int = DEFAULT_GOLD,
    run: RunSettings = RunSettings(),
) -> Path:
    """Build a blind pairwise study of `methods` on `items` at `out_db` (never over an existing one); its path.

    Every unordered pair of methods is compared on every item, the sides balanced per pair across items. `gold`
    items with a reference add an attention check: the unedited input against the exact edit, whose right answer
    to the "text" question is the edit. Served videos share `size` ((width, height); None keeps each item's input
    size), `fps`, and `frames` (None: the shortest). `comparisons_per_participant` (None: all) regular comparisons
    go to each participant, those rated least often first, plus every gold one.
    """
    # 1. Check inputs
    out_db, methods, items = Path(out_db), list(methods), list(items)
    check_build_args(methods, out_db, size, fps, frames, comparisons_per_participant, gold)
    _check_items(items, methods)
    rng = random.Random(seed)

    # 2. Run the methods on the items that came without outputs
    outputs_dir = outputs_dir_of(out_db)
    for index, item in enumerate(items):
        if not item.outputs:
            outputs = {m: run_method(m, item.input, item.instruction, outputs_dir / f"{index:04d}" / f"{m}.mp4",
                                     item=item, run=run) for m in methods}  # fmt: skip
            items[index] = dataclasses.replace(item, outputs=outputs)

    # 3. Choose the gold items and pair up the methods
    candidates = [i for i, item in enumerate(items) if item.reference is not None]
    gold_items = sorted(rng.sample(candidates, min(gold, len(candidates))))
    if len(gold_items) < gold:
        logger.warning("only %d of %d items have a reference: %d gold items, not %d",
                       len(candidates), len(items), len(gold_items), gold)  # fmt: skip
    pairs = list(combinations(methods, 2))
    swaps = {pair: balanced_sides(len(items), rng) for pair in pairs}  # pair -> per item: second method left?
    gold_swaps = balanced_sides(len(gold_items), rng)  # per gold item: reference left?

    # 4. Length of the served videos: the shortest at `fps` unless given
    sources = [(i, "input", item.input) for i, item in enumerate(items)]
    sources += [(i, m, item.outputs[m]) for i, item in enumerate(items) for m in methods]
    sources += [(i, "reference", items[i].reference) for i in gold_items]
    counts = {path: _frame_count(path, fps) for _, _, path in sources}
    shortest = min(counts, key=counts.get)
    if frames is None:
        frames = counts[shortest]
    elif frames > counts[shortest]:
        raise ValueError(f"frames: {shortest} has only {counts[shortest]} frames at {fps:g} fps, asked for {frames}")

    # 5. Re-encode every served video under a random name, in a folder that appears only when complete
    files_dir = files_dir_of(out_db)
    staging = Path(tempfile.mkdtemp(dir=out_db.parent, prefix=f".{files_dir.name}."))
    staging.chmod(0o755)  # mkdtemp's is owner-only; a server running as another user must read the files
    try:
        files, names = [], {}  # files: (served name, item, role) rows, in the methods' order; names: (i, role) -> name
        sizes = {i: size or _even_size(item.input) for i, item in enumerate(items)}
        for i, role, path in sources:
            names[i, role] = _reencode(path, staging, sizes[i], fps, frames)
            files.append((names[i, role], items[i].item, role))
        for i in gold_items:  # the gold check's unedited side: a copy under its own name, unlike the item's input
            names[i, "gold input"] = served_name()
            shutil.copyfile(staging / names[i, "input"], staging / names[i, "gold input"])
            files.append((names[i, "gold input"], items[i].item, "input"))

        comparisons = []
        for i, item in enumerate(items):
            for pair in pairs:
                a, b = reversed(pair) if swaps[pair][i] else pair
                comparisons.append((item.item, names[i, a], names[i, b], False))
        for i, swap in zip(gold_items, gold_swaps, strict=True):
            a, b = ("reference", "gold input") if swap else ("gold input", "reference")
            comparisons.append((items[i].item, names[i, a], names[i, b], True))
        rng.shuffle(comparisons)  # ids in random order: an id says nothing about the pair it compares

        # 6. Put the files in place, then write the database beside them (never over an existing one)
        settings = {"seed": seed, "size": list(size) if size else None, "fps": fps, "frames": frames,
                    "comparisons_per_participant": comparisons_per_participant, "gold": len(gold_items),
                    "items": len(items)}  # fmt: skip
        os.replace(staging, files_dir)
        try:
            StudyStore.create(out_db, files_dir=files_dir.name, settings=settings, files=files,
                              items=[(item.item, item.instruction, names[i, "input"]) for i, item in enumerate(items)],
                              comparisons=comparisons)  # fmt: skip
        except BaseException:
            shutil.rmtree(files_dir, ignore_errors=True)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_db
