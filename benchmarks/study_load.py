"""Load-test a user study served by `app.py --study`: many simulated participants at once, then a server killed and
restarted under them.

    python benchmarks/study_load.py --study STUDY.db --truth ITEMS_DIR --participants 50 --comparisons 20

Simulated raters answer as the ground truth says: an oracle maps each video a participant is shown to its
comparison (the study's secret mapping, which this harness may read) and prefers, per question, the side closer
(PSNR) to the item's exact edit, read from ITEMS_DIR/items.jsonl (`reference`), with some answers drawn at random.

1. Copy the study into a work folder (the original is never touched); work out each served view's comparison.
2. Phase 1, throughput: every participant at once (a thread and a page session each): load, agree, answer every
   planned comparison. Checks: exactly participants x planned x 3 rows, none twice, a completion code each, no
   request turned away (503: a participant turned away tries again, and the check fails); prints p50/p99/max
   latency of Next (which commits three answers) and answers per second.
3. Phase 2, durability: a fresh copy; once `--kill-after` of all answers are acknowledged, SIGKILL the server and
   start it again on the same database. Checks: every acknowledged answer is stored as sent; every participant,
   reloading, resumes at the first comparison not fully answered, and finishes; the same row counts as phase 1.
4. The study's report, and whether it finds the method the oracle expects to win (the highest mean PSNR).

Exits non-zero when a check of phase 1 or 2 fails; `--json OUT` writes the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from insv2v.metrics import psnr
from insv2v.study.build import read_items
from insv2v.study.report import format_report, report
from insv2v.study.store import Comparison, StudyStore
from insv2v.study.views import view_name
from insv2v.testing.gradio_http import EventError, PageSession
from insv2v.video import read_video, resize

REPO = Path(__file__).resolve().parents[1]

MARGIN_DB = 0.5  # a side is preferred when its PSNR against the exact edit is higher by more than this
NOISE = 0.10  # share of every question's answers drawn at random (humans are noisy)
TASTE_NOISE = {"aesthetic": 0.30}  # further share drawn at random, per question (taste is not the truth)
LABELS = {"A": "A", "B": "B", "tie": "can't tell"}  # choice -> the radio's label (as the Rate tab's)
SCREEN = dict(consent=0, rating=1, done=2, progress=3, video=5, code=9)  # output positions of the screen's components
START_TIMEOUT_S = 300  # how long a server may take to answer /config
REQUEST_TIMEOUT_S = 120  # one HTTP request of a simulated participant
PARK_TIMEOUT_S = 600  # how long an interrupted participant waits for the server to come back
STREAM_ENDED = "the event stream ended"  # PageSession's error when the server goes away mid-event
TURNED_AWAY_WAIT_S = 0.5  # a participant turned away (503) tries again after this, as a person clicks again
MAX_TURNED_AWAY = 100  # 503s a participant takes before giving up
VERDICT_QUESTION = "text"  # the question on which the report must find the oracle's expected winner


# ----------------------------------------------------------------------------------------------------------------------
# The study's copy and its server


def copy_study(study: Path, folder: Path) -> Path:
    """The study's database and served files copied into `folder` (the original's WAL too, if any); the copy's path."""
    folder.mkdir(parents=True)
    source = StudyStore(study)
    copy = folder / study.name
    for suffix in ("", "-wal"):
        if Path(f"{study}{suffix}").is_file():
            shutil.copyfile(f"{study}{suffix}", f"{copy}{suffix}")
    shutil.copytree(source.files_dir, folder / source.meta["files_dir"])
    return copy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`app.py --study DB` in its own process group, on a fixed port, its output in `folder`/server-N.log."""

    def __init__(self, db: Path, folder: Path, port: int):
        self.db, self.folder, self.port = db, folder, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> float:
        """Start the server and wait until it answers /config; seconds it took."""
        env = {**os.environ, "INSV2V_CACHE_DIR": str(self.folder / "cache"),
               "INSV2V_DATA_DIR": str(self.folder / "data"), "HF_HUB_OFFLINE": "1"}  # fmt: skip
        command = [sys.executable, str(REPO / "app.py"), "--study", str(self.db), "--host", "127.0.0.1",
                   "--port", str(self.port)]  # fmt: skip
        self.starts += 1
        began = time.perf_counter()
        with open(self.folder / f"server-{self.starts}.log", "w") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip
        while time.perf_counter() - began < START_TIMEOUT_S:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/config", timeout=5).status_code == 200:
                    return time.perf_counter() - began
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        tail = (self.folder / f"server-{self.starts}.log").read_text()[-3000:]
        raise RuntimeError(f"the server on {self.db} did not answer /config within {START_TIMEOUT_S}s:\n{tail}")

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown handler, no flush; what is on disk is what survives."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


# ----------------------------------------------------------------------------------------------------------------------
# The oracle: which side is closer to the exact edit


@dataclass(frozen=True)
class Shown:
    """What the oracle knows of one served view: its comparison, the methods (roles) of A and B, their PSNR."""

    comparison: Comparison
    role_a: str
    role_b: str
    psnr_a: float
    psnr_b: float


def read_comparisons(db: Path) -> list[tuple[Comparison, str, str]]:
    """Every comparison of the study with the roles of its sides (the secret mapping), by a read-only query."""
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT c.id, c.item, i.instruction, i.input_file, c.file_a, c.file_b, c.gold, fa.role, fb.role "
            "FROM comparisons c JOIN items i ON i.item = c.item JOIN files fa ON fa.name = c.file_a "
            "JOIN files fb ON fb.name = c.file_b ORDER BY c.id"
        ).fetchall()
    return [(Comparison(*row[:6], gold=bool(row[6])), row[7], row[8]) for row in rows]


def reference_frames(path: Path, fps: float, frames: int, size: tuple[int, int]) -> np.ndarray:
    """The exact edit as the study serves videos: resampled to `fps`, cut to `frames`, resized to `size` (w, h)."""
    clip = read_video(path, fps=fps, max_frames=frames, multiple=2)
    if len(clip.frames) < frames:
        raise ValueError(f"--truth: {path} has {len(clip.frames)} frames at {fps:g} fps, the study serves {frames}")
    return np.stack([resize(frame, *size) for frame in clip.frames])  # (frames, h, w, 3)


class Oracle:
    """Answers as a rater who sees which edit is closer to the truth, with some answers at random."""

    def __init__(self, db: Path, truth: Path, seed: int):
        store = StudyStore(db)
        self.questions = list(store.questions)
        self.seed = seed
        references = {item.item: item.reference for item in read_items(truth)}
        served, refs = {}, {}  # served name -> frames; item -> its reference at the served size and length

        def frames_of(name: str) -> np.ndarray:
            if name not in served:
                served[name] = read_video(store.files_dir / name, multiple=2).frames  # (f, h, w, 3)
            return served[name]

        self.by_view: dict[str, Shown] = {}
        for comparison, role_a, role_b in read_comparisons(db):
            a, b = frames_of(comparison.file_a), frames_of(comparison.file_b)
            if comparison.item not in refs:
                if references.get(comparison.item) is None:
                    raise ValueError(f"--truth {truth}: item {comparison.item!r} has no reference (the exact edit)")
                size = (a.shape[2], a.shape[1])  # (w, h) of the served videos
                fps = store.settings["fps"]
                refs[comparison.item] = reference_frames(references[comparison.item], fps, len(a), size)
            ref = refs[comparison.item]
            self.by_view[view_name(comparison)] = Shown(comparison, role_a, role_b, psnr(a, ref), psnr(b, ref))
            swapped = dataclasses.replace(comparison, file_a=comparison.file_b, file_b=comparison.file_a)
            self.by_view[view_name(swapped)] = Shown(swapped, role_b, role_a, psnr(b, ref), psnr(a, ref))  # its B|A

    def answers(self, pid: str, view: str) -> dict[str, str]:
        """The radios' labels (by elem_id) a participant gives on the screen showing `view`; the same every time
        (seeded by the seed, the participant and the view), so a screen answered again is answered alike."""
        shown = self.by_view[view]
        rng = random.Random(f"{self.seed}:{pid}:{view}")
        gap = shown.psnr_a - shown.psnr_b
        truth = "A" if gap > MARGIN_DB else "B" if gap < -MARGIN_DB else "tie"
        result = {}
        for i, question in enumerate(self.questions):
            choice = truth
            if rng.random() < TASTE_NOISE.get(question, 0.0):
                choice = rng.choice(list(LABELS))
            if rng.random() < NOISE:
                choice = rng.choice(list(LABELS))
            result[f"rate-q{i}"] = LABELS[choice]
        return result

    def mean_psnr(self) -> dict[str, float]:
        """Each method's mean PSNR against the exact edit over the regular comparisons it is in."""
        scores = defaultdict(list)
        for shown in self.by_view.values():
            if not shown.comparison.gold:
                scores[shown.role_a].append(shown.psnr_a)
                scores[shown.role_b].append(shown.psnr_b)
        return {method: float(np.mean(values)) for method, values in scores.items()}


