"""A Gradio page's events driven over HTTP as the page itself drives them (a queued event through the queue's join and
its event stream, one off the queue through a direct request), private events included: what the study's tests and
load test use to act as participants without a browser."""

from __future__ import annotations

import json
import secrets
import urllib.parse

import httpx


class EventError(RuntimeError):
    """An event that ended in an error (a gr.Error's message, or the server's)."""


class PageSession:
    """One visit of the page at `url` (one session hash, like one browser tab), with the page's query string."""

    def __init__(self, url: str, query: dict | None = None, client: httpx.Client | None = None, timeout: float = 120):
        self.url = url.rstrip("/")
        self.query = urllib.parse.urlencode(query or {})
        self.client = client or httpx.Client(timeout=timeout)
        self.session_hash = secrets.token_hex(6)
        config = self.client.get(f"{self.url}/config").raise_for_status().json()
        self.config = config
        self.root = config["layout"]["id"]  # the Blocks itself, its load events' target (0 for a process's first)
        self.elements = {c["props"]["elem_id"]: c["id"] for c in config["components"] if c["props"].get("elem_id")}
        self.values = {c["id"]: c["props"].get("value") for c in config["components"]}

    def _dependency(self, target: int, event: str) -> tuple[int, dict]:
        for index, dep in enumerate(self.config["dependencies"]):
            if [target, event] in [list(t) for t in dep["targets"]] and dep.get("backend_fn", True):
                return dep.get("id", index), dep
        raise KeyError(f"no {event} event on component {target}")

    def load(self, queued: bool = True) -> list:
        """The page's load events that run server code, in order (`queued=False`: only those off the queue, which
        run even when the queue is full); the last one's outputs."""
        outputs = []
        for index, dep in enumerate(self.config["dependencies"]):
            runs = dep.get("backend_fn", True) and (queued or not dep.get("queue", True))
            if [self.root, "load"] in [list(t) for t in dep["targets"]] and runs:
                outputs = self._run(dep.get("id", index), dep, None)
        return outputs

    def trigger(self, elem_id: str, event: str = "click", inputs: dict[str, object] | None = None) -> list:
        """Fire `event` on the component `elem_id`; `inputs`: values by elem_id, set as a user would set them; the
        other inputs go as the page shows them (a State's as None: the server keeps it). Returns the outputs."""
        fn, dep = self._dependency(self.elements[elem_id], event)
        return self._run(fn, dep, self.elements[elem_id], inputs or {})

    def _run(self, fn_index: int, dep: dict, trigger_id: int | None, inputs: dict | None = None) -> list:
        self.values.update({self.elements[k]: v for k, v in (inputs or {}).items()})
        data = [self.values.get(i) for i in dep["inputs"]]
        body = {"data": data, "fn_index": fn_index, "session_hash": self.session_hash, "event_data": None,
                "trigger_id": trigger_id}  # fmt: skip
        if not dep.get("queue", True):  # an event off the queue: one request, one answer
            return self._run_direct(dep, body)
        join = f"{self.url}/gradio_api/queue/join" + (f"?{self.query}" if self.query else "")
        event_id = self.client.post(join, json=body).raise_for_status().json()["event_id"]
        stream = f"{self.url}/gradio_api/queue/data?session_hash={self.session_hash}"
        with self.client.stream("GET", stream) as response:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") != event_id or message.get("msg") != "process_completed":
                    continue
                output = message.get("output", {})
                if not message.get("success", False):
                    raise EventError(output.get("error") or "the event failed")
                self._show(dep["outputs"], output["data"])
                return output["data"]
        raise EventError("the event stream ended before the event completed")

    def _run_direct(self, dep: dict, body: dict) -> list:
        predict = f"{self.url}/gradio_api/run/predict" + (f"?{self.query}" if self.query else "")
        response = self.client.post(predict, json=body)
        if response.status_code >= 500:
            raise EventError(response.json().get("error") or "the event failed")
        data = response.raise_for_status().json()["data"]
        self._show(dep["outputs"], data)
        return data

    def _show(self, targets: list[int], values: list) -> None:
        """What the page displays after an event: each output's new value (an update without one keeps it)."""
        for target, value in zip(targets, values, strict=False):
            if isinstance(value, dict) and value.get("__type__") == "update":
                if "value" in value:
                    self.values[target] = value["value"]
            else:
                self.values[target] = value
