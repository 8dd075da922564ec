"""The demo app through Gradio's API (gradio_client) on a tiny random pipeline, and its serving parts alone."""

import json
import os
import re
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from app_server import free_port, serve
from media import make_video

from insv2v import loading
from insv2v.assets import EXAMPLES
from insv2v.editing import EditRecipe, run_edit
from insv2v.loading import default_source
from insv2v.pipeline import InsV2VPipeline
from insv2v.testing.tiny import tiny_components, tiny_pipeline
from insv2v.ui import serving
from insv2v.ui.controls import Slider
from insv2v.ui.serving import AppConfig, Job, Jobs, OutputCache, gpu, user_message
from insv2v.ui.settings import load_recipe, model_max_frames, settings_table
from insv2v.ui.sweep_tab import heatmap, rescore
from insv2v.video import probe, write_video

REPO = Path(__file__).resolve().parents[1]
FAST = dict(steps=1, frames_per_clip=4, ref_frames=1, randomize_seed=False)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("media")
    good = make_video(tmp / "clip.mp4", num_frames=10, size=(96, 64), audio_burst=0.1)
    text = tmp / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    truncated = tmp / "truncated.mp4"
    truncated.write_bytes(Path(good).read_bytes()[:1500])
    long = make_video(tmp / "long.mp4", num_frames=150, fps=30, size=(32, 32))  # 5 s: over the 4 s limit
    return {"good": good, "not a video": str(text), "truncated": str(truncated), "too long": long}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("app")) as (url, demo):
        yield url, demo


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app[0], verbose=False)


def edit(client, video, instruction="make it snowy", api_name="/edit", **settings):
    from gradio_client import handle_file

    return client.predict(handle_file(video), instruction, **{**FAST, **settings}, api_name=api_name)


def test_edit_endpoint_returns_video_side_by_side_recipe_and_metrics(client, media):
    output, sbs, recipe_path, metrics, seed, status = edit(client, media["good"], seed=5, length=6)
    info = probe(output)
    assert (info.num_frames, info.width, info.height, info.fps, info.has_audio) == (6, 96, 64, 30.0, True)
    assert (probe(sbs).width, probe(sbs).height) == (192, 64)
    recipe = json.loads(Path(recipe_path).read_text())
    assert recipe["seed"] == 5 == seed and recipe["max_frames"] == 6 and recipe["input"] == "clip.mp4"
    assert recipe["model"] == "tiny"  # a name, never a server path
    assert set(metrics) == {"warp_error"} and metrics["warp_error"] >= 0
    assert status.startswith("Edited 6 frames (96x64, 30 fps)") and "seed 5" in status


def test_the_status_says_when_the_server_limit_cut_the_selection(client, tmp_path):
    clip = make_video(tmp_path / "twenty.mp4", num_frames=20, fps=10, size=(32, 32))  # the app's limit: 12 frames
    for length, frames, cut in ((0, 12, True), (12, 12, False), (8, 8, False), (0, 10, False)):
        stride = 2 if frames == 10 else 1  # every other frame: 10 of them, within the limit
        output, *_, status = edit(client, clip, length=length, stride=stride)
        assert probe(output).num_frames == frames
        assert ("cut to 12 frames, this server's limit" in status) == cut, (length, stride, status)


def test_an_upload_that_ends_before_its_header_says_is_edited_and_the_status_says_so(client, tmp_path):
    whole = tmp_path / "whole.mp4"
    write_video(whole, np.random.default_rng(0).integers(0, 255, (24, 32, 32, 3), dtype=np.uint8), 8)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # its header still announces 24 frames
    output, *_, status = edit(client, str(cut))
    decoded = probe(output).num_frames
    assert decoded < 12 and f"cut.mp4: ends after {decoded} of the 24 frames its header announces" in status
    *_, status = edit(client, str(cut), api_name="/sweep", text_cfgs="5", video_cfgs="1")  # the CFG Sweep tab too
    assert f"cut.mp4: ends after {decoded} of the 24 frames its header announces" in status


def test_preview_is_the_first_clip_only(client, media):
    output, *_, status = edit(client, media["good"], api_name="/preview", length=10)
    assert probe(output).num_frames == 4 and status.startswith("Preview 4 frames")


def test_sweep_endpoint_2x2(client, media):
    from gradio_client import handle_file

    gallery, heat, table, files, status = client.predict(  # the gr.State output is not part of the API
        handle_file(media["good"]), "make it snowy", text_cfgs="5, 9", video_cfgs="1, 1.5", length=6,
        seed=1, **FAST, api_name="/sweep",
    )  # fmt: skip
    cells = gallery["value"] if isinstance(gallery, dict) else gallery
    assert len(cells) == 4 and sum("★ best" in c["caption"] for c in cells) == 1
    assert [row[:2] for row in table["data"]] == [[5, 1], [5, 1.5], [9, 1], [9, 1.5]]
    csv_path, json_path = sorted(files, key=lambda p: Path(p).suffix)
    assert Path(csv_path).read_text().splitlines()[0].startswith("text_cfg,video_cfg,warp_error")
    exported = json.loads(Path(json_path).read_text())
    assert exported["recipe"]["seed"] == 1 and len(exported["cells"]) == 4 and exported["num_frames"] == 6
    assert Path(heat).suffix == ".png" and status.startswith("4 cells of 6 frames")