# ----------------------------------------------------------------------------------------------------------------------
# Simulated participants


class Gate:
    """Holds the participants while the server is down. `kill_at` acknowledged answers set `kill_now`; `close`
    (before the kill) stops new requests; `reopen` (after the restart) lets everyone go on, reloading the page."""

    def __init__(self, participants: int, kill_at: int | None = None):
        self.cond = threading.Condition()
        self.participants, self.kill_at = participants, kill_at
        self.open, self.generation = True, 0  # generation: server restarts so far
        self.acknowledged = 0  # answers acknowledged (3 per successful Next)
        self.idle = 0  # participants waiting at the gate, or finished
        self.kill_now = threading.Event()
        self.resume_at: dict[str, int] = {}  # pid -> comparisons fully answered in the db after the restart

    def wait(self) -> int:
        """Block while closed; the current generation."""
        with self.cond:
            self._idle_until(lambda: self.open)
            return self.generation

    def interrupted(self, seen: int) -> bool:
        """Whether the server was killed since generation `seen` (a failed request is then no defect)."""
        with self.cond:
            return not self.open or self.generation > seen

    def restart_pending(self, seen: int) -> bool:
        """Whether a kill is planned and has not yet been followed by a restart."""
        with self.cond:
            return self.kill_at is not None and self.generation == seen == 0

    def await_restart(self, seen: int) -> bool:
        """Wait for the server to come back after generation `seen`; False on timeout."""
        with self.cond:
            return self._idle_until(lambda: self.open and self.generation > seen, PARK_TIMEOUT_S)

    def _idle_until(self, ready, timeout: float | None = None) -> bool:
        self.idle += 1
        self.cond.notify_all()
        try:
            return self.cond.wait_for(ready, timeout)
        finally:
            self.idle -= 1

    def acknowledge(self, answers: int) -> None:
        with self.cond:
            self.acknowledged += answers
            if self.kill_at is not None and self.acknowledged >= self.kill_at:
                self.kill_now.set()

    def finished(self) -> None:
        with self.cond:
            self.idle += 1
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.open = False

    def wait_all_idle(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.idle == self.participants, timeout)

    def reopen(self, resume_at: dict[str, int]) -> None:
        with self.cond:
            self.resume_at, self.open = resume_at, True
            self.generation += 1
            self.cond.notify_all()


