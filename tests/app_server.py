"""The demo app on a tiny random pipeline, served in this process on a free local port (for the app tests)."""

from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path

import pytest

from insv2v.testing.tiny import main as save_tiny


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(tmp: Path, model: str | None = None, **settings):
    """Yields (url, demo) for an app on `model` (default: a tiny pipeline saved under `tmp`), its cache under
    `tmp/cache` and its data (the Rate tab's copy of the shipped study) under `tmp/data`."""
    from insv2v.ui import build_demo, launch_kwargs
    from insv2v.ui.serving import AppConfig

    if model is None:
        model = tmp / "tiny"
        save_tiny([str(model)])
    defaults = dict(max_seconds=4.0, max_upload_mb=2.0, max_frames=12, cache_examples=False, default_steps=1)
    config = AppConfig(model=str(model), cache_dir=tmp / "cache", data_dir=tmp / "data", **{**defaults, **settings})
    with pytest.MonkeyPatch.context() as mp:
        for name in ("GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE"):
            mp.delenv(name, raising=False)
        demo = build_demo(config)
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    **launch_kwargs(config))  # fmt: skip
        try:
            yield f"http://127.0.0.1:{port}/", demo
        finally:
            demo.close()