@pytest.mark.parametrize(
    "case, words",
    [
        ("not a video", "notes.mp4 cannot be read as a video"),
        ("truncated", "truncated.mp4 cannot be read as a video"),
        ("too long", "long.mp4 is 5.0 s long; this server edits videos up to 4 s"),
    ],
)
def test_bad_upload_gets_a_clear_message_and_the_server_keeps_serving(client, media, case, words):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=words) as err:
        edit(client, media[case])
    assert "/" not in str(err.value)  # no server paths in messages
    output, *_ = edit(client, media["good"], length=2)
    assert probe(output).num_frames == 2


@pytest.mark.parametrize(
    "settings, words",
    [
        (dict(frames_per_clip=4, ref_frames=4), "Reference frames must be in [0, Frames per clip), got 4 with 4"),
        (dict(text_cfg=100), "Text CFG must be between 1 and 20; got 100."),
        (dict(video_cfg=-1), "Video CFG must be between 1 and 3; got -1."),
        (dict(video_cfg=None), "Video CFG needs a number between 1 and 3; got none."),
        (dict(instruction="  "), "the instruction is empty"),
        (dict(start=30), "start 30s is beyond the end of the video"),
        (dict(start=1e308), "start 1e+308s is beyond the end of the video"),
    ],
)
def test_bad_settings_get_a_clear_message(client, media, settings, words):
    from gradio_client.exceptions import AppError

    instruction = settings.pop("instruction", "make it snowy")
    with pytest.raises(AppError) as err:
        edit(client, media["good"], instruction, **settings)
    assert words in str(err.value)


def test_api_takes_every_setting_by_name_in_the_readme_order(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/edit", "/preview", "/sweep", "/compare", "/synth_pair"}  # the README's, no others
    names = {name: [p["parameter_name"] for p in endpoints[name]["parameters"]] for name in ("/edit", "/sweep")}
    long_video = ["lvsc", "frames_per_clip", "ref_frames", "lvsc_fraction", "mc"]
    frames = ["resolution", "start", "length", "stride"]
    assert names["/edit"] == ["video", "instruction", "negative_prompt", "text_cfg", "video_cfg", *long_video,
                              "seed", "randomize_seed", "steps", *frames]  # fmt: skip
    assert names["/sweep"] == ["video", "instruction", "text_cfgs", "video_cfgs", "score", "negative_prompt", "seed",
                               "randomize_seed", "steps", *long_video, *frames]  # fmt: skip
    defaults = {p["parameter_name"]: p["parameter_default"] for p in endpoints["/edit"]["parameters"]}
    assert (defaults["steps"], defaults["length"], defaults["frames_per_clip"]) == (1, 12, 16)  # the controls' values


def test_frames_per_clip_limit_comes_from_the_model(tmp_path):
    """A model whose motion modules take 24 frames: both tabs' sliders stop at 24, read from its folder without
    loading it, and 25 through the API is refused naming the slider."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    components = tiny_components()
    unet = components["unet"]
    components["unet"] = type(unet).from_config({**unet.config, "motion_max_seq_length": 24})
    folder = tmp_path / "tiny24"
    InsV2VPipeline(**components).save_pretrained(folder)
    clip = make_video(tmp_path / "clip.mp4", num_frames=4, size=(32, 32))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loading, "load_fresh", lambda *args: pytest.fail("the model was loaded"))
        with serve(tmp_path, model=str(folder)) as (url, demo):
            maximum = {b.elem_id: b.maximum for b in demo.blocks.values() if isinstance(b, Slider)}
            for tab in ("edit", "sweep"):  # reference frames: fewer than frames per clip
                assert (maximum[f"{tab}-frames-per-clip"], maximum[f"{tab}-ref-frames"]) == (24, 23)
            with pytest.raises(AppError) as err:
                Client(url, verbose=False).predict(
                    handle_file(clip), "make it snowy", frames_per_clip=25, api_name="/edit"
                )
            assert "Frames per clip must be between 2 and 24; got 25." in str(err.value)
    assert loading.load_pipeline(str(folder), device="cpu").max_frames_per_clip == 24  # the pipeline agrees


def test_frames_per_clip_limit_of_hub_ids_and_compositions(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # empty: nothing read without a download
    assert model_max_frames("someone/model") == 32  # the pipeline's own check refuses more at the first request
    assert model_max_frames("compose:someone/ip2p+someone/adapter") == 32  # compositions take at least 32
    snapshot = tmp_path / "hub" / "models--someone--model" / "snapshots" / "abc"
    (snapshot / "unet").mkdir(parents=True)
    (snapshot / "unet" / "config.json").write_text('{"motion_max_seq_length": 24}')
    (tmp_path / "hub" / "models--someone--model" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--model" / "refs" / "main").write_text("abc")
    assert model_max_frames("someone/model") == 24  # a hub id already in the cache
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "config.json").write_text('{"motion_max_seq_length": 48}')
    assert model_max_frames(f"compose:someone/ip2p+{tmp_path / 'adapter'}") == 48


def test_bad_sweep_grid(client, media):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="text CFG values must be numbers"):
        client.predict(handle_file(media["good"]), "make it snowy", text_cfgs="5, lots", api_name="/sweep")


def test_every_run_of_the_model_waits_in_one_queue(tmp_path, monkeypatch):
    """An example cached on first use runs the edit in Gradio's own event; it must queue with the edits and sweeps,
    which share the pipeline's scheduler and stop flag."""
    from insv2v.testing.tiny import main as save_tiny
    from insv2v.ui import build_demo, pinned_files

    for name in ("GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE"):
        monkeypatch.delenv(name, raising=False)
    save_tiny([str(tmp_path / "tiny")])
    config = AppConfig(model=str(tmp_path / "tiny"), cache_dir=tmp_path / "cache", data_dir=tmp_path / "data",
                       cache_examples=True)  # fmt: skip
    demo = build_demo(config)
    fns = demo.fns.values()
    example = [f for f in fns if f.name == "load_example_output"]
    heavy = [f for f in fns if f.api_name in ("edit", "preview", "sweep", "compare", "synth_pair")]
    assert len(example) == 1 and len(heavy) == 5
    assert {(f.concurrency_id, f.concurrency_limit) for f in example + heavy} == {("model", 1)}
    pinned = pinned_files(demo)  # the examples' copies, which the app's cache cleaner must spare
    assert {Path(path).name for path in pinned} == {path.name for path in EXAMPLES.glob("*.mp4")}
    assert all(Path(path).is_relative_to((tmp_path / "cache" / "gradio").resolve()) for path in pinned)


def test_only_the_cache_is_served(app):
    url, _demo = app
    for path in ("/etc/passwd", str(REPO / "README.md"), str(REPO / "app.py")):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}gradio_api/file={path}", timeout=10)
        assert err.value.code in (403, 404)


