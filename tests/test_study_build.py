"""Building a blind study from saved method outputs (the layout `insv2v eval --toyworld --baseline tav
--save-outputs` writes), running the methods on items without outputs (tiny random models), and the report of its
ratings: random served names, the `files` table as the only link, uniform videos, balanced sides, gold items."""

import json
import re
import shutil
import sqlite3
from collections import Counter
from contextlib import closing
from itertools import combinations
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from insv2v.cli import main
from insv2v.compare import MethodResult
from insv2v.study.build import RunSettings, build_study, read_items
from insv2v.study.report import format_report, report, win_rate_plot, write_csv
from insv2v.study.store import QUESTIONS, StudyStore
from insv2v.tav import TAVSettings
from insv2v.testing.tiny import tiny_pipeline, tiny_t2v_pipeline
from insv2v.toyworld.baseline import METHOD_KEYS, save_outputs
from insv2v.toyworld.world import sample_triplet
from insv2v.video import probe, write_video

METHODS = ["insv2v", "tav", "frame2d"]
ITEMS = 4
SIZE = (64, 48)  # served (width, height)
NAME = re.compile(r"[0-9a-f]{32}\.mp4")
PREFERENCE = ["reference", "insv2v", "frame2d", "tav", "input"]  # a careful rater's taste, best first


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """items.jsonl and videos as save_outputs writes them: 6 input frames at 8 fps, 64x64; Tune-A-Video's edit
    rewritten as its every-2nd-frame output (4 frames at 4 fps, 48x48) and the 2-D model's one frame longer."""
    folder = tmp_path_factory.mktemp("outputs")
    for i in range(ITEMS):
        triplet = sample_triplet(100 + i)
        source, target = triplet.render(7)
        runs = [MethodResult("InsV2V", target[:6], 1.0), MethodResult("2-D per frame", target, 1.0),
                MethodResult("Tune-A-Video", target[:4, 8:56, 8:56], 1.0)]  # fmt: skip
        save_outputs(folder, i, triplet, source[:6], target[:6], runs)
        write_video(folder / f"{i:06d}" / "tav.mp4", target[:8:2, 8:56, 8:56], 4)
    return folder


@pytest.fixture(scope="module")
def study(inputs, tmp_path_factory) -> StudyStore:
    """The study, built once; tests that rate work on a copy (`copy_of`)."""
    out = tmp_path_factory.mktemp("study") / "STUDY.db"
    return StudyStore(build_study(read_items(inputs), METHODS, out, seed=3, size=SIZE))


def copy_of(study: StudyStore, folder: Path) -> StudyStore:
    shutil.copy(study.path, folder / study.path.name)
    shutil.copytree(study.files_dir, folder / study.files_dir.name)
    return StudyStore(folder / study.path.name)


def roles(store: StudyStore) -> dict[str, str]:
    """Served name -> role: the secret mapping, read as only the test (and the report) may."""
    with closing(sqlite3.connect(store.path)) as conn:
        return dict(conn.execute("SELECT name, role FROM files").fetchall())


def test_items_are_read_from_the_layout_save_outputs_writes(inputs):
    items = read_items(inputs)
    assert [item.item for item in items] == [f"{i:06d}" for i in range(ITEMS)]
    assert set(items[0].outputs) == set(METHOD_KEYS.values()) == set(METHODS)
    assert items[0].input == inputs / "000000" / "input.mp4" and items[0].reference == inputs / "000000" / "target.mp4"
    same = read_items(inputs / "items.jsonl")  # the file itself: paths relative to it
    assert same == items


def test_served_names_are_random_and_say_nothing(study, inputs):
    names = sorted(p.name for p in study.files_dir.iterdir())
    # 4 inputs, 4 x 3 outputs, and for the 2 gold items a reference and a copy of the input under its own name
    assert len(names) == ITEMS + ITEMS * len(METHODS) + 2 * 2 == len(set(names))
    assert all(NAME.fullmatch(name) for name in names)
    words = [*METHODS, *METHOD_KEYS, "input", "target", "reference", *(f"{i:06d}" for i in range(ITEMS))]
    assert not [(name, word) for name in names for word in words if word.lower() in name.lower()]
    assert study.files_dir.name == "STUDY_files" and study.files_dir.parent == study.path.parent