@dataclass
class Participant:
    """One simulated participant's record, kept by the client side."""

    pid: str
    latencies: list[float] = field(default_factory=list)  # seconds of each successful Next
    acknowledged: list[tuple[str, dict]] = field(default_factory=list)  # (view name, answers sent) per Next
    interruptions: int = 0  # requests that failed because the server was killed
    turned_away: list[str] = field(default_factory=list)  # what the server said with each 503 (tried again)
    resumed: list[str] = field(default_factory=list)  # after a restart: "ok" or what the screen said instead
    code_shown: str = ""  # the done screen's text
    error: str | None = None


def _visible(update) -> bool:
    return isinstance(update, dict) and bool(update.get("visible"))


def resume_problem(screen: list, answered: int, planned: int) -> str | None:
    """None if the reloaded `screen` is the one after `answered` of `planned` comparisons, else what it shows."""
    if answered >= planned:
        return None if _visible(screen[SCREEN["done"]]) else f"not the done screen ({screen[SCREEN['progress']]!r})"
    expected = f"Comparison {answered + 1} of {planned}"
    if _visible(screen[SCREEN["rating"]]) and screen[SCREEN["progress"]] == expected:
        return None
    return f"{screen[SCREEN['progress']]!r}, expected {expected!r}"


def advanced(before: str, screen: list, planned: int) -> bool:
    """Whether `screen`, shown by Next on the screen whose progress read `before`, is the one after it."""
    number = int(before.split()[1])  # "Comparison k of N"
    if number == planned:
        return _visible(screen[SCREEN["done"]])
    return screen[SCREEN["progress"]] == f"Comparison {number + 1} of {planned}"


