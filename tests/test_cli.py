"""`insv2v edit` end to end on a tiny random pipeline saved to disk and loaded offline."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from media import make_empty_avi, make_video

from insv2v.cli import main
from insv2v.files import file_sha256
from insv2v.loading import weights_digest
from insv2v.synth.clip_filter import Thresholds
from insv2v.testing.tiny import main as save_tiny
from insv2v.video import probe, read_video

FAST = ["--steps", "1", "--resolution", "32"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    save_tiny([str(folder)])
    return str(folder)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """10 s at 30 fps with an audio track."""
    return make_video(
        tmp_path_factory.mktemp("in") / "clip.mp4", num_frames=300, fps=30, size=(320, 240), audio_burst=2.0
    )


def edit(*args):
    return main(["edit", *map(str, args)])


@pytest.mark.slow  # a ten-second clip end to end
def test_ten_second_clip_keeps_frame_count_fps_aspect_and_audio(model, clip, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    assert edit(clip, "make it snowy", "-o", out, "--model", model, "--side-by-side", "--seed", 7, *FAST) == 0
    info = probe(out)
    assert (info.num_frames, info.fps, info.has_audio) == (300, 30.0, True)
    assert (info.width, info.height) == (40, 32)  # 4:3 kept, sides rounded to multiples of 8
    assert abs(info.duration - 10.0) < 0.05
    sbs = probe(tmp_path / "out_side_by_side.mp4")
    assert (sbs.width, sbs.height, sbs.num_frames) == (80, 32, 300)
    recipe = json.loads((tmp_path / "out.json").read_text())
    assert recipe["seed"] == 7 and recipe["instruction"] == "make it snowy" and recipe["_meta"]["num_frames"] == 300
    assert "wrote" in capsys.readouterr().out


def test_recipe_reproduces_the_edit(model, clip, tmp_path):
    first, again = tmp_path / "first.mp4", tmp_path / "again.mp4"
    args = ["--model", model, "--max-frames", 20, "--stride", 2, "--start", 1.0, "--text-cfg", 5, "--mc", *FAST]
    assert edit(clip, "make it snowy", "-o", first, *args) == 0  # no --seed: drawn and recorded
    recipe = json.loads((tmp_path / "first.json").read_text())
    assert recipe["seed"] is not None and recipe["stride"] == 2 and recipe["mc"] is True
    assert main(["edit", "--recipe", str(tmp_path / "first.json"), "-o", str(again)]) == 0
    assert read_video(first).frames.shape == (20, 32, 40, 3)
    assert first.read_bytes() == again.read_bytes()  # the same file, sound and all


def test_a_recipe_replays_after_its_folder_moves(model, clip, tmp_path, monkeypatch):
    """Files inside the recipe's folder are recorded from there and move with it; files elsewhere by where they are
    (a path from the recipe's folder to them would break when it moves)."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copyfile(clip, project / "in.mp4")
    assert edit(project / "in.mp4", "make it snowy", "-o", project / "out.mp4", "--model", model, *FAST,
                "--max-frames", 4) == 0  # fmt: skip
    recipe = json.loads((project / "out.json").read_text())
    assert recipe["input"] == "in.mp4" and recipe["model"] == str(Path(model).resolve())
    moved = tmp_path / "archive" / "2026" / "project"
    moved.parent.mkdir(parents=True)
    shutil.move(project, moved)
    monkeypatch.chdir(moved)  # replayed from inside the moved folder, as a user would
    assert main(["edit", "--recipe", "out.json", "-o", "again.mp4"]) == 0
    assert (moved / "again.mp4").read_bytes() == (moved / "out.mp4").read_bytes()


def test_a_file_that_is_not_what_the_command_reads_is_named(clip, tmp_path, capsys):
    assert main(["edit", "--recipe", str(clip), "-o", str(tmp_path / "a.mp4")]) == 2  # a video given as the recipe
    assert f"cannot read recipe {clip}: 'utf-8' codec can't decode" in capsys.readouterr().err
    (tmp_path / "notes.json").write_text('{"todo": 1}')
    (tmp_path / "r.json").write_text(json.dumps({"sampling": {}, "edits": {"records": []}}))
    for other, words in ((tmp_path / "notes.json", "is not a record of insv2v eval"), (clip, "can't decode")):
        assert main(["eval", "--toyworld", "--combine", str(tmp_path / "r.json"), str(other)]) == 2
        assert f"cannot combine: {other}" in (err := capsys.readouterr().err) and words in err


def test_running_out_of_memory_is_one_line(model, tmp_path, capsys, monkeypatch):
    from insv2v import editing

    def too_big(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] . DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(editing, "run_edit", too_big)
    good = make_video(tmp_path / "good.mp4", num_frames=4)
    assert edit(good, "make it snowy", "-o", tmp_path / "out.mp4", "--model", model, *FAST) == 2
    err = capsys.readouterr().err.strip()
    assert err.split("\n")[-1].startswith("insv2v: error: out of memory: this machine cannot hold the edit")
    assert "Traceback" not in err


def test_a_seed_torch_cannot_take_is_refused_by_name(model, clip, tmp_path, capsys):
    with pytest.raises(SystemExit):
        edit(clip, "make it snowy", "-o", tmp_path / "a.mp4", "--model", model, "--seed", 2**64)
    assert "--seed: must be between 0 and 2**63 - 1" in capsys.readouterr().err
    (tmp_path / "r.json").write_text(json.dumps({"input": str(clip), "instruction": "x", "seed": 2**64}))
    assert main(["edit", "--recipe", str(tmp_path / "r.json"), "-o", str(tmp_path / "a.mp4"), "--model", model]) == 2
    assert "seed must be between 0 and 2**63 - 1, got 18446744073709551616" in capsys.readouterr().err


def test_a_recipe_runs_again_in_its_precision_and_says_what_differs(model, clip, tmp_path, capsys):
    first, again = tmp_path / "first.mp4", tmp_path / "again.mp4"
    assert edit(clip, "make it snowy", "-o", first, "--model", model, "--max-frames", 4, "--dtype", "bfloat16",
                *FAST) == 0  # fmt: skip
    assert json.loads((tmp_path / "first.json").read_text())["_meta"]["torch_dtype"] == "torch.bfloat16"
    capsys.readouterr()
    assert main(["edit", "--recipe", str(tmp_path / "first.json"), "-o", str(again)]) == 0
    assert first.read_bytes() == again.read_bytes() and "note:" not in capsys.readouterr().err  # bfloat16 again
    moved = tmp_path / "moved.mp4"
    assert main(["edit", "--recipe", str(tmp_path / "first.json"), "-o", str(moved), "--dtype", "float32"]) == 0
    assert "the recipe ran in bfloat16 on cpu, this run in float32 on cpu" in capsys.readouterr().err
    shutil.copyfile(tmp_path / "first.json", tmp_path / "other.json")
    recipe = json.loads((tmp_path / "other.json").read_text())
    recipe["input"] = str(first)  # another video where the recipe's input was
    (tmp_path / "other.json").write_text(json.dumps(recipe))
    assert main(["edit", "--recipe", str(tmp_path / "other.json"), "-o", str(tmp_path / "o.mp4")]) == 0
    assert "first.mp4 is not the file this recipe was made from" in capsys.readouterr().err


def test_a_json_beside_the_output_that_is_not_its_recipe_is_never_replaced(model, clip, tmp_path, capsys):
    args = ["--model", model, "--max-frames", 2, *FAST]
    assert edit(clip, "make it snowy", "-o", tmp_path / "out.mp4", *args) == 0
    recipe = (tmp_path / "out.json").read_bytes()
    assert json.loads(recipe)["_meta"]["video"] == "out.mp4"
    assert edit(clip, "make it snowy", "-o", tmp_path / "out.gif", *args) == 2  # would record to out.json too
    assert "out.json is the recipe of out.mp4; the edit would replace it" in capsys.readouterr().err
    assert (tmp_path / "out.json").read_bytes() == recipe and not (tmp_path / "out.gif").exists()
    assert edit(clip, "make it snowy", "-o", tmp_path / "out.mp4", *args, "--seed", 3) == 0  # its own recipe: replaced
    assert json.loads((tmp_path / "out.json").read_text())["seed"] == 3
    (tmp_path / "notes.json").write_text("my notes")
    assert edit(clip, "make it snowy", "-o", tmp_path / "notes.mp4", *args) == 2
    assert "notes.json exists and is no recipe" in capsys.readouterr().err
    assert (tmp_path / "notes.json").read_text() == "my notes" and not (tmp_path / "notes.mp4").exists()


def test_a_files_remembered_hash_follows_its_contents(tmp_path):
    """The hash is remembered while the file's size and modification time stay; a file rewritten gets a new one."""
    path = tmp_path / "clip.mp4"
    for i, contents in enumerate((b"first", b"second", b"third!")):  # "third!" as long as "second": time tells
        path.write_bytes(contents)
        os.utime(path, ns=(i * 10**9, i * 10**9))
        assert file_sha256(path) == hashlib.sha256(contents).hexdigest() == file_sha256(str(path))


def test_fps_resampling_and_start(model, clip, tmp_path):
    out = tmp_path / "out.mp4"
    assert edit(clip, "make it snowy", "-o", out, "--model", model, "--fps", 10, "--start", 8, *FAST) == 0
    info = probe(out)
    assert info.fps == 10.0 and info.num_frames == 20 and info.has_audio
    assert abs(info.duration - 2.0) < 0.05


def _bad_files(tmp: Path) -> dict[str, Path]:
    text = tmp / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    empty = tmp / "empty.mp4"
    empty.write_bytes(b"")
    good = Path(make_video(tmp / "good.mp4", num_frames=30))
    truncated = tmp / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    huge = make_video(tmp / "huge.mp4", num_frames=1, size=(4352, 4352))
    return {
        "not a video": text,
        "empty": empty,
        "truncated": truncated,
        "no frames": Path(make_empty_avi(tmp / "noframes.avi")),
        "huge": Path(huge),
        "missing": tmp / "missing.mp4",
        "good": good,
    }


@pytest.mark.parametrize(
    "case, extra, words",
    [
        ("not a video", [], "notes.mp4"),
        ("empty", [], "empty"),
        ("truncated", [], "truncated.mp4"),
        ("no frames", [], "noframes.avi"),
        ("huge", [], "huge resolution 4352x4352"),
        ("missing", [], "missing.mp4"),
        ("good", ["--text-cfg", "100"], "--text-cfg must be in [0.0, 30.0], got 100.0"),
        ("good", ["--video-cfg", "-2"], "--video-cfg must be in"),
        ("good", ["--frames-per-clip", "4", "--ref-frames", "4"], "--ref-frames must be in [0, --frames-per-clip)"),
        ("good", ["--frames-per-clip", "100"], "--frames-per-clip must be in [2, 32]"),
        ("good", ["--lvsc-fraction", "2"], "--lvsc-fraction"),
        ("good", ["--start", "100"], "start"),
    ],
)
def test_bad_input_gets_one_line_error_and_keeps_existing_output(model, tmp_path, capsys, case, extra, words):
    files = _bad_files(tmp_path)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier result")
    assert edit(files[case], "make it snowy", "-o", out, "--model", model, *FAST, *extra) == 2
    err = capsys.readouterr().err.strip()
    # The last line is the whole error; before it, at most the model's loading progress (when it loaded here).
    last = err.split("\n")[-1]
    assert last.startswith("insv2v: error: ") and "Traceback" not in err
    assert words in last
    assert out.read_bytes() == b"an earlier result"


def test_no_output_overwrites_the_input(model, tmp_path, capsys):
    """The edit, its side-by-side view and its recipe each go beside `-o`; none may be the input."""
    for name, out, extra in (("clip.mp4", "clip.mp4", []), ("clip_side_by_side.mp4", "clip.mp4", ["--side-by-side"]),
                             ("clip.json", "clip.mp4", [])):  # fmt: skip
        source = tmp_path / name
        shutil.copyfile(make_video(tmp_path / "made.mp4", num_frames=6), source)
        before = source.read_bytes()
        assert edit(source, "make it snowy", "-o", tmp_path / out, "--model", model, *FAST, *extra) == 2
        assert "would overwrite the input" in capsys.readouterr().err and source.read_bytes() == before
    os.link(source, tmp_path / "linked.mp4")  # another name for the same file, as OUT.MP4 is on a case-blind disk
    assert edit(source, "make it snowy", "-o", tmp_path / "linked.mp4", "--model", model, *FAST) == 2
    assert "would overwrite the input" in capsys.readouterr().err and source.read_bytes() == before


OUT_OF_RANGE = [("--fps", "inf"), ("--fps", "0"), ("--resolution", "0"), ("--resolution", "3"),
                ("--resolution", "100000"), ("--steps", "-1"), ("--device", "bogus")]  # fmt: skip


@pytest.mark.parametrize("flag, value", OUT_OF_RANGE)
def test_a_setting_out_of_range_is_refused_naming_its_flag(flag, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        edit(tmp_path / "in.mp4", "make it snowy", "-o", tmp_path / "out.mp4", flag, value)
    assert exit_info.value.code == 2
    assert f"argument {flag}: " in capsys.readouterr().err and not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("value, words", [("1000001", "must be at most 1,000,000, got 1,000,001"), ("1e9", "invalid")])
def test_a_dataset_too_large_to_hold_its_prompts_is_refused_before_anything_is_written(value, words, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # 10**9 toy prompts filled memory before the first sample
        main(["synth", "generate", "--n", value, "--out", str(tmp_path / "data")])
    assert exit_info.value.code == 2 and f"argument --n: {words}" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_eval_refuses_an_offset_outside_the_held_out_scenes(capsys):
    assert main(["eval", "--toyworld", "--seed", "-3"]) == 2  # it measured training scenes
    assert (
        "--seed is an offset into the held-out scenes, 0 to 989900 for these counts; got -3" in capsys.readouterr().err
    )
    assert main(["eval", "--toyworld", "--seed", "989901"]) == 2  # past the end of the split


def test_eval_refuses_kinds_it_would_not_measure_before_loading_a_model(capsys):
    for mode in (["--parts", "temporal"], ["--t2v"], ["--combine", "a.json"]):
        assert main(["eval", "--toyworld", "--model", "no-such-model", "--kinds", "colour", *mode]) == 2
        assert "--kinds chooses among the held-out edits" in capsys.readouterr().err
    assert main(["eval", "--toyworld", "--model", "no-such-model", "--edits", "1", "--kinds", "shape"]) == 2
    assert "the first 1 held-out edits hold none of the kinds shape" in capsys.readouterr().err


def test_eval_refuses_an_output_it_could_not_write_before_measuring(tmp_path, capsys):
    for out, words in ((tmp_path / "missing" / "r.json", "its folder does not exist"), (tmp_path, "is a folder")):
        assert main(["eval", "--toyworld", "--out", str(out)]) == 2
        assert words in capsys.readouterr().err


def test_an_output_path_through_a_file_is_one_line(model, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    good = make_video(tmp_path / "good.mp4", num_frames=6)
    assert edit(good, "make it snowy", "-o", tmp_path / "notes.txt" / "out.mp4", "--model", model, *FAST) == 2
    err = capsys.readouterr().err.strip()
    assert err.split("\n")[-1].startswith("insv2v: error: ") and "Traceback" not in err
    assert f"{tmp_path / 'notes.txt'} is a file, not a folder" in err and (tmp_path / "notes.txt").read_text() == "mine"
    (tmp_path / "made.mp4").mkdir()  # a folder named like a video: refused before the edit, not after it
    assert edit(good, "make it snowy", "-o", tmp_path / "made.mp4", "--model", model, *FAST) == 2
    assert f"output {tmp_path / 'made.mp4'} is a folder; name a file" in capsys.readouterr().err
    for args, words in ((("make it snowy", "-o", tmp_path / "x.avi"), "output must end in .mp4 or .gif"),
                        ((" ", "-o", tmp_path / "x.mp4"), "the instruction is empty")):  # fmt: skip
        assert edit(good, *args, "--model", tmp_path / "missing") == 2  # said before the model would load
        assert words in capsys.readouterr().err


def test_an_instruction_longer_than_the_model_reads_is_said(model, tmp_path, caplog):
    good = make_video(tmp_path / "good.mp4", num_frames=4)
    long = "make the circle red and " * 20 + "make the background a desert"
    assert edit(good, long, "-o", tmp_path / "out.mp4", "--model", model, *FAST) == 0
    assert "is 107 tokens long; the model reads its first 77, the rest has no effect" in caplog.text
    caplog.clear()
    assert edit(good, "make it snowy", "-o", tmp_path / "short.mp4", "--model", model, *FAST) == 0
    assert "tokens long" not in caplog.text


@pytest.mark.parametrize("instruction", ["", "   "])
def test_empty_instruction(model, tmp_path, capsys, instruction):
    good = make_video(tmp_path / "good.mp4", num_frames=10)
    assert edit(good, instruction, "-o", tmp_path / "out.mp4", "--model", model, *FAST) == 2
    assert "instruction is empty" in capsys.readouterr().err


def test_missing_model_folder_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    good = make_video(tmp_path / "good.mp4", num_frames=10)
    assert edit(good, "make it snowy", "-o", tmp_path / "o.mp4", "--model", "someone/not-downloaded") == 2
    err = capsys.readouterr().err
    assert "could not load model 'someone/not-downloaded'" in err and "hf download someone/not-downloaded" in err


def test_model_recommended_guidance_is_the_default_and_flags_override_it(tmp_path, capsys):
    """A model folder's sampling.json sets the default guidance; a flag wins; a malformed file is named."""
    folder = tmp_path / "model"
    save_tiny([str(folder)])
    (folder / "sampling.json").write_text('{"text_cfg": 4}')
    good = make_video(tmp_path / "good.mp4", num_frames=4)
    assert edit(good, "make it snowy", "-o", tmp_path / "a.mp4", "--model", folder, *FAST) == 0
    assert edit(good, "make it snowy", "-o", tmp_path / "b.mp4", "--model", folder, "--text-cfg", 6, *FAST) == 0
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert (a["text_cfg"], a["video_cfg"], b["text_cfg"]) == (4.0, 1.2, 6.0)

    (folder / "sampling.json").write_text('{"text_cfg": 4, "lvsc": false}')  # LVSC: off unless asked for
    for name, flags in (("c", ()), ("d", ("--lvsc",))):
        assert edit(good, "make it snowy", "-o", tmp_path / f"{name}.mp4", "--model", folder, *flags, *FAST) == 0
    c, d = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "cd")
    assert (c["lvsc"], d["lvsc"], c["text_cfg"]) == (False, True, 4.0)
    by_hand = {"input": str(good), "instruction": "make it snowy", "model": str(folder), "steps": 1, "text_cfg": 6,
               "resolution": 32}  # fmt: skip
    (tmp_path / "hand.json").write_text(json.dumps(by_hand))  # what it leaves out is the model's, as with flags
    assert main(["edit", "--recipe", str(tmp_path / "hand.json"), "-o", str(tmp_path / "h.mp4")]) == 0
    h = json.loads((tmp_path / "h.json").read_text())
    assert (h["text_cfg"], h["lvsc"], h["video_cfg"]) == (6, False, 1.2)

    wanted = "text_cfg (a number), video_cfg (a number), lvsc (true or false)"
    for bad in ('{"text_cfg": 4, "cfg": 9}', '{"lvsc": 0}', '{"text_cfg": true}', '{"video_cfg": NaN}'):
        (folder / "sampling.json").write_text(bad)
        assert edit(good, "make it snowy", "-o", tmp_path / "e.mp4", "--model", folder, *FAST) == 2
        assert f"sampling.json must be a JSON object with keys among {wanted}" in capsys.readouterr().err
        assert not (tmp_path / "e.mp4").exists()


def test_toyworld_make_and_train_commands(tmp_path, capsys):
    assert main(["toyworld", "make", str(tmp_path / "tw"), "--n", "2", "--frames", "4", "--split", "heldout"]) == 0
    assert sorted(p.name for p in (tmp_path / "tw" / "0000").iterdir()) == ["input.mp4", "meta.json", "target.mp4"]
    assert main(["train", "clip", str(tmp_path / "clip"), "--steps", "1", "--batch-size", "2", "--calibrate", "6"]) == 0
    final = tmp_path / "clip" / "final"
    assert (final / "model.safetensors").is_file()
    # The data engine's filter scores with the thresholds calibrated for this CLIP, on the pairs asked for.
    calibrated = json.loads((final / "filter_thresholds.json").read_text())
    assert "n=6" in calibrated["how"] and set(calibrated["pass_rates"]) == {"exact", "unedited", "other_scene"}
    assert Thresholds.for_clip(str(final)).to_dict() == calibrated["thresholds"] != Thresholds().to_dict()
    assert main(["toyworld", "make", str(tmp_path / "x"), "--n", "1", "--frames", "1000"]) == 2
    assert "frames must be in [1, 256]" in capsys.readouterr().err


def test_commands_that_write_a_folder_refuse_one_that_holds_anything(tmp_path, capsys):
    """A mistyped folder (a trained model, a dataset, a project) is never written over; a file there is named."""
    kept = tmp_path / "editor"
    kept.mkdir()
    (kept / "README.md").write_text("mine")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "ckpt.pth").write_bytes(b"")
    for command in (["tiny"], ["toyworld", "make"], ["convert", str(tmp_path / "ckpt.pth")]):
        assert main([*command, str(kept)]) == 2
        assert f"{kept} is not empty; name a new or empty folder" in capsys.readouterr().err
        assert main([*command, str(tmp_path / "notes.txt")]) == 2
        assert "notes.txt is a file; name a new or empty folder" in capsys.readouterr().err
    assert [p.name for p in kept.iterdir()] == ["README.md"] and (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(SystemExit):  # python -m insv2v.testing.tiny says the same through its own parser
        save_tiny([str(kept)])
    assert "is not empty" in capsys.readouterr().err
    assert main(["tiny", str(tmp_path / "new")]) == 0 and (tmp_path / "new" / "model_index.json").is_file()


@pytest.mark.slow  # the whole toy-world evaluation
def test_eval_writes_every_row_at_the_sampling_asked_for(tmp_path, capsys):
    """Text CFG from the flag, video CFG from the model's sampling.json; the sample chosen by its offset into the
    held-out split; two samples pooled give the table of both."""
    from insv2v.metrics import psnr
    from insv2v.toyworld.evaluate import EDIT_KINDS
    from insv2v.toyworld.world import HELDOUT_SEEDS, sample_triplet

    model = tmp_path / "model"
    save_tiny([str(model)])
    (model / "sampling.json").write_text('{"text_cfg": 4, "video_cfg": 1.5}')
    out, other = tmp_path / "results.json", tmp_path / "other.json"
    args = ["eval", "--toyworld", "--model", model, "--edits", "5", "--n", "4", "--steps", "1", "--text-cfg", "2.5"]
    assert main([str(a) for a in [*args, "--seed", 7, "--out", out]]) == 0
    results = json.loads(out.read_text())
    assert results["model"] == str(model) and out.read_text().endswith("}\n")
    assert results["weights"] == weights_digest(str(model)) and len(results["weights"]) == 64
    assert results["sampling"] == {"num_inference_steps": 1, "guidance_scale": 2.5, "video_guidance_scale": 1.5}
    records = results["edits"]["records"]
    assert [r["kind"] for r in records] == ["background", "colour", "shape", "style", "background"]
    assert [r["seed"] for r in records] == [7, 8, 9, 10, 11]
    pairs = [sample_triplet(HELDOUT_SEEDS.start + 7 + i, kind=EDIT_KINDS[i % 4]).render(16) for i in range(5)]
    assert [r["psnr_identity"] for r in records] == pytest.approx([psnr(a, b) for a, b in pairs])
    assert records[1]["shape"] in ("circle", "square", "triangle", "cross") and "background" in records[0]
    assert list(results["temporal"]) == ["2-D per frame", "inflated"]
    assert len(results["temporal"]["inflated"]["warp_error"]) == 4  # one value per video
    assert list(results["long"]) == ["LVSC off", "LVSC", "LVSC + MC"]
    table = capsys.readouterr().out
    assert "| LVSC hides clip seams | LVSC + MC | seam score |" in table and "n=2)" in table
    assert "| | LVSC | warp error at the seams |" in table and len(results["long"]["LVSC"]["seam_error"]) == 2
    assert "| edits follow the instruction | background | correct |" in table and "% of 2 (" in table
    colour_only = tmp_path / "colour.json"
    only = ["--seed", 7, "--parts", "edits", "--kinds", "colour", "--out", colour_only]
    assert main([str(a) for a in [*args, *only]]) == 0
    colour_record = json.loads(colour_only.read_text())
    (colour,) = colour_record["edits"]["records"]  # the one colour edit of the five
    assert colour == pytest.approx(records[1], rel=1e-6) and colour_record["kinds"] == ["colour"]
    assert "kinds" not in results  # a record of every kind

    third = tmp_path / "third.json"
    for seed, path in ((100, other), (200, third)):
        assert main([str(a) for a in [*args, "--seed", seed, "--parts", "edits", "--out", path]]) == 0
    assert "temporal" not in json.loads(other.read_text())
    capsys.readouterr()
    assert main(["eval", "--toyworld", "--combine", str(other), str(third)]) == 0
    assert "background | correct |" in capsys.readouterr().out.split("% of 4 (")[0]  # both samples' 2 each
    assert main(["eval", "--toyworld", "--combine", str(out), str(other)]) == 0  # all rows + edits only: edits
    printed = capsys.readouterr()
    assert "left out (not in every result): temporal, long" in printed.err
    assert "background | correct |" in printed.out.split("% of 4 (")[0]  # 2 from each sample
    assert "LVSC" not in printed.out and "inflated" not in printed.out
    timing_only = tmp_path / "timing_only.json"
    timing_only.write_text(json.dumps({k: v for k, v in results.items() if k != "edits"} | {"seed": 300}))
    assert main(["eval", "--toyworld", "--combine", str(other), str(timing_only)]) == 2
    assert "share no rows" in capsys.readouterr().err
    assert main(["eval", "--toyworld", "--combine", str(other), str(other)]) == 2
    assert "overlap" in capsys.readouterr().err
    assert main(["eval", "--toyworld", "--combine", str(other), str(colour_only)]) == 2  # 25 and 50 colour edits
    assert "hold edits of different kinds (background, colour, shape, style; colour)" in capsys.readouterr().err
    videos = {k: v for k, v in results.items() if k != "edits"}  # the temporal rows: scenes 7-10
    (tmp_path / "a.json").write_text(json.dumps(videos))
    (tmp_path / "b.json").write_text(json.dumps(videos | {"seed": 9}))  # scenes 9-12: two measured twice
    assert main(["eval", "--toyworld", "--combine", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    assert "the samples overlap (offsets [7, 9]; the scenes of temporal)" in capsys.readouterr().err  # long: 2 each
    older = json.loads(json.dumps(videos | {"seed": 100}))  # measured before the seams' own error was
    for row in older["long"].values():
        del row["seam_error"]
    (tmp_path / "b.json").write_text(json.dumps(older))
    pooled = tmp_path / "pooled.json"
    both = [str(tmp_path / "a.json"), str(tmp_path / "b.json")]
    assert main(["eval", "--toyworld", "--combine", *both, "--out", str(pooled)]) == 0
    long = json.loads(pooled.read_text())["long"]["LVSC"]  # what both hold, pooled; the newer measure left out
    assert set(long) == {"seam_score", "warp_error"} and len(long["seam_score"]) == 4
    printed = capsys.readouterr()
    assert "| LVSC hides clip seams | LVSC | seam score |" in printed.out and "n=4)" in printed.out
    assert "warp error at the seams" not in printed.out
    assert "left out (not in every result): long seam_error" in printed.err
    assert main(["eval", "--toyworld", "--combine", str(other), str(third), "--out", str(pooled)]) == 0
    assert main(["eval", "--toyworld", "--combine", str(pooled), str(other)]) == 2  # a pooled file's offsets count
    assert "the samples overlap (offsets [100, 200, 100])" in capsys.readouterr().err
    assert json.loads(pooled.read_text())["model"] == str(model)
    elsewhere = tmp_path / "elsewhere.json"  # the same weights in another folder: the same model
    elsewhere.write_text(json.dumps(json.loads(third.read_text()) | {"model": "elsewhere", "seed": 300}))
    assert main(["eval", "--toyworld", "--combine", str(other), str(elsewhere), "--out", str(pooled)]) == 0
    assert json.loads(pooled.read_text())["model"] == str(model)
    retrained = json.loads(elsewhere.read_text()) | {"weights": "0" * 64}  # another editor's edits
    elsewhere.write_text(json.dumps(retrained))
    assert main(["eval", "--toyworld", "--combine", str(other), str(elsewhere)]) == 2
    assert f"measured on models with different weights ({model}, elsewhere)" in capsys.readouterr().err
    elsewhere.write_text(json.dumps({k: v for k, v in retrained.items() if k != "weights"}))  # an older record
    assert main(["eval", "--toyworld", "--combine", str(other), str(elsewhere)]) == 2  # the names tell
    assert f"measured on different models ({model}, elsewhere)" in capsys.readouterr().err


def test_eval_runs_its_models_on_the_cpu_unless_told(monkeypatch, capsys):
    import torch

    import insv2v.synth.t2v

    asked = []

    def load_t2v(source, device):
        asked.append(device)
        raise ValueError("stop here")

    monkeypatch.setattr(insv2v.synth.t2v, "load_t2v", load_t2v)
    assert main(["eval", "--toyworld", "--t2v", "some-model"]) == 2
    assert asked == ["cpu"] and "stop here" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        main(["eval", "--toyworld", "--t2v", "some-model", "--device", "cuda"])
    assert "this machine has no cuda device" in capsys.readouterr().err and asked == ["cpu"]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["generate", "x", "-o", "a.mp4", "--cfg", "nan"], "argument --cfg: must be from 0 to 30, got nan"),
        (["generate", "x", "-o", "a.mp4", "--cfg", "31"], "argument --cfg: must be from 0 to 30, got 31"),
        (["generate", "x", "-o", "a.mp4", "--frames", "65"], "argument --frames: must be at most 64, got 65"),
        (["synth", "generate", "--out", "d", "--n", "1", "--frames", "100"], "must be at most 64, got 100"),
    ],
)
def test_text_to_video_settings_the_model_would_refuse_are_refused_before_it_loads(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and words in capsys.readouterr().err