def test_the_files_table_is_the_only_link_between_a_file_and_a_method(study, tmp_path):
    store = copy_of(study, tmp_path)
    pid = store.participant("rater")
    store.consent(pid)
    for comparison in store.plan(pid)[:3]:
        store.answer(pid, comparison.id, "text", "A")
    with closing(sqlite3.connect(store.path)) as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert set(tables) == {"meta", "items", "files", "comparisons", "participants", "assignments", "ratings"}
        dump = {t: repr(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in tables if t != "files"}
        assert {role for _, role in conn.execute("SELECT name, role FROM files")} == {*METHODS, "input", "reference"}
    assert all(dump.values())  # every table has rows, so the search below means something
    for table, text in dump.items():
        for word in [*METHODS, *METHOD_KEYS, "tav.mp4", "input.mp4", "target.mp4", str(Path(study.path).parent)]:
            assert word not in text, f"{word!r} appears in table {table}"
    for comparison in store.plan(pid):
        assert {comparison.file_a, comparison.file_b, comparison.input_file} <= set(roles(store))


def test_every_served_video_has_one_size_frame_rate_length_and_no_telling_tag(study):
    files = sorted(study.files_dir.iterdir())
    shapes = {(info.width, info.height, info.fps, info.num_frames, info.has_audio) for info in map(probe, files)}
    assert shapes == {(*SIZE, 8.0, 6, False)}  # the input's 6 frames at 8 fps are the shortest
    tags = set()
    for path in files:
        with av.open(str(path)) as container:
            tags.add(repr((dict(container.metadata), [dict(s.metadata) for s in container.streams])))
    assert len(tags) == 1  # the muxer's fixed tags, the same in every file
    (tag,) = tags
    assert not [word for word in [*METHODS, *METHOD_KEYS, "input", "target"] if word in tag]
    assert study.settings["frames"] == 6 and study.settings["size"] == list(SIZE)


def test_sides_are_balanced_per_method_pair(study):
    with closing(sqlite3.connect(study.path)) as conn:
        rows = conn.execute(
            "SELECT fa.role, fb.role FROM comparisons c JOIN files fa ON fa.name = c.file_a "
            "JOIN files fb ON fb.name = c.file_b WHERE c.gold = 0"
        ).fetchall()
    assert len(rows) == ITEMS * 3
    for pair in combinations(METHODS, 2):
        left = Counter(a for a, b in rows if {a, b} == set(pair))
        assert left == dict.fromkeys(pair, ITEMS // 2), pair  # each method left in 2 of the 4 items
    left, right = Counter(a for a, _ in rows), Counter(b for _, b in rows)
    assert left == right == dict.fromkeys(METHODS, ITEMS)


def test_gold_items_compare_the_unedited_input_with_the_exact_edit(study):
    mapping = roles(study)
    with closing(sqlite3.connect(study.path)) as conn:
        gold = conn.execute("SELECT item, file_a, file_b FROM comparisons WHERE gold = 1").fetchall()
        inputs = dict(conn.execute("SELECT item, input_file FROM items").fetchall())
    assert len(gold) == 2 == study.comparison_count()[1] and study.settings["gold"] == 2
    assert Counter(mapping[a] for _, a, _ in gold) == {"input": 1, "reference": 1}  # the edit left once, right once
    for item, a, b in gold:
        assert {mapping[a], mapping[b]} == {"input", "reference"}
        unedited = a if mapping[a] == "input" else b
        assert unedited != inputs[item]  # a copy under its own name: nothing ties it to the item's input by name
        assert (study.files_dir / unedited).read_bytes() == (study.files_dir / inputs[item]).read_bytes()


def test_a_build_refuses_what_would_lose_or_mislabel_data(inputs, tmp_path):
    items = read_items(inputs)
    existing = tmp_path / "exists.db"
    existing.write_text("ratings")
    with pytest.raises(ValueError, match=r"exists.db exists; a study is never overwritten"):
        build_study(items, METHODS, existing)
    assert existing.read_text() == "ratings" and not (tmp_path / "exists_files").exists()
    with pytest.raises(ValueError, match=r"methods: a pairwise study needs at least 2, got \['insv2v'\]"):
        build_study(items, ["insv2v"], tmp_path / "one.db")
    with pytest.raises(ValueError, match=r"item '000000': no output of sdedit \(it has insv2v, frame2d, tav\)"):
        build_study(items, ["insv2v", "sdedit"], tmp_path / "missing_method.db")
    with pytest.raises(ValueError, match=r"frames: .* has only 6 frames at 8 fps, asked for 9"):
        build_study(items, METHODS, tmp_path / "long.db", frames=9)
    lines = (inputs / "items.jsonl").read_text().splitlines()
    broken = tmp_path / "broken.jsonl"
    line = json.loads(lines[0])
    line = {
        **line,
        "input": str(inputs / line["input"]),
        "reference": None,
        "outputs": {m: str(inputs / f) for m, f in line["outputs"].items()} | {"tav": str(inputs / "gone.mp4")},
    }
    broken.write_text(json.dumps(line) + "\n")
    with pytest.raises(ValueError, match=r"item '000000': tav file .*gone.mp4 not found"):
        build_study(read_items(broken), METHODS, tmp_path / "broken.db")
    twice = tmp_path / "twice.jsonl"
    twice.write_text(lines[0] + "\n" + lines[0] + "\n")
    with pytest.raises(ValueError, match=r"twice\.jsonl:2: item '000000' appears twice"):
        read_items(twice)
    odd = tmp_path / "odd.jsonl"
    for fields, words in (({"input": 5}, r"odd\.jsonl:1: input must be a non-empty string, got 5"),
                          ({"reference": ["x"]}, r"odd\.jsonl:1: reference must be a non-empty string, got \['x'\]"),
                          ({"instruction": " "}, r"odd\.jsonl:1: instruction must be a non-empty string, got ' '"),
                          ({"item": None}, r"odd\.jsonl:1: needs item")):  # fmt: skip
        odd.write_text(json.dumps({"item": 0, "input": "in.mp4", "instruction": "go", **fields}))
        with pytest.raises(ValueError, match=words):
            read_items(odd)
    odd.write_text(json.dumps({"item": 0, "input": "in.mp4", "instruction": "go"}))
    assert read_items(odd)[0].item == "0"  # item 0 is an item
    odd.unlink()
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"item": "x", "input": str(inputs / "000000" / "input.mp4"), "instruction": "go"}))
    with pytest.raises(ValueError, match="item 'x': running tav needs `caption` and `edited_caption`"):
        build_study(read_items(bare), METHODS, tmp_path / "bare.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.jsonl", "broken.jsonl", "exists.db", "twice.jsonl"]