def simulate(p: Participant, url: str, oracle: Oracle, gate: Gate, planned: int) -> None:
    """One participant's visit, as their browser makes it: load, agree, one Next per screen; after a server restart
    reload and go on where the page says (a participant already done reloads too, and must see the done screen)."""
    session, screen, session_generation = None, None, None
    try:
        while True:
            generation = gate.wait()
            try:
                if session_generation != generation:  # first visit, or the server came back: (re)load the page
                    session = PageSession(url, {"pid": p.pid}, timeout=REQUEST_TIMEOUT_S)
                    screen = session.load()[2:]  # the first outputs: the participant id's State and the kept id
                    if session_generation is not None:
                        problem = resume_problem(screen, gate.resume_at[p.pid], planned)
                        p.resumed.append(problem or "ok")
                    session_generation = generation
                if _visible(screen[SCREEN["consent"]]):
                    screen = session.trigger("rate-agree")[2:]
                if _visible(screen[SCREEN["done"]]):
                    p.code_shown = screen[SCREEN["code"]]
                    if gate.restart_pending(generation) and gate.await_restart(generation):
                        continue  # done before the kill: reload after the restart like everyone else
                    return
                position = screen[SCREEN["progress"]]
                if not position.endswith(f" of {planned}"):
                    raise AssertionError(f"the page says {position!r}; the study plans {planned}")
                view = screen[SCREEN["video"]]["orig_name"]
                answers = oracle.answers(p.pid, view)
                began = time.perf_counter()
                screen = session.trigger("rate-next", inputs=answers)
                p.latencies.append(time.perf_counter() - began)
                p.acknowledged.append((view, answers))
                gate.acknowledge(len(answers))
                if not advanced(position, screen, planned):
                    raise AssertionError(f"Next on {position!r} showed {screen[SCREEN['progress']]!r}")
            except httpx.HTTPStatusError as err:
                if err.response.status_code != 503 or len(p.turned_away) >= MAX_TURNED_AWAY:
                    raise
                p.turned_away.append(err.response.text)  # the page shows the error; the participant tries again
                time.sleep(TURNED_AWAY_WAIT_S)
            except (httpx.TransportError, EventError) as err:
                server_gone = isinstance(err, httpx.TransportError) or STREAM_ENDED in str(err)
                if not (server_gone and gate.interrupted(generation)):
                    raise  # not the kill's doing: a defect
                p.interruptions += 1
                if not gate.await_restart(generation):
                    raise TimeoutError(f"the server did not come back within {PARK_TIMEOUT_S}s") from err
    except Exception as err:  # recorded, and reported as a failed check
        p.error = f"{type(err).__name__}: {err}"
    finally:
        gate.finished()


