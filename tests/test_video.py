"""Tests for insv2v.video on small synthetic videos (each frame shows its index; see tests/media.py)."""

import os
import shutil
import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media import (
    audio_track,
    burst_time,
    click_times,
    index_frame,
    make_audio_only,
    make_clicks,
    make_empty_avi,
    make_video,
    marker_frame,
    read_index,
)
from PIL import Image, ImageSequence

from insv2v import video
from insv2v.video import (
    Clip,
    VideoError,
    VideoWriter,
    gif_durations,
    probe,
    read_video,
    side_by_side,
    target_size,
    write_gif,
    write_video,
)

VFR_TIMES = [0.0, 0.1, 0.15, 0.5, 0.55, 0.6, 1.0, 1.3, 1.35, 1.8]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Paths of the synthetic test videos, made once for the module."""
    d = tmp_path_factory.mktemp("media")
    paths = {
        # 2 s, 96x64 at 30 fps, key frame every 10 frames, stereo AAC sine that is loud at 1.5-1.6 s
        "src": make_video(d / "src.mp4", 60, 30, (96, 64), gop=10, audio_burst=1.5),
        "ntsc": make_video(d / "ntsc.mp4", 30, Fraction(30000, 1001), (64, 48)),
        # stored 64x48 landscape, displayed rotated 90 degrees clockwise like a portrait phone video
        "rotated": make_video(d / "rotated.mp4", 4, 30, (64, 48), rotation=-90, draw=marker_frame),
        "vfr": make_video(d / "vfr.mp4", len(VFR_TIMES), 10, (96, 64), times=VFR_TIMES),
        "long": make_video(d / "long.mp4", 512, 30, (160, 128), gop=30),
        "faststart": make_video(d / "faststart.mp4", 60, 30, (96, 64), faststart=True, gop=5),
        "audio_only": make_audio_only(d / "audio.m4a"),
        "no_frames": make_empty_avi(d / "no_frames.avi"),
    }
    data = Path(paths["src"]).read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) * 3 // 10])  # moov atom (at the end) is lost
    data = Path(paths["faststart"]).read_bytes()
    (d / "truncated_faststart.mp4").write_bytes(data[: len(data) * 6 // 10])  # moov first, frames cut
    (d / "text.mp4").write_text("not a video\n" * 50)
    (d / "notes.txt").write_text("not a video\n" * 50)
    Image.fromarray(index_frame(3, 32, 32)).save(d / "still.png")
    shutil.copy(d / "still.png", d / "still.mp4")
    (d / "empty.mp4").write_bytes(b"")
    names = ["truncated", "truncated_faststart", "text", "still", "empty"]
    paths.update({name: str(d / f"{name}.mp4") for name in names}, notes=str(d / "notes.txt"))
    return paths


def indices(clip: Clip) -> list[int]:
    return [read_index(frame) for frame in clip.frames]


# ----------------------------------------------------------------------------------------------------------------------
# Pure helpers


@pytest.mark.parametrize(
    "size, resolution, expected",
    [
        ((1920, 1080), 512, (912, 512)),
        ((1080, 1920), 512, (512, 912)),
        ((854, 480), None, (856, 480)),
        ((640, 360), 256, (456, 256)),
        ((96, 64), 48, (72, 48)),
        ((100, 100), 8, (8, 8)),
        ((3, 5), None, (8, 8)),
    ],
)
def test_target_size(size, resolution, expected):
    w, h = target_size(*size, resolution)
    assert (w, h) == expected
    assert w % 8 == 0 and h % 8 == 0
    if min(size) >= 64:
        assert abs(w / h - size[0] / size[1]) < 8 / min(w, h)  # aspect kept up to one rounding step


def test_target_size_multiple_and_limits():
    assert target_size(1920, 1080, 512, multiple=64) == (896, 512)
    assert target_size(1000, 500, 250, multiple=1) == (500, 250)
    for resolution in (4, 5000):
        with pytest.raises(VideoError, match="resolution must be between 8 and 4096"):
            target_size(640, 480, resolution)


def test_off_grid():
    assert not video.off_grid([1.0, 1.1, 1.2, 1.3], 10)
    assert not video.off_grid([0.0, 0.1001, 0.2002, 0.3003], 10)  # container rounding
    assert video.off_grid([0.0, 0.1, 0.15, 0.5], 10)  # a variable-rate source
    assert video.off_grid([0.0, 0.1, 0.2, 0.3], 20)  # a stride the rate does not say


def test_sample_times_stride_and_fps():
    items = [(i / 10, i) for i in range(20)]  # 10 fps, 2 s
    assert [i for _, i in video.sample_times(items, start=0.5, stride=4)] == [5, 9, 13, 17]
    picked = list(video.sample_times(items, start=0.0, fps=3, frame_duration=0.1))
    assert [t for t, _ in picked] == [k / 3 for k in range(6)]  # the tick at 2 s is past the last frame's end
    assert [i for _, i in picked] == [0, 3, 7, 10, 13, 17]
    upsampled = [i for _, i in video.sample_times(items[:3], fps=25, frame_duration=0.1)]
    assert upsampled == [0, 0, 1, 1, 2, 2, 2, 2]  # repeats, and runs to the end of the last frame (0.3 s)


@pytest.mark.parametrize("fps, head", [(30, [30, 40, 30, 30, 40, 30]), (24, [40, 40, 40, 50, 40, 40]), (10, [100] * 6)])
def test_gif_durations_carry_rounding(fps, head):
    durations = gif_durations(120, fps)  # 4, 5 and 12 s
    assert durations[:6] == head
    assert all(d % 10 == 0 for d in durations)  # GIF stores centiseconds
    assert sum(durations) == 120 * 1000 / fps  # exact, where 1000 / fps rounded each frame would drift
    assert sum(gif_durations(7, 29.97)) == 230  # 233.6 ms: never more than 5 ms off


def test_side_by_side_resizes_right_to_left_height():
    left = np.full((2, 32, 40, 3), 10, np.uint8)
    right = np.full((2, 64, 48, 3), 200, np.uint8)
    both = side_by_side(left, right)
    assert both.shape == (2, 32, 40 + 24, 3)
    assert (both[:, :, :40] == 10).all() and (both[:, :, 40:] == 200).all()
    assert side_by_side(left[0], left[0]).shape == (32, 80, 3)
    with pytest.raises(VideoError, match="equal n"):
        side_by_side(left, right[:1])


# ----------------------------------------------------------------------------------------------------------------------
# Probing and reading


def test_probe(files):
    info = probe(files["src"])
    assert (info.width, info.height, info.fps, info.num_frames) == (96, 64, 30.0, 60)
    assert info.duration == pytest.approx(2.0)
    assert (info.rotation, info.has_audio) == (0, True)

    ntsc = probe(files["ntsc"])
    assert ntsc.fps == pytest.approx(30000 / 1001, abs=1e-9)
    assert (ntsc.num_frames, ntsc.has_audio) == (30, False)
    assert ntsc.duration == pytest.approx(30 * 1001 / 30000)


def test_non_square_pixels_are_shown_square(tmp_path):
    """A DVD's or an anamorphic camera's stored frame is narrower than it is shown: 64x64 pixels twice as wide as high
    are a 128x64 picture, and an edit keeps that aspect."""
    from fractions import Fraction

    path = str(tmp_path / "wide.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.codec_context.sample_aspect_ratio = Fraction(2, 1)
        for i in range(5):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(index_frame(i, 64, 64), format="rgb24")))
        container.mux(stream.encode())
    assert (probe(path).width, probe(path).height) == (128, 64)
    assert read_video(path, resolution=32, multiple=8).frames.shape == (5, 32, 64, 3)


def test_length_of_a_file_whose_header_does_not_say_it(tmp_path):
    """A streamed mkv (written where it could not seek back to fill in its length) and a raw H.264 stream: measured
    from their packets, so a server's length limit holds for them too (it read them as one frame long)."""
    import io

    class Pipe(io.RawIOBase):  # a pipe: the muxer cannot go back to write the length
        def __init__(self):
            self.data = bytearray()

        def writable(self):
            return True

        def write(self, chunk):
            self.data += bytes(chunk)
            return len(chunk)

    for suffix, fmt in (("mkv", "matroska"), ("h264", "h264")):
        pipe = Pipe()
        with av.open(pipe, "w", format=fmt) as container:
            stream = container.add_stream("libx264", rate=10)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            for i in range(50):
                frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 5 * i, np.uint8), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        path = tmp_path / f"streamed.{suffix}"
        path.write_bytes(pipe.data)
        with av.open(str(path)) as container:
            assert container.duration is None and not container.streams.video[0].frames  # the header is silent
        info = probe(path)
        assert info.num_frames == 50
        # mkv keeps its timestamps (10 fps); a raw stream has none, so FFmpeg's 25 fps is assumed for it
        assert info.duration == pytest.approx(50 / info.fps) and info.fps == (10.0 if suffix == "mkv" else 25.0)


