"""The study database: plans stable per participant and balanced across them, answers kept once and on disk, safe
under threads racing on the same participant and question, completion codes, and WAL with synchronous FULL."""

import json
import shutil
import sqlite3
import threading
from collections import Counter
from contextlib import closing
from itertools import combinations

import pytest

from insv2v.study.store import CHOICES, QUESTIONS, StudyError, StudyStore, draw_sides, make_plan

METHODS = ("m1", "m2", "m3")
THREADS = 8


def make_store(tmp_path, items: int = 4, gold: int = 1, per_participant: int | None = None, seed: int = 0):
    """A study of `items` items x every pair of METHODS, `gold` attention checks, fake file names (no videos)."""
    files, rows, comparisons = [], [], []
    for i in range(items):
        item = f"item{i}"
        names = {role: f"{role}-{i}.mp4" for role in ("input", *METHODS)}
        files += [(name, item, role) for role, name in names.items()]
        rows.append((item, f"instruction {i}", names["input"]))
        comparisons += [(item, names[a], names[b], False) for a, b in combinations(METHODS, 2)]
    for i in range(gold):
        files += [(f"gold-input-{i}.mp4", f"item{i}", "input"), (f"reference-{i}.mp4", f"item{i}", "reference")]
        comparisons.append((f"item{i}", f"gold-input-{i}.mp4", f"reference-{i}.mp4", True))
    settings = {"seed": seed, "comparisons_per_participant": per_participant}
    return StudyStore.create(tmp_path / "study.db", files_dir="study_files", settings=settings, files=files,
                             items=rows, comparisons=comparisons)  # fmt: skip


def answer_all(store: StudyStore, pid: str, choice: str = "A") -> None:
    for comparison in store.plan(pid):
        for question in store.questions:
            store.answer(pid, comparison.id, question, choice)


def test_plans_are_stable_per_pid_differ_across_pids_and_hold_every_gold_item(tmp_path):
    store = make_store(tmp_path, items=4, gold=2)
    first = store.plan(store.participant("alice"))
    assert store.participant("alice") == "alice" and store.plan("alice") == first  # arriving again changes nothing
    assert StudyStore(store.path).plan("alice") == first  # nor does a restart
    assert len(first) == 4 * 3 + 2 and len({c.id for c in first}) == len(first)
    assert sum(c.gold for c in first) == 2
    bob = store.plan(store.participant("bob"))
    assert {c.id for c in bob} == {c.id for c in first} and [c.id for c in bob] != [c.id for c in first]
    # The order is a function of the pid: the same pid in a fresh study of the same seed gets the same order.
    (tmp_path / "again").mkdir()
    again = make_store(tmp_path / "again", items=4, gold=2)
    assert [c.id for c in again.plan(again.participant("alice"))] == [c.id for c in first]


def test_comparisons_carry_served_names_only(tmp_path):
    store = make_store(tmp_path)
    comparison = store.plan(store.participant("p"))[0]
    assert comparison.instruction.startswith("instruction") and comparison.input_file.startswith("input-")
    assert not hasattr(comparison, "method_a")
    assert store.path_of(comparison.file_a) == store.files_dir / comparison.file_a
    assert store.files_dir == tmp_path / "study_files"
    with pytest.raises(ValueError, match="not a file of this study"):
        store.path_of("../study.db")


def test_plans_spread_comparisons_evenly_across_participants(tmp_path):
    store = make_store(tmp_path, items=4, gold=1, per_participant=5)  # 12 regular comparisons, 5 each
    for k in range(7):
        plan = store.plan(store.participant(f"p{k}"))
        assert len(plan) == 5 + 1 and sum(c.gold for c in plan) == 1
    counts = Counter(c.id for k in range(7) for c in store.plan(f"p{k}") if not c.gold)
    assert sum(counts.values()) == 35 and len(counts) == 12
    assert max(counts.values()) - min(counts.values()) <= 1  # 35 over 12: each rated 2 or 3 times