def test_oversized_upload_is_refused(app, tmp_path):
    from gradio_client import Client, handle_file

    big = make_video(tmp_path / "big.mp4", num_frames=60, size=(640, 480), draw=noise)  # over the 2 MB limit
    assert os.path.getsize(big) > 2 * 2**20
    with pytest.raises(ValueError, match="exceeds the maximum file size of 2097152 bytes"):
        Client(app[0], verbose=False).predict(handle_file(big), "make it snowy", api_name="/edit")


def noise(i, width, height):
    return np.random.default_rng(i).integers(0, 256, (height, width, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------------------------
# Serving parts alone


def touch(folder, when: float) -> None:
    """Set the times of a folder and of everything in it."""
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (when, when))


def test_output_cache_deletes_by_age_then_size(tmp_path):
    cache = OutputCache(tmp_path, max_bytes=2500, max_age_s=100, keep_recent_s=0)
    jobs = []
    for i in range(4):
        job = cache.jobs / f"job{i}"
        job.mkdir()
        (job / "out.mp4").write_bytes(b"x" * 1000)
        touch(job, 1000 + i)
        jobs.append(job)
    deleted = cache.clean(now=1101.8)  # jobs 0 and 1 are older than 100 s; 2 and 3 fit in 2500 bytes
    assert deleted == jobs[:2] and all(j.exists() for j in jobs[2:])
    (jobs[3] / "more.mp4").write_bytes(b"x" * 1000)
    touch(jobs[3], 1003)
    assert cache.clean(now=1101.9) == [jobs[2]]  # too big: the oldest goes
    assert cache.new_job("edit").parent == cache.jobs and not jobs[3].exists()  # a new request cleans first


def test_output_cache_never_deletes_the_folder_of_a_running_job(tmp_path):
    """A tuning of many minutes writes nothing to its request's folder; old and over the limit, it is still kept."""
    cache, jobs = OutputCache(tmp_path, max_bytes=500, max_age_s=100, keep_recent_s=0), Jobs()
    cache.in_use = jobs.folders
    folders = [cache.jobs / name for name in ("running", "done")]
    for folder in folders:
        folder.mkdir()
        (folder / "out.mp4").write_bytes(b"x" * 1000)
        touch(folder, 1000)
    job = jobs.start("s", Job(total=4, folder=folders[0]))
    assert cache.clean(now=5000) == [folders[1]] and folders[0].exists()  # expired and too big, yet running
    jobs.finish("s", job)
    assert cache.clean(now=5000) == [folders[0]]


def test_output_cache_counts_tunings_and_evicts_the_least_recently_used(tmp_path):
    cache = OutputCache(tmp_path, max_bytes=2500, max_age_s=100, keep_recent_s=0)
    folders = [cache.jobs / "job0", cache.tav / "tuning0", cache.jobs / "job1"]
    for i, folder in enumerate(folders):
        folder.mkdir()
        (folder / "data").write_bytes(b"x" * 1000)
        touch(folder, 1000 + i)
    assert cache.clean(now=1050) == [folders[0]]  # 3000 bytes: the oldest of either kind goes
    os.utime(folders[1], (1060, 1060))  # the tuning reused: now the most recently used
    (folders[2] / "more").write_bytes(b"x" * 1000)
    touch(folders[2], 1002)
    assert cache.clean(now=1070) == [folders[2]] and folders[1].exists()
    assert cache.clean(now=1161) == [folders[1]]  # expired


def test_output_cache_counts_gradios_copies_once_and_spares_running_requests(tmp_path):
    """Gradio's copies of uploads and outputs count towards the size, an upload linked into a request folder once;
    a request still writing (a sweep's cells; its folder older than any) is not deleted to make room."""
    cache = OutputCache(tmp_path, max_bytes=2500, max_age_s=10_000, gradio=tmp_path / "gradio", keep_recent_s=60)
    upload = tmp_path / "gradio" / "abc" / "in.mp4"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"x" * 1000)
    request = cache.jobs / "job0"
    (request / "cells").mkdir(parents=True)
    os.link(upload, request / "in.mp4")
    copy = tmp_path / "gradio" / "def" / "out.mp4"  # an output Gradio copied to serve it
    copy.parent.mkdir()
    copy.write_bytes(b"x" * 1000)
    touch(request, 900)
    touch(upload.parent, 1000)
    touch(copy.parent, 1010)
    assert cache.clean(now=1100) == []  # 2000 bytes on disk, not 3000
    (request / "cells" / "cell0.mp4").write_bytes(b"x" * 3000)
    touch(request / "cells", 1095)  # the sweep writes on
    assert cache.clean(now=1100) == [upload.parent, copy.parent]  # Gradio's idle copies go, oldest first
    assert (request / "in.mp4").exists()  # still over the size, but running
    assert cache.clean(now=1200) == [request]  # idle now


