"""Video I/O with PyAV: probe a file, decode a sampled and resized clip, write mp4 (with source audio) and gif.

Decoding keeps only the selected frames, resized as they arrive, so memory grows with the clip, not the source.
Writing streams frames into a temporary file beside the target and moves it into place when complete.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from fractions import Fraction
from functools import cache

import av
import cv2
import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

MIN_RESOLUTION = 8  # smallest short side read_video resizes to
MAX_RESOLUTION = 4096  # largest short side read_video resizes to
MAX_PIXELS = 4096 * 4096  # larger frames are refused before they are decoded
MAX_DECODE_FRAMES = 100_000  # frames one read decodes at most (about 55 min at 30 fps): a longer one fills memory
TIME_EPS = 1e-3  # seconds; time stamps this close count as equal (container rounding)
SEEK_MARGIN = 0.5  # seconds; seek this far before `start`, then decode forward to it
AUDIO_GAP = 0.01  # seconds; a jump in audio time stamps beyond this is a hole to fill with silence (less is rounding)
VIDEO_ENCODERS = ("libx264", "libopenh264", "h264", "mpeg4")  # tried in order; the first that opens is used
AUDIO_ENCODER = "aac"
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
OUTPUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}  # extension -> muxer
NOT_VIDEO_FORMATS = ("image2", "tty")  # demuxers that open stills and text; "*_pipe" ones are stills too
BT601 = dict(colorspace=6, color_primaries=6, color_trc=6, color_range=1)  # SMPTE 170M tags, limited range
CONTAINER_MAGIC = (b"ftyp", b"moov", b"mdat", b"\x1a\x45\xdf\xa3", b"RIFF", b"OggS", b"FLV", b"GIF8")


class VideoError(ValueError):
    """A video file or argument that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class VideoInfo:
    """What probe() learns about a video; width and height are the display size (after rotation)."""

    path: str
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float  # seconds
    rotation: int  # degrees counter-clockwise applied for display: 0, 90, 180 or 270
    has_audio: bool


@dataclass
class Clip:
    """A decoded, sampled and resized clip."""

    frames: np.ndarray  # (f, h, w, 3) uint8 RGB
    fps: float  # frame rate of the sampled frames
    start: float  # seconds in the source where the first sampled frame lies
    end: float  # seconds in the source where the clip ends (start + f / fps)
    source: str  # path


# ----------------------------------------------------------------------------------------------------------------------
# Pure helpers


def target_size(width: int, height: int, resolution: int | None, multiple: int = 8) -> tuple[int, int]:
    """Aspect-preserving size with the short side at `resolution` (None = source size), sides rounded to `multiple`."""
    if width < 1 or height < 1:
        raise VideoError(f"size must be positive, got {width}x{height}")
    if multiple < 1:
        raise VideoError(f"multiple must be >= 1, got {multiple}")
    if resolution is not None and not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise VideoError(f"resolution must be between {MIN_RESOLUTION} and {MAX_RESOLUTION}, got {resolution}")
    scale = 1.0 if resolution is None else resolution / min(width, height)

    def snap(side: float) -> int:
        return max(multiple, int(side / multiple + 0.5) * multiple)

    return snap(width * scale), snap(height * scale)


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an (h, w, c) image; area averaging when shrinking, bicubic when growing."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    interpolation = cv2.INTER_AREA if width * height < w * h else cv2.INTER_CUBIC
    return cv2.resize(image, (width, height), interpolation=interpolation)


def sample_times(
    items: Iterable[tuple[float, object]],
    start: float = 0.0,
    stride: int = 1,
    fps: float | None = None,
    frame_duration: float = 0.0,
) -> Iterator[tuple[float, object]]:
    """Select from time-stamped items: every `stride`-th from `start`, or the nearest to each tick start + k / fps.

    Yields (slot time, item): the item's own time in stride mode, the tick in fps mode (an item may repeat when
    `fps` exceeds the source rate). `frame_duration` says how long the last item lasts, for the ticks after it.
    """
    if fps is None:
        kept = 0
        for t, item in items:
            if t < start - TIME_EPS:
                continue
            if kept % stride == 0:
                yield t, item
            kept += 1
        return

    k, prev = 0, None
    for t, item in items:
        while t >= start + k / fps - TIME_EPS:
            tick = start + k / fps
            closer_prev = prev is not None and tick - prev[0] < t - tick
            yield tick, prev[1] if closer_prev else item
            k += 1
        prev = (t, item)
    while prev is not None and start + k / fps < prev[0] + frame_duration - TIME_EPS:
        yield start + k / fps, prev[1]
        k += 1


