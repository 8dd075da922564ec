"""The CLIP filter's scores and thresholds, and the dataset store: kill-safe writes, recovery, re-filtering, export."""

from __future__ import annotations

import dataclasses
import json
import tarfile

import numpy as np
import pytest
import torch

from insv2v.metrics import ClipScorer
from insv2v.synth import dataset
from insv2v.synth.clip_filter import THRESHOLDS_FILE, PairScores, Thresholds, score_pair


def colour_scorer() -> ClipScorer:
    """A 'CLIP' whose image embedding is the mean RGB and whose text embedding names a colour: exact cosines."""
    words = {"red": [1.0, 0, 0], "green": [0, 1.0, 0], "blue": [0, 0, 1.0]}

    def encode_text(texts):
        return torch.tensor([words[t] for t in texts])

    return ClipScorer(lambda x: x.mean(dim=(2, 3)), encode_text, 8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def solid(rgb, frames=3) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (frames, 8, 8, 3)).copy()


def test_scores_are_the_four_cosines_of_the_reference():
    scorer = colour_scorer()
    red, blue = solid((255, 0, 0)), solid((0, 0, 255))
    s = score_pair(scorer, red, blue, "red", "blue")
    assert s.sim_0 == pytest.approx(1.0, abs=1e-5)  # red frames vs "red"
    assert s.sim_1 == pytest.approx(1.0, abs=1e-5)
    assert s.sim_image == pytest.approx(0.0, abs=1e-5)  # red vs blue frames
    assert s.sim_dir == pytest.approx(1.0, abs=1e-5)  # the image moved exactly as the text did
    unedited = score_pair(scorer, red, red, "red", "blue")
    assert unedited.sim_1 == pytest.approx(0.0, abs=1e-5) and unedited.sim_image == pytest.approx(1.0, abs=1e-5)
    assert unedited.failed(Thresholds()) == ["sim_1", "sim_dir"]  # the edit is missing: both scores say so
    assert s.failed(Thresholds()) == ["sim_image"] and s.passes(Thresholds(sim_image=0.0))
    broken = dataclasses.replace(s, sim_dir=float("nan"))  # a score that is not a number passes no threshold
    assert broken.failed(Thresholds(sim_image=0.0)) == ["sim_dir"]


def test_thresholds_come_from_the_clip_folder_and_flags_override(tmp_path):
    assert Thresholds.for_clip(None) == Thresholds(0.2, 0.2, 0.2, 0.5)  # the reference's, for ViT-L/14
    (tmp_path / THRESHOLDS_FILE).write_text(json.dumps({"thresholds": {"sim_0": 0.3, "sim_dir": 0.05}}))
    assert Thresholds.for_clip(str(tmp_path)) == Thresholds(0.3, 0.2, 0.05, 0.5)
    assert Thresholds.for_clip(str(tmp_path), sim_dir=0.1, sim_1=None) == Thresholds(0.3, 0.2, 0.1, 0.5)
    assert Thresholds.for_clip("open_clip:ViT-L-14/openai") == Thresholds()  # not a folder: the reference's
    with pytest.raises(ValueError, match=r"CLIP folder .*nowhere.* does not exist"):  # a typo is not the reference
        Thresholds.for_clip(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="unknown threshold"):
        Thresholds.from_dict({"sim_2": 0.1})
    for bad in (float("nan"), 5.0, None, "0.2"):  # NaN would keep every pair, 5 none
        with pytest.raises(ValueError, match=r"threshold sim_dir must be a number in \[-1, 1\]"):
            Thresholds.from_dict({"sim_dir": bad})


def record(index: int, kept: bool, sim_dir: float = 0.3, kind: str = "colour") -> dict:
    scores = PairScores(0.3, 0.3, sim_dir, 0.8).to_dict()
    return {"index": index, "id": dataset.pair_id(index), "kind": kind, "scores": scores, "kept": kept,
            "files": {"input": f"pairs/{dataset.pair_id(index)}/input.mp4",
                      "edited": f"pairs/{dataset.pair_id(index)}/edited.mp4"}}  # fmt: skip


def publish(root, index):
    def write(folder):
        (folder / "input.mp4").write_bytes(b"in")
        (folder / "edited.mp4").write_bytes(b"out")
        return {"input": "input.mp4", "edited": "edited.mp4"}

    return dataset.publish_pair(root, index, write)