def _choose(mapping: dict[str, str], a: str, b: str, careful: bool) -> str:
    """A careful rater prefers by PREFERENCE; a careless one the left video, and the input when it is shown."""
    if not careful:
        return "A" if mapping[b] != "input" else "B"
    return "A" if PREFERENCE.index(mapping[a]) < PREFERENCE.index(mapping[b]) else "B"


def test_the_report_counts_excludes_careless_raters_and_lays_out_every_number(study, tmp_path):
    store = copy_of(study, tmp_path)
    mapping = roles(store)
    for pid, careful in (("careful1", True), ("careful2", True), ("careless", False)):
        store.consent(store.participant(pid))
        for c in store.plan(pid):
            for question in QUESTIONS:
                assert store.answer(pid, c.id, question, _choose(mapping, c.file_a, c.file_b, careful))
        assert store.completion_code(pid)
    store.participant("arrived_only")

    result = report(store, resamples=200)
    assert result["failed_gold"] == result["excluded"] == ["careless"]
    counts = result["counts"]
    assert (counts["participants"], counts["consented"], counts["completed"], counts["included"]) == (4, 3, 3, 2)
    assert counts["ratings"] == 2 * ITEMS * 3 * len(QUESTIONS)
    first = result["pairs"][0]
    assert first["methods"] == ["insv2v", "tav"]
    row = first["questions"]["text"]
    assert (row["wins"], row["losses"], row["ties"], row["rate"]) == (8, 0, 0, 1.0)
    # two participants, 4 wins each: the sign-flip test over participants can say no more than p = 2/4 (a sign
    # test over the 8 answers said 2/256); Holm over all 3 pairs x 3 questions caps 9 * 1/2 at 1
    assert row["participants"] == 2 and row["p"] == 0.5 and row["p_holm"] == 1.0
    strengths = result["bradley_terry"]["text"]
    assert strengths["insv2v"]["strength"] > strengths["frame2d"]["strength"] > strengths["tav"]["strength"]
    assert result["alpha"]["text"] == 1.0  # the two careful raters agree on every comparison
    # choices by method only: A is chosen exactly where the preferred method was shown on the left
    shown_left = [PREFERENCE.index(mapping[c.file_a]) < PREFERENCE.index(mapping[c.file_b])
                  for pid in ("careful1", "careful2") for c in store.plan(pid) if not c.gold]  # fmt: skip
    assert result["side_bias"]["share_a"] == pytest.approx(sum(shown_left) / len(shown_left))

    kept = report(store, exclude_failed_gold=False, resamples=50)
    assert kept["failed_gold"] == ["careless"] and kept["excluded"] == [] and kept["counts"]["included"] == 3

    text = format_report(result)
    assert "Failed an attention check (excluded): careless." in text
    assert "| insv2v vs tav | 8 | 0 | 0 | 2 | 100% (68%-100%) | 1.00 | 0.500 | 1.000 |" in text  # no spread: Wilson
    assert "Holm's correction runs over all 9 tests" in text
    assert all(words in text for words in QUESTIONS.values())

    write_csv(store, tmp_path / "ratings.csv")
    lines = (tmp_path / "ratings.csv").read_text().splitlines()
    assert lines[0] == "pid,item,comparison_id,gold,method_a,method_b,question,choice,created"
    assert len(lines) == 1 + 3 * len(store.plan("careful1")) * len(QUESTIONS)
    win_rate_plot(result, tmp_path / "plot.png")
    with Image.open(tmp_path / "plot.png") as image:
        assert image.format == "PNG" and image.width == 900 and image.height > 300
        assert np.asarray(image.convert("L")).min() < 100  # something is drawn