def start_participants(participants: list[Participant], url: str, oracle: Oracle, gate: Gate, planned: int):
    threads = [threading.Thread(target=simulate, args=(p, url, oracle, gate, planned), daemon=True)
               for p in participants]  # fmt: skip
    for thread in threads:
        thread.start()
    return threads


# ----------------------------------------------------------------------------------------------------------------------
# Checks


def check_ratings(db: Path, participants: list[Participant], planned: int, failures: list[str]) -> dict:
    """The simulated participants' rows, duplicates and completion codes once everyone finished (rows of people who
    rated the study before it was copied are counted apart); failures appended."""
    store = StudyStore(db)
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        per_pid = dict(conn.execute("SELECT pid, COUNT(*) FROM ratings GROUP BY pid").fetchall())
        duplicates = conn.execute("SELECT COUNT(*) FROM (SELECT 1 FROM ratings GROUP BY pid, comparison_id, question "
                                  "HAVING COUNT(*) > 1)").fetchone()[0]  # fmt: skip
    codes = {row["pid"]: row["completion_code"] for row in store.participants()}
    rows = sum(per_pid.get(p.pid, 0) for p in participants)
    expected = len(participants) * planned * len(store.questions)
    if rows != expected:
        failures.append(f"{rows} ratings of the simulated participants in the database, expected {expected}")
    if duplicates:
        failures.append(f"{duplicates} (pid, comparison, question) rated more than once")
    turned_away = [text for p in participants for text in p.turned_away]
    if turned_away:
        failures.append(f"{len(turned_away)} requests turned away with 503 (tried again), e.g. {turned_away[0]}")
    for p in participants:
        if p.error:
            failures.append(f"{p.pid}: {p.error}")
        elif not codes.get(p.pid) or codes[p.pid] not in p.code_shown:
            failures.append(f"{p.pid}: completion code {codes.get(p.pid)!r} not on the done screen")
    with_code = sum(bool(codes.get(p.pid)) for p in participants)
    return {"rows": rows, "expected_rows": expected, "duplicates": duplicates, "completion_codes": with_code,
            "earlier_rows": sum(per_pid.values()) - rows, "turned_away": len(turned_away)}  # fmt: skip


def check_acknowledged(db: Path, participants: list[Participant], oracle: Oracle, failures: list[str]) -> dict:
    """After the restart: each participant's acknowledged screens are in the database with the answers sent (the
    database may hold one screen more: committed, but the reply was lost). Returns pid -> comparisons fully
    answered in the database, and counts."""
    store = StudyStore(db)
    in_db = {row["pid"]: row["answered"] for row in store.participants()}
    answered, one_more, short, mismatched = {}, 0, 0, 0
    for p in participants:
        answered[p.pid] = in_db.get(p.pid, 0)
        acknowledged = len(p.acknowledged)
        if not acknowledged <= answered[p.pid] <= acknowledged + 1:
            short += 1
            failures.append(f"{p.pid}: {acknowledged} screens acknowledged, {answered[p.pid]} answered in the database")
        one_more += answered[p.pid] == acknowledged + 1
        for view, sent in p.acknowledged:
            comparison = oracle.by_view[view].comparison
            stored = store.answers(p.pid, comparison.id)
            wanted = {q: choice_of(sent[f"rate-q{i}"]) for i, q in enumerate(oracle.questions)}
            if stored != wanted:
                mismatched += 1
                failures.append(f"{p.pid}: comparison {comparison.id} stored {stored}, sent {wanted}")
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        partial = conn.execute("SELECT COUNT(*) FROM (SELECT 1 FROM ratings GROUP BY pid, comparison_id "
                               "HAVING COUNT(*) < ?)", (len(oracle.questions),)).fetchone()[0]  # fmt: skip
    return {"answered": answered, "acknowledged_screens": sum(len(p.acknowledged) for p in participants),
            "one_more_than_acknowledged": one_more, "partly_answered": partial, "fewer_than_acknowledged": short,
            "acknowledged_not_as_sent": mismatched}  # fmt: skip