def off_grid(times: list[float], fps: float) -> bool:
    """Whether frames at `times` (s) stray more than half a frame from a constant `fps` started at the first."""
    return any(abs(t - (times[0] + k / fps)) > 0.5 / fps for k, t in enumerate(times))


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Place `right` beside `left`, resizing right to left's height (aspect kept) if they differ."""
    left, right = np.asarray(left), np.asarray(right)
    if left.ndim == 3 and right.ndim == 3:
        return side_by_side(left[None], right[None])[0]
    if left.ndim != 4 or right.ndim != 4 or len(left) != len(right):
        raise VideoError(f"side_by_side needs two (n, h, w, 3) stacks of equal n, got {left.shape} and {right.shape}")
    h1, (h2, w2) = left.shape[1], right.shape[1:3]
    if h2 != h1:
        w = max(1, round(w2 * h1 / h2))
        right = np.stack([resize(frame, w, h1) for frame in right])  # (n, h1, w, 3)
    return np.concatenate([left, right], axis=2)  # (n, h1, w1 + w, 3)


GIF_MAX_FPS = 50  # frames of 2 cs: browsers show one of 1 cs or less for 10 cs, so 60 fps would play 2.8x slow


def gif_durations(num_frames: int, fps: float) -> list[int]:
    """Frame durations in ms for a GIF: whole centiseconds (its unit), frame k ending at round(100 k / fps) cs.

    Carrying the rounding from frame to frame keeps the total right (30 fps: 30, 40, 30 ms, ...); one rounded
    duration for all frames would play 30 fps at 33.
    """
    ends = [round(100 * k / fps) for k in range(num_frames + 1)]  # centiseconds
    return [10 * (b - a) for a, b in itertools.pairwise(ends)]


MIN_FPS, MAX_FPS = 0.01, 1000.0  # frame rates a clip may be resampled to


def _as_rate(fps: float | Fraction) -> Fraction:
    """Frame rate as an exact fraction; floats such as 30000/1001 come back to their small fraction."""
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(10_000)
    if rate <= 0:
        raise VideoError(f"fps must be > 0, got {fps}")
    return rate


# ----------------------------------------------------------------------------------------------------------------------
# Reading


@contextmanager
def _open_video(path: str) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open `path` and its first video stream, turning every way that can fail into a VideoError."""
    if not os.path.exists(path):
        raise VideoError(f"{path}: file not found")
    if not os.path.isfile(path):
        raise VideoError(f"{path}: is not a file")
    if not os.access(path, os.R_OK):
        raise VideoError(f"{path}: is not readable (permission denied)")
    if os.path.getsize(path) == 0:
        raise VideoError(f"{path}: file is empty (0 bytes)")
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as e:
        with open(path, "rb") as f:
            head = f.read(16)
        if any(magic in head for magic in CONTAINER_MAGIC):  # a container we know, so damaged rather than foreign
            raise VideoError(f"{path}: could not be read (truncated or corrupt?)") from e
        raise VideoError(f"{path}: is not a video file (unrecognized format)") from e
    try:
        name = container.format.name
        if name in NOT_VIDEO_FORMATS or name.endswith("_pipe"):
            raise VideoError(f"{path}: is not a video file (read as '{name}', an image or text)")
        if not container.streams.video:
            raise VideoError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield container, stream
    finally:
        container.close()


def _frame_rate(path: str, stream: av.video.stream.VideoStream) -> Fraction:
    """Average frame rate of the stream (exact where the container has it)."""
    if stream.container.format.name == "gif" and stream.frames and stream.duration:
        # GIF frames last whole centiseconds, the rounding carried (gif_durations); FFmpeg's rate comes from the
        # first few frames, so the average is the count over the length.
        return Fraction(stream.frames) / (stream.duration * stream.time_base)
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    raise VideoError(f"{path}: frame rate is unknown")


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """Length of the video stream in seconds, or None when the file does not say."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _display_size(frame: av.VideoFrame, stream: av.video.stream.VideoStream, rotation: int) -> tuple[int, int]:
    """(width, height) as the video is shown: non-square pixels (a DVD's, an anamorphic camera's) made square by
    scaling the width by their aspect, then the rotation applied."""
    aspect = stream.sample_aspect_ratio  # a pixel's width over its height; None or 0 where the file does not say
    width = max(1, round(frame.width * aspect)) if aspect and aspect != 1 else frame.width
    return (frame.height, width) if rotation % 180 else (width, frame.height)