def test_gradios_own_copies_go_only_for_room_and_never_the_pinned_ones(tmp_path):
    """Gradio expires its copies by age itself, sparing the pinned ones (examples, default values): the app's cleaner
    makes room among the others and leaves their age alone."""
    cache = OutputCache(tmp_path, max_bytes=2500, max_age_s=100, gradio=tmp_path / "gradio", keep_recent_s=0)
    folders = [tmp_path / "gradio" / name for name in ("example", "upload", "output")]
    for i, folder in enumerate(folders):
        folder.mkdir(parents=True)
        (folder / "clip.mp4").write_bytes(b"x" * 1000)
        touch(folder, 1000 + i)
    cache.pinned = lambda: [str(folders[0] / "clip.mp4")]
    assert cache.clean(now=5000) == [folders[1]]  # all expired, yet only room is made: the pinned oldest stays
    assert cache.clean(now=5000) == [] and folders[2].exists()


def test_gradios_copies_are_cleaned_only_where_they_are_the_apps(tmp_path, monkeypatch):
    from insv2v.ui import gradio_copies

    config = AppConfig(model="unused", cache_dir=tmp_path / "cache")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache" / "gradio"))
    assert gradio_copies(config) == (tmp_path / "cache" / "gradio").resolve()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "shared-tmp"))  # an operator's: other people's files too
    assert gradio_copies(config) is None


def test_cached_examples_are_kept_apart_by_what_made_them(tmp_path):
    from insv2v.ui import examples_key

    model = tmp_path / "model"
    model.mkdir()
    (model / "weights").write_bytes(b"x")
    config = AppConfig(model=str(model), default_steps=20)
    before = examples_key(config)
    assert before == examples_key(AppConfig(model=str(model), default_steps=20))
    assert examples_key(config) != examples_key(AppConfig(model=str(model), default_steps=1))
    assert examples_key(config) != examples_key(AppConfig(model=str(model), default_steps=20, clip="open_clip:x"))
    (model / "weights").write_bytes(b"yy")  # retrained in place
    assert examples_key(config) != before


