"""The Synthetic pairs tab: browse a dataset made by the data engine, re-filter it live, make one pair.

A dataset (insv2v.synth.dataset) is opened from the folders the server may read (INSV2V_DATASETS; by default the
shipped toy set). Four threshold sliders re-apply the CLIP filter to the recorded scores: counts, share kept and a
histogram per score with its threshold, coloured by the toy-world judge's verdict where the dataset has one. A pair
plays as one side-by-side video (input | edited), so both halves stay in sync. "Make one pair" runs video
Prompt-to-Prompt on the text-to-video model (API endpoint `synth_pair`).
"""

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from insv2v.synth import dataset
from insv2v.synth.clip_filter import SCORE_NAMES, PairScores, Thresholds
from insv2v.ui.serving import Job, gpu, user_message

SCORE_LABELS = {
    "sim_0": "input frames vs input caption",
    "sim_1": "edited frames vs output caption",
    "sim_dir": "direction (edit vs caption change)",
    "sim_image": "input vs edited frames",
}
RIGHT, WRONG, UNJUDGED = (46, 160, 67), (214, 39, 40), (120, 120, 120)  # the judge's verdict, as bar colours
MAX_FRAMES = 32
MAX_STEPS = 50


# ---------------------------------------------------------------- datasets the server may read


def available_datasets(roots) -> dict[str, Path]:
    """name -> folder: each allowed root that is a dataset, and the datasets directly inside it."""
    found = {}
    for root in roots:
        root = Path(root)
        candidates = [root] + (sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else [])
        for folder in candidates:
            if dataset.is_dataset(folder):
                found[folder.name if folder == root else f"{root.name}/{folder.name}"] = folder
    return found


def open_dataset(studio, name: str) -> dict:
    """The records and card of an allowed dataset, by its name in the list (never by a path from the page)."""
    folders = available_datasets(studio.config.datasets)
    if name not in folders:
        raise gr.Error(f"no dataset named {name!r} here; choose one of: {', '.join(folders) or 'none'}")
    folder = folders[name]
    try:
        card, records = dataset.read_card(folder), dataset.read_manifest(folder)
        if card.get("thresholds"):
            Thresholds.from_dict(card["thresholds"])
    except (ValueError, OSError) as err:  # a damaged manifest or card: say which line, show nothing of it
        raise gr.Error(f"{name} cannot be opened: {user_message(err)}") from None
    return {"name": name, "card": card, "records": records}


# ---------------------------------------------------------------- what the page shows


def verdicts(records: list[dict]) -> list[bool | None]:
    return [r["judge"]["edit_right"] if r.get("judge") else None for r in records]


def summary(records: list[dict], kept: list[bool]) -> str:
    """Counts kept, share kept, and what the judge says of the kept pairs (precision) and the right ones (recall)."""
    from insv2v.toyworld.synthetic import filter_report

    n, k = len(records), sum(kept)
    if n == 0:
        return "This dataset has no finished samples yet."
    text = f"**{k} of {n} kept ({100 * k / n:.0f}%)**"
    judged = [dict(r, kept=keep) for r, keep in zip(records, kept, strict=True)]
    report = filter_report(judged)
    if report["pairs"]:

        def share(name: str) -> str:
            r = report[name]
            return f"{100 * r['rate']:.0f}%" if r["n"] else "n/a"

        text += (
            f" · judge: {report['right']['k']} of {report['pairs']} pairs show the edit and keep the rest · of the "
            f"kept, {share('precision')} right (precision) · of the right ones, {share('recall')} kept (recall)"
        )
    return text


