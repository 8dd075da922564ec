"""Training the editor on a synthetic dataset (`--data`): the loader's kept pairs, aligned windows, refusals, and short
runs of stages 2d and video that record their data and resume only on it."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from insv2v.cli import main
from insv2v.synth import dataset
from insv2v.synth.clip_filter import PairScores, Thresholds
from insv2v.synth.generate import FPS
from insv2v.synth.prompts import PromptPair
from insv2v.toyworld.world import edit_caption, sample_triplet
from insv2v.train import TrainConfig, load_pairs, train
from insv2v.video import write_video

THRESHOLDS = Thresholds(0.1, 0.1, 0.05, 0.4)
FRAMES = 10  # per pair of the index-coded datasets


def make_dataset(root, pairs: list[tuple[np.ndarray, np.ndarray, PromptPair, bool]]) -> None:
    """A dataset as `insv2v synth generate` writes one: (input frames, edited frames, prompts, kept) per sample, the
    scores of those not kept below the card's directional-similarity threshold."""
    records = []
    for index, (source, target, prompts, kept) in enumerate(pairs):

        def write(folder, source=source, target=target):
            write_video(folder / "input.mp4", source, FPS)
            write_video(folder / "edited.mp4", target, FPS)
            return {"input": "input.mp4", "edited": "edited.mp4"}

        files = dataset.publish_pair(root, index, write)
        record = {"index": index, "id": dataset.pair_id(index), **prompts.to_dict(), "seed": index,
                  "scores": PairScores(0.3, 0.3, 0.2 if kept else 0.0, 0.8).to_dict(), "kept": kept,
                  "files": files}  # fmt: skip
        dataset.append_record(root / dataset.MANIFEST, record)
        records.append(record)
    dataset.write_card(root, {"thresholds": THRESHOLDS.to_dict(), "counts": dataset.counts(records)})