def test_user_message_drops_server_paths_and_names_controls():
    text = "/tmp/gradio/abc123/notes.mp4: could not be opened (C:\\x\\y.mp4)"
    assert user_message(text) == "notes.mp4: could not be opened (y.mp4)"
    assert user_message("`guidance_scale` must be in [0, 30]") == "Text CFG must be in [0, 30]"
    assert user_message("video_guidance_scale, lvsc_fraction") == "Video CFG, Correction fraction"
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:127] . DefaultCPUAllocator: can't allocate memory")
    for err in (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), cpu, MemoryError()):
        assert user_message(err).startswith("Out of memory: this machine cannot hold the edit at this size;")


def test_default_model_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("INSV2V_MODEL", raising=False)
    monkeypatch.setattr(loading, "BUNDLED_MODEL", tmp_path / "toy-editor")
    assert default_source("given") == "given"
    assert default_source() is None
    with pytest.raises(SystemExit, match="no model to serve: pass --model"):
        AppConfig.from_env()
    (tmp_path / "toy-editor").mkdir()
    (tmp_path / "toy-editor" / "model_index.json").write_text("{}")
    assert default_source() == str(tmp_path / "toy-editor")
    assert loading.resolve_source(None) == str(tmp_path / "toy-editor")  # the CLI's default too
    monkeypatch.setenv("INSV2V_MODEL", "someone/model")
    assert default_source() == "someone/model"
    with pytest.raises(SystemExit, match="the model '/nope/model' does not exist; pass --model"):
        AppConfig.from_env("/nope/model")  # a mistyped folder stops the server at its start
    monkeypatch.setenv("INSV2V_MAX_SECONDS", "12")
    assert AppConfig.from_env().max_seconds == 12.0
    refused = {
        "INSV2V_MAX_FRAMES": ("0", "INSV2V_MAX_FRAMES must be a whole number above 0, got '0'"),
        "INSV2V_QUEUE_SIZE": ("ten", "INSV2V_QUEUE_SIZE must be a whole number above 0, got 'ten'"),
        "INSV2V_MAX_SECONDS": ("nan", "INSV2V_MAX_SECONDS must be a number above 0, got 'nan'"),
        "INSV2V_CLIP": ("/nope/clip", "INSV2V_CLIP names '/nope/clip', which does not exist"),
        "INSV2V_T2V": ("./nope", "INSV2V_T2V names './nope', which does not exist"),
    }
    for name, (value, words) in refused.items():  # at the server's start, not in every visitor's request
        with monkeypatch.context() as env:
            env.setenv(name, value)
            with pytest.raises(SystemExit, match=re.escape(words)):
                AppConfig.from_env()


def test_gpu_decorator_uses_spaces_when_present(monkeypatch):
    def fn():
        return 1

    monkeypatch.setitem(sys.modules, "spaces", None)  # absent
    assert gpu(60)(fn) is fn
    calls = []
    fake = types.SimpleNamespace(GPU=lambda duration: calls.append(duration) or (lambda f: ("wrapped", f)))
    monkeypatch.setitem(sys.modules, "spaces", fake)
    assert gpu(60)(fn) == ("wrapped", fn) and calls == [60]


def test_job_reports_progress_with_eta_and_cancels(tmp_path):
    pipe = tiny_pipeline()
    clip = make_video(tmp_path / "clip.mp4", num_frames=6, size=(64, 64))
    reports = []
    job = Job(total=4, report=lambda p, desc, unit: reports.append((p, desc)), label="edit")
    recipe = EditRecipe(input=clip, instruction="make it snowy", steps=2, seed=0, frames_per_clip=4, ref_frames=1)
    run_edit(recipe, tmp_path / "a.mp4", pipe, callback_on_step_end=job.callback(lambda s: f"clip {s // 2 + 1}/2"))
    assert [p for p, _ in reports] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert reports[2][1].startswith("edit · clip 2/2 · step 3/4 · ETA ")
    jobs = Jobs()
    job = jobs.start("session", Job(total=4))  # started before the model loads, so that Cancel reaches that too
    job.check()
    assert jobs.cancel("session") == "running" and jobs.cancel("other") is None
    with pytest.raises(InterruptedError):
        job.check()  # where no step callback runs: after loading the model
    with pytest.raises(InterruptedError):
        run_edit(recipe, tmp_path / "b.mp4", pipe, callback_on_step_end=job.callback())
    assert job.done == 1 and not (tmp_path / "b.mp4").exists()


def test_a_cancel_in_the_same_clock_tick_as_its_run_still_comes_after_it(monkeypatch):
    monkeypatch.setattr(serving.time, "monotonic", lambda: 1.0)  # a coarse clock: every reading the same
    jobs = Jobs()
    jobs.submit("s")
    assert jobs.cancel("s") == "waiting" and jobs.start("s", Job(total=4)).cancelled


