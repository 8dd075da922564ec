"""What every tab shares: the app's settings, the lazily loaded pipeline, upload checks, the output cache, progress
with cancel, and the ZeroGPU decorator. No layout here."""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from insv2v.assets import TOY_CLIP, TOY_PAIRS, TOY_STUDY, TOY_T2I, TOY_T2V
from insv2v.loading import BUNDLED_MODEL, default_source, names_missing_folder
from insv2v.video import VideoError, VideoInfo, probe

CLIP_ENV = "INSV2V_CLIP"


def _data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def _env(name: str, cast, default):
    """$name read with `cast`, else `default`; a number must be positive, and a bad value stops the app saying so."""
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        result = cast(value)
    except ValueError:
        result = None
    if result is None or (cast in (int, float) and not (math.isfinite(result) and result > 0)):
        kind = {int: "a whole number above 0", float: "a number above 0"}.get(cast, "valid")
        raise SystemExit(f"InsV2V Studio: {name} must be {kind}, got {value!r}")
    return result


def app_clip_source() -> str | None:
    """The CLIP behind the CLIP metrics: $INSV2V_CLIP, else the bundled toy CLIP if present, else none."""
    if os.environ.get(CLIP_ENV):
        return os.environ[CLIP_ENV]
    return str(TOY_CLIP) if (TOY_CLIP / "config.json").is_file() else None


CPU_STEPS = 10  # the Steps slider starts here without a GPU, so that a first edit comes back quickly


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


NO_MODEL = (
    "InsV2V Studio has no model to serve: pass --model DIR_OR_HUB_ID, set INSV2V_MODEL, or put the toy editor "
    f"pipeline folder at {BUNDLED_MODEL.parent.name}/{BUNDLED_MODEL.name}/ (a tiny random one for a smoke test: "
    "python -m insv2v.testing.tiny DIR, then INSV2V_MODEL=DIR)"
)


@dataclass
class AppConfig:
    """Every setting of the app; `from_env` reads most from INSV2V_<NAME> when set (the steps from INSV2V_STEPS; the
    cache's age, the GPU seconds and study-only mode only from code and flags)."""

    model: str  # pipeline folder or hub id
    device: str | None = None  # None: the best available
    clip: str | None = None  # CLIP source for the CLIP metrics; None: warp error only
    cache_dir: Path = field(default_factory=lambda: Path(os.environ.get("TMPDIR", "/tmp")) / "insv2v-app")
    max_upload_mb: float = 50.0  # larger uploads are refused by the server
    max_seconds: float = 60.0  # longer inputs are refused: trim them first
    max_frames: int = 64  # frames per edit at most; longer selections are cut to this
    queue_size: int = 16  # requests waiting beyond this are turned away
    cache_max_mb: float = 2048.0  # outputs beyond this, oldest first, are deleted
    cache_max_age_s: float = 6 * 3600.0  # outputs older than this are deleted
    cache_examples: bool = True  # cache example results (lazily, on first use)
    gpu_seconds: int = 120  # ZeroGPU time asked for per heavy request
    default_steps: int = 20  # the Steps slider's starting value
    t2v: str | None = field(default_factory=lambda: str(TOY_T2V) if TOY_T2V.is_dir() else None)  # "make one pair"
    synth_clip: str | None = None  # the CLIP scoring a pair made in the app (None: the one that belongs to t2v)
    datasets: tuple[Path, ...] = field(default_factory=lambda: (TOY_PAIRS,))  # readable datasets, or their parents
    tav: str | None = field(default_factory=lambda: str(TOY_T2I) if TOY_T2I.is_dir() else None)  # Tune-A-Video's base
    study: Path | None = None  # the Rate tab's study database; None: a copy of the shipped toy study in data_dir
    study_only: bool = False  # serve the study alone (participants' page): no other tab, nothing naming a method
    data_dir: Path = field(default_factory=lambda: _data_home() / "insv2v")  # what must outlive the output cache

    @classmethod
    def from_env(cls, model: str | None = None, **overrides) -> AppConfig:
        source = default_source(model)
        if source is None:
            raise SystemExit(NO_MODEL)
        if names_missing_folder(source):  # said now, not to every visitor's first edit
            raise SystemExit(f"InsV2V Studio: the model {source!r} does not exist; pass --model (or set "
                             "INSV2V_MODEL to) a pipeline folder or hub id")  # fmt: skip
        for name in (CLIP_ENV, "INSV2V_T2V", "INSV2V_SYNTH_CLIP", "INSV2V_TAV"):  # the other models, likewise
            if (given := os.environ.get(name)) and names_missing_folder(given):
                raise SystemExit(f"InsV2V Studio: {name} names {os.environ[name]!r}, which does not exist")
        env = dict(
            device=_env("INSV2V_DEVICE", str, None),
            clip=app_clip_source(),
            cache_dir=_env("INSV2V_CACHE_DIR", Path, None),
            max_upload_mb=_env("INSV2V_MAX_UPLOAD_MB", float, None),
            max_seconds=_env("INSV2V_MAX_SECONDS", float, None),
            max_frames=_env("INSV2V_MAX_FRAMES", int, None),
            queue_size=_env("INSV2V_QUEUE_SIZE", int, None),
            cache_max_mb=_env("INSV2V_CACHE_MAX_MB", float, None),
            cache_examples=_env("INSV2V_CACHE_EXAMPLES", lambda v: v.lower() not in ("0", "false", "no"), None),
            default_steps=_env("INSV2V_STEPS", int, None) or (None if _has_gpu() else CPU_STEPS),
            t2v=_env("INSV2V_T2V", str, None),
            synth_clip=_env("INSV2V_SYNTH_CLIP", str, None),
            tav=_env("INSV2V_TAV", str, None),
            study=_env("INSV2V_STUDY", Path, None),
            data_dir=_env("INSV2V_DATA_DIR", Path, None),
            datasets=_env("INSV2V_DATASETS", lambda v: tuple(Path(p) for p in v.split(os.pathsep) if p), None),
        )
        settings = {k: v for k, v in env.items() if v is not None}
        return cls(model=source, **{**settings, **overrides})

    @property
    def model_name(self) -> str:
        """The model as shown to users and written in recipes: a folder's name, or the hub id."""
        path = Path(self.model)
        return path.name if path.is_dir() else self.model