def _demuxed_length(path: str, index: int) -> tuple[int, float | None]:
    """Packets of stream `index` and the seconds their timestamps span (None without timestamps), read without
    decoding: the length of a file whose header does not say it."""
    packets, first, end = 0, None, None
    with av.open(path) as container:
        stream = container.streams[index]
        for packet in container.demux(stream):
            if packet.size == 0:  # the demuxer's flush packet
                continue
            packets += 1
            if packet.pts is not None:
                stop = packet.pts + (packet.duration or 0)
                first = packet.pts if first is None else min(first, packet.pts)
                end = stop if end is None else max(end, stop)
        seconds = float((end - first) * stream.time_base) if first is not None and end > first else None
    return packets, seconds


def _rotation(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> int:
    """Counter-clockwise display rotation, snapped to 0/90/180/270: the display matrix, else an old 'rotate' tag."""
    degrees = frame.rotation
    tags = {key.lower(): value for key, value in stream.metadata.items()}
    if not degrees and "rotate" in tags:
        with suppress(ValueError):
            degrees = -float(tags["rotate"])  # the tag counts clockwise
    return round(degrees / 90) * 90 % 360


def _decode_from(container, stream, time: float) -> Iterator[av.frame.Frame]:
    """Decoded frames of `stream` from a key frame at or before `time` (seconds on the stream's clock).

    Seeks when `time` is far enough in; if the seek lands after `time` (some containers seek only roughly),
    decodes from the beginning instead.
    """
    origin = float((stream.start_time or 0) * stream.time_base)
    if time - origin > SEEK_MARGIN:
        first = None
        with suppress(av.error.FFmpegError):
            container.seek(int((time - SEEK_MARGIN) / stream.time_base), stream=stream, backward=True)
            frames = container.decode(stream)
            first = next(frames, None)
        if first is not None and (first.pts is None or first.pts * stream.time_base <= time + TIME_EPS):
            yield first
            yield from frames
            return
        container.seek(stream.start_time or 0, stream=stream, backward=True)
    yield from container.decode(stream)


def frames_to_decode(info: VideoInfo, start: float = 0.0, max_frames: int | None = None, stride: int = 1,
                     fps: float | None = None) -> int:  # fmt: skip
    """About how many frames reading a selection decodes: from `start` to its last selected frame (all the rest of
    the video without `max_frames`, whatever the stride)."""
    available = max(info.duration - start, 0.0) * info.fps
    if max_frames is None:
        return int(available)
    per_selected = info.fps / fps if fps else stride  # source frames decoded per selected one
    return int(min(available, max_frames * per_selected))


def check_decode_length(info: VideoInfo, start: float = 0.0, max_frames: int | None = None, stride: int = 1,
                        fps: float | None = None, limit: int = MAX_DECODE_FRAMES) -> None:  # fmt: skip
    """Refuse, from `probe`'s figures alone, a selection too long to read, before any model loads or frame decodes."""
    n = frames_to_decode(info, start, max_frames, stride, fps)
    if n > limit:
        raise VideoError(f"{info.path}: this selection runs about {n:,} frames, more than the {limit:,} one edit "
                         "reads; edit a part of it (fewer frames, or a later start)")  # fmt: skip


def _decode(path: str, container, stream, start: float, fps: Fraction, limit: int):
    """Decoded frames from near `start`, with their time in seconds from the stream start; (t, frame) pairs.

    Stops with a warning at a truncated or corrupt tail once some frames came out.
    """
    origin = stream.start_time or 0
    count = 0
    try:
        for frame in _decode_from(container, stream, float(origin * stream.time_base) + start):
            if count >= limit:
                raise VideoError(f"{path}: decoded {limit} frames without finishing; read a shorter part")
            t = float((frame.pts - origin) * stream.time_base) if frame.pts is not None else float(count / fps)
            count += 1
            yield t, frame
        if start == 0 and count + 2 < stream.frames:  # the file ended early without an error (a frame or two: rounding)
            logger.warning("%s: ends after %d of the %d frames its header announces (truncated?)", path, count,
                           stream.frames)  # fmt: skip
    except av.error.FFmpegError as e:
        if count == 0:
            raise VideoError(f"{path}: no frame could be decoded (truncated or corrupt?)") from e
        logger.warning("%s: stopped after %d frames at a truncated or corrupt part (%s)", path, count, e)


def _to_rgb(frame: av.VideoFrame, width: int, height: int, rotation: int) -> np.ndarray:
    """Decoded frame -> upright RGB at display size (width, height)."""
    quarter_turns = rotation // 90
    stored = (height, width) if quarter_turns % 2 else (width, height)
    rgb = resize(frame.to_ndarray(format="rgb24"), *stored)  # (stored h, stored w, 3) uint8
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns))  # (height, width, 3)


