"""A study's SQLite database: what is compared, each participant's plan, and their ratings. The only module that
touches the database.

Blindness: served files have random names, and the `files` table is the only place that links a name to the
method (or "input", "reference") it shows; `Comparison` carries names only. Durability: WAL, synchronous FULL
(NORMAL may lose the last commits on power loss), one connection per operation (never shared across threads), and
every write in BEGIN IMMEDIATE ... COMMIT with a busy timeout and a retry, so a rating is on disk when `answer`
returns. A participant's plan is written once, in the transaction that creates them, so it survives restarts.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

QUESTIONS = {  # LOVEU-TGVE's questions (Wu et al. 2023), each a pairwise choice; the screen shows an instruction
    "text": "How well does the generated video follow the instruction?",
    "structure": "How well does the generated video preserve the structure of the original video?",
    "aesthetic": "Aesthetically, how good is this video?",
}
CHOICES = ("A", "B", "tie")  # "tie" is shown as "can't tell"
ROLES = ("input", "reference")  # roles of served files that are not a method's output
FORMAT = "pairwise-video-study"  # meta "format": what marks a database as a study (names no method)
VERSION = 2  # meta "version": the schema's (2: sides drawn per participant)
PID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")  # participant ids: Prolific's, MTurk's, ours (hex)
BUSY_TIMEOUT_MS = 60_000  # how long SQLite waits for another writer before it reports "database is locked"
WRITE_ATTEMPTS = 5  # tries of a transaction that still finds the database locked
RETRY_DELAY = 0.05  # seconds before the first retry; doubled each time, with jitter
IN_PROGRESS = timedelta(hours=1)  # a plan this young may still be rated; older ones count by what they rated
VIEWS = "views"  # folder of the composed videos (views.py), inside the study's files folder, made on first view

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);  -- JSON values: format, questions, settings, ...
CREATE TABLE files (  -- the ONLY link between a served file and the method (or input, reference) it shows
    name TEXT PRIMARY KEY, item TEXT NOT NULL, role TEXT NOT NULL
);
CREATE TABLE items (
    item TEXT PRIMARY KEY, instruction TEXT NOT NULL, input_file TEXT NOT NULL REFERENCES files(name)
);
CREATE TABLE comparisons (
    id INTEGER PRIMARY KEY, item TEXT NOT NULL REFERENCES items(item),
    file_a TEXT NOT NULL REFERENCES files(name), file_b TEXT NOT NULL REFERENCES files(name),
    gold INTEGER NOT NULL DEFAULT 0 CHECK (gold IN (0, 1))  -- 1: attention check, the reference is the right answer
);
CREATE TABLE participants (
    pid TEXT PRIMARY KEY, created TEXT NOT NULL, consented TEXT, completion_code TEXT
);
CREATE TABLE assignments (  -- each participant's plan, in the order they see it
    pid TEXT NOT NULL REFERENCES participants(pid), position INTEGER NOT NULL,
    comparison_id INTEGER NOT NULL REFERENCES comparisons(id),
    swap INTEGER NOT NULL CHECK (swap IN (0, 1)),  -- 1: this participant sees file_b as A (left), file_a as B
    PRIMARY KEY (pid, position), UNIQUE (pid, comparison_id)
);
CREATE INDEX assignments_by_comparison ON assignments(comparison_id);
CREATE TABLE ratings (
    pid TEXT NOT NULL REFERENCES participants(pid), comparison_id INTEGER NOT NULL REFERENCES comparisons(id),
    question TEXT NOT NULL, choice TEXT NOT NULL CHECK (choice IN ('A', 'B', 'tie')), created TEXT NOT NULL,
    UNIQUE (pid, comparison_id, question)
);
"""

T = TypeVar("T")


