"""The study load test (benchmarks/study_load.py) at small scale: simulated participants rate a study at once, the
server is SIGKILLed under them and restarted, and every acknowledged answer, every resumed screen and every row is
checked; the report must find the method the oracle expects to win ("insv2v": the exact edit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from study_media import make_study

from insv2v.study.store import StudyStore

REPO = Path(__file__).resolve().parents[1]
PARTICIPANTS = 6
QUESTIONS = 3


def load_test(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "study_load.py"), *args], cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


@pytest.mark.slow  # app.py in subprocesses: started, SIGKILLed, started again
def test_participants_survive_a_killed_server_and_the_report_finds_the_exact_edit(tmp_path):
    study = make_study(tmp_path, items=4, per_participant=4)
    _, gold = StudyStore(study).comparison_count()
    planned = 4 + gold  # per_participant regular comparisons, and every gold one
    done = load_test("--study", str(study), "--truth", str(tmp_path / "items"), "--participants", str(PARTICIPANTS),
                     "--comparisons", str(planned), "--kill-after", "0.4", "--workdir", str(tmp_path / "work"),
                     "--json", str(tmp_path / "figures.json"))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["passed"] and figures["failures"] == []
    rows = PARTICIPANTS * planned * QUESTIONS
    for phase in ("throughput", "durability"):
        assert figures[phase]["rows"] == figures[phase]["expected_rows"] == rows
        assert figures[phase]["duplicates"] == 0
        assert figures[phase]["completion_codes"] == PARTICIPANTS
    assert figures["throughput"]["nexts"] == PARTICIPANTS * planned
    killed = figures["durability"]
    # a screen committed whose reply the kill lost is not answered again: the reload shows the one after it
    assert killed["nexts"] == PARTICIPANTS * planned - killed["one_more_than_acknowledged"]
    assert 0.4 * rows <= killed["killed_at_answers"] < rows  # killed mid-study
    assert killed["killed_at_answers"] == QUESTIONS * killed["acknowledged_screens"]
    assert killed["interrupted_requests"] >= 1  # killed under load: requests in flight
    assert killed["acknowledged_ok"] and killed["fewer_than_acknowledged"] == killed["acknowledged_not_as_sent"] == 0
    assert killed["resumed_right"] == PARTICIPANTS and killed["resumed_wrong"] == 0
    assert "Expected winner (oracle): insv2v" in done.stdout and figures["expected_winner"] == "insv2v"
    assert "All checks passed." in done.stdout
    original = StudyStore(study)  # the benchmark works on copies
    assert original.participants() == [] and original.ratings() == []
    assert not (original.files_dir / "views").exists()


@pytest.mark.slow  # the benchmark in a subprocess
def test_a_study_planning_another_number_of_comparisons_is_refused_by_name(tmp_path):
    study = make_study(tmp_path, items=3, per_participant=2)
    done = load_test("--study", str(study), "--truth", str(tmp_path / "items"), "--comparisons", "20")
    assert done.returncode != 0
    assert "--comparisons 20" in done.stderr and "plans 3 comparisons per participant" in done.stderr