class _FrameStack:
    """Frames appended into one (f, h, w, 3) array that grows and shrinks in place (realloc), never copied whole."""

    def __init__(self, capacity: int):
        self.capacity, self.array, self.count = capacity, None, 0

    def append(self, frame: np.ndarray) -> None:
        """Copy one (h, w, 3) frame in, doubling the room when full."""
        if self.array is None:
            self.array = np.empty((self.capacity, *frame.shape), frame.dtype)  # (capacity, h, w, 3)
        elif self.count == len(self.array):
            self.array.resize((2 * self.count, *frame.shape), refcheck=False)  # no views of it exist
        self.array[self.count] = frame
        self.count += 1

    def finish(self) -> np.ndarray:
        """The (f, h, w, 3) array of the frames appended, trimmed to their number."""
        self.array.resize((self.count, *self.array.shape[1:]), refcheck=False)
        return self.array


def probe(path: str | os.PathLike) -> VideoInfo:
    """Size (after rotation), frame rate, length and audio presence of a video; decodes its first frame."""
    path = os.fspath(path)
    with _open_video(path) as (container, stream):
        fps = _frame_rate(path, stream)
        _check_pixels(path, stream.codec_context.width, stream.codec_context.height, MAX_PIXELS)  # before decoding
        decoded = _decode(path, container, stream, 0.0, fps, limit=1)
        first = next(decoded, None)
        decoded.close()
        if first is None:
            raise VideoError(f"{path}: has no video frames")
        frame = first[1]
        rotation = _rotation(frame, stream)
        width, height = _display_size(frame, stream, rotation)
        duration = _duration(container, stream)
        if duration is None and not stream.frames:  # a stream without a header (raw H.264, streamed mkv): count
            packets, duration = _demuxed_length(path, stream.index)
            duration = duration or packets / float(fps)
        num_frames = stream.frames or max(1, round((duration or 0.0) * fps))
        return VideoInfo(
            path=path,
            width=width,
            height=height,
            fps=float(fps),
            num_frames=num_frames,
            duration=duration if duration else num_frames / float(fps),
            rotation=rotation,
            has_audio=bool(container.streams.audio),
        )


def _check_pixels(path: str, width: int, height: int, max_pixels: int) -> None:
    """Refuse frames too large to decode safely."""
    if width * height > max_pixels:
        raise VideoError(f"{path}: huge resolution {width}x{height}, at most {max_pixels} pixels")


