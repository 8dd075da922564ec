"""Controls shared by the tabs."""

from __future__ import annotations

import gradio as gr


class Slider(gr.Slider):
    """gr.Slider whose out-of-range value (only possible through the API) is refused naming the slider."""

    def get_block_name(self) -> str:
        return "slider"  # the same front-end component

    def preprocess(self, payload: float) -> float:
        if payload is not None and not self.minimum <= payload <= self.maximum:
            raise gr.Error(f"{self.label} must be between {self.minimum:g} and {self.maximum:g}; got {payload:g}.")
        return super().preprocess(payload)


def session_of(request: gr.Request | None) -> str | None:
    return request.session_hash if request is not None else None


def cancellable(jobs, run_buttons: list, cancel_button, what: str) -> list:
    """Wire a Cancel button to `jobs` (serving.Jobs); return each run button's submit event, to chain the queued
    work after (`.then(...)`), so that a Cancel pressed while that work waits in the queue reaches it too."""

    def submit(request: gr.Request):
        jobs.submit(session_of(request))

    def cancel(request: gr.Request):
        state = jobs.cancel(session_of(request))
        if state == "running":
            gr.Info(f"Cancelling: {what} stops after its current step.")
        elif state == "waiting":
            gr.Info(f"Cancelled: {what} waiting in the queue will not run.")

    # Cooperative only: Gradio's `cancels=` on a running event left the next heavy event of the session stuck.
    cancel_button.click(cancel, None, None, api_name=False)
    return [button(submit, None, None, api_name=False, queue=False) for button in run_buttons]


def forget_closed_sessions(demo, jobs) -> None:
    """A browser tab closed: drop its session's Cancel bookkeeping (serving.Jobs)."""

    def forget(request: gr.Request):  # `gr` at module level: Gradio resolves this hint to pass the request
        jobs.forget(session_of(request))

    demo.unload(forget)