def choice_of(label: str) -> str:
    return {v: k for k, v in LABELS.items()}[label]


def latency_figures(participants: list[Participant], seconds: float) -> dict:
    latencies = np.array([t for p in participants for t in p.latencies]) * 1000  # ms
    answers = sum(len(p.acknowledged) * 3 for p in participants)
    if not len(latencies):
        return {"nexts": 0, "answers": 0}
    p50, p99 = np.percentile(latencies, [50, 99])
    return {"nexts": len(latencies), "answers": answers, "seconds": round(seconds, 2),
            "answers_per_s": round(answers / seconds, 1), "p50_ms": round(float(p50), 1),
            "p99_ms": round(float(p99), 1), "max_ms": round(float(latencies.max()), 1)}  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# Phases


def planned_per_participant(db: Path) -> int:
    """Comparisons the study plans for each participant: `comparisons_per_participant` regular ones (all when None)
    plus every gold one."""
    store = StudyStore(db)
    regular, gold = store.comparison_count()
    per = store.settings.get("comparisons_per_participant") or regular
    return min(per, regular) + gold


def phase_throughput(db: Path, folder: Path, oracle: Oracle, pids: list[str], planned: int) -> tuple[dict, list[str]]:
    """Phase 1: everyone at once on a fresh server, start to finish."""
    failures: list[str] = []
    server = Server(db, folder, free_port())
    try:
        start_s = server.start()
        participants = [Participant(pid) for pid in pids]
        gate = Gate(len(pids))
        began = time.perf_counter()
        for thread in start_participants(participants, server.url, oracle, gate, planned):
            thread.join()
        seconds = time.perf_counter() - began
    finally:
        server.stop()
    figures = {"server_start_s": round(start_s, 1), **latency_figures(participants, seconds),
               **check_ratings(db, participants, planned, failures)}  # fmt: skip
    return figures, failures


def phase_durability(
    db: Path, folder: Path, oracle: Oracle, pids: list[str], planned: int, kill_after: float
) -> tuple[dict, list[str]]:
    """Phase 2: everyone at once; SIGKILL the server once `kill_after` of all answers are acknowledged, restart it,
    check what was acknowledged, let everyone reload and finish."""
    failures: list[str] = []
    total = len(pids) * planned * len(oracle.questions)
    server = Server(db, folder, free_port())
    participants = [Participant(pid) for pid in pids]
    gate = Gate(len(pids), kill_at=math.ceil(kill_after * total))
    try:
        server.start()
        began = time.perf_counter()
        threads = start_participants(participants, server.url, oracle, gate, planned)

        # a. Kill the server under load, once enough answers are acknowledged
        while not gate.kill_now.wait(timeout=0.05):
            if not any(thread.is_alive() for thread in threads):
                errors = "; ".join(p.error for p in participants if p.error)
                raise RuntimeError(f"everyone stopped at {gate.acknowledged} of {gate.kill_at} answers: {errors}")
        gate.close()
        server.kill()
        if not gate.wait_all_idle(timeout=REQUEST_TIMEOUT_S):
            failures.append("some participants still had requests in flight after the kill")
        acknowledged_at_kill = gate.acknowledged

        # b. Start it again on the same database; check every acknowledged answer
        restart_s = server.start()
        durability = check_acknowledged(db, participants, oracle, failures)

        # c. Everyone reloads (checked: the screen after the last fully answered one) and goes on to the end
        gate.reopen(durability["answered"])
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - began
    finally:
        server.stop()
    wrong_screens = [f"{p.pid}: resumed at {r}" for p in participants for r in p.resumed if r != "ok"]
    failures += wrong_screens
    not_reloaded = [p.pid for p in participants if not p.resumed and not p.error]
    failures += [f"{pid}: never reloaded after the restart" for pid in not_reloaded]
    figures = {
        "killed_at_answers": acknowledged_at_kill,
        "of_answers": total,
        "restart_s": round(restart_s, 1),
        "interrupted_requests": sum(p.interruptions for p in participants),
        **{key: value for key, value in durability.items() if key != "answered"},
        "acknowledged_ok": not (durability["fewer_than_acknowledged"] or durability["acknowledged_not_as_sent"]),
        "resumed_right": sum(r == "ok" for p in participants for r in p.resumed),
        "resumed_wrong": len(wrong_screens),
        **latency_figures(participants, seconds),
        **check_ratings(db, participants, planned, failures),
    }
    return figures, failures


