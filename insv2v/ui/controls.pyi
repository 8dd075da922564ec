"""Controls shared by the tabs."""

from __future__ import annotations

import gradio as gr

from gradio.events import Dependency

class Slider(gr.Slider):
    """gr.Slider whose out-of-range value (only possible through the API) is refused naming the slider."""

    def get_block_name(self) -> str:
        return "slider"  # the same front-end component

    def preprocess(self, payload: float) -> float:
        if payload is not None and not self.minimum <= payload <= self.maximum:
            raise gr.Error(f"{self.label} must be between {self.minimum:g} and {self.maximum:g}; got {payload:g}.")
        return super().preprocess(payload)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component