@pytest.mark.parametrize(
    "ext, codec", [("mkv", "mpeg4"), ("webm", "libvpx-vp9"), ("avi", "mpeg4"), ("mov", "libx264"), ("ts", "libx264")]
)
def test_common_containers(tmp_path, ext, codec):
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    times = [3 + i / 25 for i in range(40)] if ext == "ts" else None  # the .ts clock starts at 3 s
    path = make_video(tmp_path / f"v.{ext}", 40, 25, (96, 64), codec=codec, times=times)
    info = probe(path)
    assert (info.width, info.height, info.fps, info.num_frames) == (96, 64, 25.0, 40)
    clip = read_video(path, start=1.0, stride=2)  # seconds from the stream start, whatever its clock says
    assert indices(clip) == list(range(25, 40, 2))
    assert (clip.start, clip.fps) == (1.0, 12.5)


def test_read_whole_video(files):
    clip = read_video(files["src"])
    assert clip.frames.shape == (60, 64, 96, 3) and clip.frames.dtype == np.uint8
    assert indices(clip) == list(range(60))
    assert (clip.fps, clip.start, clip.end, clip.source) == (30.0, 0.0, 2.0, files["src"])


def test_read_start_stride_max_frames(files):
    clip = read_video(files["src"], start=1.2, stride=3, max_frames=5)  # seeks past two key frames
    assert indices(clip) == [36, 39, 42, 45, 48]
    assert clip.fps == 10.0
    assert (clip.start, clip.end) == pytest.approx((1.2, 1.7))
    assert indices(read_video(files["src"], start=0.25, max_frames=3)) == [8, 9, 10]  # first frame at/after start
    assert indices(read_video(files["src"], stride=59)) == [0, 59]  # two frames, each shown for 59 frames' time
    with pytest.raises(VideoError, match=r"stride 60 keeps one frame of it, which would last 2s; a smaller stride"):
        read_video(files["src"], stride=60)  # one frame, shown as long as the whole 2 s video
    assert indices(read_video(files["src"], stride=60, max_frames=1)) == [0]  # one frame asked for: given