def test_the_command_builds_and_reports_and_never_overwrites(inputs, tmp_path, capsys):
    out = tmp_path / "cli.db"
    command = ["study", "build", "--inputs", str(inputs), "--methods", "insv2v,tav,frame2d", "--out", str(out)]
    assert main([*command, "--size", "32x32", "--gold", "1", "--per-participant", "4", "--frames", "5"]) == 0
    assert "12 comparisons and 1 attention checks" in capsys.readouterr().out
    store = StudyStore(out)
    assert store.settings["comparisons_per_participant"] == 4 and len(store.plan(store.participant("p"))) == 5
    assert {(i.width, i.height, i.num_frames) for i in map(probe, store.files_dir.iterdir())} == {(32, 32, 5)}
    assert main(command) == 2
    assert "exists; a study is never overwritten" in capsys.readouterr().err

    files = {name: tmp_path / name for name in ("r.csv", "r.png", "r.json")}
    report_command = ["study", "report", str(out), "--csv", str(files["r.csv"]), "--plot", str(files["r.png"])]
    assert main([*report_command, "--json", str(files["r.json"]), "--resamples", "10"]) == 0  # nothing rated yet
    assert "n/a (nothing decided)" in capsys.readouterr().out
    assert all(path.stat().st_size > 0 for path in files.values())
    assert json.loads(files["r.json"].read_text())["counts"]["participants"] == 1
    assert "NaN" not in files["r.json"].read_text() and "null" in files["r.json"].read_text()  # standard JSON
    assert main(["study", "report", str(tmp_path / "r.csv")]) == 2
    assert "not a study database" in capsys.readouterr().err
    saved = out.read_bytes()
    for flag in ("--json", "--csv", "--plot"):  # a report never writes over the study it reads
        assert main(["study", "report", str(out), flag, str(out)]) == 2
        assert "the study's own file" in capsys.readouterr().err and out.read_bytes() == saved
    assert main(["study", "report", str(out), "--csv", str(tmp_path / "missing" / "r.csv")]) == 2
    assert "r.csv: its folder" in (err := capsys.readouterr().err) and "does not exist" in err  # before any report
    broken = tmp_path / "broken.db"
    shutil.copyfile(out, broken)
    with sqlite3.connect(broken) as conn:
        conn.execute("DELETE FROM meta WHERE key = 'questions'")
    assert main(["study", "report", str(broken)]) == 2
    assert "not a whole study database (its meta lacks questions)" in capsys.readouterr().err


def test_items_without_outputs_have_every_method_run_on_tiny_models(tmp_path):
    tiny_pipeline().save_pretrained(tmp_path / "editor")
    tiny_t2v_pipeline("2d").save_pretrained(tmp_path / "t2i")
    lines = []
    for i in range(2):
        triplet = sample_triplet(7 + i)
        write_video(tmp_path / f"in{i}.mp4", triplet.render(4)[0], 8)
        lines.append({"item": f"v{i}", "input": f"in{i}.mp4", "instruction": triplet.edit.instruction,
                      "caption": triplet.input_caption, "edited_caption": triplet.edited_caption})  # fmt: skip
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    fast_tav = TAVSettings(tune_steps=1, inversion_steps=1, steps=1, frames=2)
    run = RunSettings(model=str(tmp_path / "editor"), tav_model=str(tmp_path / "t2i"), tav_settings=fast_tav,
                      steps=1, device="cpu")  # fmt: skip
    out = build_study(read_items(tmp_path), ["insv2v", "frame2d", "tav"], tmp_path / "S.db", size=(32, 32), run=run)
    store = StudyStore(out)
    assert store.methods() == ["insv2v", "frame2d", "tav"] and store.comparison_count() == (2 * 3, 0)
    made = sorted(p.relative_to(tmp_path / "S_outputs").as_posix() for p in (tmp_path / "S_outputs").rglob("*.mp4"))
    assert made == [f"{i:04d}/{m}.mp4" for i in range(2) for m in ("frame2d", "insv2v", "tav")]
    # Tune-A-Video edits every 2nd frame: 2 frames at 4 fps last as long as the input's 4 at 8 fps
    assert {probe(p).num_frames for p in store.files_dir.iterdir()} == {4}
