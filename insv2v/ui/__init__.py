"""The Gradio demo: one module per tab, assembled by `build_demo`.

Add a tab by writing `insv2v/ui/NAME_tab.py` with `build(studio)` and listing it in `_tabs`; its edit settings
(controls, defaults, limits, the recipe they make) come from insv2v/ui/settings.py. No tab imports another.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from insv2v.editing import EditRecipe, model_defaults
from insv2v.ui.serving import AppConfig, Jobs, OutputCache

TITLE = "InsV2V Studio"
STUDY_TITLE = "Video study"  # the page title in study mode (app.py --study): neutral, naming no method
INTRO = (
    "Edit a video from a plain instruction with one diffusion model, no per-video tuning (InsV2V, ICLR 2024). "
    "**Edit**: one video, every setting. **CFG Sweep**: a grid of text x video guidance scales on one video. "
    "**Synthetic pairs**: the paired videos that train such a model, made by video Prompt-to-Prompt and kept by a "
    "CLIP filter. **Compare**: InsV2V beside Tune-A-Video, which tunes a text-to-image model on each video first. "
    "**Rate**: a blind user study of edits."
)


@dataclass
class Studio:
    """What the tabs share: the app's settings, the output cache, the running jobs, the edit's starting values
    (EditRecipe's defaults with the model's recommended guidance) and the edit settings' table (settings.py:
    each control, default and limit) built from them."""

    config: AppConfig
    cache: OutputCache
    jobs: Jobs
    defaults: EditRecipe
    settings: dict  # name -> settings.Setting, in the Edit endpoint's order
    demo: object = None  # the gr.Blocks being built, for tabs that fill themselves when the page opens
    kept_pid: object = None  # the Rate tab's participant id in the browser's storage (rate_tab.kept_pid)


def _tabs():
    from insv2v.ui import compare_tab, edit_tab, rate_tab, sweep_tab, synth_tab

    return [
        ("Edit", edit_tab),
        ("CFG Sweep", sweep_tab),
        ("Synthetic pairs", synth_tab),
        ("Compare", compare_tab),
        ("Rate", rate_tab),
    ]


def examples_key(config: AppConfig) -> str:
    """What an example's cached result depends on: the model (its files too: one retrained in place), the settings
    the examples run with, and the CLIP scoring them."""
    from insv2v.loading import files_signature

    made_by = [config.model, files_signature(config.model), config.default_steps, config.max_frames, config.clip,
               config.device]  # fmt: skip
    return hashlib.sha1(json.dumps(made_by, default=str).encode()).hexdigest()[:12]


def prepare_environment(config: AppConfig) -> None:
    """Keep Gradio's own copies of uploads and outputs under the app's cache directory, so nothing else is served."""
    os.environ.setdefault("GRADIO_TEMP_DIR", str(config.cache_dir / "gradio"))
    os.environ.setdefault("GRADIO_EXAMPLES_CACHE", str(config.cache_dir / "examples" / examples_key(config)))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: nothing phones home


def gradio_copies(config: AppConfig) -> Path | None:
    """Gradio's folder of copies, when it is the app's own (under its cache directory) and so the app's to clean; a
    GRADIO_TEMP_DIR set elsewhere (a shared /tmp) is left to Gradio."""
    folder = Path(os.environ["GRADIO_TEMP_DIR"]).resolve()
    return folder if folder.is_relative_to(Path(config.cache_dir).resolve()) else None


def pinned_files(demo) -> list[str]:
    """Gradio's copies its components keep for the app's whole life (examples, default values)."""
    return [path for block in demo.blocks.values() for path in getattr(block, "keep_in_cache", ())]


def build_demo(config: AppConfig | None = None):
    """The app's gr.Blocks, queue configured; call `.launch(**launch_kwargs(config))` on it."""
    import gradio as gr

    from insv2v.ui.controls import forget_closed_sessions
    from insv2v.ui.settings import settings_table

    config = config or AppConfig.from_env()
    prepare_environment(config)
    defaults = model_defaults(config.model)
    studio = Studio(
        config,
        OutputCache(
            config.cache_dir,
            config.cache_max_mb * 2**20,
            config.cache_max_age_s,
            gradio=gradio_copies(config),
        ),
        Jobs(),
        defaults,
        settings_table(config, defaults),
    )
    hour = 3600
    title = STUDY_TITLE if config.study_only else TITLE
    with gr.Blocks(title=title, delete_cache=(hour, int(config.cache_max_age_s)), analytics_enabled=False) as demo:
        from insv2v.ui import rate_tab

        studio.demo, studio.kept_pid = demo, rate_tab.kept_pid(config)
        studio.cache.pinned = lambda: pinned_files(demo)
        studio.cache.in_use = studio.jobs.folders
        if config.study_only:  # what participants see: the study alone, nothing that names a method
            gr.Markdown(f"# {STUDY_TITLE}")
            rate_tab.build(studio)
        else:
            gr.Markdown(f"# {TITLE}\n{INTRO}\n\nModel: `{config.model_name}`")
            for name, module in _tabs():
                with gr.Tab(name, id=name.lower().replace(" ", "-")):
                    module.build(studio)
            forget_closed_sessions(demo, studio.jobs)
    # The queue bounds the minutes-long work; a study's events (milliseconds each, a crowd of participants at once)
    # never join it, so none is turned away.
    demo.queue(max_size=config.queue_size, default_concurrency_limit=1)
    demo.studio = studio
    return demo


def launch_kwargs(config: AppConfig) -> dict:
    """Arguments of `demo.launch`: upload limit; the cache directory and the study's served videos as the only extra
    served paths; no run history (a participant's browser must not keep what the study showed).
    Host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT unless given."""
    import gradio as gr

    from insv2v.study.store import StudyStore
    from insv2v.ui.serving import study_path

    system = ["ui-sans-serif", "system-ui", "sans-serif"]  # no web fonts: the page works offline
    study = study_path(config)
    served = [config.cache_dir] + ([StudyStore(study).files_dir] if study is not None else [])
    return dict(
        theme=gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"]),
        max_file_size=int(config.max_upload_mb * 2**20),  # bytes: any limit, 0.5 MB too
        allowed_paths=[str(path) for path in served],
        show_error=True,
        run_history=False,
    )
