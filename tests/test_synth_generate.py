"""Dataset generation end to end on a tiny random text-to-video model: records, resume, a kill at any moment,
two processes under accelerate, re-filtering and export through the CLI, and `insv2v generate`."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel

from insv2v.assets import TOY_CLIP
from insv2v.cli import main
from insv2v.loading import ModelLoadError, weights_digest
from insv2v.synth import dataset
from insv2v.synth.clip_filter import PairScores, Thresholds
from insv2v.synth.generate import GenerateConfig, generate
from insv2v.synth.p2p import P2PSettings
from insv2v.synth.prompts import PromptPair, prompt_source, toy_prompts
from insv2v.synth.t2v import DEFAULT_GUIDANCE, recommended_guidance
from insv2v.testing.tiny import tiny_pipeline, tiny_t2v_pipeline
from insv2v.toyworld.synthetic import toy_judge
from insv2v.train import load_pairs

SMALL = ["--frames", "3", "--steps", "2", "--size", "32"]


@pytest.fixture(scope="module")
def t2v(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("t2v") / "tiny-t2v"
    tiny_t2v_pipeline("motion").save_pretrained(folder)
    return str(folder)


def config(t2v: str, out: Path, n: int, **kw) -> GenerateConfig:
    """64 px frames: the toy judge reads no other size."""
    return GenerateConfig(out_dir=str(out), t2v=t2v, prompts="toy", n=n, seed=5, clip=str(TOY_CLIP), frames=3,
                          steps=2, size=64, **kw)  # fmt: skip


def toy_source(seed: int, split: str = "train"):
    """The toy source as `generate` takes it: its pairs from `start` on (a resumed run's, after those fixed)."""
    return lambda start: toy_prompts(seed, split, start=start)


def check_complete(root: Path, n: int) -> list[dict]:
    """Exactly samples 0..n-1, each once, each with both videos; nothing half-written left."""
    records = dataset.read_manifest(root)
    assert [r["index"] for r in records] == list(range(n))
    lines = (root / dataset.MANIFEST).read_text().splitlines()
    assert len(lines) == n and [p.name for p in dataset.manifest_files(root)] == [dataset.MANIFEST]
    assert sorted(p.name for p in (root / "pairs").iterdir()) == [dataset.pair_id(i) for i in range(n)]
    for r in records:
        for key in ("input", "edited"):
            assert (root / r["files"][key]).stat().st_size > 0
    return records


def test_generate_records_every_sample_and_resumes_without_redoing(t2v, tmp_path, capsys):
    thresholds = Thresholds(-1.0, -1.0, -1.0, -1.0)
    counts = generate(config(t2v, tmp_path, 2, thresholds=thresholds), toy_source(5), toy_judge)
    assert counts["samples"] == 2 and counts["kept"] == 2 and counts["judge"]["judged"] == 2
    assert "kept=2/2" in capsys.readouterr().err  # the progress bar counts the pairs kept of those made
    first = tmp_path / "pairs" / "000000" / "edited.mp4"
    stamp = first.stat().st_mtime_ns
    generate(config(t2v, tmp_path, 3, thresholds=thresholds), toy_source(5), toy_judge)  # one more
    assert "kept=1/1" in capsys.readouterr().err  # of this run's
    records = check_complete(tmp_path, 3)
    assert first.stat().st_mtime_ns == stamp  # finished pairs are never made again
    expected = list(itertools.islice(toy_prompts(5), 3))
    for i, (r, pair) in enumerate(zip(records, expected, strict=True)):
        assert (r["input"], r["edit"], r["output"], r["kind"]) == (pair.input, pair.edit, pair.output, pair.kind)
        assert r["seed"] == 5 + i and r["settings"] == P2PSettings.draw(5 + i).to_dict()
        assert r["kept"] == PairScores(**r["scores"]).passes(thresholds)
        assert set(r["judge"]) >= {"edit_right", "reason"}
    card = dataset.read_card(tmp_path)
    assert card["counts"]["samples"] == 3 and card["thresholds"] == thresholds.to_dict() and card["frames"] == 3


@pytest.mark.slow  # a subprocess killed mid-run, then resumed
def test_a_run_killed_at_any_moment_resumes_to_a_complete_dataset(t2v, tmp_path):
    out = tmp_path / "data"
    command = [sys.executable, "-m", "insv2v.cli", "synth", "generate", "--t2v", t2v, "--clip", str(TOY_CLIP),
               "--n", "6", "--out", str(out), *SMALL]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(dataset.read_manifest(out) if out.exists() else []) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # while it writes pair 2 or later
    proc.wait()
    assert len(dataset.read_manifest(out)) < 6, "the run finished before it could be killed"
    subprocess.run(command, env=env, check=True, capture_output=True)
    records = check_complete(out, 6)
    assert not list((out / "pairs").glob(".tmp-*"))
    assert dataset.read_card(out)["counts"]["samples"] == 6 == len(records)


@pytest.mark.slow  # two processes under accelerate
def test_two_processes_split_the_samples_and_merge_their_manifests(t2v, tmp_path):
    out = tmp_path / "data"
    command = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "insv2v.cli", "synth", "generate",
               "--t2v", t2v, "--clip", str(TOY_CLIP), "--n", "5", "--out", str(out), *SMALL]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    records = check_complete(out, 5)
    one = tmp_path / "one"
    subprocess.run([sys.executable, "-m", "insv2v.cli", "synth", "generate", "--t2v", t2v, "--clip", str(TOY_CLIP),
                    "--n", "5", "--out", str(one), *SMALL], env=env, check=True, capture_output=True)  # fmt: skip
    alone = dataset.read_manifest(one)
    # The same samples, whichever process made them. Under the launcher each process runs one thread
    # (OMP_NUM_THREADS=1), so float sums differ in order; sim_dir, the cosine of a difference of nearly equal
    # embeddings, magnifies that rounding most (measured: 1.6e-4).
    for a, b in zip(records, alone, strict=True):
        assert (a["input"], a["seed"], a["settings"]) == (b["input"], b["seed"], b["settings"])
        assert a["scores"] == pytest.approx(b["scores"], abs=2e-3)