def test_a_plan_left_unrated_for_an_hour_counts_only_what_it_rated(tmp_path):
    """Balance by ratings: a participant who consented and left holds none of their comparisons back."""
    store = make_store(tmp_path, items=4, gold=0, per_participant=6)  # 12 regular comparisons
    left = {c.id for c in store.plan(store.participant("left"))}
    store.consent("left")
    rated = store.next_comparison("left").id
    store.answer_screen("left", rated, dict.fromkeys(store.questions, "A"))
    busy = {c.id for c in store.plan(store.participant("busy"))}
    assert not left & busy  # "left" may still be rating: the next plan takes the other six
    with closing(sqlite3.connect(store.path)) as conn, conn:
        conn.execute("UPDATE participants SET created = '2000-01-01T00:00:00.000000+00:00' WHERE pid = 'left'")
    late = {c.id for c in store.plan(store.participant("late"))}
    assert left - {rated} <= late  # the five that "left" never rated come first


def test_a_study_with_a_lost_video_or_a_views_folder_it_cannot_write_is_refused_before_serving(tmp_path,
                                                                                             monkeypatch):  # fmt: skip
    store = make_store(tmp_path, items=2, gold=1)  # 2 x 4 files, plus 2 of the gold item
    store.files_dir.mkdir()
    with closing(sqlite3.connect(store.path)) as conn:
        names = [name for (name,) in conn.execute("SELECT name FROM files ORDER BY name")]
    for name in names[1:]:
        (store.files_dir / name).touch()
    with pytest.raises(StudyError, match=rf"1 of its 10 videos are missing from .*study_files \(first: {names[0]}\)"):
        store.check_served()
    (store.files_dir / names[0]).touch()
    assert store.check_served() is store
    monkeypatch.setattr("insv2v.study.store.os.access", lambda path, mode: False)  # (root may write anywhere)
    with pytest.raises(StudyError, match=r"cannot write in .*study_files, where each comparison's video is made"):
        store.check_served()


def test_make_plan_prefers_the_least_assigned_and_is_a_function_of_the_pid():
    assigned = {1: 3, 2: 0, 3: 1, 4: 0, 5: 2}
    plan = make_plan("p", 0, assigned, gold=[9], per_participant=3)
    assert sorted(plan) == [2, 3, 4, 9]  # the two never assigned, then the once assigned, plus the gold
    assert plan == make_plan("p", 0, assigned, gold=[9], per_participant=3)
    orders = {tuple(make_plan(f"p{k}", 0, dict.fromkeys(range(10), 0), [], None)) for k in range(5)}
    assert len(orders) == 5


def test_a_new_store_on_the_same_file_resumes_plan_answers_and_progress(tmp_path):
    store = make_store(tmp_path)
    pid = store.participant("p")
    store.consent(pid)
    first = store.next_comparison(pid)
    store.answer(pid, first.id, "text", "A")
    store.answer(pid, first.id, "structure", "tie")
    assert store.next_comparison(pid) == first  # one question left
    store.answer(pid, first.id, "aesthetic", "B")
    resumed = StudyStore(store.path)
    assert resumed.consented(pid) and resumed.answers(pid, first.id) == {"text": "A", "structure": "tie",
                                                                         "aesthetic": "B"}  # fmt: skip
    assert resumed.progress(pid) == (1, len(store.plan(pid)))
    assert resumed.next_comparison(pid) == store.plan(pid)[1]


def test_answers_are_checked_and_kept_once(tmp_path):
    store = make_store(tmp_path)
    pid = store.participant("p")
    cid = store.plan(pid)[0].id
    with pytest.raises(ValueError, match="has not consented"):
        store.answer(pid, cid, "text", "A")
    store.consent(pid)
    with pytest.raises(ValueError, match="question must be one of text, structure, aesthetic, got 'colour'"):
        store.answer(pid, cid, "colour", "A")
    with pytest.raises(ValueError, match="choice must be one of A, B, tie, got 'left'"):
        store.answer(pid, cid, "text", "left")
    with pytest.raises(ValueError, match="comparison 999 is not in participant 'p'"):
        store.answer(pid, 999, "text", "A")
    with pytest.raises(ValueError, match="unknown participant 'q'"):
        store.answer("q", cid, "text", "A")
    with pytest.raises(ValueError, match="pid must be 1-64 letters"):
        store.participant("../etc")
    assert store.answer(pid, cid, "text", "A") is True
    assert store.answer(pid, cid, "text", "B") is False  # the first answer stands
    assert store.answers(pid, cid) == {"text": "A"}
    # committed when answer returns: a separate plain connection sees the row
    with closing(sqlite3.connect(store.path)) as conn:
        assert conn.execute("SELECT choice FROM ratings").fetchall() == [("A",)]


