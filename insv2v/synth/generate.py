"""Generate a synthetic paired-video dataset: prompts -> video Prompt-to-Prompt -> CLIP scores -> files.

    1. Fix the paired prompts (prompts.jsonl): a resumed run renders the same ones
    2. Each process takes every P-th sample (`accelerate launch --multi_gpu --num_processes P`: one process per
       GPU, many nodes; on a machine without GPUs, P CPU processes)
    3. Remove what a killed run left half-done; skip finished samples
    4. Per sample: settings and noise from its seed, a P2P pair, the four scores, the judge (toy world), files
    5. Merge the processes' manifests under one filter; write the card

Sample i has seed `seed + i`: its Prompt-to-Prompt settings (`P2PSettings.draw_for`) and its initial noise come from
it, so any sample can be made again alone. With K samples per prompt (InstructPix2Pix draws 100) it renders prompt
i // K (recorded as its `prompt`), and the filter may keep only the best few of each prompt's samples
(`dataset.kept_under`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import shlex
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from insv2v.files import complete_lines, truncate_partial_line
from insv2v.synth import dataset
from insv2v.synth.clip_filter import PairScores, Thresholds, score_pair
from insv2v.synth.prompts import PromptPair

FPS = 8  # frame rate of the written pairs (the generated frames carry no time of their own)

Judge = Callable[[PromptPair, np.ndarray, np.ndarray], dict]  # (pair, input frames, edited frames) -> verdict


@dataclass
class GenerateConfig:
    out_dir: str
    t2v: str  # text-to-video pipeline folder or hub id
    prompts: str  # the prompt source's spec: toy | FILE.jsonl | llm:MODEL
    n: int  # samples, a multiple of samples_per_prompt
    seed: int = 0
    split: str = "train"  # the toy world's scenes the toy prompts (and an LLM's captions) come from
    clip: str | None = None  # CLIP source for the filter scores
    thresholds: Thresholds = field(default_factory=Thresholds)
    frames: int = 16
    steps: int = 30  # DDIM steps, as the reference
    size: int | None = None  # pixels (square); None: the model's own
    recipe: str = "video"  # settings drawn per sample: "video" (InsV2V's reference) or "image" (InstructPix2Pix's)
    cfg_range: tuple[float, float] | None = None  # each sample's CFG uniform in it (None: the recipe's)
    local_blend: float | None = None  # local blending at this threshold (not the reference's)
    blend_maps: str = "attention"  # its mask: Prompt-to-Prompt's (the edited words' attention) or DiffEdit's
    shared_end: float = 0.0  # fraction of the steps the edited sample shares the input's latents (0: the reference)
    samples_per_prompt: int = 1  # each its own seed: settings and noise (InstructPix2Pix: 100)
    top_per_prompt: int | None = None  # keep at most this many of a prompt's passing samples (InstructPix2Pix: 4)
    kind_guidance: float = 0.0  # the t2v's kind classifier's guidance (its sampling.json recommends one)
    kind_edit_only: bool = False  # kind guidance for the kept shapes during the shared start only (`generate_pair`)
    negative_prompt: str = ""
    command: str | None = None  # the command line that made it, for the card

    def __post_init__(self):
        if self.samples_per_prompt < 1 or (self.top_per_prompt is not None and self.top_per_prompt < 1):
            raise ValueError(f"samples_per_prompt must be at least 1 and top_per_prompt at least 1 or None, got "
                             f"{self.samples_per_prompt} and {self.top_per_prompt}")  # fmt: skip
        from insv2v.synth.p2p import check_guidance_range

        check_guidance_range(self.cfg_range)  # refused before any prompt is written
        if self.local_blend is not None:
            from insv2v.synth.p2p import LocalBlend

            LocalBlend(self.local_blend, maps=self.blend_maps)
        from insv2v.synth.p2p import check_kind_edit_only

        check_kind_edit_only(self.kind_edit_only, self.shared_end)
        if self.n % self.samples_per_prompt:
            raise ValueError(f"n={self.n} samples do not split into {self.samples_per_prompt} per prompt; "
                             "ask for a multiple")  # fmt: skip


PROMPTS_READY = ".prompts-ready"  # the main process's word to the others that prompts.jsonl is complete

# Fixed per dataset.
RUN_FIELDS = ("t2v", "prompts", "split", "seed", "clip", "frames", "steps", "size", "negative_prompt", "recipe",
              "local_blend", "blend_maps", "shared_end", "samples_per_prompt", "cfg_range",
              "kind_guidance", "kind_edit_only")  # fmt: skip
# A card's value from before the field existed.
RUN_DEFAULTS = {
    "recipe": "video",
    "local_blend": None,
    "blend_maps": "attention",
    "split": "train",
    "shared_end": 0.0,
    "samples_per_prompt": 1,
    "cfg_range": None,
    "kind_guidance": 0.0,
    "kind_edit_only": False,
}


def run_settings(config: GenerateConfig) -> dict:
    settings = {k: getattr(config, k) for k in RUN_FIELDS}
    if config.cfg_range is not None:  # as JSON reads it back
        settings["cfg_range"] = list(config.cfg_range)
    return {**settings, "t2v": dataset.source_name(config.t2v), "clip": dataset.source_name(config.clip)}


def check_same_run(card: dict, config: GenerateConfig) -> None:
    """A dataset is one run's: resuming it with other settings would mix samples the card cannot describe."""
    if card.get("run") is None:
        return
    before = {**RUN_DEFAULTS, **card["run"]}
    if "split" not in card["run"]:  # a card from before the split was a run setting
        before["split"] = split_in_command(card.get("command") or "")
    now = run_settings(config)
    changed = [k for k in RUN_FIELDS if k != "clip" and before.get(k) != now[k]]
    if before["clip"] != now["clip"] and not dataset.scored_by({**card, "clip": before["clip"]}, config.clip):
        changed.append("clip")  # the run's CLIP by its weights where the card has them (a copy is the same), as filter
    if changed:
        listed = ", ".join(f"{k}: {before.get(k)!r} then, {now[k]!r} now" for k in changed)
        raise ValueError(f"{config.out_dir} was made with other settings ({listed}); resume it with the same ones, "
                         "or make a new dataset")  # fmt: skip