def coded(pair: int, frames: int = FRAMES, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Flat frames that say their index t (red: 8 + 24 t in the input, 255 minus that in the edited video) and their
    pair (blue: 20 + 40 pair in both)."""
    t = 8 + 24 * np.arange(frames)
    source = np.zeros((frames, size, size, 3), np.uint8)
    source[..., 0] = t[:, None, None]
    source[..., 2] = 20 + 40 * pair
    target = source.copy()
    target[..., 0] = 255 - source[..., 0]
    return source, target


def decode(pixels, edited: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(frame indices, pair numbers) of coded frames given as (..., 3, h, w) in [-1, 1]."""
    mean = ((pixels + 1) * 127.5).mean(dim=(-2, -1)).numpy()  # (..., 3)
    red = 255 - mean[..., 0] if edited else mean[..., 0]
    return np.rint((red - 8) / 24).astype(int), np.rint((mean[..., 2] - 20) / 40).astype(int)


@pytest.fixture(scope="module")
def coded_dataset(tmp_path_factory):
    """Five pairs, 1 and 3 rejected by the filter; pair k's instruction is "edit k"."""
    root = tmp_path_factory.mktemp("coded")
    make_dataset(root, [(*coded(k), PromptPair(f"scene {k}", f"edit {k}", f"edited {k}"), k not in (1, 3))
                        for k in range(5)])  # fmt: skip
    return root


def test_the_loader_holds_the_kept_pairs_and_what_the_run_records(coded_dataset):
    named = os.path.relpath(coded_dataset)  # recorded as named, not resolved to this machine's folders
    data = load_pairs(named, frames=4, size=64)
    assert data.instructions == ["edit 0", "edit 2", "edit 4"] and data.captions == ["scene 0", "scene 2", "scene 4"]
    pairs = [data.pair(i) for i in range(len(data))]
    assert all(x.shape == (FRAMES, 64, 64, 3) and x.dtype == np.uint8 for pair in pairs for x in pair)
    record = data.record()
    assert record["dir"] == named and record["thresholds"] == THRESHOLDS.to_dict()
    assert record["counts"]["samples"] == 5 and record["counts"]["kept"] == 3


def test_pairs_are_decoded_when_drawn_and_kept_while_memory_allows(coded_dataset):
    data = load_pairs(str(coded_dataset), frames=4, size=64)
    assert not data.decoded  # loading reads the headers only
    source, target = data.pair(1)
    assert list(data.decoded) == [1] and data.pair(1)[0] is source  # decoded once
    one_pair = source.nbytes + target.nbytes
    data.memory = 2 * one_pair  # room for two pairs: the third is decoded each time it is drawn
    for i in range(len(data)):
        data.pair(i)
    assert sorted(data.decoded) == [0, 1]
    again = data.pair(2)
    np.testing.assert_array_equal(again[0], data.pair(2)[0])
    assert data.pair(2)[0] is not again[0]


@pytest.mark.parametrize("memory", [0, None])  # nothing kept decoded, or everything
def test_video_windows_are_the_same_consecutive_frames_of_both_videos_of_a_kept_pair(coded_dataset, memory):
    data = load_pairs(str(coded_dataset), frames=4, size=64)
    data.memory = data.memory if memory is None else memory
    source, target, instructions = data.clip_pairs(np.random.default_rng(0), 64, frames=4)
    assert source.shape == target.shape == (64, 3, 4, 64, 64)  # (n, c, f, h, w)
    t_in, pair_in = decode(source.transpose(1, 2))  # (n, f)
    t_out, pair_out = decode(target.transpose(1, 2), edited=True)
    assert (t_in == t_out).all() and (pair_in == pair_out).all()
    assert (np.diff(t_in, axis=1) == 1).all()  # consecutive frames
    assert set(t_in[:, 0]) == set(range(FRAMES - 4 + 1))  # every window start is drawn
    assert set(pair_in[:, 0]) == {0, 2, 4} and (pair_in == pair_in[:, :1]).all()
    assert instructions == [f"edit {k}" for k in pair_in[:, 0]]


def test_the_2d_sampler_draws_a_frame_of_a_kept_pair(coded_dataset):
    data = load_pairs(str(coded_dataset), frames=1, size=64)
    source, target, instructions, captions = data.frame_pairs(np.random.default_rng(1), 64)
    assert source.shape == target.shape == (64, 3, 64, 64)
    t_in, pair_in = decode(source)  # (n,)
    t_out, pair_out = decode(target, edited=True)
    assert (t_in == t_out).all() and (pair_in == pair_out).all()  # the input frame and its edited frame
    assert set(pair_in) == {0, 2, 4} and set(t_in) == set(range(FRAMES))
    assert instructions == [f"edit {k}" for k in pair_in] and captions == [f"scene {k}" for k in pair_in]


@pytest.fixture(scope="module")
def toy_prompted_dataset(tmp_path_factory):
    """Coded frames under the toy world's prompts: a colour, a shape, a background and a style edit (pairs 0-3)."""
    root = tmp_path_factory.mktemp("toy-prompted")
    pairs = []
    for k, kind in enumerate(["colour", "shape", "background", "style"]):
        t = sample_triplet(k, kind=kind)
        pairs.append((*coded(k), PromptPair(t.input_caption, t.edit.instruction, t.edited_caption, kind), True))
    make_dataset(root, pairs)
    return root


def test_reversed_draws_run_backwards_with_the_undoing_instruction(toy_prompted_dataset):
    data = load_pairs(str(toy_prompted_dataset), frames=4, size=64, reverse=1.0)
    assert data.record()["reverse"] == {"share": 1.0, "reversible": 3}  # no phrasing undoes a style
    records = dataset.read_manifest(toy_prompted_dataset)
    source, target, instructions, captions = data.frame_pairs(np.random.default_rng(0), 64)
    t_in, pair_in = decode(source, edited=True)  # reversed: the input is the edited frame ...
    t_out, pair_out = decode(target)  # ... and the target the input frame
    style = pair_in == 3  # drawn forwards: decoded backwards, its frame numbers come out wrong
    assert style.any() and (~style).any() and (t_in[~style] == t_out[~style]).all()
    assert (pair_in[~style] == pair_out[~style]).all() and set(pair_in[~style]) == {0, 1, 2}
    for k, instruction, caption in zip(pair_in, instructions, captions, strict=True):
        r = records[k]
        expected = (r["edit"], r["input"]) if k == 3 else (data.undos[k], r["output"])
        assert (instruction, caption) == expected
        assert k == 3 or edit_caption(r["output"], instruction) == r["input"]
    clips, edited, clip_instructions = data.clip_pairs(np.random.default_rng(0), 32, frames=4)
    forwards = np.array([i == records[3]["edit"] for i in clip_instructions])
    t_in, pair_in = decode(clips.transpose(1, 2)[~forwards], edited=True)
    t_out, pair_out = decode(edited.transpose(1, 2)[~forwards])
    assert (t_in == t_out).all() and (pair_in == pair_out).all() and (np.diff(t_in, axis=1) == 1).all()


def test_a_share_of_the_draws_is_reversed_and_none_without_it(toy_prompted_dataset):
    half = load_pairs(str(toy_prompted_dataset), frames=1, size=64, reverse=0.5)
    instructions = half.frame_pairs(np.random.default_rng(2), 400)[2]
    reversible = [i for i in instructions if i != half.instructions[3]]
    backwards = sum(i in half.undos for i in reversible) / len(reversible)
    assert 0.4 < backwards < 0.6  # 0.5 of ~300 draws: 3.5 standard deviations either side
    style_alone = load_pairs(str(toy_prompted_dataset), frames=1, size=64, reverse=0.5, shard=(3, 4))
    assert style_alone.undos == [None] and style_alone.record()["reverse"]["reversible"] == 3  # the whole dataset's
    plain = load_pairs(str(toy_prompted_dataset), frames=1, size=64)
    draws = plain.frame_pairs(np.random.default_rng(2), 400)
    assert set(draws[2]) == set(plain.instructions) and "reverse" not in plain.record()


def test_reversing_needs_pairs_the_toy_grammar_can_undo(tmp_path, coded_dataset):
    with pytest.raises(ValueError, match="it can state none of these pairs' edits backwards"):
        load_pairs(str(coded_dataset), frames=1, size=64, reverse=0.5)
    with pytest.raises(ValueError, match=r"--reverse-pairs is a share from 0 to 1 of the draws of --data's pairs, got "
                       r"0\.5 without --data"):  # fmt: skip
        train(TrainConfig("2d", str(tmp_path / "2d"), reverse_pairs=0.5))
    assert not (tmp_path / "2d").exists()


def test_the_loader_refuses_what_it_cannot_train_on(tmp_path, coded_dataset):
    with pytest.raises(ValueError, match="not a dataset made by `insv2v synth generate`"):
        load_pairs(str(tmp_path), frames=1, size=64)
    none_kept = tmp_path / "none-kept"
    make_dataset(none_kept, [(*coded(0, frames=2), PromptPair("a", "b", "c"), False)])
    with pytest.raises(ValueError, match="none of its 1 samples is kept by the CLIP filter"):
        load_pairs(str(none_kept), frames=1, size=64)
    with pytest.raises(ValueError, match=f"pair 000000 has {FRAMES} frames, fewer than the 11 of a training clip"):
        load_pairs(str(coded_dataset), frames=11, size=64)
    small = tmp_path / "small"
    make_dataset(small, [(*coded(0, frames=2, size=32), PromptPair("a", "b", "c"), True)])
    with pytest.raises(ValueError, match=r"pair 000000 has 32x32 frames; the model takes 64x64 \(the toy world is "
                       r"64x64\)"):  # fmt: skip
        load_pairs(str(small), frames=1, size=64)
    with pytest.raises(ValueError, match="none of its 1 samples is kept"):  # before the model would be built
        train(TrainConfig("video", str(tmp_path / "run"), data_dir=str(none_kept), init_dir=str(tmp_path / "gone")))
    assert not (tmp_path / "run").exists()


def test_a_pair_cut_short_is_named_when_drawn(tmp_path):
    root = tmp_path / "cut"
    make_dataset(root, [(*coded(0, frames=16), PromptPair("a", "b", "c"), True)])
    edited = root / "pairs" / "000000" / "edited.mp4"
    edited.write_bytes(edited.read_bytes()[: int(edited.stat().st_size * 0.9)])  # its header still says 16 frames
    data = load_pairs(str(root), frames=12, size=64)
    with pytest.raises(ValueError, match=r"pair 000000's edited\.mp4 decodes to \d+ frames, fewer than the 12 of a "
                       r"training clip: it is cut short"):  # fmt: skip
        data.clip_pairs(np.random.default_rng(0), 1, 12)


def test_data_is_for_the_editor_stages_and_replaces_the_edit_mix(tmp_path, coded_dataset):
    with pytest.raises(ValueError, match="--data is for stages 2d and video"):
        train(TrainConfig("t2i", str(tmp_path / "t2i"), data_dir=str(coded_dataset)))
    with pytest.raises(ValueError, match="--edit-mix weighs the toy world's edit kinds"):
        train(TrainConfig("2d", str(tmp_path / "2d"), data_dir=str(coded_dataset), edit_mix={"shape": 1.0}))
    assert not (tmp_path / "2d").exists()  # refused before anything is written


@pytest.mark.slow  # trains two stages
def test_2d_and_video_train_on_a_dataset_record_it_and_resume_only_on_it(tmp_path, capsys):
    data = tmp_path / "data"
    pairs = []
    for seed in range(3):
        triplet = sample_triplet(seed)
        prompts = PromptPair(triplet.input_caption, triplet.edit.instruction, triplet.edited_caption)
        pairs.append((*triplet.render(4), prompts, seed != 1))
    make_dataset(data, pairs)
    expected = {"dir": str(data.resolve()), "thresholds": THRESHOLDS.to_dict()}

    # 2d through the command line's flag
    flat = tmp_path / "2d"
    assert main(["train", "2d", str(flat), "--data", str(data), "--steps", "2", "--batch-size", "2"]) == 0
    record = json.loads((flat / "final" / "training.json").read_text())
    assert record["data"]["counts"]["samples"] == 3 and record["data"]["counts"]["kept"] == 2
    assert {k: record["data"][k] for k in expected} == expected and record["config"]["data_dir"] == str(data)
    state = json.loads((flat / "checkpoint" / "state.json").read_text())
    assert (state["step"], state["data_dir"]) == (2, str(data.resolve()))

    video = tmp_path / "video"
    small = {"batch_size": 2, "frames": 3, "init_dir": str(flat / "final"), "warmup": 1}
    final = train(TrainConfig("video", str(video), steps=1, data_dir=str(data), **small))
    assert {k: json.loads((final / "training.json").read_text())["data"][k] for k in expected} == expected

    # Resuming on other data (or none) is refused before anything is written; on the same data it goes on.
    other = tmp_path / "other"
    make_dataset(other, pairs[:1])
    with pytest.raises(ValueError, match=f"was trained on --data {data.resolve()}, not --data {other.resolve()}; "
                       "resume it with the same data"):  # fmt: skip
        train(TrainConfig("video", str(video), steps=2, data_dir=str(other), **small))
    with pytest.raises(ValueError, match=r"not toy-world triplets \(no --data\)"):
        train(TrainConfig("video", str(video), steps=2, **small))
    assert json.loads((video / "config.json").read_text())["data_dir"] == str(data)
    as_it_was = {name: (data / name).read_text() for name in (dataset.MANIFEST, dataset.CARD)}
    assert main(["synth", "filter", str(data), "--sim-dir", "-1", "--sim-0", "-1", "--sim-1", "-1",
                 "--sim-image", "-1"]) == 0  # fmt: skip  # all three kept now: other pairs than the run's two
    with pytest.raises(ValueError, match="its kept pairs changed since this run started"):
        train(TrainConfig("video", str(video), steps=2, data_dir=str(data), **small))
    for name, text in as_it_was.items():  # filtered back as it was: the run goes on
        (data / name).write_text(text)
    train(TrainConfig("video", str(video), steps=2, data_dir=str(data), **{**small, "log_every": 1}))
    assert [json.loads(line)["step"] for line in (video / "log.jsonl").read_text().splitlines()] == [1, 2]
