"""The Rate tab: a participant rates blind pairs of edits of a study (insv2v/study/), and a researcher, with the token
from INSV2V_STUDY_TOKEN, sees the results.

A participant arrives with `?pid=...` (Prolific, MTurk) or gets an id when they consent, kept in their browser; consents
after the instructions (no plan is made before); then sees one
comparison per screen: the instruction and one video of the input, edit A and edit B playing in sync, and the study's
questions (LOVEU-TGVE's three), each answered "A", "B" or "can't tell" (keys 1-3, 4-6, 7-9; Enter for Next). *Next*
commits the answers, each one row of the study's SQLite database, before the next screen shows; a reload or a server
restart resumes at the first comparison not fully answered (the id from the link, else from the browser's storage).
At the end: a completion code.

Blind by construction: the page holds served files' random names and the letters A and B, never a method; no
download buttons; every event is private (not in the API page, not callable by Gradio's clients).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import gradio as gr

from insv2v.study.store import PID_PATTERN, Comparison, StudyStore, new_pid
from insv2v.study.views import comparison_video

TOKEN_ENV = "INSV2V_STUDY_TOKEN"  # the results view's token; without it the results view stays closed
LABELS = {"A": "A", "B": "B", "tie": "can't tell"}  # choice -> what the participant reads
# Study events: off the API, and off the queue, so that edits filling it never turn a participant away.
PRIVATE = dict(api_visibility="private", queue=False)
INSTRUCTIONS = (
    "### Rate edited videos\n"
    "Each screen shows a video with an editing instruction, and two edited versions of it, **A** and **B**, playing "
    "side by side after the original. Answer three questions for each screen by choosing A, B or *can't tell*; go "
    "with your first impression (a few screens check attention). Your answers are saved as you go: if the page "
    "reloads, you continue where you stopped. At the end you get a completion code.\n\n"
    "Keys: 1, 2, 3 answer the first question (A, B, can't tell), 4, 5, 6 the second, 7, 8, 9 the third; Enter goes on."
)
# Keyboard shortcuts: digits pick a radio of the questions in order, Enter presses Next.
SHORTCUTS_JS = """
() => {
  if (window.__rateKeys) return;
  window.__rateKeys = true;
  document.addEventListener('keydown', (e) => {
    const tab = document.querySelector('#rate-screen');
    const typing = e.target.tagName === 'TEXTAREA' || e.target.tagName === 'SELECT'
      || e.target.tagName === 'INPUT' && !['radio', 'checkbox'].includes(e.target.type);
    if (!tab || tab.offsetParent === null || typing) return;  // keys typed into a field are the field's
    if (e.key >= '1' && e.key <= '9') {
      const n = Number(e.key) - 1, q = Math.floor(n / 3), c = n % 3;
      const radios = document.querySelectorAll(`#rate-q${q} input[type=radio]`);
      if (radios[c]) { radios[c].click(); e.preventDefault(); }
    } else if (e.key === 'Enter') {
      document.querySelector('#rate-next')?.click();
    }
  });
}
"""


def open_study(config) -> StudyStore | None:
    """The study this server collects ratings for (AppConfig.study), or None when it has none."""
    from insv2v.ui.serving import study_path

    path = study_path(config)
    return StudyStore(path) if path is not None else None


def kept_pid(config):
    """The participant id the browser keeps for this server's study (None without a study), so that a participant
    without ?pid= is known again after a reload or a server restart: a key and secret fixed per study (neither
    changes when the server starts again). At the page's root: a tab's components mount only when it is shown."""
    from insv2v.ui.serving import study_path

    path = study_path(config)
    if path is None:
        return None
    key = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:16]
    return gr.BrowserState(storage_key=f"study-{key}", secret=key)


def screen(store: StudyStore, pid: str) -> tuple:
    """(consent visible, rating visible, done visible, progress, instruction, video, *radio values, done text, the
    comparison's id): what the participant `pid` sees now, from what the database holds."""
    if not store.consented(pid):
        return consent_screen(len(store.questions))
    hidden = gr.update(visible=False)
    shown = gr.update(visible=True)
    comparison = store.next_comparison(pid)
    done, planned = store.progress(pid)
    if comparison is None:
        code = store.completion_code(pid)
        text = f"### Thank you!\nYour completion code: **{code}**\n\n(Participant {pid}; {planned} comparisons rated.)"
        return (hidden, hidden, shown, "", "", None, *[None] * len(store.questions), text, None)
    answered = store.answers(pid, comparison.id)  # a reload between two answers of one screen keeps them
    radios = [LABELS[answered[q]] if q in answered else None for q in store.questions]
    return (hidden, shown, hidden, f"Comparison {done + 1} of {planned}", instruction_text(comparison),
            str(comparison_video(store, comparison)), *radios, "", comparison.id)  # fmt: skip


def consent_screen(questions: int) -> tuple:
    """The instructions and the consent button, as `screen` shows them."""
    hidden = gr.update(visible=False)
    return (gr.update(visible=True), hidden, hidden, "", "", None, *[None] * questions, "", None)


def instruction_text(comparison: Comparison) -> str:
    return f"**Instruction:** {comparison.instruction}\n\nLeft: the original. Then edit **A**, then edit **B**."


def choice_of(label: str | None) -> str | None:
    """The stored choice for a radio's label ("can't tell" -> "tie")."""
    return {v: k for k, v in LABELS.items()}.get(label)


def build(studio) -> None:
    """The Rate tab's layout and wiring, inside the caller's `gr.Tab`."""
    store = open_study(studio.config)
    if store is None:
        gr.Markdown("This server runs no study (set INSV2V_STUDY to a study database made by `insv2v study build`).")
        return
    questions = list(store.questions.items())
    pid_state = gr.State()
    saved_pid = studio.kept_pid
    with gr.Column(visible=True, elem_id="rate-consent") as consent_view:
        gr.Markdown(INSTRUCTIONS)
        agree = gr.Button("I agree to take part: start", variant="primary", elem_id="rate-agree")
    with gr.Column(visible=False, elem_id="rate-screen") as rating_view:
        progress = gr.Markdown(elem_id="rate-progress")
        instruction = gr.Markdown(elem_id="rate-instruction")
        video = gr.Video(label="Original | A | B", autoplay=True, loop=True, buttons=[], interactive=False,
                         elem_id="rate-video", height=260)  # fmt: skip
        radios = [gr.Radio(list(LABELS.values()), label=words, elem_id=f"rate-q{i}")
                  for i, (_, words) in enumerate(questions)]  # fmt: skip
        next_button = gr.Button("Next", variant="primary", elem_id="rate-next")
        # The comparison on screen, sent back with the answers: a second Next sent before the page updated (a double
        # click, Enter on the button) then answers the screen it was sent from, which keeps its first answers.
        shown = gr.Number(visible=False, precision=0, elem_id="rate-shown")
    with gr.Column(visible=False, elem_id="rate-done") as done_view:
        done_text = gr.Markdown(elem_id="rate-code")
        afresh = gr.Button("Another participant on this computer? Start afresh", size="sm", elem_id="rate-afresh")
    with gr.Accordion("Results (researchers)", open=False, elem_id="rate-results"):
        token = gr.Textbox(label="Token", type="password", elem_id="rate-token")
        show = gr.Button("Show results", elem_id="rate-show")
        results = gr.Markdown(elem_id="rate-report")
        plot = gr.Image(label="Win rates", visible=False, buttons=[], elem_id="rate-plot")
        csv = gr.File(label="Raw ratings (CSV)", visible=False, elem_id="rate-csv")

    views = [consent_view, rating_view, done_view, progress, instruction, video, *radios, done_text, shown]

    def participant(request: gr.Request | None, saved: str | None, known: str | None = None) -> str | None:
        """The page's participant: `known` (as `arrive` found them), else the link's ?pid=, else the id the browser
        kept (the server may have forgotten this page's session: restarted, or the connection dropped for long)."""
        asked = request.query_params.get("pid") if request is not None else None
        if asked is not None and not PID_PATTERN.fullmatch(asked):
            raise gr.Error("The link's participant id is not valid: use the link you were given.")
        return next((p for p in (known, asked, saved) if isinstance(p, str) and PID_PATTERN.fullmatch(p)), None)

    def start_afresh():
        """A new id at the consent screen, kept by the browser from now on: for a visitor whose link gave none (a
        second tab opened before consenting is then the same person), and for the next person at a shared computer
        (the one before keeps their answers and code)."""
        pid = new_pid()
        return (pid, pid, *consent_screen(len(questions)))

    def arrive(saved: str | None, request: gr.Request):
        """A participant opens the page: where they stopped (the consent screen for an id not seen before, which gets
        its plan only when it consents)."""
        pid = participant(request, saved)
        if pid is None:
            return start_afresh()
        if not store.known(pid):
            return (pid, gr.update(), *consent_screen(len(questions)))
        return (pid, pid, *screen(store, pid))

    def start(pid: str | None, saved: str | None, request: gr.Request):
        pid = store.participant(participant(request, saved, pid))  # the same id however often it is pressed
        store.consent(pid)
        return (pid, pid, *screen(store, pid))

    def answer(pid: str | None, saved: str | None, comparison_id: float | None, request: gr.Request, *labels):
        """Commit the three answers of the screen they were given on (one row each, in one transaction), then show the
        next screen."""
        pid = participant(request, saved, pid)
        if pid is None:
            raise gr.Error("This page lost track of you: reload it. Your answers before this screen are kept.")
        if comparison_id is None:
            return screen(store, pid)
        comparison_id = int(comparison_id)
        if any(label is None for label in labels):
            raise gr.Error("Please answer every question.")
        answers = {question: choice_of(label) for (question, _), label in zip(questions, labels, strict=True)}
        try:
            store.answer_screen(pid, comparison_id, answers)
        except sqlite3.OperationalError as err:  # a full disk, a locked database: the answers stay on the screen
            raise gr.Error(f"Your answers to this screen were not saved ({err}); press Next again.") from None
        return screen(store, pid)

    studio.demo.load(arrive, saved_pid, [pid_state, saved_pid, *views], **PRIVATE)
    agree.click(start, [pid_state, saved_pid], [pid_state, saved_pid, *views], **PRIVATE)
    afresh.click(start_afresh, None, [pid_state, saved_pid, *views], **PRIVATE)
    next_button.click(answer, [pid_state, saved_pid, shown, *radios], views, **PRIVATE)
    studio.demo.load(None, None, None, js=SHORTCUTS_JS, api_visibility="private")

    def results_view(given: str):
        from insv2v.study.report import format_report, report, win_rate_plot, write_csv

        expected = os.environ.get(TOKEN_ENV)
        if not expected or given != expected:
            raise gr.Error("Wrong token." if expected else f"Results are closed: this server has no {TOKEN_ENV}.")
        job = studio.cache.new_job("study-results")
        result = report(store)
        write_csv(store, job / "ratings.csv")
        win_rate_plot(result, job / "win_rates.png")
        return (format_report(result), gr.update(value=str(job / "win_rates.png"), visible=True),
                gr.update(value=str(job / "ratings.csv"), visible=True))  # fmt: skip

    show.click(results_view, token, [results, plot, csv], **PRIVATE)
