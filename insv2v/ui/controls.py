"""Controls shared by the tabs."""

from __future__ import annotations

import gradio as gr


class Slider(gr.Slider):
    """gr.Slider whose out-of-range value (only possible through the API) is refused naming the slider."""

    def get_block_name(self) -> str:
        return "slider"  # the same front-end component

    def preprocess(self, payload: float) -> float:
        if payload is None:
            raise gr.Error(f"{self.label} needs a number between {self.minimum:g} and {self.maximum:g}; got none.")
        if not self.minimum <= payload <= self.maximum:
            raise gr.Error(f"{self.label} must be between {self.minimum:g} and {self.maximum:g}; got {payload:g}.")
        return super().preprocess(payload)


def session_of(request: gr.Request | None, tab: str) -> str:
    """The key of a browser session's work in one tab (serving.Jobs): a tab's Cancel reaches that tab's work only."""
    return f"{request.session_hash if request is not None else ''}/{tab}"


def cancellable(jobs, run_buttons: list, cancel_button, note, what: str, tab: str) -> list:
    """Wire tab `tab`'s Cancel button to `jobs` (serving.Jobs), saying what it did in `note` (a Markdown beside it);
    return each run button's submit event, to chain the queued work after (`.then(...)`), so that a Cancel pressed
    while that work waits in the queue reaches it too."""

    def submit(request: gr.Request):
        jobs.submit(session_of(request, tab))
        return ""

    def cancel(request: gr.Request):
        state = jobs.cancel(session_of(request, tab))
        if state == "running":
            return f"Cancelling: {what} stops after its current step."
        if state == "waiting":
            return f"Cancelled: {what} waiting in the queue will not run."
        return "Nothing to cancel."

    # Not queued: a Cancel must get through when the queue is full. Cooperative only: Gradio's `cancels=` on a
    # running event left the next heavy event of the session stuck.
    cancel_button.click(cancel, None, note, api_name=False, queue=False)
    return [button(submit, None, note, api_name=False, queue=False) for button in run_buttons]


def forget_closed_sessions(demo, jobs) -> None:
    """A browser tab closed: drop its session's Cancel bookkeeping (serving.Jobs)."""

    def forget(request: gr.Request):  # `gr` at module level: Gradio resolves this hint to pass the request
        jobs.forget(request.session_hash)  # every tab's work

    demo.unload(forget)