def split_in_command(command: str) -> str:
    """The --split a recorded `insv2v synth generate ...` command line gave (train when it gave none)."""
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: a card edited by hand
        words = command.split()
    for word, value in itertools.pairwise([*words, ""]):
        if word == "--split":
            return value
        if word.startswith("--split="):
            return word.removeprefix("--split=")
    return RUN_DEFAULTS["split"]


def read_prompts(root: Path) -> list[PromptPair]:
    """The fixed prompts, line p prompt p's; a last line a kill cut short is not one of them."""
    return [PromptPair.from_dict(json.loads(line)) for line in complete_lines(root / dataset.PROMPTS) if line.strip()]


def fix_prompts(root: Path, pairs: Callable[[int], Iterable[PromptPair]], n: int) -> list[PromptPair]:
    """prompts.jsonl holding at least `n` pairs: line p is prompt p's, and lines once written never change (a run
    asked for more samples takes the source's next pairs, `pairs_after`; the sources are deterministic). Each pair is
    on disk as soon as the source gives it, so a run killed while a language model writes them keeps those written."""
    fixed = read_prompts(root)
    if len(fixed) < n:
        path = root / dataset.PROMPTS
        if path.exists():
            truncate_partial_line(path)
        with open(path, "a") as f:  # each line flushed as it comes (a killed process keeps it), synced once at the end
            for pair in itertools.islice(pairs_after(pairs, fixed), n - len(fixed)):
                f.write(json.dumps(pair.to_dict()) + "\n")
                f.flush()
                fixed.append(pair)
            os.fsync(f.fileno())
    return fixed


def add_counts(before: dict, now: dict) -> dict:
    """Two runs' prompt statistics as one: numbers summed, dictionaries of numbers (rejections by reason) too."""
    total = dict(before)
    for key, value in now.items():
        if isinstance(value, dict):
            total[key] = add_counts(before.get(key) or {}, value)
        elif isinstance(value, int | float):
            total[key] = before.get(key, 0) + value
        else:
            total[key] = value
    return total


def pairs_after(pairs: Callable[[int], Iterable[PromptPair]], fixed: list[PromptPair]) -> Iterable[PromptPair]:
    """The source's pairs after those fixed. `pairs(start)` gives them from `start` on, uncounted before it: a language
    model's from caption `start` (it resumes after the last caption answered and is not asked about earlier ones
    again), any other source's (its pairs name no caption) from pair `start`."""
    last = fixed[-1].caption_index if fixed else None
    return pairs(len(fixed) if last is None else last + 1)