# ---------------------------------------------------------------------------------------------------------------------
# The model, loaded on first use and shared by every request


def get_pipeline(config: AppConfig):
    """The pipeline of `config.model`, loaded once per process (insv2v.loading caches it per source)."""
    from insv2v.loading import load_pipeline

    pipe = load_pipeline(config.model, device=config.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def get_tav_pipeline(config: AppConfig):
    """Tune-A-Video on `config.tav` (a Stable Diffusion 1.x id or folder; the toy text-to-image model by default),
    loaded once per process and read again when its files change; each video's tuning is cached on disk, not in it."""
    from insv2v.tav import load_tav

    pipe = load_tav(tav_source(config), config.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tav_source(config: AppConfig) -> str:
    """The Tune-A-Video base model this server runs; a ValueError when it has none."""
    if config.tav is None:
        raise ValueError("this server has no Tune-A-Video base model (set INSV2V_TAV)")
    return config.tav


def study_path(config: AppConfig) -> Path | None:
    """The study the Rate tab collects ratings for: `config.study`, else a copy of the shipped toy study in
    `config.data_dir` (made once: the ratings live there, outside the output cache, which deletes files after
    hours), else None."""
    if config.study is not None:
        return Path(config.study)
    if not TOY_STUDY.is_file():
        return None
    from insv2v.study.build import files_dir_of

    copy = Path(config.data_dir) / "toy-study" / TOY_STUDY.name
    files = files_dir_of(TOY_STUDY)
    if not copy.is_file():
        staging = copy.parent.with_name(f".{copy.parent.name}.{uuid.uuid4().hex[:8]}")
        staging.mkdir(parents=True)
        shutil.copytree(files, staging / files.name)
        shutil.copyfile(TOY_STUDY, staging / TOY_STUDY.name)
        try:
            staging.rename(copy.parent)
        except OSError:  # another process made the copy meanwhile: keep theirs
            shutil.rmtree(staging, ignore_errors=True)
    return copy


def get_scorer(config: AppConfig):
    """The CLIP scorer for the metrics, or None when no CLIP is configured."""
    if config.clip is None:
        return None
    from insv2v.metrics import load_clip

    return load_clip(config.clip)


def scorer_or_note(config: AppConfig) -> tuple:
    """The CLIP scorer (None without one), or None and why it did not load: metrics never cost a finished edit."""
    try:
        return get_scorer(config), ""
    except (ValueError, RuntimeError, OSError, MemoryError) as err:
        return None, f"CLIP metrics unavailable: {user_message(err)}"


def gpu(duration: int):
    """`spaces.GPU(duration=...)` on a ZeroGPU Space (the `spaces` package is installed there); else a no-op."""
    try:
        import spaces
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


# ---------------------------------------------------------------------------------------------------------------------
# Inputs and messages


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][^/\\\s:'\"`]+)+[/\\]([^/\\\s:'\"`]+)")
# Pipeline argument names as the page labels them, so that an error names the control to change.
CONTROLS = {
    "guidance_scale": "Text CFG",
    "video_guidance_scale": "Video CFG",
    "num_inference_steps": "Steps",
    "frames_per_clip": "Frames per clip",
    "ref_frames": "Reference frames",
    "lvsc_fraction": "Correction fraction",
    "negative_prompt": "Negative prompt",
}


def user_message(err: BaseException | str) -> str:
    """An error for the page: server paths shortened to file names, pipeline arguments named as the controls, running
    out of memory said plainly."""
    from insv2v.editing import name_settings
    from insv2v.loading import out_of_memory

    memory = out_of_memory(err) if isinstance(err, BaseException) else None
    if memory:  # not the allocator's words
        return f"{memory.capitalize()}."
    return name_settings(_PATH.sub(r"\1", str(err)), CONTROLS)


@contextmanager
def logged_warnings(name: str = "insv2v") -> Iterator[list[str]]:
    """The warnings the project's loggers emit in this thread while the block runs (a video that ends early, audio
    cut short), for the page to show as the terminal would."""
    found: list[str] = []
    thread = threading.get_ident()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread == thread:
                found.append(record.getMessage())

    handler, logger = Collect(logging.WARNING), logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield found
    finally:
        logger.removeHandler(handler)


def check_upload(path: str | None, config: AppConfig) -> VideoInfo:
    """Refuse a missing, oversized, unreadable or too long upload with a message that says what to do."""
    if not path:
        raise ValueError("upload a video first (or pick an example below)")
    name = Path(path).name
    if not os.path.isfile(path):  # cleaned from the server's upload folder while the request waited
        raise ValueError(f"{name} is no longer on this server (uploads expire); upload it again")
    size_mb = os.path.getsize(path) / 2**20
    if size_mb > config.max_upload_mb:
        raise ValueError(f"{name} is {size_mb:.0f} MB; this server takes videos up to {config.max_upload_mb:g} MB")
    try:
        info = probe(path)
    except VideoError as err:
        reason = user_message(err).removeprefix(f"{name}: ")
        raise ValueError(f"{name} cannot be read as a video: {reason}") from None
    if info.duration > config.max_seconds + 1e-3:
        raise ValueError(
            f"{name} is {info.duration:.1f} s long; this server edits videos up to {config.max_seconds:g} s. "
            f"Trim it to the part to edit ({config.max_seconds:g} s at most) and upload that."
        )
    return info


def describe(info: VideoInfo) -> str:
    audio = ", with audio" if info.has_audio else ""
    return f"{Path(info.path).name}: {info.width}x{info.height}, {info.fps:g} fps, {info.duration:.1f} s{audio}"


# ---------------------------------------------------------------------------------------------------------------------
# Outputs: one folder per request under the cache directory, deleted by age and total size


class OutputCache:
    """Request folders (`jobs/`) and Tune-A-Video tunings (`tav/`) under `root`, and Gradio's own copies of uploads
    and outputs (`gradio`, one folder per file; None: not ours to clean); `clean` deletes those older than
    `max_age_s`, then the least recently used while the total exceeds `max_bytes` (a tuning counts as used when an
    edit reuses it), sparing what was written in the last `keep_recent_s`: a request still running.

    Gradio expires its own copies by age, sparing the ones its components pin (examples, default values), so in its
    folder only the size limit applies, and never to a folder holding a path that `pinned()` names. The folder of a
    request still running (`in_use()`: a tuning of many minutes writes nothing to it meanwhile) is never deleted."""

    def __init__(self, root: Path, max_bytes: float, max_age_s: float, gradio: Path | None = None,
                 keep_recent_s: float = 600.0):  # fmt: skip
        self.root, self.max_bytes, self.max_age_s = Path(root), max_bytes, max_age_s
        self.jobs, self.tav = self.root / "jobs", self.root / "tav"
        self.gradio = Path(gradio) if gradio is not None else None
        self.keep_recent_s = keep_recent_s
        self.pinned: Callable[[], Iterable[str]] = tuple  # set once the app's blocks exist
        self.in_use: Callable[[], Iterable[Path]] = tuple  # the running jobs' folders (Jobs.folders)
        for folder in (self.jobs, self.tav):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def new_job(self, kind: str) -> Path:
        self.clean()
        folder = self.jobs / f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        return folder

    @staticmethod
    def _usage(folder: Path, counted: set) -> tuple[float, int]:
        """When anything in `folder` was last written (or the folder touched), and the bytes of its files not
        `counted` yet: an upload hard-linked into a request folder is one file on disk."""
        last, size = folder.stat().st_mtime, 0
        for path in folder.rglob("*"):
            info = path.stat()
            last = max(last, info.st_mtime)
            if stat.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) not in counted:
                counted.add((info.st_dev, info.st_ino))
                size += info.st_size
        return last, size

    def clean(self, now: float | None = None) -> list[Path]:
        """Delete expired and excess folders, least recently used first; returns what was deleted."""
        now = time.time() if now is None else now
        with self._lock:
            parents = [p for p in (self.jobs, self.tav, self.gradio) if p is not None and p.is_dir()]
            folders, counted = [], set()
            for folder in (f for parent in parents for f in parent.iterdir() if f.is_dir()):
                try:
                    folders.append((*self._usage(folder, counted), folder))
                except FileNotFoundError:  # deleted meanwhile (Gradio cleans its own by age)
                    continue
            folders.sort(key=lambda entry: entry[0])
            pinned = [Path(path).resolve() for path in self.pinned()]
            running = {Path(folder).resolve() for folder in self.in_use()}
            total, deleted = sum(size for _, size, _ in folders), []
            for last, size, folder in folders:
                if folder.resolve() in running:
                    continue
                gradios = folder.parent == self.gradio
                if gradios and any(path.is_relative_to(folder.resolve()) for path in pinned):
                    continue
                expired = not gradios and now - last > self.max_age_s
                if expired or (total > self.max_bytes and now - last > self.keep_recent_s):
                    shutil.rmtree(folder, ignore_errors=True)
                    total -= size
                    deleted.append(folder)
            return deleted

    def add_input(self, job: Path, upload: str) -> Path:
        """The upload, linked (or copied) into the request folder, so the recipe beside the output names it."""
        target = job / Path(upload).name
        try:
            os.link(upload, target)
        except OSError:
            shutil.copyfile(upload, target)
        return target


