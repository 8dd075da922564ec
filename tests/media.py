"""Synthetic test media written with PyAV: each frame shows its index as black/white bands, audio is a sine."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction

import av
import numpy as np

BITS = 10  # frame index bits drawn as vertical bands (up to 1023 frames)
AUDIO_RATE = 48000
AUDIO_LEVEL = 0.1  # sine amplitude outside the burst
BURST_LEVEL = 0.8  # sine amplitude inside the burst


def index_frame(i: int, width: int, height: int) -> np.ndarray:
    """Frame showing `i` in binary: band b (left to right) is white when bit b is set."""
    bits = (i >> np.arange(BITS)) & 1  # (BITS,)
    columns = bits[np.arange(width) * BITS // width]  # (w,)
    return np.repeat(np.repeat(columns[None, :, None] * 255, height, 0), 3, 2).astype(np.uint8)  # (h, w, 3)


def read_index(frame: np.ndarray) -> int:
    """Inverse of index_frame, sampling the middle third of each band."""
    w = frame.shape[1]
    gray = frame.mean(axis=(0, 2))  # (w,)
    bits = [gray[(3 * b + 1) * w // (3 * BITS) : (3 * b + 2) * w // (3 * BITS) + 1].mean() > 128 for b in range(BITS)]
    return sum(int(bit) << b for b, bit in enumerate(bits))


def marker_frame(i: int, width: int, height: int) -> np.ndarray:
    """Black frame with a red square in the top-left corner (to see where rotation moves it)."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[: height // 4, : width // 4, 0] = 255
    return frame


def make_video(
    path,
    num_frames: int = 30,
    fps: float | Fraction = 30,
    size: tuple[int, int] = (96, 64),
    *,
    times: Sequence[float] | None = None,
    rotation: int | None = None,
    audio_burst: float | None = None,
    gop: int | None = None,
    faststart: bool = False,
    codec: str = "libx264",
    draw: Callable[[int, int, int], np.ndarray] = index_frame,
) -> str:
    """Write a test video; `times` (s) make it variable-rate, `audio_burst` adds a sine that is loud at that second."""
    width, height = size
    rate = Fraction(fps).limit_denominator(10_000)
    container = av.open(str(path), "w", options={"movflags": "+faststart"} if faststart else {})
    video = container.add_stream(codec, rate=rate)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    time_base = Fraction(1, 1000) if times is not None else 1 / rate
    video.codec_context.time_base = time_base
    if codec == "libx264":
        video.options = {"preset": "ultrafast", "crf": "18", **({"g": str(gop)} if gop else {})}
    if rotation is not None:
        video.set_display_rotation(rotation)
    audio = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo") if audio_burst is not None else None

    for i in range(num_frames):
        frame = av.VideoFrame.from_ndarray(draw(i, width, height), format="rgb24")
        frame.pts = round(times[i] * 1000) if times is not None else i
        frame.time_base = time_base
        container.mux(video.encode(frame))
    container.mux(video.encode(None))

    if audio is not None:
        n = round(num_frames / rate * AUDIO_RATE)
        t = np.arange(n) / AUDIO_RATE
        level = np.where((t >= audio_burst) & (t < audio_burst + 0.1), BURST_LEVEL, AUDIO_LEVEL)
        samples = (level * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        mux_audio(container, audio, np.stack([samples] * 2), "stereo", range(0, n, 1024))
    container.close()
    return str(path)


def make_audio_only(path, seconds: float = 1.0) -> str:
    """Write an .m4a with a sine and no video."""
    container = av.open(str(path), "w")
    audio = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
    n = round(seconds * AUDIO_RATE)
    samples = (AUDIO_LEVEL * np.sin(2 * np.pi * 440 * np.arange(n) / AUDIO_RATE)).astype(np.float32)
    mux_audio(container, audio, samples[None], "mono", range(0, n, 1024))
    container.close()
    return str(path)


def mux_audio(container, stream, samples: np.ndarray, layout: str, starts: Iterable[int]) -> None:
    """Encode (channels, n) float samples into `stream` as 1024-sample packets at `starts` (time stamps as given,
    so skipped starts leave holes), then flush it."""
    for pos in starts:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, pos : pos + 1024]), format="fltp",
                                           layout=layout)  # fmt: skip
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, pos, Fraction(1, AUDIO_RATE)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def make_empty_avi(path, size: tuple[int, int] = (64, 48)) -> str:
    """Write an AVI whose video stream has a header but no frames."""
    container = av.open(str(path), "w")
    video = container.add_stream("mpeg4", rate=30)
    video.width, video.height, video.pix_fmt = *size, "yuv420p"
    container.start_encoding()
    container.close()
    return str(path)


def audio_track(path) -> tuple[float, np.ndarray, int]:
    """(duration in seconds from the stream header, mono samples decoded, sample rate) of the first audio stream."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        duration = float(stream.duration * stream.time_base)
        frames = [frame.to_ndarray().reshape(-1, frame.samples)[0] for frame in container.decode(stream)]  # (n,) each
        return duration, np.concatenate(frames), stream.rate


def burst_time(samples: np.ndarray, rate: int) -> float:
    """Seconds at which the loud burst starts (first 5 ms window whose peak exceeds half the burst level)."""
    window = rate // 200
    peaks = np.abs(samples[: len(samples) // window * window]).reshape(-1, window).max(axis=1)
    return float(np.argmax(peaks > BURST_LEVEL / 2) * window / rate)


def make_clicks(
    path,
    seconds: float,
    clicks: Sequence[float],
    *,
    fps: int = 25,
    audio_start: float = 0.0,
    hole: tuple[float, float] | None = None,
) -> str:
    """Write a black 32x32 video with mono audio that is silent but for 10 ms clicks at `clicks` (s).

    The audio's packets start at `audio_start` (s) and skip the span `hole` (s), so their time stamps say where
    the sound lies; use .mkv, which keeps them as given.
    """
    container = av.open(str(path), "w")
    video = container.add_stream("mpeg4", rate=fps)
    video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
    audio = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
    for i in range(round(seconds * fps)):
        frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        frame.pts = i
        container.mux(video.encode(frame))
    container.mux(video.encode(None))

    samples = np.zeros(round(seconds * AUDIO_RATE), np.float32)
    for t in clicks:
        samples[round(t * AUDIO_RATE) : round((t + 0.01) * AUDIO_RATE)] = BURST_LEVEL
    starts = range(round(audio_start * AUDIO_RATE), len(samples), 1024)
    if hole is not None:
        starts = [pos for pos in starts if not hole[0] * AUDIO_RATE <= pos < hole[1] * AUDIO_RATE]
    mux_audio(container, audio, samples[None], "mono", starts)
    container.close()
    return str(path)


def click_times(samples: np.ndarray, rate: int) -> list[float]:
    """Seconds at which each click starts (a sample above half the click level after 0.1 s of quiet)."""
    loud = np.flatnonzero(np.abs(samples) > BURST_LEVEL / 2)
    starts = loud[np.r_[True, np.diff(loud) > rate // 10]] if len(loud) else loud
    return [float(i / rate) for i in starts]