class StudyError(ValueError):
    """A file that is not a study, or a study that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Comparison:
    """One pairwise comparison as a participant sees it: served file NAMES only (random), never a method."""

    id: int
    item: str
    instruction: str
    input_file: str  # the unedited video, for reference
    file_a: str  # shown left
    file_b: str  # shown right
    gold: bool  # an attention check: the unedited input against the exact edit


def new_pid() -> str:
    """A random participant id, for a visitor whose link gave none."""
    return secrets.token_hex(8)


def now(ago: timedelta = timedelta(0)) -> str:
    """UTC time stamp with microseconds, ISO 8601 (of `ago` before now): stamps of one format compare as text."""
    return (datetime.now(timezone.utc) - ago).isoformat(timespec="microseconds")


def check_pid(pid: str) -> str:
    """Refuse participant ids that are not 1-64 letters, digits, '_' or '-'."""
    if not isinstance(pid, str) or not PID_PATTERN.fullmatch(pid):
        raise ValueError(f"pid must be 1-64 letters, digits, '_' or '-', got {pid!r}")
    return pid


def pid_rng(pid: str, seed: int) -> random.Random:
    """A generator seeded by the participant id and the study's seed: the same pid draws the same numbers."""
    digest = hashlib.sha256(f"{seed}:{pid}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def make_plan(
    pid: str, seed: int, assigned: dict[int, int], gold: Sequence[int], per_participant: int | None
) -> list[int]:
    """A participant's comparison ids, in order: the `per_participant` regular comparisons rated least often so far
    (`assigned`: id -> count, as `StudyStore.participant` counts; ties broken by a generator seeded by the pid), plus
    every gold comparison, shuffled by the same generator."""
    rng = pid_rng(pid, seed)
    regular = sorted(assigned)
    keys = {cid: rng.random() for cid in regular}
    chosen = sorted(regular, key=lambda cid: (assigned[cid], keys[cid]))[: per_participant or len(regular)]
    plan = [*sorted(chosen), *gold]
    rng.shuffle(plan)
    return plan


def balanced_sides(n: int, rng: random.Random) -> list[bool]:
    """For n comparisons, whether to swap each (second method left): alternating, then shuffled, so each side holds
    n // 2 or n - n // 2 of them."""
    sides = [i % 2 == 1 for i in range(n)]
    rng.shuffle(sides)
    return sides


def draw_sides(pid: str, seed: int, n: int) -> list[bool]:
    """Which of a participant's `n` comparisons show their sides swapped: half of them (one more or less), chosen by
    the pid's generator. Sides drawn per presentation are independent of the items, so the left/right check
    measures the raters, not which items happened to put which method left."""
    return balanced_sides(n, pid_rng(pid, seed + 1))


def served_folder(name, database: Path) -> str:
    """`name`, the study's videos' folder, if it is one folder beside the database: the app serves that folder to
    every visitor, so never "/", ".." or the database's own folder."""
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
        raise StudyError(f"{database}: its videos' folder must be one folder name beside it, got {name!r}")
    return name


def _is_locked(err: sqlite3.OperationalError) -> bool:
    return "locked" in str(err) or "busy" in str(err)