def test_a_cancel_pressed_while_a_request_waits_stops_it_as_it_starts_and_no_later_one():
    jobs = Jobs()
    jobs.submit("s")  # the button's submit event, before the queued work
    assert jobs.cancel("s") == "waiting"
    with pytest.raises(InterruptedError):
        jobs.start("s", Job(total=4)).check()
    assert not jobs.start("other", Job(total=4)).cancelled  # another session's request is not touched
    jobs.submit("s")  # submitted after that Cancel: runs
    first = jobs.start("s", Job(total=4))
    first.check()
    jobs.finish("s", first)
    assert jobs.cancel("s") is None  # nothing running or waiting, though a chained second half may follow...
    assert jobs.start("s", Job(total=4)).cancelled  # ...and then does not run
    jobs.submit("s")  # Compare: InsV2V, then Tune-A-Video queued behind it
    jobs.finish("s", jobs.start("s", Job(total=4)), more=True)
    assert jobs.cancel("s") == "waiting"  # said as for a request in the queue...
    assert jobs.start("s", Job(total=4)).cancelled  # ...and the second half does not run
    jobs.submit("s")
    insv2v = jobs.start("s", Job(total=4))
    assert jobs.cancel("s") == "running" and insv2v.cancelled  # pressed during InsV2V's last step, which finished
    jobs.finish("s", insv2v, more=True)
    assert jobs.start("s", Job(total=4)).cancelled  # the Cancel still reaches the second half
    jobs.forget("s")  # its tab closed: nothing of it is kept, so a session of that name starts afresh
    assert not jobs.start("s", Job(total=4)).cancelled


def test_a_tabs_cancel_reaches_that_tabs_work_only_and_a_closed_session_forgets_every_tab():
    import gradio as gr

    from insv2v.ui.controls import session_of

    request = gr.Request(session_hash="s")
    edit, sweep = session_of(request, "edit"), session_of(request, "sweep")
    jobs = Jobs()
    sweeping = jobs.start(sweep, Job(total=4))
    assert jobs.cancel(edit) is None and not sweeping.cancelled  # the Edit tab's Cancel: nothing of the Sweep's
    jobs.submit(edit)
    assert jobs.knows("s") and not jobs.knows("other")
    jobs.finish(sweep, sweeping)
    jobs.forget("s")  # the browser tab closed: both tabs' keys go
    assert not jobs.knows("s")


def test_a_cancel_pressed_after_a_request_ended_does_not_stop_the_next_example(app):
    """An example cached on first use runs without the buttons' submit event; a Cancel pressed earlier, when
    nothing ran, stopped it as it started."""
    import gradio as gr

    from insv2v.ui.edit_tab import examples, make_example_handler

    jobs = app[1].studio.jobs
    jobs.submit("late/edit")  # the Edit tab's work in session "late" (controls.session_of)
    jobs.finish("late/edit", jobs.start("late/edit", Job(total=4)))
    assert jobs.cancel("late/edit") is None  # pressed after the edit ended
    video, instruction = examples()[0]
    output, *_, status = make_example_handler(app[1].studio)(
        video, instruction, request=gr.Request(session_hash="late")
    )
    assert probe(output).num_frames > 0 and status.startswith("Edited")


def disk_full_on(monkeypatch, failing) -> None:
    """Closing an edit's output whose path `failing(path)` holds fails as on a full disk (a writer that fails removes
    its own temporary file); the others close as they would."""
    from insv2v import editing

    close = editing._Sink.close

    def closing(sink, ok):
        if failing(sink.path):
            close(sink, False)
            raise OSError("disk full")
        close(sink, ok)

    monkeypatch.setattr(editing._Sink, "close", closing)


SMALL_EDIT = dict(instruction="make it snowy", steps=1, seed=0, frames_per_clip=4, ref_frames=1)


def test_a_failed_output_leaves_no_temporary_file_and_keeps_what_was_there(tmp_path, monkeypatch):
    from insv2v import editing

    clip = make_video(tmp_path / "clip.mp4", num_frames=6, size=(64, 64))
    out = tmp_path / "out" / "edit.mp4"
    out.parent.mkdir()
    out.write_bytes(b"an earlier edit")
    disk_full_on(monkeypatch, lambda path: path == out)  # the edit's own file fails; the side-by-side view is next
    recipe = EditRecipe(input=clip, **SMALL_EDIT)
    with pytest.raises(OSError, match="disk full"):
        run_edit(recipe, out, tiny_pipeline(), side_by_side_view=True)
    assert sorted(p.name for p in out.parent.iterdir()) == ["edit.mp4"] and out.read_bytes() == b"an earlier edit"
    monkeypatch.undo()
    monkeypatch.setattr(editing, "file_sha256", lambda path: (_ for _ in ()).throw(FileNotFoundError(path)))
    with pytest.raises(FileNotFoundError):  # the input gone by the end of the edit: its recipe cannot be made
        run_edit(recipe, out, tiny_pipeline(), side_by_side_view=True)
    assert sorted(p.name for p in out.parent.iterdir()) == ["edit.mp4"] and out.read_bytes() == b"an earlier edit"