def histograms(records: list[dict], thresholds: Thresholds, bins: int = 24) -> Image.Image:
    """One histogram per score, stacked bars by the judge's verdict, the threshold as a vertical line."""
    width, height, pad = 300, 170, 28
    image = Image.new("RGB", (2 * width, 2 * height + 22), "white")
    draw = ImageDraw.Draw(image)
    draw.font = ImageFont.load_default(size=12)
    judged = verdicts(records)
    legend = [("right edit", RIGHT), ("wrong edit", WRONG)] if any(v is not None for v in judged) else []
    for i, (label, colour) in enumerate([*legend, ("threshold", (0, 0, 0))]):
        draw.rectangle((8 + 120 * i, 6, 20 + 120 * i, 16), fill=colour)
        draw.text((24 + 120 * i, 4), label, fill="black")
    for k, name in enumerate(SCORE_NAMES):
        x0, y0 = (k % 2) * width, 22 + (k // 2) * height
        values = np.array([r["scores"][name] for r in records], float)
        line = getattr(thresholds, name)
        low = min(values.min(initial=line), line) - 0.02
        high = max(values.max(initial=line), line) + 0.02
        edges = np.linspace(low, high, bins + 1)
        groups = {colour: values[[v is value for v in judged]] for value, colour in
                  ((True, RIGHT), (False, WRONG), (None, UNJUDGED))}  # fmt: skip
        counts = {c: np.histogram(v, edges)[0] for c, v in groups.items()}
        top = max(1, max((sum(counts[c][b] for c in counts) for b in range(bins)), default=1))
        plot_w, plot_h = width - 2 * pad, height - 2 * pad
        draw.text((x0 + pad, y0 + 2), f"{name}: {SCORE_LABELS[name]}", fill="black")
        for b in range(bins):
            base = 0
            for colour in (RIGHT, WRONG, UNJUDGED):
                count = counts[colour][b]
                if count:
                    left = x0 + pad + b * plot_w / bins
                    bottom = y0 + pad + plot_h - base * plot_h / top
                    draw.rectangle((left, bottom - count * plot_h / top, left + plot_w / bins - 1, bottom), fill=colour)
                    base += count
        tx = x0 + pad + (line - low) / (high - low) * plot_w
        draw.line((tx, y0 + pad - 4, tx, y0 + pad + plot_h), fill="black", width=2)
        draw.text((tx + 3, y0 + pad - 6), f"{line:.2f}", fill="black")
        draw.line((x0 + pad, y0 + pad + plot_h, x0 + pad + plot_w, y0 + pad + plot_h), fill="black")
        draw.text((x0 + pad, y0 + pad + plot_h + 3), f"{low:.2f}", fill="black")
        draw.text((x0 + pad + plot_w - 24, y0 + pad + plot_h + 3), f"{high:.2f}", fill="black")
    return image


TABLE_HEADERS = ["score", "value", "threshold", "verdict"]


def no_scores() -> pd.DataFrame:
    return pd.DataFrame(columns=TABLE_HEADERS)  # an empty table (an empty list is refused by the component)


def score_table(scores: dict, thresholds: Thresholds) -> list[list]:
    """One row per score: name, value, threshold, pass/FAIL (the sliders' labels say what each score is)."""
    return [
        [name, round(scores[name], 4), getattr(thresholds, name),
         "pass" if scores[name] >= getattr(thresholds, name) else "FAIL"]
        for name in SCORE_NAMES
    ]  # fmt: skip


def describe_pair(record: dict) -> str:
    s = record["settings"]
    judge = record.get("judge")
    lines = [
        f"**Input caption:** {record['input']}",
        f"**Instruction:** {record['edit']}",
        f"**Output caption:** {record['output']}",
        f"Prompt-to-Prompt: CFG {s['guidance_scale']:g}, self-attention injected for the first {s['sa_end']:.0%} of "
        + (f"steps, cross-attention until {s['ca_end']:.0%}, edit weight {s['edit_weight']:g}"
           if s["ca_end"] > s["sa_end"] else "steps, no cross-attention edit")  # the image recipe's
        + (f" · the edited video shares the input's first {s['shared_end']:.0%} of steps" if s.get("shared_end")
           else "")
        + f" · seed {record['seed']}"
        + (f" · local blending: {record['blend_area']:.0%} of the frame may change" if "blend_area" in record else "")
        + (f" · kind guidance {record['kind_guidance']:g}" if record.get("kind_guidance") else ""),
    ]  # fmt: skip
    if judge:
        lines.append(
            f"Toy-world judge: **{'right' if judge['edit_right'] else 'wrong'} edit** ({judge.get('reason', '')})"
        )
    return "\n\n".join(lines)


def side_by_side_file(studio, input_frames, edited_frames, name: str) -> str:
    """input | edited as one mp4 in a fresh output folder (served from the cache, like every output)."""
    from insv2v.synth.generate import FPS
    from insv2v.video import side_by_side, write_video

    out = studio.cache.new_job("pair") / f"{name}.mp4"
    write_video(out, side_by_side(input_frames, edited_frames), FPS)
    return str(out)


def dataset_pair_file(studio, folder: Path, record: dict) -> str:
    """A dataset's pair as input | edited in one mp4, made once per version of its files and served from the cache
    while it lasts (browsing back and forth encodes nothing again)."""
    import hashlib

    paths = dataset.pair_paths(folder, record)
    version = json.dumps([[str(path), path.stat().st_mtime_ns] for path in paths])
    out = studio.cache.jobs / f"browse-{hashlib.sha256(version.encode()).hexdigest()[:16]}" / f"pair-{record['id']}.mp4"
    if out.is_file():
        out.touch()  # used now: the cache keeps what was used last
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from insv2v.synth.generate import FPS
    from insv2v.video import side_by_side, write_video

    write_video(out, side_by_side(*dataset.read_pair(folder, record)), FPS)  # whole or not at all
    return str(out)


def dataset_view(studio, name: str | None, defaults: Thresholds) -> tuple:
    """What the page shows of dataset `name`: (the opened data, its card line, the four slider updates, the kind
    chooser update). A dataset that cannot be opened shows nothing, not the one shown before, and says why."""
    nothing = [gr.update()] * len(SCORE_NAMES)
    if not name:
        return None, "No dataset found (INSV2V_DATASETS names the folders this server may read).", *nothing, gr.update(
            choices=["all"], value="all")  # fmt: skip
    try:
        opened = open_dataset(studio, name)
    except gr.Error as err:  # the chooser names this one now: keeping the previous one's pairs would mislead
        gr.Warning(err.message)
        return None, f"**{err.message}**", *nothing, gr.update(choices=["all"], value="all")
    c = opened["card"]
    th = Thresholds.from_dict(c["thresholds"]) if c.get("thresholds") else defaults
    kinds = sorted({r.get("kind") or "unknown" for r in opened["records"]})
    text = (
        f"Made with `{Path(str(c.get('t2v', '?'))).name}` from `{c.get('prompts', '?')}` prompts; "
        f"CLIP `{Path(str(c.get('clip', '?'))).name}`; {c.get('frames', '?')} frames, {c.get('steps', '?')} steps."
    ) + (f" At most {c['top_per_prompt']} kept per prompt." if c.get("top_per_prompt") else "")
    return (opened, text, *[gr.update(value=getattr(th, n)) for n in SCORE_NAMES],
            gr.update(choices=["all", *kinds], value="all"))  # fmt: skip


def kept_at(data: dict, thresholds: Thresholds) -> list[bool]:
    """Which records the sliders' thresholds keep, with the dataset's own limit per prompt."""
    return dataset.kept_under(data["records"], thresholds, data["card"].get("top_per_prompt"))


def filtered(records: list[dict], kept: list[bool], which: str, kind: str) -> list[int]:
    """Positions of the records shown under the browse filters (kept/rejected as `kept` says: `kept_at`)."""
    wanted = []
    for i, (r, keep) in enumerate(zip(records, kept, strict=True)):
        if (which == "kept" and not keep) or (which == "rejected" and keep):
            continue
        if kind != "all" and (r.get("kind") or "unknown") != kind:
            continue
        wanted.append(i)
    return wanted


def show_pair(studio, data: dict | None, position, which: str, kind: str, *values):
    """The pair at `position` (clipped to those the filters show): video, text, score table, label, position."""
    if not data:
        return None, "Open a dataset first.", no_scores(), "0 of 0", 1
    thresholds = Thresholds(*values)
    kept = kept_at(data, thresholds)
    shown = filtered(data["records"], kept, which, kind)
    if not shown:
        return None, "No pair matches these filters.", no_scores(), "0 of 0", 1
    position = int(np.clip(position or 1, 1, len(shown)))
    record = data["records"][shown[position - 1]]
    folder = available_datasets(studio.config.datasets).get(data["name"])
    if folder is None:
        raise gr.Error(f"the dataset {data['name']} is no longer here; choose another")
    try:
        video = dataset_pair_file(studio, folder, record)
    except (ValueError, OSError) as err:
        raise gr.Error(user_message(err)) from None
    table = score_table(record["scores"], thresholds)
    text = describe_pair(record)
    top = data["card"].get("top_per_prompt")
    if top and PairScores(**record["scores"]).passes(thresholds) and not kept[shown[position - 1]]:
        text += (f"\n\n**Rejected by the limit per prompt**: it passes every threshold, but {top} other sample(s) of "
                 "its prompt have a higher directional similarity.")  # fmt: skip
    return video, text, table, f"{position} of {len(shown)}", position


# ---------------------------------------------------------------- make one pair


def filter_clip(config) -> str | None:
    """The CLIP that scores a pair made here: INSV2V_SYNTH_CLIP, else the one that belongs to the text-to-video
    model (the toy CLIP for the toy world's models, CLIP ViT-L/14 otherwise), whatever the Edit tab's metrics use."""
    from insv2v.synth.clip_filter import default_clip

    return config.synth_clip or (default_clip(config.t2v) if config.t2v else None)


def make_pair_handler(studio):
    """The handler of "Make pair" and the API endpoint `synth_pair`."""

    @gpu(studio.config.gpu_seconds)
    def synth_pair(
        input_caption: str,
        output_caption: str,
        instruction: str = "",
        seed: int = 0,
        draw_settings: bool = True,
        guidance_scale: float = 8.0,
        sa_end: float = 0.4,
        ca_end: float = 0.7,
        edit_weight: float = 2.0,
        steps: int = 30,
        frames: int = 16,
        local_blend: float = 0.0,
        shared_end: float = 0.0,
        blend_maps: str = "attention",
        kind_guidance: float | None = None,
        sim_0: float | None = None,
        sim_1: float | None = None,
        sim_dir: float | None = None,
        sim_image: float | None = None,
        progress=gr.Progress(),
    ):
        from insv2v.metrics import load_clip
        from insv2v.synth.generate import GenerateConfig, make_sample
        from insv2v.synth.p2p import BLEND_MAPS, P2PSettings
        from insv2v.synth.prompts import PromptPair, validate_pair
        from insv2v.synth.t2v import KIND_GUIDANCE_RANGE, load_t2v, recommended_kind_guidance

        config = studio.config
        try:
            input_caption, output_caption = (input_caption or "").strip(), (output_caption or "").strip()
            instruction = (instruction or "").strip()
            if steps is None or frames is None or seed is None:
                raise ValueError("Steps, Frames and Seed need a value")
            if not input_caption or not output_caption:
                raise ValueError("give both captions: the input video's and the edited video's")
            reason = validate_pair(input_caption, instruction.strip() or "edit", output_caption)
            if reason:
                raise ValueError(f"these captions cannot make a pair ({reason.replace('_', ' ')})")
            if not 1 <= int(steps) <= MAX_STEPS or not 1 <= int(frames) <= MAX_FRAMES:
                raise ValueError(f"Steps must be 1-{MAX_STEPS} and Frames 1-{MAX_FRAMES}")
            if local_blend is None or not 0 <= local_blend < 1:
                raise ValueError(f"Local blend must be in [0, 1) (0: off), got {local_blend}")
            if shared_end is None or not 0 <= shared_end < 1:
                raise ValueError(f"Shared start must be in [0, 1) (0: off), got {shared_end}")
            if blend_maps not in BLEND_MAPS:
                raise ValueError(f"Local blend mask must be one of {', '.join(BLEND_MAPS)}, got {blend_maps!r}")
            if config.t2v is None:
                raise ValueError("this server has no text-to-video model (set INSV2V_T2V)")
            if kind_guidance is None:  # an API call that names none: the model's own
                kind_guidance = recommended_kind_guidance(config.t2v)
            if not KIND_GUIDANCE_RANGE[0] <= kind_guidance <= KIND_GUIDANCE_RANGE[1]:
                raise ValueError(f"Kind guidance must be in [{KIND_GUIDANCE_RANGE[0]:g}, {KIND_GUIDANCE_RANGE[1]:g}] "
                                 f"(0: off), got {kind_guidance}")  # fmt: skip
            settings = None if draw_settings else P2PSettings(guidance_scale, sa_end, ca_end, edit_weight, shared_end)
            progress(0, desc="loading the text-to-video model")
            pipe = load_t2v(config.t2v, config.device)
            pipe.set_progress_bar_config(disable=True)
            clip = filter_clip(config)
            thresholds = Thresholds.for_clip(clip, sim_0=sim_0, sim_1=sim_1, sim_dir=sim_dir, sim_image=sim_image)
            run = GenerateConfig(out_dir="", t2v=config.t2v, prompts="", n=1, clip=clip, thresholds=thresholds,
                                 frames=int(frames), steps=int(steps), local_blend=local_blend or None,
                                 blend_maps=blend_maps, shared_end=shared_end,
                                 kind_guidance=kind_guidance)  # fmt: skip
            job = Job(int(steps), progress, "pair")

            def on_step(step: int, total: int) -> None:
                job.done = step
                job.update()

            pair = PromptPair(input_caption, instruction.strip(), output_caption)
            source, target, record = make_sample(pipe, load_clip(clip), pair, int(seed), run, settings, on_step)
        except (ValueError, RuntimeError, OSError, MemoryError) as err:
            raise gr.Error(user_message(err)) from None
        video = side_by_side_file(studio, source, target, f"pair-seed{int(seed)}")
        failed = PairScores(**record["scores"]).failed(thresholds)
        verdict = "kept" if not failed else "rejected: " + ", ".join(f"{name} below its threshold" for name in failed)
        status = f"{verdict} · made in {record['seconds']:.1f} s"
        return video, describe_pair(record), score_table(record["scores"], thresholds), json.dumps(record), status

    return synth_pair


# ---------------------------------------------------------------- layout and wiring


def build(studio) -> None:
    """The Synthetic pairs tab's layout and wiring, inside the caller's `gr.Tab`."""
    from insv2v.synth.t2v import recommended_guidance, recommended_kind_guidance

    names = list(available_datasets(studio.config.datasets))
    defaults = Thresholds.for_clip(filter_clip(studio.config))
    with gr.Row():
        with gr.Column(scale=1):
            chooser = gr.Dropdown(names, value=names[0] if names else None, label="Dataset", elem_id="synth-dataset")
            card = gr.Markdown(elem_id="synth-card")
            sliders = [
                gr.Slider(-1.0, 1.0, value=getattr(defaults, name), step=0.01,
                          label=f"{name}: {SCORE_LABELS[name]}", elem_id=f"synth-{name.replace('_', '-')}")
                for name in SCORE_NAMES
            ]  # fmt: skip
            counts = gr.Markdown(elem_id="synth-counts")
            plot = gr.Image(show_label=False, type="pil", format="png", elem_id="synth-histograms")
        with gr.Column(scale=1):
            with gr.Row():
                which = gr.Radio(["all", "kept", "rejected"], value="all", label="Show", elem_id="synth-which")
                kind = gr.Dropdown(["all"], value="all", label="Edit kind", elem_id="synth-kind")
            with gr.Row():
                prev_button = gr.Button("Previous", elem_id="synth-prev")
                position = gr.Number(1, label="Pair", precision=0, minimum=1, elem_id="synth-position")
                next_button = gr.Button("Next", elem_id="synth-next")
            where = gr.Markdown(elem_id="synth-where")
            video = gr.Video(label="Input | edited", autoplay=True, loop=True, elem_id="synth-video")
            text = gr.Markdown(elem_id="synth-text")
            table = gr.Dataframe(headers=TABLE_HEADERS, elem_id="synth-scores")
    with gr.Accordion("Make one pair", open=False), gr.Row():
        with gr.Column():
            input_caption = gr.Textbox(label="Input caption", elem_id="synth-make-input",
                                       placeholder="a red circle moving right on a beach")  # fmt: skip
            instruction = gr.Textbox(label="Instruction (recorded with the pair)", elem_id="synth-make-edit",
                                     placeholder="make the circle blue")  # fmt: skip
            output_caption = gr.Textbox(label="Edited caption", elem_id="synth-make-output",
                                        placeholder="a blue circle moving right on a beach")  # fmt: skip
            with gr.Row():
                seed = gr.Number(0, label="Seed", precision=0, elem_id="synth-make-seed")
                draw = gr.Checkbox(True, label="Settings drawn from the seed (as the engine does)")
            with gr.Row():
                cfg = gr.Slider(1, 15, value=recommended_guidance(studio.config.t2v) if studio.config.t2v else 8,
                                step=1, label="CFG (when not drawn)")  # fmt: skip
                sa_end = gr.Slider(0, 1, value=0.4, step=0.05, label="Self-attention injection until")
                ca_end = gr.Slider(0, 1, value=0.7, step=0.05, label="Cross-attention injection until")
                edit_weight = gr.Slider(1, 5, value=2, step=1, label="Edit weight")
            with gr.Row():
                steps = gr.Slider(1, MAX_STEPS, value=min(30, studio.config.default_steps * 2), step=1,
                                  label="Steps", elem_id="synth-make-steps")  # fmt: skip
                frames = gr.Slider(1, MAX_FRAMES, value=16, step=1, label="Frames", elem_id="synth-make-frames")
                local_blend = gr.Slider(0, 0.95, value=0, step=0.05, elem_id="synth-make-blend",
                                        label="Local blend (0: off, as the reference; P2P's 0.3, DiffEdit's "
                                        "0.5)")  # fmt: skip
                shared_end = gr.Slider(0, 0.95, value=0, step=0.05, elem_id="synth-make-shared",
                                       label="Edited video shares the input's steps until (0: off)")  # fmt: skip
                blend_maps = gr.Radio([("edited words' attention (P2P)", "attention"),
                                       ("prompts' noise difference (DiffEdit)", "difference")],
                                      value="attention", label="Local blend mask",
                                      elem_id="synth-make-blend-maps")  # fmt: skip
                kinds = recommended_kind_guidance(studio.config.t2v) if studio.config.t2v else 0
                kind_guidance = gr.Slider(0, 100, value=kinds, step=5, elem_id="synth-make-kind-guidance",
                                          label="Kind guidance (the toy t2v's kind classifier; 0: off)")  # fmt: skip
            make_button = gr.Button("Make pair", variant="primary", elem_id="synth-make-run")
        with gr.Column():
            make_status = gr.Markdown(elem_id="synth-make-status")
            make_video = gr.Video(label="Input | edited", autoplay=True, loop=True, elem_id="synth-make-video")
            make_text = gr.Markdown(elem_id="synth-make-text")
            make_table = gr.Dataframe(headers=TABLE_HEADERS)
            make_record = gr.Code(label="Record", language="json")
    data = gr.State()

    def load(name):
        return dataset_view(studio, name, defaults)

    def refilter(opened, *values):
        if not opened:
            return "", None
        thresholds = Thresholds(*values)
        return summary(opened["records"], kept_at(opened, thresholds)), histograms(
            opened["records"], thresholds)  # fmt: skip

    def browse(delta: int | None):
        """Show the pair `delta` away from the current one (None: the first one the filters show)."""

        def show(opened, pos, which_, kind_, *values):
            return show_pair(studio, opened, 1 if delta is None else int(pos or 1) + delta, which_, kind_, *values)

        return show

    # The pair shown is whatever the last browse event asked for: they run one at a time, in the order they came.
    in_order = dict(api_name=False, concurrency_limit=1, concurrency_id="synth-browse")
    opened_outputs = [data, card, *sliders, kind]
    pair_inputs = [data, position, which, kind, *sliders]
    pair_outputs = [video, text, table, where, position]
    for opened_event in (chooser.change, studio.demo.load):  # a dataset chosen, or the page opened
        opened_event(load, chooser, opened_outputs, api_name=False).then(
            refilter, [data, *sliders], [counts, plot], api_name=False).then(
            browse(None), pair_inputs, pair_outputs, **in_order)  # fmt: skip
    for slider in sliders:  # counts and histograms follow the slider; the pair shown, once it is let go
        slider.change(refilter, [data, *sliders], [counts, plot], api_name=False)
    # Any filter changed: the first pair that matches. One listener, so the page sends its triggers one after the
    # other with the controls as they are then: a slider let go by clicking a radio (its release fires on the blur,
    # with the old radio value) cannot overtake the radio's own event.
    filters = [slider.release for slider in sliders] + [which.change, kind.change]
    gr.on(filters, browse(None), pair_inputs, pair_outputs, trigger_mode="always_last", **in_order)
    position.submit(browse(0), pair_inputs, pair_outputs, **in_order)
    prev_button.click(browse(-1), pair_inputs, pair_outputs, **in_order)
    next_button.click(browse(1), pair_inputs, pair_outputs, **in_order)
    make_button.click(
        make_pair_handler(studio),
        [input_caption, output_caption, instruction, seed, draw, cfg, sa_end, ca_end, edit_weight, steps, frames,
         local_blend, shared_end, blend_maps, kind_guidance],
        [make_video, make_text, make_table, make_record, make_status],
        api_name="synth_pair", concurrency_limit=1, concurrency_id="model", show_progress="full",
    )  # fmt: skip