def test_cli_filter_export_and_generate(t2v, tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["synth", "generate", "--t2v", t2v, "--clip", str(TOY_CLIP), "--n", "3", "--out", str(out),
                 "--sim-image", "0", "--sim-0", "-1", "--sim-1", "-1", "--sim-dir", "-1", *SMALL]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "prompts: 3 generated, 3 valid\n" in printed and "3 of 3 samples kept" in printed
    assert main(["synth", "filter", str(out), "--sim-image", "1.01"]) == 2  # no cosine is that large: refused
    assert "threshold sim_image must be a number in [-1, 1]" in capsys.readouterr().err
    assert main(["synth", "filter", str(out), "--sim-dir", "1"]) == 0  # no edit moves exactly as its text
    assert "0 of 3 samples kept" in capsys.readouterr().out
    assert not any(r["kept"] for r in dataset.read_manifest(out))
    assert main(["synth", "filter", str(out), "--sim-image", "0", "--sim-0", "-1", "--sim-1", "-1",
                 "--sim-dir", "-1"]) == 0  # fmt: skip
    assert main(["synth", "export", str(out), "--out", str(tmp_path / "shards"), "--shard-size", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["shard-000000.tar", "shard-000001.tar"]
    exported = {p.name: p.read_bytes() for p in (tmp_path / "shards").iterdir()}
    add = tarfile.TarFile.add

    def full_at_the_third_pair(tar, name, arcname=None, **kwargs):
        if arcname.startswith("000002."):
            raise OSError("disk full")
        add(tar, name, arcname=arcname, **kwargs)

    with pytest.MonkeyPatch.context() as patch:  # an export that fails on its second shard
        patch.setattr(tarfile.TarFile, "add", full_at_the_third_pair)
        assert main(["synth", "export", str(out), "--out", str(tmp_path / "shards"), "--shard-size", "1"]) == 2
    assert "disk full" in capsys.readouterr().err  # the earlier export is whole, nothing of this one is left
    assert {p.name: p.read_bytes() for p in (tmp_path / "shards").iterdir()} == exported
    for inside in (out / "shards", out, out / dataset.PAIRS):
        assert main(["synth", "export", str(out), "--out", str(inside)]) == 2
        assert "export the shards outside the dataset" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("x")
    assert main(["synth", "export", str(out), "--out", str(tmp_path / "a-file")]) == 2
    assert "is a file; name a folder for the shards" in capsys.readouterr().err
    assert main(["synth", "filter", str(tmp_path / "nothing")]) == 2
    assert "nothing is not a folder" in capsys.readouterr().err
    (tmp_path / "photos").mkdir()  # a folder of one's own, not a dataset: nothing is locked or written in it
    for command in (["filter"], ["report", "--rejudge"], ["rescore", "--clip", str(TOY_CLIP)]):
        assert main(["synth", command[0], str(tmp_path / "photos"), *command[1:]]) == 2
        assert "photos holds neither manifest.jsonl nor card.json" in capsys.readouterr().err
    assert not any((tmp_path / "photos").iterdir())
    manifest = (out / dataset.MANIFEST).read_text()
    assert main(["synth", "report", str(out), "--out", str(out / dataset.MANIFEST)]) == 2  # its own file: refused
    assert "one of the dataset's own files" in capsys.readouterr().err
    assert (out / dataset.MANIFEST).read_text() == manifest
    assert main(["synth", "report", str(out), "--rejudge", "--out", str(tmp_path / "missing" / "r.json")]) == 2
    assert "its folder does not exist" in capsys.readouterr().err  # said before judging every pair again
    assert (out / dataset.MANIFEST).read_text() == manifest

    video = tmp_path / "a.mp4"
    assert main(["generate", "a red circle moving right on a beach", "-o", str(video), "--model", t2v,
                 "--frames", "3", "--steps", "2", "--size", "32"]) == 0  # fmt: skip
    assert video.stat().st_size > 0 and "3 frames, 32x32, CFG 9, seed 0" in capsys.readouterr().out
    assert main(["generate", "x", "-o", str(video), "--model", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["generate", " ", "-o", str(tmp_path / "empty.mp4"), "--model", t2v]) == 2
    assert "the caption is empty" in capsys.readouterr().err and not (tmp_path / "empty.mp4").exists()
    (tmp_path / "made.mp4").mkdir()
    for output, words in ((tmp_path / "a.avi", "output must end in .mp4 or .gif"), (tmp_path / "made.mp4", "folder")):
        assert main(["generate", "x", "-o", str(output), "--model", str(tmp_path / "missing")]) == 2
        assert words in capsys.readouterr().err  # before the model loads: the missing one is not reached


def test_a_failed_start_leaves_nothing_and_a_foreign_folder_is_refused(t2v, tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError):
        generate(config(str(tmp_path / "missing-t2v"), tmp_path / "data", 1), toy_source(5))
    left = [p.name for p in (tmp_path / "data").iterdir()]
    assert left == [dataset.LOCK]  # no card nor prompts to block the corrected command
    tiny_pipeline().save_pretrained(tmp_path / "editor")  # an editor, not a text-to-video model: it ran, then failed
    with pytest.raises(ModelLoadError, match="not a text-to-video model: its UNet takes 8 input channels and gives 4"):
        generate(config(str(tmp_path / "editor"), tmp_path / "data", 1), toy_source(5))
    assert [p.name for p in (tmp_path / "data").iterdir()] == [dataset.LOCK]
    fine_only = tiny_t2v_pipeline("2d")  # cross-attention only at the latents' resolution: nothing to blend with
    fine_only.unet = UNet2DConditionModel(**{**fine_only.unet.config, "mid_block_type": None})
    fine_only.save_pretrained(tmp_path / "fine-only")
    with pytest.raises(ValueError, match="local blending reads cross-attention below the latents' resolution"):
        blended = config(str(tmp_path / "fine-only"), tmp_path / "data", 1, local_blend=0.3)
        generate(blended, toy_source(5))
    assert [p.name for p in (tmp_path / "data").iterdir()] == [dataset.LOCK]
    for bad, words in ((dict(size=30), "`height` must be a multiple of 8"), (dict(frames=65), "`num_frames` must be")):
        with pytest.raises(ValueError, match=words):  # refused by the model's checks before the first sample
            generate(dataclasses.replace(config(t2v, tmp_path / "data", 1), **bad), toy_source(5))
        assert [p.name for p in (tmp_path / "data").iterdir()] == [dataset.LOCK]
    models_loaded = []
    monkeypatch.setattr("insv2v.synth.t2v.load_t2v", lambda *a: models_loaded.append(a))
    for spec, words in (("pairs.json", "unknown prompt source 'pairs.json'"), ("gone.jsonl", "gone.jsonl does not")):
        with pytest.raises(ValueError, match=words):  # before the models load and the card ties the folder to it
            generate(config(t2v, tmp_path / "data", 1), lambda start, spec=spec: prompt_source(spec, start=start))
        assert [p.name for p in (tmp_path / "data").iterdir()] == [dataset.LOCK] and not models_loaded
    monkeypatch.undo()
    generate(config(t2v, tmp_path / "data", 1), toy_source(5))
    assert len(dataset.read_manifest(tmp_path / "data")) == 1
    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(ValueError, match="a-file is a file; --out names the dataset's folder"):
        generate(config(t2v, tmp_path / "a-file", 1), toy_source(5))
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "README.md").write_text("mine")
    with pytest.raises(ValueError, match="holds other files and is not a dataset"):
        generate(config(t2v, tmp_path / "project", 1), toy_source(5))
    assert (tmp_path / "project" / "README.md").read_text() == "mine"


def test_prompts_are_on_disk_as_the_source_gives_them(tmp_path):
    """A run killed while a language model writes the prompts keeps those written; a line cut short is dropped."""
    from insv2v.synth.generate import fix_prompts, read_prompts

    def killed(start):
        yield from itertools.islice(toy_prompts(5), 3)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fix_prompts(tmp_path, killed, 5)
    assert read_prompts(tmp_path) == list(itertools.islice(toy_prompts(5), 3))
    with open(tmp_path / dataset.PROMPTS, "a") as f:
        f.write('{"input": "a red ci')  # the kill came mid-line
    assert len(read_prompts(tmp_path)) == 3
    assert fix_prompts(tmp_path, toy_source(5), 5) == list(itertools.islice(toy_prompts(5), 5))
    assert read_prompts(tmp_path) == list(itertools.islice(toy_prompts(5), 5))


def test_a_run_killed_while_its_prompts_are_written_resumes_and_counts_each_prompt_once(t2v, tmp_path):
    """The card is on disk before the prompts, so the folder a kill leaves is a dataset that resumes; a resumed
    source gives the pairs after those fixed and counts only what it reads after them."""
    from insv2v.synth.prompts import PromptStats, prompt_source, write_jsonl

    pairs = list(itertools.islice(toy_prompts(5), 6))
    source = tmp_path / "pairs.jsonl"
    write_jsonl(pairs[:3], source)
    with open(source, "a") as f:  # an invalid line after the third pair
        f.write(json.dumps({"input": "a", "edit": "b", "output": "a"}) + "\n")
    write_jsonl(pairs[3:], tmp_path / "rest.jsonl")
    with open(source, "a") as f:
        f.write((tmp_path / "rest.jsonl").read_text())

    def killed(start):
        yield from itertools.islice(prompt_source(str(source), start=start), 2)
        raise KeyboardInterrupt

    def run(n: int, stats: PromptStats) -> dict:
        def resumed(start):
            return prompt_source(str(source), stats=stats, start=start)

        return generate(dataclasses.replace(config(t2v, root, n), prompts=str(source)), resumed, None, stats.to_dict)

    root = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt):
        generate(dataclasses.replace(config(t2v, root, 3), prompts=str(source)), killed)
    assert run(3, stats := PromptStats())["samples"] == 3 and stats.generated == 1  # the third pair alone
    assert [r["input"] for r in dataset.read_manifest(root)] == [p.input for p in pairs[:3]]
    run(5, stats := PromptStats())
    assert (stats.generated, stats.valid) == (3, 2)  # the invalid line, the fourth and fifth pairs
    assert dataset.read_card(root)["prompt_stats"]["generated"] == 4  # the killed run's two went uncounted
    assert [r["input"] for r in dataset.read_manifest(root)] == [p.input for p in pairs[:5]]
    assert list(itertools.islice(prompt_source("toy", seed=5, start=4), 2)) == pairs[4:6]


def test_a_resumed_runs_prompt_counts_add_to_the_earlier_ones_and_an_old_card_keeps_its_split(t2v, tmp_path):
    from insv2v.synth.generate import add_counts, check_same_run, run_settings

    first = {"generated": 4, "valid": 3, "rejected": {"no_end": 1}, "captions": 3, "gave_up": 0}
    then = {"generated": 3, "valid": 2, "rejected": {"no_end": 1, "too_long": 0}, "captions": 2, "gave_up": 0}
    assert add_counts(first, then) == {"generated": 7, "valid": 5, "rejected": {"no_end": 2, "too_long": 0},
                                       "captions": 5, "gave_up": 0}  # fmt: skip
    made = config(t2v, tmp_path, 1, split="heldout")
    run = {k: v for k, v in run_settings(made).items() if k != "split"}  # a card from before the split was recorded
    card = {"run": run, "command": "insv2v synth generate --prompts toy --split heldout --n 1"}
    check_same_run(card, made)  # resumed as it was made
    with pytest.raises(ValueError, match=r"split: 'heldout' then, 'train' now"):
        check_same_run(card, dataclasses.replace(made, split="train"))


@pytest.mark.parametrize(
    ("command", "split"),
    [
        ("insv2v synth generate --split heldout --n 1", "heldout"),
        ("insv2v synth generate --split=heldout", "heldout"),
        ("insv2v synth generate --prompts 'a --split heldout.jsonl' --n 1", "train"),  # a file's name, not the flag
        ("insv2v synth generate --n 1", "train"),
        ("insv2v synth generate --prompts 'unbalanced --split heldout", "heldout"),  # edited by hand: words
    ],
)
def test_an_old_cards_split_is_read_from_its_command_line(command, split):
    from insv2v.synth.generate import split_in_command

    assert split_in_command(command) == split


def test_manifest_lines_are_json_of_one_sample_each(t2v, tmp_path):
    generate(config(t2v, tmp_path, 1), toy_source(5))
    line = (tmp_path / dataset.MANIFEST).read_text().splitlines()[0]
    record = json.loads(line)
    assert set(record) >= {"index", "id", "input", "edit", "output", "seed", "settings", "scores", "kept", "files"}
    assert "judge" not in record  # no judge was given


def test_resuming_with_other_settings_is_refused(t2v, tmp_path):
    generate(config(t2v, tmp_path, 1), toy_source(5))
    with pytest.raises(ValueError, match=r"other settings \(steps: 2 then, 3 now\)"):
        generate(dataclasses.replace(config(t2v, tmp_path, 2), steps=3), toy_source(5))
    with pytest.raises(ValueError, match=r"other settings \(split: 'train' then, 'heldout' now\)"):
        generate(config(t2v, tmp_path, 2, split="heldout"), toy_source(5, "heldout"))  # no mixed splits
    assert len(dataset.read_manifest(tmp_path)) == 1  # nothing was made or lost


def test_a_resumed_run_keeps_the_dataset_filter_and_applies_it_to_every_sample(t2v, tmp_path):
    out = tmp_path / "data"
    loose = ["--sim-image", "-1", "--sim-0", "-1", "--sim-1", "-1", "--sim-dir", "-1"]
    command = ["synth", "generate", "--t2v", t2v, "--clip", str(TOY_CLIP), "--out", str(out), *SMALL]
    assert main([*command, "--n", "2", *loose]) == 0
    assert main(["synth", "filter", str(out), "--sim-dir", "1"]) == 0  # nothing kept now
    assert main([*command, "--n", "3"]) == 0  # resumed without threshold flags: the dataset's filter goes on
    assert dataset.read_card(out)["thresholds"] == {"sim_0": -1.0, "sim_1": -1.0, "sim_dir": 1.0, "sim_image": -1.0}
    assert [r["kept"] for r in dataset.read_manifest(out)] == [False] * 3
    assert main([*command, "--n", "3", "--sim-dir", "-1"]) == 0  # a flag changes the filter of every sample
    assert [r["kept"] for r in dataset.read_manifest(out)] == [True] * 3


def test_a_prompt_source_that_gives_nothing_leaves_an_empty_dataset_with_its_card(t2v, tmp_path, capsys):
    counts = generate(config(t2v, tmp_path, 2), lambda _start: iter(()))
    assert counts["samples"] == 0 and dataset.read_card(tmp_path)["counts"]["kept"] == 0
    assert "gave 0 prompts of the 2 asked for" in capsys.readouterr().err


def test_one_writer_at_a_time(t2v, tmp_path, capsys):
    generate(config(t2v, tmp_path, 1), toy_source(5))
    before = (tmp_path / dataset.MANIFEST).read_text()
    with dataset.writing(tmp_path):  # a generate run going on
        assert main(["synth", "filter", str(tmp_path), "--sim-dir", "1"]) == 2
        assert "is being written by another run" in capsys.readouterr().err
        assert main(["synth", "report", str(tmp_path), "--rejudge"]) == 2  # it rewrites the manifest too
        assert "is being written by another run" in capsys.readouterr().err
        with pytest.raises(ValueError, match="is being written by another run"):
            generate(config(t2v, tmp_path, 2), toy_source(5))
    assert (tmp_path / dataset.MANIFEST).read_text() == before  # nothing rewritten, nothing lost
    assert main(["synth", "filter", str(tmp_path), "--sim-dir", "1"]) == 0  # the lock went with its run


def test_rescore_scores_every_pair_again_with_another_clip_and_its_thresholds(t2v, tmp_path, capsys):
    from insv2v.metrics import load_clip
    from insv2v.synth.clip_filter import score_pair
    from insv2v.toyworld.models import toy_clip, toy_tokenizer
    from insv2v.video import read_video

    out = tmp_path / "data"
    command = ["synth", "generate", "--t2v", t2v, "--clip", str(TOY_CLIP), "--out", str(out), *SMALL]
    assert main([*command, "--n", "2", "--sim-image", "-1", "--sim-0", "-1", "--sim-1", "-1", "--sim-dir", "-1"]) == 0
    before = dataset.read_manifest(out)
    other = tmp_path / "other-clip"  # a random CLIP: other scores, and no thresholds of its own
    torch.manual_seed(0)
    toy_clip().save_pretrained(other)
    toy_tokenizer().save_pretrained(other)
    assert main(["synth", "rescore", str(out), "--clip", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err and dataset.read_manifest(out) == before
    assert main(["synth", "rescore", str(out), "--clip", str(other), "--sim-image", "-1"]) == 0
    after = dataset.read_manifest(out)
    thresholds = Thresholds(sim_image=-1.0)  # the reference's for a CLIP without its own, the flag on top
    scorer = load_clip(str(other))
    for old, new in zip(before, after, strict=True):
        source, edited = (read_video(path).frames for path in dataset.pair_paths(out, new))
        assert new["scores"] == score_pair(scorer, source, edited, new["input"], new["output"]).to_dict()
        assert new["scores"] != old["scores"] and new["kept"] == PairScores(**new["scores"]).passes(thresholds)
        assert {k: v for k, v in new.items() if k not in ("scores", "kept")} == {
            k: v for k, v in old.items() if k not in ("scores", "kept")}  # fmt: skip
    card = dataset.read_card(out)
    assert card["clip"] == card["run"]["clip"] == str(other) and card["thresholds"] == thresholds.to_dict()
    # Filtering takes the thresholds of the CLIP that scored the pairs, however its folder is written, no other's.
    assert main(["synth", "filter", str(out), "--clip", str(TOY_CLIP)]) == 2
    assert f"scored by the CLIP {other}; thresholds of {TOY_CLIP} belong to its own" in capsys.readouterr().err
    assert main(["synth", "filter", str(out), "--clip", f"{other}/", "--sim-image", "-1"]) == 0
    assert dataset.read_manifest(out) == after and dataset.read_card(out)["thresholds"] == thresholds.to_dict()
    assert card["clip_weights"] == weights_digest(str(other))  # told by its weights, wherever it is named from
    shutil.copytree(other, tmp_path / "elsewhere" / "clip")
    assert main(["synth", "filter", str(out), "--clip", str(tmp_path / "elsewhere" / "clip"), "--sim-image", "-1"]) == 0
    assert main([*command, "--n", "3"]) == 2  # resumed with the CLIP it was made with: no longer this dataset's
    assert "clip:" in capsys.readouterr().err and len(dataset.read_manifest(out)) == 2
    copied = [*command[:5], str(tmp_path / "elsewhere" / "clip"), *command[6:]]
    assert main([*copied, "--n", "3", "--sim-image", "-1"]) == 0  # resumed with a copy of its CLIP: the same one
    assert len(dataset.read_manifest(out)) == 3 and dataset.read_card(out)["clip_weights"] == card["clip_weights"]
    manifest, card = (out / dataset.MANIFEST).read_text(), (out / dataset.CARD).read_text()
    (out / after[1]["files"]["edited"]).write_bytes(b"not a video")  # scoring stops at the second pair
    assert main(["synth", "rescore", str(out), "--clip", str(TOY_CLIP)]) == 2
    assert (out / dataset.MANIFEST).read_text() == manifest and (out / dataset.CARD).read_text() == card


def test_calibrate_writes_the_thresholds_whose_kept_pairs_are_the_judged_right_ones_into_the_clip(
    t2v, tmp_path, capsys
):
    from insv2v.synth.clip_filter import THRESHOLDS_FILE
    from insv2v.toyworld.models import toy_clip, toy_tokenizer

    clip, out = tmp_path / "clip", tmp_path / "data"
    shutil.copytree(TOY_CLIP, clip)  # calibrating writes into the CLIP's folder
    assert main(["synth", "generate", "--t2v", t2v, "--clip", str(clip), "--out", str(out), "--n", "4", "--frames",
                 "2", "--steps", "2", "--size", "64"]) == 0  # fmt: skip
    records = dataset.read_manifest(out)
    best = sorted(records, key=lambda r: r["scores"]["sim_dir"])[2:]  # say the judge found these two right
    for r in records:
        r["judge"] = {**r["judge"], "edit_right": r in best}
    dataset.rewrite_manifest(out, records)
    assert main(["synth", "calibrate", str(out), "--clip", str(clip), "--min-kept", "0.5"]) == 0
    written = json.loads((clip / THRESHOLDS_FILE).read_text())
    thresholds = Thresholds.from_dict(written["thresholds"])
    assert [PairScores(**r["scores"]).passes(thresholds) for r in records] == [r in best for r in records]
    assert written["pass_rates"]["calibration"]["precision"]["k"] == 2 and "--min-kept 0.5" in written["how"]
    assert Thresholds.for_clip(str(clip)) == thresholds  # what the filter now takes for this CLIP
    assert "2 of 4 (50%" in capsys.readouterr().out

    other = tmp_path / "other-clip"  # a CLIP that did not score these pairs: its thresholds would not fit them
    torch.manual_seed(0)
    toy_clip().save_pretrained(other)
    toy_tokenizer().save_pretrained(other)
    for args, message in (([str(out), "--clip", str(other)], "was scored by the CLIP"),
                          ([str(out), "--clip", str(tmp_path / "missing")], "does not exist"),
                          ([str(tmp_path / "missing"), "--clip", str(clip)], "missing")):  # fmt: skip
        assert main(["synth", "calibrate", *args, "--min-kept", "0.5"]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synth", "calibrate", str(out), "--clip", str(clip), "--min-kept", "1.5"])
    assert "must be in (0, 1), got 1.5" in capsys.readouterr().err
    assert not (other / THRESHOLDS_FILE).exists() and json.loads((clip / THRESHOLDS_FILE).read_text()) == written


def test_filter_starts_from_the_thresholds_the_dataset_has(t2v, tmp_path):
    strict = Thresholds(-1.0, -1.0, -1.0, 0.99)
    generate(config(t2v, tmp_path, 2, thresholds=strict), toy_source(5))
    assert main(["synth", "filter", str(tmp_path), "--sim-0", "-0.5"]) == 0
    assert dataset.read_card(tmp_path)["thresholds"] == {**strict.to_dict(), "sim_0": -0.5}  # the rest kept


def test_image_pairs_follow_instructpix2pix_recipe_and_a_dataset_keeps_its_recipe(tmp_path):
    """One-frame pairs from a 2-D text-to-image model with InstructPix2Pix's draws (self-attention only)."""
    t2i = tmp_path / "tiny-t2i"
    tiny_t2v_pipeline("2d").save_pretrained(t2i)
    out = tmp_path / "images"
    image = dataclasses.replace(config(str(t2i), out, 2), frames=1, recipe="image")
    generate(image, toy_source(5))
    records = check_complete(out, 2)
    for i, r in enumerate(records):
        assert r["settings"] == P2PSettings.draw_image(5 + i).to_dict()
        assert r["settings"]["ca_end"] == r["settings"]["sa_end"] and r["settings"]["edit_weight"] == 1.0
    card = dataset.read_card(out)
    assert card["run"]["recipe"] == "image" and card["frames"] == 1
    with pytest.raises(ValueError, match=r"other settings \(recipe: 'image' then, 'video' now\)"):
        generate(dataclasses.replace(image, n=3, recipe="video"), toy_source(5))
    assert len(dataset.read_manifest(out)) == 2


def image_pair_command(tmp_path, out) -> list[str]:
    """`insv2v synth generate` of one-frame pairs from a tiny text-to-image model, seed 5, into `out`."""
    t2i = tmp_path / "tiny-t2i"
    tiny_t2v_pipeline("2d").save_pretrained(t2i)
    return ["synth", "generate", "--t2v", str(t2i), "--clip", str(TOY_CLIP), "--out", str(out), "--recipe", "image",
            "--frames", "1", "--steps", "2", "--size", "32", "--seed", "5"]  # fmt: skip


def test_a_shared_start_is_drawn_into_every_sample_and_fixed_per_dataset(tmp_path, capsys):
    out = tmp_path / "shared"
    args = image_pair_command(tmp_path, out)
    assert main([*args, "--n", "2", "--shared-end", "0.5"]) == 0
    records = check_complete(out, 2)
    for i, r in enumerate(records):  # the recipe's own draws, and the edited half sharing the first half
        assert r["settings"] == {**P2PSettings.draw_image(5 + i).to_dict(), "shared_end": 0.5}
    assert dataset.read_card(out)["run"]["shared_end"] == 0.5
    assert "; the edited sample shares the input's first 50% of steps;" in (out / "README.md").read_text()
    assert main([*args, "--n", "3"]) == 2  # resumed without it: refused, nothing added
    assert "shared_end: 0.5 then, 0.0 now" in capsys.readouterr().err and len(dataset.read_manifest(out)) == 2
    with pytest.raises(SystemExit):
        main([*args, "--n", "2", "--shared-end", "1.5"])
    assert "--shared-end: must be from 0 to 1, got 1.5" in capsys.readouterr().err


def test_a_cfg_range_is_drawn_into_every_sample_and_fixed_per_dataset(tmp_path, capsys):
    out = tmp_path / "low-cfg"
    args = image_pair_command(tmp_path, out)
    assert main([*args, "--n", "2", "--cfg-range", "2", "4"]) == 0
    for i, r in enumerate(check_complete(out, 2)):
        assert r["settings"] == P2PSettings.draw_for("image", 5 + i, (2, 4)).to_dict()
    assert dataset.read_card(out)["run"]["cfg_range"] == [2.0, 4.0]
    assert "drawn per sample by the image recipe, CFG from 2.0 to 4.0;" in (out / "README.md").read_text()
    assert main([*args, "--n", "3", "--cfg-range", "2", "4"]) == 0  # resumed as it was made
    assert len(check_complete(out, 3)) == 3
    assert main([*args, "--n", "4"]) == 2  # resumed with the recipe's: refused, nothing added
    assert "cfg_range: [2.0, 4.0] then, None now" in capsys.readouterr().err and len(dataset.read_manifest(out)) == 3
    assert main([*args, "--n", "2", "--cfg-range", "4", "2", "--out", str(tmp_path / "bad")]) == 2
    assert "a CFG range is LOW HIGH with 0 <= LOW <= HIGH, got (4.0, 2.0)" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_several_samples_per_prompt_each_its_own_seed_and_the_best_of_each_kept(tmp_path, capsys):
    """InstructPix2Pix's way: K samples of each prompt (settings and noise from their own seeds), the filter keeping
    the M of each prompt with the highest directional similarity; the limit re-applied or lifted by `synth filter`."""
    t2i = tmp_path / "tiny-t2i"
    tiny_t2v_pipeline("2d").save_pretrained(t2i)
    out = tmp_path / "best"
    args = ["synth", "generate", "--t2v", str(t2i), "--clip", str(TOY_CLIP), "--out", str(out), "--recipe", "image",
            "--frames", "1", "--steps", "2", "--size", "32", "--seed", "5", "--sim-0", "-1", "--sim-1", "-1",
            "--sim-dir", "-1", "--sim-image", "-1"]  # fmt: skip
    assert main([*args, "--n", "3", "--samples-per-prompt", "2"]) == 2
    assert "n=3 samples do not split into 2 per prompt" in capsys.readouterr().err
    assert main([*args, "--n", "2", "--kind-edit-only"]) == 2  # no shared start to guide the kept shapes in
    assert "kind_edit_only guides the kept shapes while the two videos share their path" in capsys.readouterr().err
    assert not out.exists()
    assert main([*args, "--n", "6", "--samples-per-prompt", "3", "--top-per-prompt", "1"]) == 0
    records = check_complete(out, 6)
    prompts = list(itertools.islice(toy_prompts(5), 2))
    lines = (out / dataset.PROMPTS).read_text().splitlines()
    assert [PromptPair.from_dict(json.loads(line)) for line in lines] == prompts  # one per prompt, not per sample
    for r in records:
        assert r["prompt"] == r["index"] // 3
        pair = prompts[r["index"] // 3]
        assert (r["input"], r["edit"], r["output"]) == (pair.input, pair.edit, pair.output)
        assert r["seed"] == 5 + r["index"] and r["settings"] == P2PSettings.draw_image(5 + r["index"]).to_dict()
    for group in (records[:3], records[3:]):
        best = max(group, key=lambda r: r["scores"]["sim_dir"])
        assert [r["kept"] for r in group] == [r is best for r in group]
    assert len({r["scores"]["sim_dir"] for r in records[:3]}) == 3  # other noise, other pairs
    card = dataset.read_card(out)
    assert card["run"]["samples_per_prompt"] == 3 and card["top_per_prompt"] == 1 and card["counts"]["kept"] == 2
    assert main(["synth", "filter", str(out), "--sim-dir", "-0.5"]) == 0  # the limit stays unless changed
    assert "2 of 6 samples kept" in capsys.readouterr().out
    assert main(["synth", "filter", str(out), "--top-per-prompt", "0"]) == 0  # lifted
    assert "6 of 6 samples kept" in capsys.readouterr().out and dataset.read_card(out)["top_per_prompt"] is None
    assert main([*args, "--n", "8"]) == 2  # one sample per prompt now: another run's settings, refused
    assert "samples_per_prompt: 3 then, 1 now" in capsys.readouterr().err and len(dataset.read_manifest(out)) == 6


def test_a_run_stopped_early_is_filtered_as_it_was_meant_to_be(tmp_path):
    """The filter (thresholds and the limit per prompt) is in the card from the start, not only at the end."""
    t2i = tmp_path / "tiny-t2i"
    tiny_t2v_pipeline("2d").save_pretrained(t2i)

    def judge(*_):
        raise KeyboardInterrupt  # stopped while its first sample is judged

    run = dataclasses.replace(config(str(t2i), tmp_path / "d", 4), frames=1, recipe="image", samples_per_prompt=2,
                              top_per_prompt=1, thresholds=Thresholds(-1.0, -1.0, -1.0, 0.5))  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        generate(run, toy_source(5), judge)
    card = dataset.read_card(tmp_path / "d")
    assert card["top_per_prompt"] == 1 and card["thresholds"] == run.thresholds.to_dict()

    # Stopped after the first prompt's two samples, both passing: training and export take the better one alone.
    judged = []

    def judge_two(*args):
        judged.append(args)
        if len(judged) == 3:
            raise KeyboardInterrupt
        return toy_judge(*args)

    root = tmp_path / "e"
    with pytest.raises(KeyboardInterrupt):
        generate(dataclasses.replace(run, out_dir=str(root), thresholds=Thresholds(-1.0, -1.0, -1.0, -1.0)),
                 toy_source(5), judge_two)  # fmt: skip
    records = dataset.read_manifest(root)
    assert [r["kept"] for r in records] == [True, True]  # the limit is applied to the manifest at the run's end
    best = max(records, key=lambda r: r["scores"]["sim_dir"])["id"]
    assert [r["id"] for r in dataset.filtered_records(root) if r["kept"]] == [best]
    assert load_pairs(str(root), 1, 64).ids == [best]
    dataset.export_webdataset(root, tmp_path / "shards")
    with tarfile.open(tmp_path / "shards" / "shard-000000.tar") as tar:
        assert {name.partition(".")[0] for name in tar.getnames()} == {best}


def test_a_card_from_before_recipes_resumes_as_video(t2v, tmp_path):
    generate(config(t2v, tmp_path, 1), toy_source(5))
    card = dataset.read_card(tmp_path)
    del card["run"]["recipe"]  # as written before the field existed
    (tmp_path / dataset.CARD).write_text(json.dumps(card))
    generate(config(t2v, tmp_path, 2), toy_source(5))
    assert len(dataset.read_manifest(tmp_path)) == 2


def test_local_blending_is_recorded_per_sample_and_per_dataset(t2v, tmp_path, capsys):
    out = tmp_path / "blended"
    args = ["synth", "generate", "--t2v", t2v, "--clip", str(TOY_CLIP), "--out", str(out), *SMALL]
    for threshold in ("0", "1"):  # at 0 every cell passes and nothing is blended; at the peak nothing passes
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--n", "2", "--local-blend", threshold])
        assert exit_info.value.code == 2 and not out.exists()
        assert f"--local-blend: must be in (0, 1), got {threshold}" in capsys.readouterr().err
    assert main([*args, "--n", "2", "--local-blend"]) == 0  # alone: Prompt-to-Prompt's 0.3
    card = dataset.read_card(out)
    assert card["run"]["local_blend"] == 0.3
    assert "local blending at 0.3 of each frame's peak attention" in (out / "README.md").read_text()
    assert all(0 <= r["blend_area"] <= 1 for r in dataset.read_manifest(out))
    assert main([*args, "--n", "3"]) == 2  # resumed without it: another dataset
    assert "local_blend: 0.3 then, None now" in capsys.readouterr().err
    assert len(dataset.read_manifest(out)) == 2
    assert main([*args, "--n", "3", "--diff-blend", "0.3"]) == 2  # the same threshold, another mask: another dataset
    assert "blend_maps: 'attention' then, 'difference' now" in capsys.readouterr().err
    assert len(dataset.read_manifest(out)) == 2


def test_diffedit_blending_is_recorded_and_excludes_attention_blending(t2v, tmp_path, capsys):
    out = tmp_path / "diff"
    args = ["synth", "generate", "--t2v", t2v, "--clip", str(TOY_CLIP), "--out", str(out), *SMALL, "--n", "2"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--diff-blend", "--local-blend"])
    assert exit_info.value.code == 2 and not out.exists()
    assert "--local-blend: not allowed with argument --diff-blend" in capsys.readouterr().err
    assert main([*args, "--diff-blend", "--shared-end", "0.5"]) == 0  # alone: DiffEdit's 0.5
    card = dataset.read_card(out)
    assert (card["run"]["local_blend"], card["run"]["blend_maps"]) == (0.5, "difference")
    readme = (out / "README.md").read_text()
    assert "local blending at 0.5 of each frame's peak difference of the edited caption's noise prediction" in readme
    assert all(0 < r["blend_area"] < 1 for r in dataset.read_manifest(out))  # a mask, not all or nothing


def test_generate_takes_the_guidance_the_model_folder_recommends(t2v, tmp_path, capsys):
    """A text-to-video folder's sampling.json sets `insv2v generate`'s CFG; a flag wins; a malformed file is named."""
    folder = tmp_path / "t2v"
    shutil.copytree(t2v, folder)
    (folder / "sampling.json").write_text('{"guidance_scale": 3}')
    assert recommended_guidance(str(folder)) == 3.0 and recommended_guidance(t2v) == DEFAULT_GUIDANCE
    run = ["generate", "a red circle moving right on a beach", "-o", str(tmp_path / "a.mp4"), "--model", str(folder),
           "--frames", "2", "--steps", "1", "--size", "32"]  # fmt: skip
    assert main(run) == 0 and "CFG 3," in capsys.readouterr().out
    assert main([*run, "--cfg", "5.5"]) == 0 and "CFG 5.5," in capsys.readouterr().out
    for bad in ('{"text_cfg": 4}', '{"guidance_scale": "high"}'):  # an editor's key; not a number
        (folder / "sampling.json").write_text(bad)
        assert main(run) == 2
        err = capsys.readouterr().err
        assert "sampling.json must be a JSON object with keys among guidance_scale (a number)" in err