def _check_read_args(path, start, max_frames, stride, fps, resolution, multiple) -> None:
    """Reject bad read_video arguments before any decoding."""
    if not (math.isfinite(start) and start >= 0):
        raise VideoError(f"{path}: start must be a finite number of seconds >= 0, got {start}")
    if max_frames is not None and max_frames < 1:
        raise VideoError(f"{path}: max_frames must be >= 1, got {max_frames}")
    if stride < 1 or int(stride) != stride:
        raise VideoError(f"{path}: stride must be an integer >= 1, got {stride}")
    if fps is not None and not MIN_FPS <= fps <= MAX_FPS:  # beyond them, a typo: no frame, or a clip that fills memory
        raise VideoError(f"{path}: fps must be between {MIN_FPS:g} and {MAX_FPS:g}, got {fps:g}")
    if fps is not None and stride != 1:
        raise VideoError(f"{path}: give stride or fps, not both (got stride={stride}, fps={fps})")
    if resolution is not None and not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise VideoError(f"{path}: resolution must be between {MIN_RESOLUTION} and {MAX_RESOLUTION}, got {resolution}")
    if multiple < 1:
        raise VideoError(f"{path}: multiple must be >= 1, got {multiple}")


def read_video(
    path: str | os.PathLike,
    *,
    start: float = 0.0,
    max_frames: int | None = None,
    stride: int = 1,
    fps: float | None = None,
    resolution: int | None = None,
    multiple: int = 8,
    max_pixels: int = MAX_PIXELS,
    max_decode_frames: int = MAX_DECODE_FRAMES,
) -> Clip:
    """Decode a clip: frames from `start` (s), every `stride`-th or resampled to `fps`, short side -> `resolution`."""
    path = os.fspath(path)
    # 1. Check arguments
    _check_read_args(path, start, max_frames, stride, fps, resolution, multiple)
    with _open_video(path) as (container, stream):
        # 2. Check the source
        _check_pixels(path, stream.codec_context.width, stream.codec_context.height, max_pixels)
        source_fps = _frame_rate(path, stream)
        duration = _duration(container, stream)
        if start > 0 and duration and start >= duration:
            raise VideoError(f"{path}: start {start:g}s is beyond the end of the video ({duration:.2f}s)")

        # 3. Decode from near `start`, keeping the selected frames resized
        decoded = _decode(path, container, stream, start, source_fps, max_decode_frames)
        selected = sample_times(decoded, start, int(stride), fps, frame_duration=float(1 / source_fps))
        frames, times, last = _FrameStack(min(max_frames or 64, 64)), [], (None, None)  # last: for repeats
        for t, frame in selected:
            if not times:
                _check_pixels(path, frame.width, frame.height, max_pixels)  # in case the header had no size
                rotation = _rotation(frame, stream)
                size = target_size(*_display_size(frame, stream, rotation), resolution, multiple)
            rgb = last[1] if frame is last[0] else _to_rgb(frame, *size, rotation)  # (h, w, 3) uint8
            frames.append(rgb)
            times.append(t)
            last = (frame, rgb)
            if max_frames is not None and len(times) >= max_frames:
                break
        decoded.close()

    # 4. Assemble the clip
    if not times:
        if start > 0:
            raise VideoError(f"{path}: start {start:g}s is at or beyond the last frame")
        raise VideoError(f"{path}: has no video frames")
    clip_fps = float(fps) if fps is not None else float(source_fps / stride)
    # One frame, unless one was asked for, shown for the stride's whole time: longer than the video itself.
    if fps is None and stride > 1 and len(times) == 1 and max_frames != 1:
        lasting = float(stride / source_fps)
        raise VideoError(f"{path}: stride {stride} keeps one frame of it, which would last {lasting:.3g}s; a smaller "
                         "stride keeps more")  # fmt: skip
    if fps is None and off_grid(times, clip_fps):
        # A variable-rate source (a phone's): its frames written at a constant rate would slide against its audio,
        # so take the frame shown at each tick of its average rate instead (some repeat, some are skipped).
        logger.info("%s: variable frame rate; resampled to %.3g fps", path, clip_fps)
        return read_video(path, start=start, max_frames=max_frames, fps=max(clip_fps, MIN_FPS), resolution=resolution,
                          multiple=multiple, max_pixels=max_pixels, max_decode_frames=max_decode_frames)  # fmt: skip
    return Clip(
        frames=frames.finish(),  # (f, h, w, 3) uint8
        fps=clip_fps,
        start=times[0],
        end=times[0] + len(times) / clip_fps,
        source=path,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Writing


def _has_audio(path: str) -> bool:
    """Whether `path` opens and has an audio stream."""
    if not os.path.isfile(path):
        raise VideoError(f"{path}: file not found (asked for its audio)")
    try:
        with av.open(path, metadata_errors="ignore") as container:
            return bool(container.streams.audio)
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: could not be read for its audio (not a media file, or corrupt?)") from e


@cache
def _video_encoder() -> str:
    """Name of the first encoder in VIDEO_ENCODERS that this PyAV build has and can open."""
    for name in VIDEO_ENCODERS:
        try:
            ctx = av.CodecContext.create(name, "w")
            ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = 64, 64, "yuv420p", Fraction(1, 25)
            ctx.open()
        except (av.error.FFmpegError, ValueError):
            continue
        return name
    raise VideoError(f"no video encoder available (tried {', '.join(VIDEO_ENCODERS)})")


class _AudioTrack:
    """Source audio between start and end (seconds from the video start), re-encoded to AAC in step with video."""

    def __init__(self, path: str, start: float, end: float | None):
        self.path, self.start, self.end = path, start, end
        try:
            self.source = av.open(path, metadata_errors="ignore")
        except av.error.FFmpegError as e:
            raise VideoError(f"{path}: could not be read for its audio (not a media file, or corrupt?)") from e
        source = self.source.streams.audio[0]
        video = self.source.streams.video[0] if self.source.streams.video else source
        self.origin = float((video.start_time or 0) * video.time_base) if video.time_base else 0.0
        self.rate = source.rate if source.rate in AAC_RATES else 48000
        self.layout = "mono" if source.channels == 1 else "stereo"
        self.resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        self.chunks = self._chunks(source)
        self.pending = np.zeros((1 if self.layout == "mono" else 2, 0), np.float32)  # (c, n)
        self.written = 0  # samples sent to the encoder
        self.stream = None

    def _chunks(self, stream) -> Iterator[np.ndarray]:
        """Float planar sample chunks (c, n) covering [start, end) without holes, in order; silence where none."""
        done = round(self.start * self.rate)  # index of the next sample to yield, counted from the video start
        stop = None if self.end is None else round(self.end * self.rate)
        pos = None  # index of the next resampled sample
        gap = round(AUDIO_GAP * self.rate)
        try:
            decoded = _decode_from(self.source, stream, self.origin + self.start)
            for frame in itertools.chain(decoded, [None]):  # None flushes the resampler
                if frame is not None and (pos is None or frame.time is not None):
                    at = round(((frame.time or 0.0) - self.origin) * self.rate)
                    # Counting samples keeps the time within a run of packets; a late start or a hole jumps it.
                    pos = at if pos is None or at - pos > gap else pos
                for out in self.resampler.resample(frame):
                    data = out.to_ndarray()  # (c, n) float32
                    silent = (pos if stop is None else min(pos, stop)) - done
                    if silent > 0:  # the sound keeps its time: silence until it starts
                        yield np.zeros((data.shape[0], silent), np.float32)
                        done += silent
                    lo, hi = max(pos, done), pos + data.shape[1]
                    hi = hi if stop is None else min(hi, stop)
                    if hi > lo:
                        yield data[:, lo - pos : hi - pos]
                        done = hi
                    pos += data.shape[1]
                if stop is not None and pos is not None and pos >= stop:
                    return
        except av.error.FFmpegError as e:
            logger.warning("%s: audio stopped early at a truncated or corrupt part (%s)", self.path, e)

    def add_stream(self, container) -> None:
        """Add the AAC stream to the output (before anything is muxed)."""
        self.stream = container.add_stream(AUDIO_ENCODER, rate=self.rate, layout=self.layout)

    def encode(self, until: float, final: bool = False) -> list[av.Packet]:
        """Packets for the samples up to `until` seconds of output (clipped to end - start); all the rest if final."""
        limit = until if self.end is None else min(until, self.end - self.start)
        target = round(limit * self.rate)
        size = self.stream.codec_context.frame_size or 1024
        packets = []
        while self.written + self.pending.shape[1] < target:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.pending = np.concatenate([self.pending, chunk], axis=1)
        # Samples past `target` stay pending for the next call; dropping them would pull later sound earlier.
        due = min(self.pending.shape[1], max(0, target - self.written))
        while due >= size or (final and due > 0):
            chunk, self.pending = self.pending[:, : min(size, due)], self.pending[:, min(size, due) :]
            due -= chunk.shape[1]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=self.layout)
            frame.sample_rate, frame.pts, frame.time_base = self.rate, self.written, Fraction(1, self.rate)
            packets += self.stream.encode(frame)
            self.written += chunk.shape[1]
        if final:
            packets += self.stream.encode(None)
        return packets

    def close(self) -> None:
        """Close the source file."""
        self.chunks.close()
        self.source.close()