# ----------------------------------------------------------------------------------------------------------------------
# The report's verdict


def verdict(result: dict, winner: str) -> tuple[bool, list[str]]:
    """Whether every pair with `winner` has its win rate's Wilson interval above 50% on VERDICT_QUESTION; a line per
    pair."""
    agrees, lines = True, []
    for pair in result["pairs"]:
        if winner not in pair["methods"]:
            continue
        row = pair["questions"][VERDICT_QUESTION]
        low, high = row["interval"]  # the first method's
        if winner == pair["methods"][0]:
            other, rate, low, high = pair["methods"][1], row["rate"], low, high
        else:
            other, rate, low, high = pair["methods"][0], 1 - row["rate"], 1 - high, 1 - low
        agrees &= low > 0.5
        lines.append(f"{winner} vs {other}: {winner} wins {rate:.0%} ({low:.0%}-{high:.0%}) of {row['decided']} "
                     f"decided '{VERDICT_QUESTION}' answers: {'above' if low > 0.5 else 'NOT above'} 50%")  # fmt: skip
    return agrees, lines


def expected_winner(oracle: Oracle, result: dict) -> dict:
    """The method the oracle expects to win (the highest mean PSNR against the exact edit), printed with the
    report's verdict on it."""
    means = oracle.mean_psnr()
    winner = max(means, key=means.get)
    agrees, lines = verdict(result, winner)
    print("Mean PSNR against the exact edit: " + ", ".join(f"{m} {v:.1f} dB" for m, v in means.items()))
    print(f"Expected winner (oracle): {winner}")
    print("\n".join(f"  {line}" for line in lines))
    print(f"The report agrees: {'yes' if agrees else 'no'}")
    return {"expected_winner": winner, "mean_psnr": {m: _finite(v) for m, v in means.items()},
            "report_agrees": agrees, "verdict": lines}  # fmt: skip


def _finite(value: float) -> float | str:
    return round(value, 2) if math.isfinite(value) else str(value)


def print_ratings(figures: dict, participants: int) -> None:
    print(f"  {figures['rows']} rows (expected {figures['expected_rows']}), {figures['duplicates']} duplicated, "
          f"{figures['completion_codes']} of {participants} with a completion code; {figures['turned_away']} "
          "requests turned away (503)", flush=True)  # fmt: skip


def print_throughput(figures: dict, participants: int) -> None:
    print_ratings(figures, participants)
    print(f"  Next (3 answers): p50 {figures.get('p50_ms')} ms, p99 {figures.get('p99_ms')} ms, max "
          f"{figures.get('max_ms')} ms; {figures.get('answers_per_s')} answers/s", flush=True)  # fmt: skip