# ---------------------------------------------------------------------------------------------------------------------
# Progress and cancel


class Job:
    """A heavy request's progress over `total` denoising steps, reported with an ETA, and its cancel flag.

    Its `callback` is the pipeline's `callback_on_step_end`; a cancelled job interrupts the pipeline at the next step.
    """

    def __init__(self, total: int, report=None, label: str = "", folder: Path | None = None):
        self.total, self.report, self.label = max(total, 1), report, label
        self.folder = folder  # the request's folder, kept while the job runs
        self.done = 0
        self.began = time.perf_counter()
        self.cancelled = False

    def eta(self) -> float | None:
        if self.done == 0:
            return None
        return (time.perf_counter() - self.began) / self.done * (self.total - self.done)

    def message(self, detail: str = "") -> str:
        eta = self.eta()
        parts = [self.label, detail, f"step {self.done}/{self.total}", f"ETA {eta:.0f} s" if eta is not None else ""]
        return " · ".join(p for p in parts if p)

    def is_set(self) -> bool:
        """Whether it was cancelled, asked as of a `threading.Event` (by code that polls one: Tune-A-Video)."""
        return self.cancelled

    def check(self) -> None:
        """Stop here if cancelled (between steps that have no callback: loading a model, say)."""
        if self.cancelled:
            raise InterruptedError(f"{self.label} cancelled")

    def update(self, detail: str = "") -> None:
        if self.report is not None:
            self.report((self.done, self.total), desc=self.message(detail), unit="steps")

    def callback(self, detail_fn=None):
        def on_step_end(pipe, step, timestep, tensors):
            self.done += 1
            if self.cancelled:
                pipe._interrupt = True
            self.update(detail_fn(step) if detail_fn else "")
            return {}

        return on_step_end