def test_a_side_by_side_view_that_fails_leaves_the_edit_and_its_recipe_matching(tmp_path, monkeypatch):
    clip = make_video(tmp_path / "clip.mp4", num_frames=6, size=(64, 64))
    out = tmp_path / "edit.mp4"
    disk_full_on(monkeypatch, lambda path: path != out)
    with pytest.raises(OSError, match="disk full"):
        run_edit(EditRecipe(input=clip, **SMALL_EDIT), out, tiny_pipeline(), side_by_side_view=True)
    written = json.loads((tmp_path / "edit.json").read_text())
    assert written["_meta"]["video"] == "edit.mp4" and probe(out).num_frames == written["_meta"]["num_frames"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "edit.json", "edit.mp4"]


def test_a_recipe_that_cannot_be_written_leaves_nothing_half_written(tmp_path):
    (tmp_path / "r.json").mkdir()  # a folder in the way
    with pytest.raises(OSError):
        EditRecipe(input="/srv/x.mp4", instruction="make it snowy").save(tmp_path / "r.json", meta={})
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"] and (tmp_path / "r.json").is_dir()
    EditRecipe(input="/srv/x.mp4", instruction="make it snowy").save(tmp_path / "s.json", meta={})
    assert (tmp_path / "s.json").stat().st_mode & 0o777 == 0o644 and len(list(tmp_path.iterdir())) == 2


def test_recipe_loads_back_into_the_controls(tmp_path):
    path = tmp_path / "r.json"
    recipe = EditRecipe(input="/srv/x.mp4", instruction="make it snowy", text_cfg=9, seed=4, max_frames=8, mc=True)
    recipe.save(path, meta={})
    settings = load_recipe(str(path))
    assert settings["instruction"] == "make it snowy" and "input" not in settings and "model" not in settings
    assert settings["text_cfg"] == 9 and settings["seed"] == 4 and not settings["randomize_seed"]
    assert settings["length"] == 8 and settings["mc"] is True and settings["resolution"] == 0
    path.write_text('{"text_cfg": 3, "evil": 1}')
    with pytest.raises(Exception, match="unknown settings: evil"):
        load_recipe(str(path))
    path.write_text('{"seed": "x", "frames_per_clip": null}')  # each named (as its control), with what the file has
    with pytest.raises(Exception, match=r'seed must be int \| None, got "x"; Frames per clip must be int, got null'):
        load_recipe(str(path))
    table = settings_table(AppConfig(model=str(tmp_path)), EditRecipe(input="", instruction=""))
    path.write_text('{"text_cfg": 25, "stride": 10, "seed": 3000000000, "steps": 20}')  # the CLI takes these
    words = (
        "cannot be run here: Text CFG 25 (this app takes 1 to 20); Seed 3000000000 (this app takes 0 to "
        "2147483647); Frame stride 10 (this app takes 1 to 8)"
    )
    with pytest.raises(Exception, match=re.escape(words)):
        load_recipe(str(path), table)
    path.write_text('{"max_frames": 500}')  # longer than this server edits: cut, as a long selection is
    with pytest.warns(UserWarning, match="This recipe edits 500 frames; this server edits 64 at most."):
        assert load_recipe(str(path), table)["length"] == 64
    path.write_text('{"text_cfg": 3, "fps": 8}')  # the CLI's --fps: no control takes it
    with pytest.warns(UserWarning, match="samples the video at 8 fps, which the app does not"):
        assert load_recipe(str(path))["text_cfg"] == 3


def test_another_heatmap_score_keeps_the_rest_of_the_status():
    cells = [{"text_cfg": t, "video_cfg": 1.0, "path": "x.mp4", "clip_text": c, "warp_error": w}
             for t, c, w in ((4, 0.2, 0.01), (6, 0.3, 0.02))]  # fmt: skip
    data = {"text_cfgs": [4, 6], "video_cfgs": [1.0], "cells": cells,
            "status": ["2 cells of 8 frames in 3.0 s · seed 5 · ", " · cut to 12 frames"]}  # fmt: skip
    _, status = rescore(data, "warp_error")
    assert status.startswith("2 cells of 8 frames in 3.0 s · seed 5 · Best warp error: text CFG 4")
    assert status.endswith(" · cut to 12 frames")


def test_heatmap_outlines_the_best_cell():
    values = np.array([[0.1, 0.2], [0.3, np.nan]])
    image = np.asarray(heatmap([5, 7.5], [1.0, 1.2], values, "clip_text", best=(1, 0)))
    assert image.shape == (56 + 2 * 84 + 8, 84 + 2 * 84 + 8, 3)
    assert tuple(image[56 + 84 + 1, 84 + 1]) == (230, 30, 30)  # the outline's corner