def make_sample(pipe, scorer, pair: PromptPair, seed: int, config: GenerateConfig, settings=None, callback=None):
    """(input frames, edited frames, record) of one sample; the record lacks its files and index. `settings`
    (P2PSettings) default to those drawn from the seed; `callback(step, total)` follows the sampling."""
    from insv2v.synth.p2p import LocalBlend, P2PSettings, generate_pair

    settings = settings or replace(P2PSettings.draw_for(config.recipe, seed, config.cfg_range),
                                   shared_end=config.shared_end)  # fmt: skip
    blend = LocalBlend(config.local_blend, maps=config.blend_maps) if config.local_blend is not None else None
    began = time.perf_counter()
    size = config.size or pipe.default_resolution
    out = generate_pair(
        pipe, pair.input, pair.output, settings, negative_prompt=config.negative_prompt, num_frames=config.frames,
        height=size, width=size, num_inference_steps=config.steps, generator=torch.Generator().manual_seed(seed),
        callback=callback, local_blend=blend, kind_guidance=config.kind_guidance, kind_edit_only=config.kind_edit_only,
    )  # fmt: skip
    scores = score_pair(scorer, out.source, out.target, pair.input, pair.output)
    record = {
        **pair.to_dict(),
        "seed": seed,
        "settings": settings.to_dict(),
        "scores": scores.to_dict(),
        "kept": PairScores(**scores.to_dict()).passes(config.thresholds),  # a limit per prompt applies at the end
        **({"blend_area": round(out.blend_mask.mean().item(), 3)} if out.blend_mask is not None else {}),
        **({"kind_guidance": config.kind_guidance} if config.kind_guidance else {}),
        **({"kind_edit_only": True} if config.kind_edit_only else {}),
        "seconds": round(time.perf_counter() - began, 2),
    }
    return out.source, out.target, record


def generate(
    config: GenerateConfig,
    pairs: Callable[[int], Iterable[PromptPair]],
    judge: Judge | None = None,
    prompt_stats: Callable[[], dict] | None = None,
) -> dict:
    """Make (or finish) the dataset in `config.out_dir`; the counts. `pairs(start)` (`pairs_after`) is called only
    when fewer than n prompts are fixed (on the main process); `prompt_stats()` then says how they were made, for the
    card. The main process holds the dataset's write lock throughout, so no `synth filter` rewrites the manifest
    meanwhile."""
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # without GPUs, processes talk over gloo
    root = Path(config.out_dir)
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} is a file; --out names the dataset's folder")
    others = root.is_dir() and any(p.name != dataset.LOCK for p in root.iterdir())  # the lock: another process's
    if others and not dataset.read_card(root):
        raise ValueError(f"{root} holds other files and is not a dataset; choose a new or empty folder")
    if state.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
    with dataset.writing(config.out_dir) if state.is_main_process else contextlib.nullcontext():
        return _generate(config, state, pairs, judge, prompt_stats)