class Jobs:
    """The running job of each browser session's tab (keys `SESSION/TAB`, controls.session_of), so that the tab's
    Cancel button can reach it, and when it last submitted a request and last pressed Cancel, so that a Cancel pressed
    while its request waits in the queue stops that request as it starts. Buttons call `submit` before their queued
    event (`.click(submit).then(heavy)`).

    Known limit: a request submitted after that Cancel, before the cancelled one starts, lets it run (a start compares
    with the session's latest submit). Pairing each start with its own submit by order broke worse: a second click of
    a running button submits with no queued event behind it (Gradio runs an event once at a time), and every later
    request then took an earlier ticket."""

    def __init__(self):
        self._running: dict[str, Job] = {}
        # "When" is a tick of one counter, taken under the lock: a Cancel a millisecond after Run still comes after it
        # (two clock readings may be equal)
        self._ticks = itertools.count()
        self._submitted: dict[str, int] = {}  # session -> when its latest request was submitted
        self._started: dict[str, int] = {}  # session -> when its latest job started
        self._cancelled: dict[str, int] = {}  # session -> when it last pressed Cancel
        self._lock = threading.Lock()

    def submit(self, session: str | None) -> None:
        with self._lock:
            self._submitted[session or ""] = next(self._ticks)

    def start(self, session: str | None, job: Job) -> Job:
        key = session or ""
        with self._lock:
            self._running[key] = job
            self._started[key] = next(self._ticks)
            submitted = self._submitted.get(key)
            if submitted is not None and self._cancelled.get(key, -math.inf) > submitted:
                job.cancelled = True  # Cancel was pressed after this request was submitted
        return job

    def finish(self, session: str | None, job: Job, more: bool = False) -> None:
        """`job` ended. `more`: its request goes on with another job queued behind it (Compare's Tune-A-Video half
        after InsV2V), which waits from now on as a submitted request does, unless a Cancel has stopped it already."""
        key = session or ""
        with self._lock:
            if self._running.get(key) is job:
                del self._running[key]
            if more and not job.cancelled:  # (a Cancel sets it under this lock)
                self._submitted[key] = next(self._ticks)

    def folders(self) -> list[Path]:
        """The folders of the jobs running now, which the output cache must not delete."""
        with self._lock:
            return [job.folder for job in self._running.values() if job.folder is not None]

    @staticmethod
    def _of(session: str | None, key: str) -> bool:
        """Whether `key` is the session's, or one of its tabs' (`SESSION/TAB`, controls.session_of)."""
        return key == (session or "") or key.startswith(f"{session or ''}/")

    def knows(self, session: str | None) -> bool:
        """Whether anything of the session is kept (a job, or when it submitted, started or cancelled)."""
        with self._lock:
            places = (self._running, self._submitted, self._started, self._cancelled)
            return any(self._of(session, key) for d in places for key in d)

    def forget(self, session: str | None) -> None:
        """Drop a closed session's timestamps, its tabs' too (a job of it still running finishes, and `finish` drops
        it)."""
        with self._lock:
            for times in (self._submitted, self._started, self._cancelled):
                for key in [key for key in times if self._of(session, key)]:
                    del times[key]

    def cancel(self, session: str | None) -> str | None:
        """Cancel the session's running job, and any it submitted that has not started; what happened, for the page
        ("running", "waiting"), or None if the session had nothing running or waiting."""
        key = session or ""
        with self._lock:
            self._cancelled[key] = next(self._ticks)
            job = self._running.get(key)
            waiting = self._submitted.get(key, -math.inf) > self._started.get(key, -math.inf)
            if job is not None:
                job.cancelled = True  # under the lock: `finish` reads it
        if job is not None:
            return "running"
        return "waiting" if waiting else None