def test_recover_removes_what_a_kill_left_and_keeps_finished_pairs(tmp_path):
    manifest = tmp_path / dataset.MANIFEST
    for i in (0, 1):
        publish(tmp_path, i)
        dataset.append_record(manifest, record(i, True))
    publish(tmp_path, 2)  # killed after the rename, before its line
    (tmp_path / "pairs" / ".tmp-000003").mkdir()  # killed while writing the videos
    with open(manifest, "a") as f:
        f.write(json.dumps(record(4, True))[:25])  # killed in the middle of a line
    done = dataset.recover(tmp_path)
    assert done == {0, 1}
    assert sorted(p.name for p in (tmp_path / "pairs").iterdir()) == ["000000", "000001"]
    assert manifest.read_text().endswith("\n") and len(manifest.read_text().splitlines()) == 2
    assert (tmp_path / "pairs" / "000001" / "edited.mp4").read_bytes() == b"out"


def test_a_sample_whose_videos_are_gone_is_made_again_and_its_new_line_wins(tmp_path):
    manifest = tmp_path / dataset.MANIFEST
    for i in (0, 1):
        publish(tmp_path, i)
        dataset.append_record(manifest, record(i, True))
    (tmp_path / "pairs" / "000001" / "edited.mp4").unlink()  # a copy cut short
    assert dataset.recover(tmp_path) == {0}
    assert sorted(p.name for p in (tmp_path / "pairs").iterdir()) == ["000000"]
    publish(tmp_path, 1)
    dataset.append_record(manifest, record(1, False))
    assert [r["kept"] for r in dataset.read_manifest(tmp_path)] == [True, False]