def _generate(config: GenerateConfig, state, pairs, judge, prompt_stats) -> dict:
    from accelerate.utils import broadcast_object_list
    from tqdm.auto import tqdm

    from insv2v.metrics import load_clip
    from insv2v.synth.t2v import load_t2v
    from insv2v.video import write_video

    root = Path(config.out_dir)
    per_prompt = config.samples_per_prompt
    n_prompts = config.n // per_prompt
    # 1. Fix the paired prompts, once; only after the models load, so that a failed start leaves nothing behind. Their
    #    source is built first: a bad spec, a missing file or a language model that does not load is refused before
    #    anything is written (the card would tie the folder to the mistyped source)
    check_same_run(dataset.read_card(root), config)
    fixed = read_prompts(root)
    source = pairs_after(pairs, fixed) if state.is_main_process and len(fixed) < n_prompts else ()
    pipe = load_t2v(config.t2v, str(state.device))
    size = config.size or pipe.default_resolution  # what every sample will ask for, checked before anything is written
    pipe.check_inputs("", config.frames, size, size, config.steps, 1.0, "np")
    pipe.check_kind_guidance(config.kind_guidance)
    if config.local_blend is not None and config.blend_maps == "attention":
        from insv2v.synth.p2p import check_local_blend

        check_local_blend(pipe.unet)
    pipe.set_progress_bar_config(disable=True)
    scorer = load_clip(config.clip)
    state.wait_for_everyone()
    # The others wait for the prompts by polling a file, not in a collective: a language model may write for hours,
    # longer than a process group's timeout. The token, shared first, tells this run's signal from an earlier one's.
    token = broadcast_object_list([secrets.token_hex(8) if state.is_main_process else None])[0]
    ready = root / PROMPTS_READY
    if state.is_main_process:
        # the filter in force from the start, so a killed run's dataset is filtered (and resumed) as this one meant
        card = {**dataset.read_card(root), "run": run_settings(config), "thresholds": config.thresholds.to_dict(),
                "top_per_prompt": config.top_per_prompt}  # fmt: skip
        dataset.write_card(root, card)  # before the prompts: a run killed while they are written is a dataset
        if len(read_prompts(root)) < n_prompts:
            fix_prompts(root, lambda _start: source, n_prompts)  # the source built above, from the same start
            if prompt_stats is not None:  # a resumed run's counts add to the earlier runs'
                card["prompt_stats"] = add_counts(card.get("prompt_stats") or {}, prompt_stats())
                dataset.write_card(root, card)
        ready.write_text(token)
    else:
        while not (ready.is_file() and ready.read_text() == token):
            time.sleep(1.0)
    state.wait_for_everyone()
    if state.is_main_process:
        ready.unlink()
    prompts = read_prompts(root)[:n_prompts]
    if len(prompts) < n_prompts:
        print(f"the prompt source gave {len(prompts)} prompts of the {n_prompts} asked for", file=sys.stderr)

    # 2. This process's share; 3. what a killed run left
    def owns(index: int) -> bool:
        return index % state.num_processes == state.process_index

    part = root / (dataset.MANIFEST if state.num_processes == 1 else f"manifest.part{state.process_index}.jsonl")
    mine = [part] + ([root / dataset.MANIFEST] if state.is_main_process and part.name != dataset.MANIFEST else [])
    done = dataset.recover(root, owns, mine)
    state.wait_for_everyone()  # no process appends before every other one has read what is done
    todo = [i for i in range(len(prompts) * per_prompt) if owns(i) and i not in done]

    # 4. One sample at a time: each finished one is on disk before the next starts
    began, kept = time.perf_counter(), 0
    bar = tqdm(todo, unit="pair", disable=not state.is_local_main_process, desc="pairs")
    for k, index in enumerate(bar, start=1):
        pair = prompts[index // per_prompt]
        source, target, record = make_sample(pipe, scorer, pair, config.seed + index, config)
        if judge is not None:
            record["judge"] = judge(pair, source, target)

        def write(folder: Path, source=source, target=target) -> dict[str, str]:
            write_video(folder / "input.mp4", source, FPS)
            write_video(folder / "edited.mp4", target, FPS)
            return {"input": "input.mp4", "edited": "edited.mp4"}

        files = dataset.publish_pair(root, index, write)
        record = {"index": index, "id": dataset.pair_id(index), "prompt": index // per_prompt, **record, "files": files}
        dataset.append_record(part, record)
        kept += record["kept"]  # passing the filter (a limit per prompt applies at the end)
        bar.set_postfix(pairs_per_min=f"{60 * k / (time.perf_counter() - began):.1f}", kept=f"{kept}/{k}")

    # 5. Merge and describe
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}
    # One filter for every sample, whatever earlier runs had; the processes' parts merged.
    finished = dataset.read_manifest(root)
    counts = dataset.refilter(root, config.thresholds, config.top_per_prompt) if finished else dataset.counts([])
    card = dataset.read_card(root)
    card.update(
        t2v=dataset.source_name(config.t2v), **dataset.clip_fields(config.clip), prompts=config.prompts,
        seed=config.seed, n=config.n, frames=config.frames, steps=config.steps,
        size=size, thresholds=config.thresholds.to_dict(),
        top_per_prompt=config.top_per_prompt, counts=counts, command=config.command,
    )  # fmt: skip
    dataset.write_card(root, card)
    return card["counts"]