def run_app(args, env, timeout=60):
    return subprocess.Popen(
        [sys.executable, str(REPO / "app.py"), *args], env={**os.environ, **env}, cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def open_page(proc, url: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return urllib.request.urlopen(url, timeout=5).read().decode()
        except (urllib.error.URLError, ConnectionError):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.5)


@pytest.mark.slow  # app.py in a subprocess
def test_a_study_moved_without_its_videos_is_refused_before_serving(tmp_path):
    import shutil

    from study_media import make_study

    built = make_study(tmp_path / "built")
    (tmp_path / "moved").mkdir()
    moved = Path(shutil.copy(built, tmp_path / "moved"))  # the database alone, its videos folder left behind
    proc = run_app(["--study", str(moved)], {"INSV2V_CACHE_DIR": str(tmp_path / "cache")})
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in out
    assert f"{moved}: its videos are not in" in out and "move the database together with that folder" in out


@pytest.mark.slow  # app.py in a subprocess
def test_python_app_py_honours_gradio_server_port(tmp_path):
    from insv2v.testing.tiny import main as save_tiny

    save_tiny([str(tmp_path / "tiny")])
    port = free_port()
    env = {"INSV2V_MODEL": str(tmp_path / "tiny"), "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "INSV2V_CACHE_DIR": str(tmp_path / "cache"), "INSV2V_DATA_DIR": str(tmp_path / "data")}  # fmt: skip
    proc = run_app([], env)
    try:
        assert "InsV2V Studio" in open_page(proc, f"http://127.0.0.1:{port}/")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow  # app.py in a subprocess
def test_python_app_py_alone_serves_the_bundled_toy_editor(tmp_path):
    """A fresh checkout: no model named anywhere, and `python app.py` edits with the shipped toy editor."""
    from gradio_client import Client

    port = free_port()
    env = {"INSV2V_MODEL": "", "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "INSV2V_CACHE_DIR": str(tmp_path / "cache"), "INSV2V_DATA_DIR": str(tmp_path / "data")}  # fmt: skip
    proc = run_app([], env)
    try:
        page = open_page(proc, f"http://127.0.0.1:{port}/")
        assert "toy-editor" in page
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        example = REPO / "assets" / "examples" / "toy_background_7.mp4"
        output, *_, status = edit(client, str(example), "replace the beach with an ocean", length=4)
        assert probe(output).num_frames == 4 and "Edited 4 frames (64x64, 8 fps)" in status
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_controls_start_at_the_models_recommended_settings(tmp_path, monkeypatch):
    from insv2v.testing.tiny import main as save_tiny
    from insv2v.ui import build_demo

    for name in ("GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "model"
    save_tiny([str(folder)])
    (folder / "sampling.json").write_text('{"text_cfg": 4, "lvsc": false}')
    places = dict(cache_dir=tmp_path / "cache", data_dir=tmp_path / "data")
    demo = build_demo(AppConfig(model=str(folder), cache_examples=False, **places))
    values = {getattr(block, "label", None): getattr(block, "value", None) for block in demo.blocks.values()}
    assert (values["Text CFG"], values["Video CFG"]) == (4.0, 1.2)
    assert values["LVSC: correct each clip towards the clip before"] is False  # the model's own default
    assert values["Text CFG values (rows)"] == "1.5, 4, 6.5"  # the sweep's rows: the recommendation and 2.5 either side


def test_a_clip_that_fails_to_load_costs_the_metrics_not_the_edit(tmp_path):
    from insv2v.ui.serving import scorer_or_note

    assert scorer_or_note(AppConfig(model=str(tmp_path), clip=None)) == (None, "")  # none configured: no note
    scorer, note = scorer_or_note(AppConfig(model=str(tmp_path), clip=str(tmp_path / "gone")))
    assert scorer is None and note.startswith("CLIP metrics unavailable: ") and "gone" in note


def test_an_upload_gone_from_the_server_asks_for_it_again(tmp_path):
    from insv2v.ui.serving import check_upload

    words = "clip.mp4 is no longer on this server (uploads expire); upload it again"
    with pytest.raises(ValueError, match=f"^{re.escape(words)}$"):
        check_upload(str(tmp_path / "clip.mp4"), AppConfig(model=str(tmp_path)))


def test_the_servers_limits_reach_its_controls_and_gradio_as_given(tmp_path):
    from insv2v.ui import launch_kwargs

    places = dict(cache_dir=tmp_path / "cache", data_dir=tmp_path / "data")
    config = AppConfig(model=str(tmp_path), max_upload_mb=0.5, default_steps=100, **places)
    assert launch_kwargs(config)["max_file_size"] == 2**19  # bytes: Gradio reads "0.5mb" as a bad unit
    steps = settings_table(config, EditRecipe(input="", instruction=""))["steps"]
    assert (steps.default, steps.maximum) == (100, 100)  # a server that starts at 100 steps lets them be chosen