class StudyStore:
    """An existing study database (see `create`). Safe to share across threads: it holds no connection."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise StudyError(f"{self.path}: no study there (build one with `insv2v study build`)")
        try:
            with closing(self._connect(pragmas=False)) as conn:  # no pragma yet: they would write to a non-study
                meta = {key: json.loads(value) for key, value in conn.execute("SELECT key, value FROM meta")}
        except (sqlite3.DatabaseError, json.JSONDecodeError) as err:
            raise StudyError(f"{self.path}: not a study database ({err})") from err
        if meta.get("format") != FORMAT:
            raise StudyError(f"{self.path}: not a study database (its meta has no format {FORMAT!r})")
        if meta.get("version") != VERSION:
            raise StudyError(f"{self.path}: study schema version {meta.get('version')}, this code reads {VERSION}")
        missing = [key for key in ("questions", "settings", "files_dir") if key not in meta]
        if missing:
            raise StudyError(f"{self.path}: not a whole study database (its meta lacks {', '.join(missing)})")
        self.meta = meta
        self.questions: dict[str, str] = dict(meta["questions"])  # key -> the question's words
        self.settings: dict = dict(meta["settings"])
        self.files_dir = self.path.parent / served_folder(meta["files_dir"], self.path)  # named as in `files`

    def check_served(self) -> StudyStore:
        """This study, if every video is where its database says and the folder of the composed views can be
        written (a database moved without its folder, a file lost, or a folder the server may not write would ask
        participants to consent, then fail on their first screen)."""
        if not self.files_dir.is_dir():
            raise StudyError(f"{self.path}: its videos are not in {self.files_dir}; move the database together with "
                             "that folder")  # fmt: skip
        names = self._read(lambda conn: [name for (name,) in conn.execute("SELECT name FROM files ORDER BY name")])
        missing = [name for name in names if not (self.files_dir / name).is_file()]
        if missing:
            raise StudyError(f"{self.path}: {len(missing)} of its {len(names)} videos are missing from "
                             f"{self.files_dir} (first: {missing[0]}); build the study again")  # fmt: skip
        views = self.files_dir / VIEWS
        writable = views if views.is_dir() else self.files_dir
        if not os.access(writable, os.W_OK):
            raise StudyError(f"{self.path}: this server cannot write in {writable}, where each comparison's video "
                             "is made on its first view; let the server's user write there")  # fmt: skip
        return self

    # ------------------------------------------------------------------------------------------------ creating

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        files_dir: str,
        settings: dict,
        files: Sequence[tuple[str, str, str]],
        items: Sequence[tuple[str, str, str]],
        comparisons: Sequence[tuple[str, str, str, bool]],
        questions: dict[str, str] = QUESTIONS,
    ) -> StudyStore:
        """Write a new study at `path`, never over an existing file: `files` (name, item, role), `items` (item,
        instruction, input file name), `comparisons` (item, file a, file b, gold; ids 1, 2, ... in this order).
        `files_dir` is the served files' folder, relative to the database's."""
        path = Path(path)
        if path.exists():
            raise StudyError(f"{path} exists; a study is never overwritten (its ratings would be lost)")
        served_folder(files_dir, path)  # before anything is written: a refused study leaves nothing behind
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
        meta = {"format": FORMAT, "version": VERSION, "created": now(), "questions": questions,
                "settings": settings, "files_dir": files_dir}  # fmt: skip
        try:
            with closing(sqlite3.connect(tmp, isolation_level=None)) as conn:
                conn.execute("PRAGMA journal_mode=WAL")  # kept in the file: every later connection uses WAL
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(SCHEMA)  # a new file nobody else sees yet; then its rows in one transaction
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
                conn.executemany("INSERT INTO files VALUES (?, ?, ?)", files)
                conn.executemany("INSERT INTO items VALUES (?, ?, ?)", items)
                rows = [(i + 1, item, a, b, int(gold)) for i, (item, a, b, gold) in enumerate(comparisons)]
                conn.executemany("INSERT INTO comparisons VALUES (?, ?, ?, ?, ?)", rows)
                conn.execute("COMMIT")
            _link_new(tmp, path)
        finally:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                leftover.unlink(missing_ok=True)
        return cls(path)

    # ------------------------------------------------------------------------------------------------ plumbing

    def _connect(self, pragmas: bool = True) -> sqlite3.Connection:
        """A new connection (never shared across threads) that cannot create a database by accident."""
        uri = f"{self.path.resolve().as_uri()}?mode=rw"
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        if pragmas:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # NORMAL may lose the last commits on power loss
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _transaction(self, work: Callable[[sqlite3.Connection], T], begin: str = "BEGIN IMMEDIATE") -> T:
        """Run `work` in one transaction on a fresh connection, retrying (with backoff) while the database is
        locked; BEGIN IMMEDIATE takes the write lock first, so two writers never deadlock on an upgrade."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with closing(self._connect()) as conn:
                    conn.execute(begin)
                    try:
                        result = work(conn)
                        conn.execute("COMMIT")
                    except BaseException:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
                    return result
            except sqlite3.OperationalError as err:
                if not _is_locked(err) or attempt == WRITE_ATTEMPTS - 1:
                    raise
                time.sleep(RETRY_DELAY * 2**attempt * (1 + random.random()))
        raise AssertionError("unreachable")

    def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in a read transaction: one consistent snapshot, never blocking writers (WAL)."""
        return self._transaction(work, begin="BEGIN")

    @staticmethod
    def _known(conn: sqlite3.Connection, pid: str) -> tuple:
        """The participant's row (pid, created, consented, completion_code); refuses unknown ones."""
        row = conn.execute("SELECT * FROM participants WHERE pid = ?", (check_pid(pid),)).fetchone()
        if row is None:
            raise ValueError(f"unknown participant {pid!r}: call participant(pid) first")
        return row

    def _complete(self, conn: sqlite3.Connection, pid: str) -> tuple[int, int]:
        """(comparisons answered on every question, comparisons planned) of a participant."""
        planned, done = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM((SELECT COUNT(*) FROM ratings r WHERE r.pid = a.pid "
            "AND r.comparison_id = a.comparison_id) >= ?), 0) FROM assignments a WHERE a.pid = ?",
            (len(self.questions), pid),
        ).fetchone()
        return done, planned

    # ------------------------------------------------------------------------------------------------ participants

    def participant(self, pid: str | None = None) -> str:
        """The participant `pid` (a random one if None), created with their plan on first arrival; arriving again,
        even at the same moment from another thread or process, changes nothing."""
        pid = new_pid() if pid is None else check_pid(pid)

        def arrive(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM participants WHERE pid = ?", (pid,)).fetchone():
                return
            conn.execute("INSERT INTO participants (pid, created) VALUES (?, ?)", (pid, now()))
            # How often each comparison is rated: answered, or planned for someone who may still answer it (a plan
            # younger than IN_PROGRESS); the plans of those who left count no more than what they rated.
            counts = conn.execute(
                "SELECT c.id, c.gold, COUNT(a.pid) FROM comparisons c LEFT JOIN assignments a "
                "ON a.comparison_id = c.id AND (a.pid IN (SELECT pid FROM participants WHERE created > ?) "
                "OR EXISTS (SELECT 1 FROM ratings r WHERE r.pid = a.pid AND r.comparison_id = c.id)) "
                "GROUP BY c.id ORDER BY c.id",
                (now(ago=IN_PROGRESS),),
            ).fetchall()
            assigned = {cid: n for cid, gold, n in counts if not gold}
            gold = [cid for cid, gold, _ in counts if gold]
            seed = self.settings.get("seed", 0)
            plan = make_plan(pid, seed, assigned, gold, self.settings.get("comparisons_per_participant"))
            sides = draw_sides(pid, seed, len(plan))
            rows = [(pid, i, c, int(s)) for i, (c, s) in enumerate(zip(plan, sides, strict=True))]
            conn.executemany("INSERT INTO assignments VALUES (?, ?, ?, ?)", rows)

        self._transaction(arrive)
        return pid

    def consent(self, pid: str) -> None:
        """Record that the participant consented (the first time only)."""

        def record(conn: sqlite3.Connection) -> None:
            self._known(conn, pid)
            conn.execute("UPDATE participants SET consented = ? WHERE pid = ? AND consented IS NULL", (now(), pid))

        self._transaction(record)

    def known(self, pid: str) -> bool:
        """Whether `pid` has arrived (has a plan)."""
        return self._read(lambda conn: conn.execute("SELECT 1 FROM participants WHERE pid = ?",
                                                    (check_pid(pid),)).fetchone() is not None)  # fmt: skip

    def consented(self, pid: str) -> bool:
        return self._read(lambda conn: self._known(conn, pid)[2] is not None)

    def _plan(self, conn: sqlite3.Connection, pid: str) -> list[Comparison]:
        self._known(conn, pid)
        rows = conn.execute(  # the sides as this participant sees them
            "SELECT c.id, c.item, i.instruction, i.input_file, "
            "CASE a.swap WHEN 1 THEN c.file_b ELSE c.file_a END, CASE a.swap WHEN 1 THEN c.file_a ELSE c.file_b END, "
            "c.gold FROM assignments a JOIN comparisons c ON c.id = a.comparison_id JOIN items i ON i.item = c.item "
            "WHERE a.pid = ? ORDER BY a.position",
            (pid,),
        )
        return [Comparison(*row[:6], gold=bool(row[6])) for row in rows]

    def plan(self, pid: str) -> list[Comparison]:
        """The participant's comparisons in the order they see them."""
        return self._read(lambda conn: self._plan(conn, pid))

    def next_comparison(self, pid: str) -> Comparison | None:
        """The first planned comparison not answered on every question; None when all are."""

        def read(conn: sqlite3.Connection) -> Comparison | None:
            plan = self._plan(conn, pid)
            rows = conn.execute("SELECT comparison_id, COUNT(*) FROM ratings WHERE pid = ? GROUP BY comparison_id",
                                (pid,))  # fmt: skip
            answered = {cid for cid, n in rows if n >= len(self.questions)}
            return next((c for c in plan if c.id not in answered), None)

        return self._read(read)

    # ------------------------------------------------------------------------------------------------ ratings

    def answer(self, pid: str, comparison_id: int, question: str, choice: str) -> bool:
        """Record one answer, committed when this returns. True if recorded; False if this participant already
        answered this question of this comparison (the first answer is kept: one row, never two)."""
        return self.answer_screen(pid, comparison_id, {question: choice}) == 1

    def answer_screen(self, pid: str, comparison_id: int, answers: dict[str, str]) -> int:
        """Record a screen's answers (question -> choice) together: one row each, all committed in one transaction
        when this returns, or none (a crash never leaves a screen half answered). Returns how many were new; an
        answer already given keeps its first value."""
        for question, choice in answers.items():
            if question not in self.questions:
                raise ValueError(f"question must be one of {', '.join(self.questions)}, got {question!r}")
            if choice not in CHOICES:
                raise ValueError(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}")
        if isinstance(comparison_id, bool) or not isinstance(comparison_id, int):
            raise ValueError(f"comparison_id must be an int, got {comparison_id!r}")

        def record(conn: sqlite3.Connection) -> int:
            participant = self._known(conn, pid)
            if participant[2] is None:
                raise ValueError(f"participant {pid!r} has not consented: call consent(pid) before answers")
            planned = "SELECT 1 FROM assignments WHERE pid = ? AND comparison_id = ?"
            if not conn.execute(planned, (pid, comparison_id)).fetchone():
                raise ValueError(f"comparison {comparison_id} is not in participant {pid!r}'s plan")
            stamp = now()
            rows = [(pid, comparison_id, question, choice, stamp) for question, choice in answers.items()]
            insert = "INSERT OR IGNORE INTO ratings VALUES (?, ?, ?, ?, ?)"
            return sum(conn.execute(insert, row).rowcount for row in rows)

        return self._transaction(record)

    def answers(self, pid: str, comparison_id: int) -> dict[str, str]:
        """The participant's answers to one comparison: question -> choice."""

        def read(conn: sqlite3.Connection) -> dict[str, str]:
            self._known(conn, pid)
            rows = conn.execute("SELECT question, choice FROM ratings WHERE pid = ? AND comparison_id = ?",
                                (pid, comparison_id))  # fmt: skip
            return dict(rows.fetchall())

        return self._read(read)

    def progress(self, pid: str) -> tuple[int, int]:
        """(comparisons answered on every question, comparisons planned)."""

        def read(conn: sqlite3.Connection) -> tuple[int, int]:
            self._known(conn, pid)
            return self._complete(conn, pid)

        return self._read(read)

    def completion_code(self, pid: str) -> str | None:
        """The participant's completion code, issued (and stored) once every planned comparison is answered on every
        question; the same code every later call. None before that."""

        def issue(conn: sqlite3.Connection) -> str | None:
            code = self._known(conn, pid)[3]
            if code is not None:
                return code
            done, planned = self._complete(conn, pid)
            if done < planned:
                return None
            code = secrets.token_hex(5).upper()
            conn.execute("UPDATE participants SET completion_code = ? WHERE pid = ?", (code, pid))
            return code

        return self._transaction(issue)

    # ------------------------------------------------------------------------------------------------ the report's

    def participants(self) -> list[dict]:
        """Every participant: pid, created, consented (time or None), completion_code (None until asked for once all
        is answered), answered and planned (as `progress`)."""
        keys = ("pid", "created", "consented", "completion_code")

        def read(conn: sqlite3.Connection) -> list[dict]:
            rows = conn.execute("SELECT * FROM participants ORDER BY created, pid").fetchall()
            return [{**dict(zip(keys, row, strict=True)), **dict(zip(("answered", "planned"),
                    self._complete(conn, row[0]), strict=True))} for row in rows]  # fmt: skip

        return self._read(read)

    def ratings(self) -> list[dict]:
        """Every rating joined with the secret mapping (for the report only, never for the rating UI): pid, item,
        comparison_id, gold, method_a, method_b (what the participant saw as A and B: a method, or "input" /
        "reference" for gold), question, choice, created."""
        keys = ("pid", "item", "comparison_id", "gold", "method_a", "method_b", "question", "choice", "created")
        rows = self._read(lambda conn: conn.execute(
            "SELECT r.pid, c.item, c.id, c.gold, CASE a.swap WHEN 1 THEN fb.role ELSE fa.role END, "
            "CASE a.swap WHEN 1 THEN fa.role ELSE fb.role END, r.question, r.choice, r.created FROM ratings r "
            "JOIN comparisons c ON c.id = r.comparison_id JOIN files fa ON fa.name = c.file_a "
            "JOIN files fb ON fb.name = c.file_b JOIN assignments a ON a.pid = r.pid AND a.comparison_id = c.id "
            "ORDER BY r.created, r.pid, c.id, r.question"
        ).fetchall())  # fmt: skip
        return [{**dict(zip(keys, row, strict=True)), "gold": bool(row[3])} for row in rows]

    def methods(self) -> list[str]:
        """The methods compared, in the order the study was built with."""
        rows = self._read(lambda conn: conn.execute(
            "SELECT role FROM files WHERE role NOT IN (?, ?) GROUP BY role ORDER BY MIN(rowid)", ROLES
        ).fetchall())  # fmt: skip
        return [role for (role,) in rows]

    def comparison_methods(self) -> dict[int, tuple[str, str]]:
        """Comparison id -> the roles of its file_a and file_b: a fixed order per comparison, as built (sides
        balanced per method pair), before any participant's swap."""
        rows = self._read(lambda conn: conn.execute(
            "SELECT c.id, fa.role, fb.role FROM comparisons c JOIN files fa ON fa.name = c.file_a "
            "JOIN files fb ON fb.name = c.file_b").fetchall())  # fmt: skip
        return {cid: (a, b) for cid, a, b in rows}

    def comparison_count(self) -> tuple[int, int]:
        """(regular comparisons, gold comparisons)."""
        regular, gold = self._read(lambda conn: conn.execute(
            "SELECT COALESCE(SUM(gold = 0), 0), COALESCE(SUM(gold), 0) FROM comparisons").fetchone())  # fmt: skip
        return regular, gold

    def path_of(self, name: str) -> Path:
        """Where the served file `name` (from a Comparison) lies; refuses names that are not the study's files."""
        known = self._read(lambda conn: conn.execute("SELECT 1 FROM files WHERE name = ?", (name,)).fetchone())
        if not known:
            raise ValueError(f"{name!r} is not a file of this study")
        return self.files_dir / name


def _link_new(tmp: Path, path: Path) -> None:
    """Move the finished `tmp` to `path` unless something is there already (a hard link never replaces a file)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise StudyError(f"{path} exists; a study is never overwritten (its ratings would be lost)") from None
    except OSError:  # a file system without hard links
        if path.exists():
            raise StudyError(f"{path} exists; a study is never overwritten (its ratings would be lost)") from None
        os.replace(tmp, path)