def test_a_damaged_manifest_line_is_named(tmp_path):
    manifest = tmp_path / dataset.MANIFEST
    dataset.append_record(manifest, record(0, True))
    with open(manifest, "a") as f:
        f.write('{"index": 1, oops}\n')
    dataset.append_record(manifest, record(2, True))
    with pytest.raises(ValueError, match=r"manifest\.jsonl line 2 is not a JSON record"):
        dataset.read_manifest(tmp_path)
    manifest.write_text(json.dumps({"id": "000000"}) + "\n")
    with pytest.raises(ValueError, match="line 1 is not a sample's record"):
        dataset.read_manifest(tmp_path)
    manifest.write_text(json.dumps({"index": 6}) + "\n")  # a record that the readers would trip over
    with pytest.raises(ValueError, match=r"line 1 is not a sample's record \(no scores, kept, files\)"):
        dataset.read_manifest(tmp_path)
    manifest.write_text(json.dumps({**record(0, True), "scores": {"sim_0": "high"}}) + "\n")
    with pytest.raises(ValueError, match=r"line 1 is not a sample's record \(scores that are not four numbers"):
        dataset.read_manifest(tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        dataset.read_manifest(tmp_path / "typo")


def test_recover_touches_only_the_samples_a_process_owns(tmp_path):
    publish(tmp_path, 2)
    publish(tmp_path, 3)  # neither has a line: another process may be writing one of them right now
    dataset.recover(tmp_path, owns=lambda i: i % 2 == 0)
    assert sorted(p.name for p in (tmp_path / "pairs").iterdir()) == ["000003"]


def test_parts_merge_in_index_order_and_refilter_changes_only_kept(tmp_path):
    for i in (1, 3):
        dataset.append_record(tmp_path / "manifest.part1.jsonl", record(i, True, sim_dir=0.1 * i))
    for i in (0, 2):
        dataset.append_record(tmp_path / "manifest.part0.jsonl", record(i, True, sim_dir=0.1 * i))
    counts = dataset.refilter(tmp_path, Thresholds(sim_dir=0.15))  # merges the parts too
    assert [p.name for p in dataset.manifest_files(tmp_path)] == [dataset.MANIFEST]
    merged = dataset.read_manifest(tmp_path)
    assert [r["index"] for r in merged] == [0, 1, 2, 3]
    assert [r["kept"] for r in merged] == [False, False, True, True]
    assert counts["samples"] == 4 and counts["kept"] == 2
    card = dataset.read_card(tmp_path)
    assert card["thresholds"]["sim_dir"] == 0.15 and "kept 2" in (tmp_path / "README.md").read_text()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no finished samples"):
        dataset.refilter(tmp_path / "empty", Thresholds())
    with pytest.raises(ValueError, match="is not a folder"):
        dataset.refilter(tmp_path / "missing", Thresholds())


def test_the_filter_keeps_each_prompts_best_passing_samples_by_directional_similarity(tmp_path):
    """InstructPix2Pix's selection: of a prompt's samples that pass, the M of the highest sim_dir (ties: earlier)."""
    sims = {0: 0.5, 1: 0.9, 2: 0.1, 3: 0.7, 4: 0.3, 5: 0.3, 6: 0.4}  # prompt 0: samples 0-3, 1: 4-5, 2: 6
    for i, sim in sims.items():  # the same text for every prompt: prompts are lines of prompts.jsonl, not texts
        r = {**record(i, True, sim_dir=sim), "prompt": 0 if i < 4 else 1 if i < 6 else 2, "input": "a", "output": "b"}
        dataset.append_record(tmp_path / dataset.MANIFEST, r)
    records = dataset.read_manifest(tmp_path)
    floor = Thresholds(sim_dir=0.2)  # sample 2 fails it
    assert dataset.kept_under(records, floor) == [True, True, False, True, True, True, True]
    assert dataset.kept_under(records, floor, top_per_prompt=2) == [False, True, False, True, True, True, True]
    assert dataset.kept_under(records, floor, top_per_prompt=1) == [False, True, False, False, True, False, True]
    counts = dataset.refilter(tmp_path, floor, top_per_prompt=1)
    assert counts["kept"] == 3 and [r["kept"] for r in dataset.read_manifest(tmp_path)] == [0, 1, 0, 0, 1, 0, 1]
    assert dataset.read_card(tmp_path)["top_per_prompt"] == 1
    assert "at most 1 kept per prompt" in (tmp_path / "README.md").read_text()
    dataset.refilter(tmp_path, floor)  # no limit: the thresholds alone again
    assert dataset.read_card(tmp_path)["top_per_prompt"] is None
    assert sum(r["kept"] for r in dataset.read_manifest(tmp_path)) == 6
    old = [record(i, True, sim_dir=0.5) for i in range(3)]  # records from before samples per prompt: one each
    assert dataset.kept_under(old, floor, top_per_prompt=1) == [True, True, True]


def test_counts_per_kind_and_the_judge():
    records = [record(0, True), record(1, False, kind="shape"), record(2, True, kind="shape")]
    records[0]["judge"] = {"edit_right": True}
    records[1]["judge"] = {"edit_right": True}
    records[2]["judge"] = {"edit_right": False}
    c = dataset.counts(records)
    assert c["samples"] == 3 and c["kept"] == 2
    assert c["by_kind"] == {"colour": {"samples": 1, "kept": 1}, "shape": {"samples": 2, "kept": 1}}
    assert c["judge"] == {"judged": 3, "right": 2, "kept_right": 1, "kept": 2}


def test_webdataset_export_holds_the_kept_pairs(tmp_path):
    root = tmp_path / "data"
    for i, kept in enumerate((True, False, True)):
        r = record(i, kept)
        r["files"] = publish(root, i)
        dataset.append_record(root / dataset.MANIFEST, r)
    shards = dataset.export_webdataset(root, tmp_path / "shards", shard_size=1)
    assert [s.name for s in shards] == ["shard-000000.tar", "shard-000001.tar"]
    with tarfile.open(shards[1]) as tar:
        assert tar.getnames() == ["000002.input.mp4", "000002.edited.mp4", "000002.json"]
        assert json.loads(tar.extractfile("000002.json").read())["index"] == 2
        assert tar.extractfile("000002.edited.mp4").read() == b"out"


def test_an_export_with_nothing_to_export_keeps_the_earlier_one(tmp_path):
    root, shards = tmp_path / "data", tmp_path / "shards"
    for i, kept in enumerate((True, False)):
        r = record(i, kept)
        r["files"] = publish(root, i)
        dataset.append_record(root / dataset.MANIFEST, r)
    (earlier,) = dataset.export_webdataset(root, shards)
    dataset.refilter(root, Thresholds(sim_dir=0.9))  # now none is kept
    with pytest.raises(ValueError, match=r"no kept pairs to export \(2 samples, none kept"):
        dataset.export_webdataset(root, shards)
    with pytest.raises(ValueError, match="is not a folder"):
        dataset.export_webdataset(tmp_path / "typo", shards)
    assert earlier.is_file()
    for own in (root / dataset.MANIFEST, root / dataset.CARD, root / "pairs" / "000000" / "x.tar"):
        with pytest.raises(ValueError, match="dataset's"):
            dataset.check_not_own_file(root, own)
    dataset.check_not_own_file(root, root / "report.json")  # a new file beside them is fine


def test_export_refuses_files_outside_the_dataset(tmp_path):
    root = tmp_path / "data"
    (tmp_path / "secret.txt").write_text("private")
    r = record(0, True)
    r["files"] = {"input": "../secret.txt", "edited": "../secret.txt"}
    root.mkdir()
    dataset.append_record(root / dataset.MANIFEST, r)
    with pytest.raises(ValueError, match="names files outside the dataset"):
        dataset.export_webdataset(root, tmp_path / "shards")
    assert not (tmp_path / "shards").exists()
    from insv2v.toyworld.synthetic import rejudge

    with pytest.raises(ValueError, match="names files outside the dataset"):  # nor does the judge read them
        rejudge(root)