def _publish(tmp: str, path: str | os.PathLike) -> None:
    """Move a finished temporary file into place, readable like any output (mkstemp makes it owner-only)."""
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


class VideoWriter:
    """Stream (n, h, w, 3) uint8 frames into an H.264 mp4, with audio from another file, written atomically.

    Audio is `audio_from` between `audio_start` and `audio_end` seconds (of its video clock), re-encoded to AAC
    and cut to the video's length. Use as a context manager; the output appears at `path` only when the block
    ends without error.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float | Fraction,
        *,
        audio_from: str | os.PathLike | None = None,
        audio_start: float = 0.0,
        audio_end: float | None = None,
        crf: int = 18,
    ):
        self.path = os.fspath(path)
        self.rate = _as_rate(fps)
        ext = os.path.splitext(self.path)[1].lower()
        if ext not in OUTPUT_FORMATS:
            raise VideoError(f"{self.path}: output must end in {', '.join(OUTPUT_FORMATS)}")
        self.format = OUTPUT_FORMATS[ext]
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise VideoError(f"{self.path}: folder {folder} does not exist")
        if not 0 <= crf <= 51:
            raise VideoError(f"{self.path}: crf must be between 0 and 51, got {crf}")
        if audio_start < 0 or (audio_end is not None and audio_end <= audio_start):
            raise VideoError(f"{self.path}: bad audio range {audio_start}..{audio_end} seconds")
        self.crf = crf
        self.audio_from = os.fspath(audio_from) if audio_from is not None else None
        if self.audio_from is not None and not _has_audio(self.audio_from):
            self.audio_from = None  # source has no audio: write video only
        self.audio_range = (audio_start, audio_end)
        self.num_frames = 0
        self.closed = False
        self._container = self._video = self._audio = self._tmp = None
        self._size = self._pad = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()

    def _start(self, width: int, height: int) -> None:
        """Create the temporary output and its streams once the frame size is known."""
        folder, name = os.path.split(os.path.abspath(self.path))
        fd, self._tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
        os.close(fd)
        options = {"movflags": "+faststart"} if self.format in ("mp4", "mov") else {}
        self._container = av.open(self._tmp, "w", format=self.format, options=options)
        self._size, self._pad = (height, width), (height % 2, width % 2)  # yuv420p needs even sides

        codec = _video_encoder()
        self._video = self._container.add_stream(codec, rate=self.rate)
        self._video.width, self._video.height = width + self._pad[1], height + self._pad[0]
        self._video.pix_fmt = "yuv420p"
        self._video.codec_context.time_base = 1 / self.rate
        for key, value in BT601.items():  # PyAV converts RGB -> YUV with BT.601; say so, or players may guess BT.709
            setattr(self._video.codec_context, key, value)
        # One encoder thread: PyAV has x264 cut each frame into a slice per thread, and its automatic count follows
        # the machine's cores, so the same frames would make other files on other machines (a recipe should not).
        self._video.codec_context.thread_count = 1
        if self._video.codec_context.name == "libx264":
            # x264's macroblock-tree rate control made different files of the same small frames from one write to
            # the next, even on one thread (at 64x64, 5 kinds in 15 writes; off, 15 alike): a recipe re-run must
            # give the file it gave. Without it files grow about a fifth at the same crf.
            self._video.options = {"crf": str(self.crf), "x264-params": "no-mbtree=1"}
        else:
            self._video.bit_rate = int(width * height * float(self.rate) * 0.2)

        if self.audio_from is not None:
            self._audio = _AudioTrack(self.audio_from, *self.audio_range)
            self._audio.add_stream(self._container)

    def write(self, frames: np.ndarray) -> None:
        """Encode frames, (n, h, w, 3) or one (h, w, 3), uint8 RGB; all must share one size."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]  # (1, h, w, 3)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise VideoError(f"{self.path}: frames must be uint8 (n, h, w, 3), got {frames.dtype} {frames.shape}")
        if self.closed:
            raise VideoError(f"{self.path}: writer is already closed")
        try:
            if self._container is None:
                self._start(frames.shape[2], frames.shape[1])
            if frames.shape[1:3] != self._size:
                raise VideoError(f"{self.path}: frame size changed from {self._size} to {frames.shape[1:3]}")
            if any(self._pad):
                frames = np.pad(frames, ((0, 0), (0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
            for rgb in frames:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                frame.pts, frame.time_base = self.num_frames, 1 / self.rate
                self._container.mux(self._video.encode(frame))
                self.num_frames += 1
            if self._audio is not None:
                self._container.mux(self._audio.encode(float(self.num_frames / self.rate)))
        except av.error.FFmpegError as e:
            self._abort()
            raise VideoError(f"{self.path}: writing failed ({e})") from e

    def close(self) -> None:
        """Flush the encoders, finish the file and move it to `path`."""
        if self.closed:
            return
        if self._container is None:
            raise VideoError(f"{self.path}: no frames were written")
        try:
            self._container.mux(self._video.encode(None))
            if self._audio is not None:
                self._container.mux(self._audio.encode(float(self.num_frames / self.rate), final=True))
                self._audio.close()
            self._container.close()
            _publish(self._tmp, self.path)
        except (av.error.FFmpegError, OSError) as e:
            self._abort()
            raise VideoError(f"{self.path}: writing failed ({e})") from e
        self._container, self.closed = None, True

    def _abort(self) -> None:
        """Drop the partial output, leaving any existing file at `path` as it was."""
        for closeable in (self._audio, self._container):
            try:
                if closeable is not None:
                    closeable.close()
            except (av.error.FFmpegError, OSError):
                pass
        if self._tmp is not None and os.path.exists(self._tmp):
            os.remove(self._tmp)
        self._container = self._audio = None
        self.closed = True


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float | Fraction,
    *,
    audio_from: str | os.PathLike | None = None,
    audio_start: float = 0.0,
    audio_end: float | None = None,
) -> None:
    """Write (n, h, w, 3) uint8 frames, or an iterable of frames/batches, to an H.264 mp4 with optional audio."""
    with VideoWriter(path, fps, audio_from=audio_from, audio_start=audio_start, audio_end=audio_end) as writer:
        if isinstance(frames, np.ndarray):
            frames = [frames]
        for batch in frames:
            writer.write(batch)


def write_gif(path: str | os.PathLike, frames: np.ndarray | Iterable[np.ndarray], fps: float) -> None:
    """Write (n, h, w, 3) uint8 frames as a looping GIF (frame times in 10 ms steps, see gif_durations; above
    GIF_MAX_FPS, every 2nd or 3rd... frame)."""
    path = os.fspath(path)
    if not fps > 0:
        raise VideoError(f"{path}: fps must be > 0, got {fps}")
    folder, name = os.path.split(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise VideoError(f"{path}: folder {folder} does not exist")
    frames = [np.asarray(frame) for frame in frames]  # each (h, w, 3) uint8
    if not frames:
        raise VideoError(f"{path}: no frames to write")
    if any(frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3 for frame in frames):
        raise VideoError(f"{path}: frames must be uint8 (h, w, 3), got {frames[0].dtype} {frames[0].shape}")
    stride = math.ceil(fps / GIF_MAX_FPS)  # above it, every stride-th frame: the clip keeps its length
    images = [Image.fromarray(frame) for frame in frames[::stride]]
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    os.close(fd)
    try:
        durations = gif_durations(len(images), fps / stride)  # ms
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0, optimize=False
        )
        _publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