def test_read_resampled_fps(files):
    clip = read_video(files["src"], fps=7)
    assert indices(clip) == [round(k * 30 / 7) for k in range(14)]  # nearest frame to each tick k/7 s in 2 s
    assert (clip.fps, clip.start, clip.end) == (7.0, 0.0, 2.0)
    assert indices(read_video(files["src"], fps=45, max_frames=6)) == [0, 1, 1, 2, 3, 3]  # faster: frames repeat
    late = read_video(files["src"], start=1.0, fps=10)
    assert indices(late) == list(range(30, 60, 3))
    assert (late.start, late.end) == (1.0, 2.0)


def test_read_resolution(files):
    clip = read_video(files["src"], resolution=48, max_frames=10)
    assert clip.frames.shape == (10, 48, 72, 3)
    assert indices(clip) == list(range(10))
    assert read_video(files["src"], resolution=100, max_frames=1).frames.shape == (1, 104, 152, 3)  # upscale


def test_variable_frame_rate(files):
    info = probe(files["vfr"])
    assert info.num_frames == len(VFR_TIMES)
    # ticks every 0.25 s; nearest time stamps 0, .15, .5, .6, 1, 1.3, 1.35, 1.8
    assert indices(read_video(files["vfr"], fps=4, max_frames=8)) == [0, 2, 3, 5, 6, 7, 8, 9]
    # Without a rate, the frame shown at each tick of the average rate (10 frames in 1.9 s), so that written at
    # that rate each frame keeps its time (and its audio): ticks 0, .19, .38, .57, .76, .95, 1.14, 1.33, ...
    clip = read_video(files["vfr"])
    assert clip.fps == pytest.approx(10 / 1.9)
    assert indices(clip) == [0, 2, 3, 4, 5, 6, 6, 8, 8, 9, 9]
    clip = read_video(files["vfr"], start=0.52)  # ticks .52, .71, .90, 1.09, 1.28, ...
    assert indices(clip)[:5] == [3, 5, 6, 6, 7] and clip.start == pytest.approx(0.52)
    # A constant-rate file is read frame by frame, its own time stamps on the grid
    assert indices(read_video(files["ntsc"], stride=3)) == list(range(0, 30, 3))