def print_durability(figures: dict, participants: int) -> None:
    print(f"  killed at {figures['killed_at_answers']} of {figures['of_answers']} answers acknowledged; restarted in "
          f"{figures['restart_s']} s; {figures['interrupted_requests']} requests interrupted; "
          f"{figures['one_more_than_acknowledged']} participants with one screen more stored than acknowledged, "
          f"{figures['partly_answered']} screens with only some answers stored")  # fmt: skip
    print(f"  every acknowledged answer stored as sent: {'yes' if figures['acknowledged_ok'] else 'NO'} "
          f"({figures['acknowledged_screens']} screens); resumed at the right screen: {figures['resumed_right']} of "
          f"{participants}")  # fmt: skip
    print_ratings(figures, participants)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])  # the first paragraph
    parser.add_argument("--study", type=Path, required=True, help="the study database (copied, never touched)")
    parser.add_argument("--truth", type=Path, required=True, help="folder with items.jsonl: each item's reference")
    parser.add_argument("--participants", type=int, default=50, help="simulated participants at once")
    parser.add_argument("--comparisons", type=int, default=20, help="comparisons the study plans per participant")
    parser.add_argument("--kill-after", type=float, default=0.4, help="share of all answers acknowledged at the kill")
    parser.add_argument("--workdir", type=Path, help="where the copies go (default: a temporary folder, removed)")
    parser.add_argument("--seed", type=int, default=0, help="the simulated answers' seed")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    # 1. Check inputs
    if not 0 < args.kill_after < 1:
        parser.error(f"--kill-after must be in (0, 1), got {args.kill_after}")
    if args.participants < 1:
        parser.error(f"--participants must be >= 1, got {args.participants}")
    planned = planned_per_participant(args.study)
    if planned != args.comparisons:
        parser.error(f"--comparisons {args.comparisons}: {args.study} plans {planned} comparisons per participant "
                     f"(regular plus gold); pass --comparisons {planned}, or build a study that plans "
                     f"{args.comparisons}")  # fmt: skip
    pids = [f"sim{i:03d}" for i in range(args.participants)]
    taken = sorted(set(pids) & {row["pid"] for row in StudyStore(args.study).participants()})
    if taken:
        parser.error(f"--study {args.study} already has participants {', '.join(taken)} (the simulated ones' ids)")
    temporary = None if args.workdir else tempfile.TemporaryDirectory(prefix="study-load-")
    workdir = args.workdir or Path(temporary.name)
    try:
        # 2. Copy the study; the oracle reads the copy's secret mapping
        first = copy_study(args.study, workdir / "throughput")
        oracle = Oracle(first, args.truth, args.seed)

        # 3. Phase 1: throughput
        print(f"Phase 1 (throughput): {len(pids)} participants at once, {planned} comparisons each", flush=True)
        throughput, failures1 = phase_throughput(first, workdir / "throughput", oracle, pids, planned)
        print_throughput(throughput, len(pids))

        # 4. Phase 2: durability, on a fresh copy
        second = copy_study(args.study, workdir / "durability")
        print(f"Phase 2 (durability): the same participants; SIGKILL after {args.kill_after:.0%} of the answers",
              flush=True)  # fmt: skip
        durability, failures2 = phase_durability(second, workdir / "durability", oracle, pids, planned,
                                                 args.kill_after)  # fmt: skip
        print_durability(durability, len(pids))

        # 5. The study's report, and the oracle's expected winner
        result = report(StudyStore(second))
        print("\n" + format_report(result))
        winner = expected_winner(oracle, result)
    finally:
        if temporary is not None:
            temporary.cleanup()

    # 6. Summary
    failures = [f"phase 1: {f}" for f in failures1] + [f"phase 2: {f}" for f in failures2]
    figures = {"participants": len(pids), "comparisons": planned, "throughput": throughput, "durability": durability,
               **winner, "failures": failures, "passed": not failures}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    print("\nFAILED:\n" + "\n".join(f"  {f}" for f in failures) if failures else "\nAll checks passed.")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