def test_random_pids_are_new_participants(tmp_path):
    store = make_store(tmp_path)
    a, b = store.participant(), store.participant()
    assert a != b and len(a) == 16 and store.plan(a) and store.plan(b)


def _race(worker, n: int = THREADS) -> list:
    """Run worker(k) in n threads released together; their results, re-raising the first error."""
    barrier, results, errors = threading.Barrier(n), [None] * n, []

    def run(k):
        try:
            barrier.wait()
            results[k] = worker(k)
        except BaseException as err:  # re-raised below, in the main thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_concurrent_answers_to_the_same_and_different_questions_keep_one_row_each(tmp_path):
    store = make_store(tmp_path)
    pid = store.participant("p")
    store.consent(pid)
    plan = store.plan(pid)[:2]
    keys = [(c.id, q) for c in plan for q in QUESTIONS]  # 6 (comparison, question) pairs

    def answer_everything(k):  # every thread answers every key, each with its own choice and start
        order = keys[k % len(keys) :] + keys[: k % len(keys)]
        return [store.answer(pid, cid, q, CHOICES[k % 3]) for cid, q in order]

    recorded = _race(answer_everything)
    assert sum(sum(r) for r in recorded) == len(keys)  # each key recorded by exactly one thread
    with closing(sqlite3.connect(store.path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM ratings").fetchone() == (len(keys),)
        assert conn.execute("SELECT COUNT(DISTINCT comparison_id || question) FROM ratings").fetchone() == (6,)
    assert store.progress(pid) == (2, len(store.plan(pid)))

    # different participants answering at once: every answer lands, once
    for k in range(THREADS):
        store.consent(store.participant(f"t{k}"))
    _race(lambda k: answer_all(store, f"t{k}", CHOICES[k % 3]))
    with closing(sqlite3.connect(store.path)) as conn:
        per_pid = dict(conn.execute("SELECT pid, COUNT(*) FROM ratings GROUP BY pid").fetchall())
    assert per_pid == {"p": 6, **{f"t{k}": len(store.plan(f"t{k}")) * len(QUESTIONS) for k in range(THREADS)}}


def test_first_arrivals_of_one_pid_racing_create_one_participant_and_one_plan(tmp_path):
    store = make_store(tmp_path, items=6, per_participant=4)
    pids = _race(lambda k: store.participant("same"))
    assert pids == ["same"] * THREADS
    plans = _race(lambda k: [c.id for c in store.plan("same")])
    with closing(sqlite3.connect(store.path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM participants").fetchone() == (1,)
        assert conn.execute("SELECT COUNT(*) FROM assignments").fetchone() == (4 + 1,)
    assert all(plan == plans[0] for plan in plans)


def test_the_completion_code_comes_once_everything_is_answered_and_stays(tmp_path):
    store = make_store(tmp_path, items=2, gold=1)
    pid = store.participant("p")
    store.consent(pid)
    plan = store.plan(pid)
    for comparison in plan[:-1]:
        for question in QUESTIONS:
            store.answer(pid, comparison.id, question, "A")
    store.answer(pid, plan[-1].id, "text", "A")
    store.answer(pid, plan[-1].id, "structure", "A")
    assert store.completion_code(pid) is None and store.next_comparison(pid) == plan[-1]
    store.answer(pid, plan[-1].id, "aesthetic", "tie")
    code = store.completion_code(pid)
    assert code and store.completion_code(pid) == code and StudyStore(store.path).completion_code(pid) == code
    assert store.next_comparison(pid) is None and store.progress(pid) == (len(plan), len(plan))
    assert len(set(_race(lambda k: store.completion_code(pid)))) == 1


def test_ratings_join_the_secret_mapping_and_methods_keep_their_order(tmp_path):
    store = make_store(tmp_path, items=2, gold=1)
    assert store.methods() == list(METHODS)
    pid = store.participant("p")
    store.consent(pid)
    answer_all(store, pid, "B")
    ratings = store.ratings()
    assert len(ratings) == len(store.plan(pid)) * 3
    gold = [r for r in ratings if r["gold"]]
    assert {(r["method_a"], r["method_b"]) for r in gold} == {("input", "reference")}
    regular = {frozenset((r["method_a"], r["method_b"])) for r in ratings if not r["gold"]}
    assert regular == {frozenset(pair) for pair in combinations(METHODS, 2)}
    with closing(sqlite3.connect(store.path)) as conn:
        role = dict(conn.execute("SELECT name, role FROM files").fetchall())
    shown = {c.id: (role[c.file_a], role[c.file_b]) for c in store.plan(pid)}
    assert all((r["method_a"], r["method_b"]) == shown[r["comparison_id"]] for r in ratings)  # the sides as seen
    assert set(ratings[0]) == {"pid", "item", "comparison_id", "gold", "method_a", "method_b", "question", "choice",
                               "created"}  # fmt: skip
    assert store.participants()[0]["answered"] == store.participants()[0]["planned"] == len(store.plan(pid))


def test_every_connection_uses_wal_synchronous_full_and_a_long_busy_timeout(tmp_path):
    store = make_store(tmp_path)
    conn = store._connect()
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # 2 = FULL
        assert conn.execute("PRAGMA busy_timeout").fetchone() == (60000,)
        assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    finally:
        conn.close()
    with closing(sqlite3.connect(store.path)) as plain:  # WAL is in the file itself
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_only_a_study_opens_and_none_is_ever_overwritten(tmp_path):
    with pytest.raises(StudyError, match="no study there"):
        StudyStore(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()  # opening never creates a database
    (tmp_path / "text.db").write_text("hello")
    with pytest.raises(StudyError, match="not a study database"):
        StudyStore(tmp_path / "text.db")
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(StudyError, match="not a study database"):
        StudyStore(tmp_path / "empty.db")
    assert (tmp_path / "empty.db").stat().st_size == 0  # untouched
    with closing(sqlite3.connect(tmp_path / "other.db")) as conn:
        conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    with pytest.raises(StudyError, match="no format"):
        StudyStore(tmp_path / "other.db")
    store = make_store(tmp_path)
    for served in ("/", "..", ".", "../elsewhere", "sub/dir", ""):  # the app would serve this folder to visitors
        shutil.copyfile(store.path, tmp_path / "moved.db")
        with closing(sqlite3.connect(tmp_path / "moved.db")) as conn, conn:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'files_dir'", (json.dumps(served),))
        with pytest.raises(StudyError, match="must be one folder name beside it"):
            StudyStore(tmp_path / "moved.db")
        with pytest.raises(StudyError, match="must be one folder name beside it"):  # refused before writing
            StudyStore.create(tmp_path / "new.db", files_dir=served, settings={}, files=[], items=[], comparisons=[])
        assert not (tmp_path / "new.db").exists()
    store.consent(store.participant("p"))
    with pytest.raises(StudyError, match="exists; a study is never overwritten"):
        make_store(tmp_path)
    assert StudyStore(store.path).consented("p")
    assert not [p.name for p in tmp_path.iterdir() if ".part" in p.name]  # nothing left of the refused creation


def test_a_screens_answers_are_stored_together_or_not_at_all(tmp_path):
    store = make_store(tmp_path)
    pid = store.participant("p")
    store.consent(pid)
    first, second = (c.id for c in store.plan(pid)[:2])
    assert store.answer_screen(pid, first, {"text": "A", "structure": "B", "aesthetic": "tie"}) == 3
    assert store.answer_screen(pid, first, {"text": "B", "structure": "B", "aesthetic": "A"}) == 0  # a resubmit
    assert store.answers(pid, first) == {"text": "A", "structure": "B", "aesthetic": "tie"}
    with pytest.raises(ValueError, match="choice must be one of"):  # one bad answer: none of the screen is stored
        store.answer_screen(pid, second, {"text": "A", "structure": "left", "aesthetic": "A"})
    assert store.answers(pid, second) == {}
    assert store.progress(pid)[0] == 1


def test_each_participant_sees_half_the_sides_swapped_independently_of_the_items(tmp_path):
    store = make_store(tmp_path, items=6)
    with closing(sqlite3.connect(store.path)) as conn:
        stored = {cid: (a, b) for cid, a, b in conn.execute("SELECT id, file_a, file_b FROM comparisons")}
    for pid in ("p1", "p2", "p3"):
        plan = store.plan(store.participant(pid))
        swapped = [(c.file_b, c.file_a) == stored[c.id] for c in plan]
        assert all(swapped[i] or (c.file_a, c.file_b) == stored[c.id] for i, c in enumerate(plan))
        assert abs(2 * sum(swapped) - len(plan)) <= 1  # half, per participant
    assert draw_sides("p1", 0, 10) == draw_sides("p1", 0, 10) != draw_sides("p2", 0, 10)
    assert sum(draw_sides("p1", 0, 11)) in (5, 6)