def test_rotation_metadata_is_applied(files):
    info = probe(files["rotated"])
    assert (info.width, info.height, info.rotation) == (48, 64, 270)  # 90 degrees clockwise
    clip = read_video(files["rotated"])
    assert clip.frames.shape == (4, 64, 48, 3)
    red = clip.frames[0, :, :, 0] > 128  # stored top-left marker, turned clockwise to the top-right
    assert red[:8, -8:].all() and not red[-16:].any() and not red[:, :16].any()
    assert read_video(files["rotated"], resolution=24).frames.shape == (4, 32, 24, 3)


def test_old_rotate_tag_is_applied(tmp_path):
    path = str(tmp_path / "tagged.mkv")  # older tools wrote a clockwise 'rotate' tag instead of a display matrix
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.metadata["rotate"] = "90"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(marker_frame(i, 64, 48), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert (probe(path).width, probe(path).rotation) == (48, 270)
    red = read_video(path).frames[0, :, :, 0] > 128
    assert red[:8, -8:].all() and not red[:, :16].any()


def test_read_memory_holds_only_kept_frames(files):
    tracemalloc.start()
    clip = read_video(files["long"], stride=8)  # decodes 512 frames of 160x128, keeps 64
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(clip.frames) == 64 and indices(clip)[:3] == [0, 8, 16]
    source_frame = 160 * 128 * 3
    assert peak < clip.frames.nbytes + 8 * source_frame  # the kept frames and a few in flight


def test_truncated_tail_keeps_decodable_frames_and_says_so(files, caplog):
    clip = read_video(files["truncated_faststart"])
    assert 0 < len(clip.frames) < 60
    assert indices(clip) == list(range(len(clip.frames)))
    assert f"ends after {len(clip.frames)} of the 60 frames its header announces" in caplog.text
    caplog.clear()
    read_video(files["truncated_faststart"], max_frames=2)  # stopped before the end: nothing to say
    assert "header announces" not in caplog.text


# ----------------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "name, match",
    [
        ("missing", "file not found"),
        ("empty", "file is empty"),
        ("text", "is not a video file"),
        ("notes", "is not a video file"),
        ("still", "is not a video file"),
        ("truncated", r"could not be read \(truncated or corrupt\?\)"),
        ("audio_only", "has no video stream"),
        ("no_frames", "has no video frames"),
    ],
)
def test_bad_files(files, tmp_path, name, match):
    path = files.get(name, str(tmp_path / "missing.mp4"))
    for call in (probe, read_video):
        with pytest.raises(VideoError, match=match) as error:
            call(path)
        assert str(error.value).startswith(path) and "\n" not in str(error.value)


def test_huge_frames_are_refused_before_decoding(tmp_path):
    huge = make_video(tmp_path / "huge.mp4", num_frames=1, size=(4352, 4352))  # over 4096 x 4096 pixels
    for call in (probe, read_video):  # probe too: an upload is probed first, and decoding one frame costs ~1 GB
        with pytest.raises(VideoError, match="huge resolution 4352x4352, at most 16777216 pixels"):
            call(huge)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_pixels=96 * 64 - 1), "huge resolution 96x64, at most 6143 pixels"),
        (dict(start=2.5), r"start 2.5s is beyond the end of the video \(2.00s\)"),
        (dict(start=1.99), "start 1.99s is at or beyond the last frame"),  # last frame starts at 1.967 s
        (dict(start=-1), "start must be a finite number of seconds >= 0, got -1"),
        (dict(start=float("nan")), "start must be a finite number of seconds >= 0, got nan"),
        (dict(stride=0), "stride must be an integer >= 1"),
        (dict(fps=0), "fps must be between 0.01 and 1000, got 0"),
        (dict(fps=1e-9), "fps must be between 0.01 and 1000, got 1e-09"),
        (dict(fps=1e6), "fps must be between 0.01 and 1000, got 1e\\+06"),
        (dict(max_frames=0), "max_frames must be >= 1"),
        (dict(stride=2, fps=10), "give stride or fps, not both"),
        (dict(resolution=4), "resolution must be between 8 and 4096, got 4"),
        (dict(resolution=10_000), "resolution must be between 8 and 4096, got 10000"),
        (dict(max_decode_frames=10), "decoded 10 frames without finishing"),
    ],
)
def test_bad_read_arguments(files, kwargs, match):
    with pytest.raises(VideoError, match=match) as error:
        read_video(files["src"], **kwargs)
    assert str(error.value).startswith(files["src"])


