"""The Rate tab in study mode (app.py --study), driven over HTTP as its page drives it: a participant's whole
session, resuming, refusals, the results behind a token, and blinding (no method named anywhere a participant can
reach)."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from app_server import serve
from study_media import METHODS, make_study

from insv2v.study.store import StudyStore
from insv2v.testing.gradio_http import EventError, PageSession

ANSWERS = {"rate-q0": "A", "rate-q1": "B", "rate-q2": "can't tell"}
NAMES = re.compile(r"insv2v|tune-a-video|frame2d|\btav\b|2-d per frame", re.IGNORECASE)
SCREEN = dict(progress=3, instruction=4, video=5, code=9)  # output positions of the screen's components


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("study"))


@pytest.fixture(scope="module")
def app(study, tmp_path_factory):
    with serve(tmp_path_factory.mktemp("app"), study=study, study_only=True) as (url, _demo):
        yield url


def video_url(screen) -> str:
    return screen[SCREEN["video"]]["url"]


def visit(app, pid, kept=None, queued=True):
    """A page opened with ?pid=pid (None: without), the browser keeping the id `kept` from an earlier visit
    (`queued=False`: only the page's load events that run with the queue full)."""
    session = PageSession(app, {"pid": pid} if pid else None)
    session.values[kept_id(session)] = kept
    return session, session.load(queued)[2:]  # the load event's first outputs: the id's State, and the kept id


def kept_id(session) -> int:
    """The component of the id the browser keeps (its localStorage)."""
    (found,) = [c["id"] for c in session.config["components"] if c["type"] == "browserstate"]
    return found


def test_a_participant_goes_from_consent_to_a_completion_code(app, study):
    session, screen = visit(app, "alice")
    assert screen[0]["visible"] is True and screen[1]["visible"] is False  # the consent screen first
    screen = session.trigger("rate-agree")[2:]  # after the id and the kept id
    store = StudyStore(study)
    planned = len(store.plan("alice"))
    for k in range(planned):
        assert screen[SCREEN["progress"]] == f"Comparison {k + 1} of {planned}"
        assert video_url(screen).endswith(".mp4")
        screen = session.trigger("rate-next", inputs=ANSWERS)
    code = store.completion_code("alice")
    assert code and code in screen[SCREEN["code"]]
    rows = [r for r in store.ratings() if r["pid"] == "alice"]
    assert len(rows) == 3 * planned  # one committed row per answer
    assert {(r["question"], r["choice"]) for r in rows} == {("text", "A"), ("structure", "B"), ("aesthetic", "tie")}
    _, again = visit(app, "alice")  # a reload at the end shows the same code
    assert code in again[SCREEN["code"]]


def test_a_full_queue_never_turns_a_participant_away(study, tmp_path):
    """The whole Studio with its queue full (room for no request): queued work is turned away, a participant's
    arrival and answers are not, since study events never join the queue."""
    with serve(tmp_path, study=study, queue_size=0) as (url, _demo):
        session, _ = visit(url, "carol", queued=False)
        screen = session.trigger("rate-agree")[2:]
        assert screen[SCREEN["progress"]].startswith("Comparison 1 of")
        screen = session.trigger("rate-next", inputs=ANSWERS)
        assert screen[SCREEN["progress"]].startswith("Comparison 2 of")
        queued = next(d for d in session.config["dependencies"] if d.get("queue", True) and d.get("backend_fn", True))
        body = {"data": [None] * len(queued["inputs"]), "fn_index": queued["id"], "session_hash": "x" * 10}
        assert httpx.post(f"{url}gradio_api/queue/join", json=body).status_code == 503  # queued work: turned away
    assert len([r for r in StudyStore(study).ratings() if r["pid"] == "carol"]) == 3


def test_a_page_whose_session_the_server_forgot_keeps_its_participant(app, study):
    """The server restarted, or dropped the page's session, with the page left open: its next click still answers
    as the participant of the link or of the browser's kept id, not as nobody or a new random one."""
    session, _ = visit(app, "dora")
    session.session_hash = "forgotten1"  # the server no longer knows the page: its State is gone
    session.trigger("rate-agree")
    assert StudyStore(study).known("dora")  # from ?pid=, not a new random id
    session.trigger("rate-next", inputs=ANSWERS)
    session.session_hash = "forgotten2"
    session.query = ""  # no ?pid= either: the id the browser kept
    session.trigger("rate-next", inputs=ANSWERS)
    rows = [r for r in StudyStore(study).ratings() if r["pid"] == "dora"]
    assert len(rows) == 2 * 3  # two screens, each committed


def test_a_reload_resumes_at_the_first_unanswered_comparison(app, study):
    session, _ = visit(app, "bob")
    session.trigger("rate-agree")
    session.trigger("rate-next", inputs=ANSWERS)
    _, screen = visit(app, "bob")  # another tab, or the same after a reload: a new session, the same participant
    planned = len(StudyStore(study).plan("bob"))
    assert screen[SCREEN["progress"]] == f"Comparison 2 of {planned}"


def test_a_participant_without_a_link_id_resumes_by_the_id_their_browser_kept(app, study):
    store = StudyStore(study)
    before = len(store.participants())
    session, screen = visit(app, None)
    assert screen[0]["visible"] is True  # the consent screen; no participant, no plan yet
    pid = session.values[kept_id(session)]  # but an id from arrival, kept by the browser (a second tab shares it)
    assert len(store.participants()) == before and isinstance(pid, str) and not store.known(pid)
    session.trigger("rate-agree")
    assert session.values[kept_id(session)] == pid
    assert store.known(pid) and store.consented(pid) and len(store.participants()) == before + 1
    session.trigger("rate-next", inputs=ANSWERS)
    _, screen = visit(app, None, kept=pid)  # a reload, or the server started again: the browser still has the id
    assert screen[SCREEN["progress"]] == f"Comparison 2 of {len(store.plan(pid))}"
    _, screen = visit(app, None, kept="not-a-known-id")
    assert screen[0]["visible"] is True and len(store.participants()) == before + 1


def test_unanswered_questions_and_bad_ids_are_refused_with_a_message(app):
    session, _ = visit(app, "carol")
    session.trigger("rate-agree")
    with pytest.raises(EventError, match="Please answer every question"):
        session.trigger("rate-next", inputs={"rate-q0": "A"})
    with pytest.raises(EventError, match="participant id is not valid"):
        visit(app, "../etc")


def test_the_results_open_with_the_token_only(app, monkeypatch):
    session, _ = visit(app, "researcher")
    with pytest.raises(EventError, match="no INSV2V_STUDY_TOKEN"):
        session.trigger("rate-show", inputs={"rate-token": "x"})
    monkeypatch.setenv("INSV2V_STUDY_TOKEN", "s3cret")
    with pytest.raises(EventError, match="Wrong token"):
        session.trigger("rate-show", inputs={"rate-token": "guess"})
    report, plot, csv = session.trigger("rate-show", inputs={"rate-token": "s3cret"})
    assert "insv2v" in report and plot["value"] and csv["value"]  # the researcher sees the methods


def test_nothing_a_participant_can_reach_names_a_method(app, study):
    with httpx.Client() as client:
        pages = {path: client.get(app.rstrip("/") + path).text for path in
                 ("/", "/config", "/gradio_api/info", "/gradio_api/openapi.json")}  # fmt: skip
    assert json.loads(pages["/gradio_api/info"]) == {"named_endpoints": {}, "unnamed_endpoints": {}}  # all private
    session, screen = visit(app, "dave")
    responses = [screen, session.trigger("rate-agree")[2:]]
    planned = len(StudyStore(study).plan("dave"))
    for _ in range(planned):
        responses.append(session.trigger("rate-next", inputs=ANSWERS))
    text = json.dumps(responses) + "".join(pages.values())
    assert not NAMES.findall(text)
    urls = [video_url(r) for r in responses[1:-1]]
    assert all(re.fullmatch(r"[0-9a-f]{32}\.mp4", url.rsplit("/", 1)[1]) for url in urls)
    with httpx.Client() as client:
        assert all(client.get(url).status_code == 200 for url in urls)
    assert not any(name in StudyStore(study).files_dir.name for name in METHODS)


def test_a_double_submit_answers_only_the_screen_it_came_from(app, study):
    session, _ = visit(app, "erin")
    screen = session.trigger("rate-agree")[2:]
    first = screen[-1]  # the comparison on screen, which the page sends back with its answers
    session.trigger("rate-next", inputs={**ANSWERS, "rate-shown": first})
    second = session.trigger("rate-next", inputs={**ANSWERS, "rate-shown": first})  # sent before the page updated
    store = StudyStore(study)
    rows = [r for r in store.ratings() if r["pid"] == "erin"]
    assert len(rows) == 3 and {r["comparison_id"] for r in rows} == {first}
    assert second[SCREEN["progress"]].startswith("Comparison 2 of") and second[-1] != first


def test_an_answer_the_database_could_not_save_is_said_and_saved_on_the_next_press(app, study, monkeypatch):
    import sqlite3

    from insv2v.testing.gradio_http import EventError

    session, _ = visit(app, "fred")
    shown = session.trigger("rate-agree")[2:][-1]
    saving = StudyStore.answer_screen

    def full_disk(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(StudyStore, "answer_screen", full_disk)
    with pytest.raises(EventError, match=r"Your answers to this screen were not saved \(disk I/O error\); press Next"):
        session.trigger("rate-next", inputs={**ANSWERS, "rate-shown": shown})
    monkeypatch.setattr(StudyStore, "answer_screen", saving)
    after = session.trigger("rate-next", inputs={**ANSWERS, "rate-shown": shown})
    assert after[SCREEN["progress"]].startswith("Comparison 2 of")
    assert {r["comparison_id"] for r in StudyStore(study).ratings() if r["pid"] == "fred"} == {shown}