# ----------------------------------------------------------------------------------------------------------------------
# Writing


def test_write_with_audio_round_trip(files, tmp_path):
    clip = read_video(files["src"], start=1.0, max_frames=24, resolution=48)
    out = tmp_path / "out.mp4"
    write_video(out, clip.frames, clip.fps, audio_from=files["src"], audio_start=clip.start, audio_end=clip.end)
    info = probe(out)
    assert (info.width, info.height, info.num_frames, info.fps, info.has_audio) == (72, 48, 24, 30.0, True)
    assert indices(read_video(out)) == list(range(30, 54))
    duration, samples, rate = audio_track(out)
    assert duration == pytest.approx(24 / 30, abs=0.1)
    assert len(samples) / rate == pytest.approx(24 / 30, abs=0.1)
    assert burst_time(samples, rate) == pytest.approx(0.5, abs=0.03)  # the 1.5 s burst, 1.0 s into the source
    assert os.listdir(tmp_path) == ["out.mp4"]  # no temporary files left


@pytest.mark.parametrize("batches", [[1] * 100, [16] + [12] * 7], ids=["one_frame_per_write", "run_edit_clips"])
def test_audio_stays_in_step_across_writes(tmp_path, batches):
    # Each write used to drop the unneeded rest of the last 1024-sample chunk read: with one frame per write the
    # 3 s click came out at 2.81 s, with run_edit's clips (16 frames, then 12s) at 2.96 s.
    src = make_clicks(tmp_path / "clicks.mkv", 4.0, [1.0, 2.0, 3.0], fps=25)
    clip = read_video(src)
    with VideoWriter(tmp_path / "out.mp4", clip.fps, audio_from=src, audio_start=clip.start, audio_end=clip.end) as w:
        for batch in np.split(clip.frames, np.cumsum(batches)[:-1]):
            w.write(batch)
    duration, samples, rate = audio_track(tmp_path / "out.mp4")
    assert click_times(samples, rate) == pytest.approx([1.0, 2.0, 3.0], abs=0.002)
    assert duration == pytest.approx(4.0, abs=0.025)  # the video's length, give or take one AAC frame


@pytest.mark.parametrize("start, clicks", [(0.0, [0.7, 1.6]), (1.0, [0.6])])
def test_late_audio_and_holes_keep_their_time(tmp_path, start, clicks):
    # Audio packets from 0.5 s, none between 1.0 and 1.4 s; clicks at 0.7 and 1.6 s. The sound used to be
    # pulled to the clip's start (a click at 0.2 s) and closed over the hole.
    src = make_clicks(tmp_path / "late.mkv", 2.0, [0.7, 1.6], fps=10, audio_start=0.5, hole=(1.0, 1.4))
    clip = read_video(src, start=start)
    write_video(tmp_path / "out.mp4", clip.frames, clip.fps, audio_from=src, audio_start=clip.start, audio_end=clip.end)
    duration, samples, rate = audio_track(tmp_path / "out.mp4")
    assert click_times(samples, rate) == pytest.approx(clicks, abs=0.002)
    assert duration == pytest.approx(2.0 - start, abs=0.025)
    silent = round((0.5 - start) * rate) - 1024  # before the first packet (less one AAC frame of encoder smear)
    assert np.abs(samples[:silent]).max(initial=0) < 1e-3


def test_write_audio_capped_to_video_and_missing_audio(files, tmp_path):
    frames = read_video(files["src"], max_frames=15).frames
    write_video(tmp_path / "a.mp4", frames, 30, audio_from=files["src"])  # source audio 2 s, video 0.5 s
    assert audio_track(tmp_path / "a.mp4")[0] == pytest.approx(0.5, abs=0.1)
    write_video(tmp_path / "b.mp4", frames, 30, audio_from=files["ntsc"])  # source has no audio
    assert probe(tmp_path / "b.mp4").has_audio is False


def test_write_keeps_ntsc_rate(files, tmp_path):
    clip = read_video(files["ntsc"])
    assert clip.fps == pytest.approx(30000 / 1001)
    write_video(tmp_path / "ntsc.mp4", iter(clip.frames), clip.fps)  # float fps, frames one at a time
    with av.open(str(tmp_path / "ntsc.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.average_rate, stream.frames) == (Fraction(30000, 1001), 30)
    write_video(tmp_path / "half.mp4", clip.frames[::2], Fraction(15000, 1001))
    with av.open(str(tmp_path / "half.mp4")) as container:
        assert container.streams.video[0].average_rate == Fraction(15000, 1001)


def test_streaming_writer_odd_size(tmp_path):
    frames = np.stack([index_frame(i, 101, 61) for i in range(35)])  # (35, 61, 101, 3)
    with VideoWriter(tmp_path / "odd.mp4", 24, crf=10) as writer:
        for batch in np.split(frames, 5):
            writer.write(batch)
    info = probe(tmp_path / "odd.mp4")
    assert (info.width, info.height, info.num_frames, info.fps) == (102, 62, 35, 24.0)  # padded to even
    assert indices(read_video(tmp_path / "odd.mp4")) == list(range(35))


def test_the_same_frames_make_the_same_file(tmp_path):
    """A recipe re-run must give the file it gave: twelve writes of one small toy video, each read back before the
    next (x264's macroblock tree made up to five different files of these frames)."""
    from insv2v.toyworld.world import sample_triplet

    frames = sample_triplet(11).render(24)[0]  # (24, 64, 64, 3): the toy world's size, where it happened
    files = set()
    for i in range(12):
        write_video(tmp_path / f"{i}.mp4", frames, 8)
        read_video(tmp_path / f"{i}.mp4")
        files.add((tmp_path / f"{i}.mp4").read_bytes())
    assert len(files) == 1


def test_written_colors_read_back(tmp_path):
    frames = np.zeros((3, 32, 64, 3), np.uint8)
    frames[:, :, :32], frames[:, :, 32:] = (200, 40, 60), (30, 180, 90)
    write_video(tmp_path / "c.mp4", frames, 30)  # tagged BT.601, which is how PyAV converts RGB to YUV
    back = read_video(tmp_path / "c.mp4").frames.astype(int)
    assert np.abs(back[:, 8:24, 8:24] - [200, 40, 60]).max() <= 6
    assert np.abs(back[:, 8:24, 40:56] - [30, 180, 90]).max() <= 6


@pytest.mark.parametrize("ext", [".mov", ".mkv"])
def test_write_other_containers(tmp_path, ext):
    write_video(tmp_path / f"out{ext}", np.stack([index_frame(i, 64, 32) for i in range(5)]), 10)
    assert probe(tmp_path / f"out{ext}").num_frames == 5
    assert indices(read_video(tmp_path / f"out{ext}")) == list(range(5))


def test_failed_write_keeps_existing_output(tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    with pytest.raises(RuntimeError), VideoWriter(out, 30) as writer:
        writer.write(np.zeros((3, 32, 32, 3), np.uint8))
        raise RuntimeError("model crashed")
    with pytest.raises(VideoError, match="frames must be uint8"):
        write_video(out, np.zeros((3, 32, 32, 3), np.float32), 30)
    with pytest.raises(VideoError, match="frame size changed"):
        write_video(out, [np.zeros((2, 32, 32, 3), np.uint8), np.zeros((2, 16, 16, 3), np.uint8)], 30)
    with pytest.raises(VideoError, match="no frames were written"):
        write_video(out, [], 30)
    with pytest.raises(VideoError, match="fps must be > 0"):
        write_video(out, np.zeros((1, 32, 32, 3), np.uint8), 0)
    with pytest.raises(VideoError, match=r"output must end in \.mp4"):
        write_video(tmp_path / "out.avi", np.zeros((1, 32, 32, 3), np.uint8), 30)
    with pytest.raises(VideoError, match="file not found"):
        write_video(out, np.zeros((1, 32, 32, 3), np.uint8), 30, audio_from=tmp_path / "nope.mp4")
    assert out.read_bytes() == b"previous result"
    assert os.listdir(tmp_path) == ["out.mp4"]


def test_mpeg4_fallback_when_no_h264(tmp_path, monkeypatch):
    monkeypatch.setattr(video, "VIDEO_ENCODERS", ("no-such-encoder", "mpeg4"))
    video._video_encoder.cache_clear()
    try:
        write_video(tmp_path / "m.mp4", np.stack([index_frame(i, 96, 64) for i in range(10)]), 25)
        with av.open(str(tmp_path / "m.mp4")) as container:
            assert container.streams.video[0].codec_context.name == "mpeg4"
    finally:
        video._video_encoder.cache_clear()
    assert indices(read_video(tmp_path / "m.mp4")) == list(range(10))
    assert probe(tmp_path / "m.mp4").fps == 25.0


def test_write_gif_loops(tmp_path):
    frames = np.stack([index_frame(i, 96, 64) for i in range(6)])
    write_gif(tmp_path / "a.gif", frames, fps=10)
    with Image.open(tmp_path / "a.gif") as gif:
        assert (gif.n_frames, gif.size, gif.info["loop"], gif.info["duration"]) == (6, (96, 64), 0, 100)
    with pytest.raises(VideoError, match="frames must be uint8"):
        write_gif(tmp_path / "b.gif", frames / 255.0, fps=10)
    clip = read_video(tmp_path / "a.gif")  # GIFs read back as videos
    assert indices(clip) == list(range(6)) and clip.fps == pytest.approx(10)


@pytest.mark.parametrize("fps, kept", [(60, 30), (120, 20), (50, 60)])
def test_a_fast_gif_keeps_its_length_in_frames_browsers_play(tmp_path, fps, kept):
    """Browsers play a GIF frame of 10 ms or less for 100 ms: at 60 fps every 2nd frame, at 120 every 3rd."""
    write_gif(tmp_path / "a.gif", np.stack([index_frame(i, 32, 32) for i in range(60)]), fps=fps)
    with Image.open(tmp_path / "a.gif") as gif:
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
    assert len(durations) == kept and min(durations) >= 20 and sum(durations) == round(60_000 / fps)


def test_write_gif_keeps_total_duration(tmp_path):
    # Each frame's 33.3 ms used to be stored as 30 ms: 30 frames at 30 fps played in 0.9 s.
    write_gif(tmp_path / "a.gif", np.stack([index_frame(i, 32, 32) for i in range(30)]), fps=30)
    with Image.open(tmp_path / "a.gif") as gif:
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
    assert durations[:3] == [30, 40, 30] and sum(durations) == 1000
    # Read back, it is the same 30 frames at its average rate (FFmpeg's own guess, from the first frames, is 33 fps).
    info, clip = probe(tmp_path / "a.gif"), read_video(tmp_path / "a.gif")
    assert (info.num_frames, info.fps, info.duration) == (30, 30.0, 1.0) and len(clip.frames) == 30


def test_a_selection_too_long_to_read_is_refused_from_the_probe_alone(tmp_path):
    from insv2v.video import VideoInfo, check_decode_length, frames_to_decode

    hour = VideoInfo("long.mp4", 640, 360, 30.0, 108_000, 3600.0, 0, False)  # an hour at 30 fps: nothing decoded
    assert frames_to_decode(hour) == 108_000 and frames_to_decode(hour, start=3000.0) == 18_000
    assert frames_to_decode(hour, max_frames=100, stride=3) == 300  # every third of 300 decoded
    assert frames_to_decode(hour, max_frames=10, fps=3) == 100  # resampled from 30 to 3 fps
    assert frames_to_decode(hour, start=4000.0) == 0  # past the end: the reader says so itself
    with pytest.raises(VideoError, match=r"long\.mp4: this selection runs about 108,000 frames, more than the 100,000"):
        check_decode_length(hour)
    check_decode_length(hour, max_frames=64, stride=8)  # a part of it: fine
