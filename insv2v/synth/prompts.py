"""Paired prompts for the data engine: (input caption, edit instruction, output caption) triplets, as in
InstructPix2Pix's data. Three sources, chosen by a spec string (`prompt_source`):

    toy                  the toy world's grammar: exact triplets from a seed range (train or held-out split)
    FILE.jsonl           InstructPix2Pix's format, one {"input": ..., "edit": ..., "output": ...} per line
                         (the published gpt-generated-prompts.jsonl); invalid pairs are skipped and counted
    llm[:MODEL]          a language model (a hub id or a folder; default SmolLM2-360M-Instruct) writes an edit
                         and an output caption for each input caption, few-shot, in InstructPix2Pix's GPT-3
                         format: it is given `CAPTION\\n##\\n` and continues with `EDIT\\n%%\\nOUTPUT\\nEND`

Every generated or read pair goes through one validation (`parse_completion`, `validate_pair`); `PromptStats`
counts what was kept and why the rest was rejected, for the CLI and the dataset card.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_LLM = "HuggingFaceTB/SmolLM2-360M-Instruct"  # small, instruction-tuned, runs on a CPU
LLM_PREFIX = "llm"  # spec "llm" (the default model) or "llm:MODEL_ID_OR_DIR"

# InstructPix2Pix's GPT-3 delimiters: CAPTION ## EDIT %% OUTPUT END
CAPTION_END = "\n##\n"
FIELD_SEP = "%%"
COMPLETION_END = "END"
MAX_CHARS = 200  # per edit / output caption: longer ones are rambling, and CLIP's text encoder reads 77 tokens
MAX_WORDS = 40

# Why a candidate pair was rejected, in the order the checks run.
REJECT_REASONS = (
    "no_end",  # no END: the sample ran out of tokens, so the output caption may be cut short
    "no_delimiter",  # no %% between edit and output
    "extra_fields",  # more than one %%
    "empty",  # an empty input, edit or output
    "multiline",  # a field spanning several lines (captions and instructions are one line)
    "delimiter_left",  # ## or %% inside a field: the model echoed the format
    "same_as_input",  # the output caption equals the input (ignoring case and spacing): no edit
    "too_long",  # an edit or output over MAX_CHARS characters or MAX_WORDS words
)


@dataclass(frozen=True)
class LLMSettings:
    """How the language model samples; defaults suit SmolLM2-360M-Instruct."""

    temperature: float = 0.7  # sampling temperature: varied edits that still follow the examples
    top_p: float = 0.9  # nucleus sampling: cut the unlikely tail that breaks the format
    max_new_tokens: int = 128  # an edit and an output caption (MAX_WORDS each) fit with room to spare
    max_retries: int = 3  # new samples per caption after an invalid one, before giving up on it

    def __post_init__(self):
        rules = {  # field -> (holds, the rule in words)
            "temperature": (self.temperature > 0, "> 0"),
            "top_p": (0 < self.top_p <= 1, "in (0, 1]"),
            "max_new_tokens": (self.max_new_tokens >= 1, ">= 1"),
            "max_retries": (self.max_retries >= 0, ">= 0"),
        }
        for name, (holds, rule) in rules.items():
            if not holds:
                raise ValueError(f"`{name}` must be {rule}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class PromptPair:
    """One paired prompt; `kind` is the toy world's edit kind ("colour", "shape", ...) when known."""

    input: str
    edit: str
    output: str
    kind: str | None = None
    caption_index: int | None = None  # a language model's pair: which caption of its stream it answers

    def to_dict(self) -> dict[str, str | int]:
        row = {"input": self.input, "edit": self.edit, "output": self.output, "kind": self.kind,
               "caption_index": self.caption_index}  # fmt: skip
        return {key: value for key, value in row.items() if value is not None}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> PromptPair:
        """A pair from a jsonl row; extra keys are ignored, missing or non-text fields raise ValueError."""
        missing = [key for key in ("input", "edit", "output") if key not in row]
        if missing:
            raise ValueError(f"missing field{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))}")
        for key in ("input", "edit", "output", "kind"):
            value = row.get(key)
            if not isinstance(value, str) and not (key == "kind" and value is None):
                raise ValueError(f"field {key!r} must be a string, got {type(value).__name__}")
        index = row.get("caption_index")
        if index is not None and not (isinstance(index, int) and index >= 0):
            raise ValueError(f"field 'caption_index' must be a whole number >= 0, got {index!r}")
        return cls(row["input"], row["edit"], row["output"], row.get("kind"), index)


@dataclass
class PromptStats:
    """What a source produced: `generated == valid + sum(rejected.values())` always holds."""

    generated: int = 0  # candidate pairs considered: LLM samples, pairs read from a file, toy triplets
    valid: int = 0  # candidates kept
    rejected: dict[str, int] = field(default_factory=dict)  # reason (REJECT_REASONS) -> count
    captions: int = 0  # input captions the LLM was asked about
    gave_up: int = 0  # captions with no valid sample after all retries

    def count(self, reason: str | None) -> None:
        """Count one candidate: kept when `reason` is None, else rejected for `reason`."""
        self.generated += 1
        if reason is None:
            self.valid += 1
        else:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "generated": self.generated,
            "valid": self.valid,
            "rejected": dict(sorted(self.rejected.items())),
            "captions": self.captions,
            "gave_up": self.gave_up,
        }

    def summary(self) -> str:
        """One line for the CLI, e.g. '40 generated, 31 valid; rejected: no_end 5, same_as_input 4'."""
        text = f"{self.generated} generated, {self.valid} valid"
        if self.rejected:
            text += "; rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items()))
        if self.captions:
            text += f"; {self.captions} captions, {self.gave_up} without a valid pair"
        return text


class RejectedCompletion(ValueError):
    """A completion that does not hold a pair; `reason` is one of REJECT_REASONS."""

    def __init__(self, reason: str, text: str):
        super().__init__(f"{reason}: {text!r}")
        self.reason = reason


# ---------------------------------------------------------------- parsing and validation (pure)


_END = re.compile(rf"\b{COMPLETION_END}\b")  # the word, not the letters inside LEGEND
_LABEL = re.compile(r"^(?:edit|instruction|output|output caption|caption)\s*:\s*", re.IGNORECASE)


def _field(text: str) -> str:
    """A field as the model wrote it, less what dresses it: spaces, a label ("Output:"), enclosing quotes."""
    text = _LABEL.sub("", text.strip())
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def parse_completion(text: str) -> tuple[str, str]:
    """The (edit, output) in a continuation `EDIT\\n%%\\nOUTPUT\\nEND...`; anything after END is dropped.
    Raises RejectedCompletion (no_end, no_delimiter, extra_fields)."""
    end = _END.search(text)
    if end is None:
        raise RejectedCompletion("no_end", text)
    fields = text[: end.start()].split(FIELD_SEP)
    if len(fields) != 2:
        raise RejectedCompletion("no_delimiter" if len(fields) == 1 else "extra_fields", text)
    return _field(fields[0]), _field(fields[1])


def _normalised(text: str) -> str:
    """A caption as its meaning goes: case, spacing and punctuation aside."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def validate_pair(input: str, edit: str, output: str) -> str | None:
    """None for a usable pair, else the first reason (REJECT_REASONS) it is not."""
    fields = (input, edit, output)
    if not all(f.strip() for f in fields):
        return "empty"
    if any("\n" in f.strip() for f in fields):
        return "multiline"
    if any(d in f for f in fields for d in (CAPTION_END.strip(), FIELD_SEP)):
        return "delimiter_left"
    if _normalised(output) == _normalised(input):
        return "same_as_input"
    if any(len(f) > MAX_CHARS or len(f.split()) > MAX_WORDS for f in (edit, output)):
        return "too_long"
    return None


def check_completion(caption: str, text: str) -> PromptPair | str:
    """The pair in a model's continuation of `caption`, or the reason it has none."""
    try:
        edit, output = parse_completion(text)
    except RejectedCompletion as err:
        return err.reason
    return validate_pair(caption, edit, output) or PromptPair(caption.strip(), edit, output)


# ---------------------------------------------------------------- source 1: the toy world


def toy_prompts(
    seed: int = 0, split: str = "train", stats: PromptStats | None = None, start: int = 0
) -> Iterator[PromptPair]:
    """The toy world's exact triplets: the i-th from seed `split.start + seed + i`, to the end of the split, from the
    `start`-th on (a resumed run's: those before it are fixed, and were counted then)."""
    from insv2v.toyworld.world import sample_triplet, split_range

    seeds = split_range(split)
    if not 0 <= seed < len(seeds):
        raise ValueError(f"`seed` must be in [0, {len(seeds)}) for the {split} split, got {seed}")

    def pairs() -> Iterator[PromptPair]:
        for s in seeds[seed + start :]:
            t = sample_triplet(s)
            if stats is not None:
                stats.count(None)
            yield PromptPair(t.input_caption, t.edit.instruction, t.edited_caption, t.edit.kind)

    return pairs()


def toy_captions(seed: int = 0, split: str = "train") -> Iterator[str]:
    """The toy world's input captions, in the order `toy_prompts` gives them."""
    return (pair.input for pair in toy_prompts(seed, split))


# ---------------------------------------------------------------- source 2: InstructPix2Pix jsonl


def jsonl_prompts(path: str | os.PathLike, stats: PromptStats | None = None, start: int = 0) -> Iterator[PromptPair]:
    """The valid pairs of an InstructPix2Pix-format jsonl file, streamed, from the `start`-th on (a resumed run's:
    the lines up to it were counted then); blank lines are skipped, invalid pairs skipped and counted in `stats`; a
    line that is not a JSON object with the three fields raises ValueError."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompt file {path} does not exist" if not path.exists() else f"{path} is not a file")
    stats = stats if stats is not None else PromptStats()

    def pairs() -> Iterator[PromptPair]:
        skipped = 0
        with path.open("rb") as f:  # decoded line by line, so a bad byte is reported with its line
            for number, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw.decode("utf-8"))
                    if not isinstance(row, dict):
                        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
                    pair = PromptPair.from_dict(row)
                except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                    raise ValueError(f"{path.name} line {number}: {err}") from err
                reason = validate_pair(pair.input, pair.edit, pair.output)
                if skipped < start:
                    skipped += reason is None
                    continue
                stats.count(reason)
                if reason is None:
                    yield pair

    return pairs()


def write_jsonl(pairs: Iterable[PromptPair], path: str | os.PathLike) -> int:
    """Write pairs as jsonl (the format `jsonl_prompts` reads); returns how many."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as f:
        for pair in pairs:
            f.write(json.dumps(pair.to_dict(), ensure_ascii=False) + "\n")
            count += 1
    return count


def read_captions(path: str | os.PathLike) -> list[str]:
    """Input captions for the LLM: one per line of a text file, blank lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"caption file {path} does not exist")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------- source 3: a language model

INSTRUCTION = (
    "You write edits for image captions. After each caption and ##, write one short instruction that changes "
    "one thing in the picture, then %%, then the caption of the edited picture, then END."
)
# InstructPix2Pix-style examples from the real world, then toy-world ones (the default input captions).
FEW_SHOT = (
    PromptPair("a man riding a horse on a beach", "turn the horse into a zebra", "a man riding a zebra on a beach"),
    PromptPair("photograph of a girl riding a horse", "have her ride a dragon", "photograph of a girl riding a dragon"),
    PromptPair(
        "a car driving down a city street at night", "make it snowy", "a car driving down a snowy city street at night"
    ),
    PromptPair(
        "a dog running through a field of flowers",
        "make it a watercolor painting",
        "a watercolor painting of a dog running through a field of flowers",
    ),
    PromptPair(
        "a red circle moving right on a beach, camera panning",
        "make the circle blue",
        "a blue circle moving right on a beach, camera panning",
    ),
    PromptPair(
        "a green square bouncing and a yellow triangle moving up on a forest",
        "put it on a desert",
        "a green square bouncing and a yellow triangle moving up on a desert",
    ),
)


def format_request(caption: str) -> str:
    """What the model is given: `CAPTION\\n##\\n`."""
    return caption.strip() + CAPTION_END


def format_completion(pair: PromptPair) -> str:
    """What the model should write: `EDIT\\n%%\\nOUTPUT\\nEND`."""
    return f"{pair.edit}\n{FIELD_SEP}\n{pair.output}\n{COMPLETION_END}"


def chat_messages(caption: str, examples: Iterable[PromptPair] = FEW_SHOT) -> list[dict[str, str]]:
    """The few-shot request as a chat: the instruction, one user/assistant turn per example, then the caption."""
    messages = [{"role": "system", "content": INSTRUCTION}]
    for pair in examples:
        messages += [
            {"role": "user", "content": format_request(pair.input)},
            {"role": "assistant", "content": format_completion(pair)},
        ]
    return [*messages, {"role": "user", "content": format_request(caption)}]


def plain_prompt(caption: str, examples: Iterable[PromptPair] = FEW_SHOT) -> str:
    """The few-shot request as plain text, for models without a chat template."""
    shots = [format_request(pair.input) + format_completion(pair) for pair in examples]
    return "\n\n".join([INSTRUCTION, *shots, format_request(caption)])


def build_prompt(tokenizer: Any, caption: str, examples: Iterable[PromptPair] = FEW_SHOT) -> str:
    """The request for `caption`: through the tokenizer's chat template when it has one, else plain text."""
    if getattr(tokenizer, "chat_template", None) is None:
        return plain_prompt(caption, examples)
    return tokenizer.apply_chat_template(chat_messages(caption, examples), tokenize=False, add_generation_prompt=True)


def load_llm(model: str | os.PathLike = DEFAULT_LLM, device: Any = None) -> Any:
    """A transformers text-generation pipeline for `model` (a folder or a hub id); offline, a missing hub id
    fails with the command that downloads it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    from insv2v.loading import ModelLoadError, default_device, default_dtype, from_pretrained_explained

    source = str(model)
    path = Path(source).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise ModelLoadError(f"{source} is not a language model folder (no config.json in it)")
    device = torch.device(device) if device is not None else default_device()
    tokenizer = from_pretrained_explained(AutoTokenizer, source, "language model")
    lm = from_pretrained_explained(AutoModelForCausalLM, source, "language model", dtype=default_dtype(device))
    return pipeline("text-generation", model=lm.to(device).eval(), tokenizer=tokenizer, device=device)


def _caption_seed(seed: int, index: int) -> int:
    """The sampling seed of the index-th caption: independent streams per (run seed, caption)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _first_valid(llm: Any, caption: str, settings: LLMSettings, stats: PromptStats) -> PromptPair | None:
    """Sample up to 1 + max_retries continuations of `caption`; the first valid pair, or None."""
    prompt = build_prompt(llm.tokenizer, caption)
    for _ in range(1 + settings.max_retries):
        text = llm(
            prompt,
            do_sample=True,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_new_tokens=settings.max_new_tokens,
            stop_sequence=COMPLETION_END,  # stop once the pair is complete
            return_full_text=False,
        )[0]["generated_text"]
        result = check_completion(caption, text)
        stats.count(None if isinstance(result, PromptPair) else result)
        if isinstance(result, PromptPair):
            return result
    return None


def llm_prompts(
    llm: Any = DEFAULT_LLM,
    captions: Iterable[str] | None = None,
    *,
    seed: int = 0,
    split: str = "train",
    settings: LLMSettings | None = None,
    stats: PromptStats | None = None,
    device: Any = None,
    start: int = 0,
) -> Iterator[PromptPair]:
    """Pairs written by a language model, one per input caption that yields a valid sample within the retries, from
    caption `start` on (a resumed run's: the captions before it were answered), each with its caption's index.

    `llm` is a model id or folder (loaded now, so errors come before any work) or a loaded text-generation
    pipeline. `captions` default to the toy world's input captions of `split` from `seed`: an endless stream, so
    bound it when the model may never write a valid pair (taking N pairs would never end; `stats.gave_up` grows).
    Caption i samples from its own seed derived from (seed, i), so a run is reproducible whatever else uses the
    random generators meanwhile, and the caller's random state is left as it was.
    """
    import torch

    settings = settings or LLMSettings()
    stats = stats if stats is not None else PromptStats()
    llm = load_llm(llm, device) if isinstance(llm, (str, os.PathLike)) else llm
    captions = toy_captions(seed, split) if captions is None else captions
    llm_device = torch.device(getattr(llm, "device", "cpu"))

    def pairs() -> Iterator[PromptPair]:
        for index, caption in enumerate(c.strip() for c in captions):
            if index < start or not caption:
                continue
            stats.captions += 1
            with torch.random.fork_rng(devices=[llm_device] if llm_device.type == "cuda" else []):
                torch.manual_seed(_caption_seed(seed, index))
                pair = _first_valid(llm, caption, settings, stats)
            if pair is None:
                stats.gave_up += 1
            else:
                yield dataclasses.replace(pair, caption_index=index)

    return pairs()


def propose_output_caption(caption: str, instruction: str, llm: Any = None, max_new_tokens: int = 60) -> str | None:
    """The caption of `caption`'s video after `instruction`, for methods that edit from a pair of captions
    (Tune-A-Video): the toy grammar's exact one when it reads the instruction, else a language model's (a loaded
    text-generation pipeline; greedy, given the few-shot request with the instruction already written), else None.
    """
    from insv2v.toyworld.world import edit_caption

    exact = edit_caption(caption, instruction)
    if exact is not None or llm is None:
        return exact
    written = f"{instruction.strip()}\n{FIELD_SEP}\n"  # the edit half of the completion, given
    text = llm(
        build_prompt(llm.tokenizer, caption) + written,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        stop_sequence=COMPLETION_END,
        return_full_text=False,
    )[0]["generated_text"]
    result = check_completion(caption, written + text)
    return result.output if isinstance(result, PromptPair) else None


# ---------------------------------------------------------------- the CLI spec


def is_llm_spec(spec: str) -> bool:
    """ "llm" or "llm:MODEL" (not a file that merely starts with the letters)."""
    return spec.strip().partition(":")[0] == LLM_PREFIX


def prompt_source(
    spec: str,
    seed: int = 0,
    *,
    split: str = "train",
    captions: Iterable[str] | None = None,
    settings: LLMSettings | None = None,
    stats: PromptStats | None = None,
    device: Any = None,
    start: int = 0,
) -> Iterator[PromptPair]:
    """The pairs a spec names: "toy", "FILE.jsonl" or "llm[:MODEL_ID_OR_DIR]" (module docstring). `seed` and
    `split` pick toy-world seeds (the toy source, and the LLM's default captions); a file is read as it is.
    `captions` and `settings` apply to the LLM only. `start` is where a resumed run goes on: the first caption to
    answer (LLM), else the first pair to give. Counts go to `stats`."""
    spec = spec.strip()
    name, colon, model = spec.partition(":")
    if name == LLM_PREFIX:
        if colon and not model.strip():
            raise ValueError(
                f"{spec!r} names no model: use {LLM_PREFIX}:MODEL_ID_OR_DIR, e.g. {LLM_PREFIX}:{DEFAULT_LLM}"
            )
        model = model.strip() or DEFAULT_LLM
        return llm_prompts(model, captions, seed=seed, split=split, settings=settings, stats=stats, device=device,
                           start=start)  # fmt: skip
    if spec != "toy" and not spec.endswith(".jsonl"):
        raise ValueError(
            f"unknown prompt source {spec!r}: expected 'toy', a .jsonl file of input/edit/output pairs, "
            f"or '{LLM_PREFIX}:MODEL' (a hub id or folder, e.g. {LLM_PREFIX}:{DEFAULT_LLM})"
        )
    if captions is not None or settings is not None:
        raise ValueError(f"captions and LLM settings apply to an {LLM_PREFIX}:MODEL source, not {spec!r}")
    return toy_prompts(seed, split, stats, start) if spec == "toy" else jsonl_prompts(spec, stats, start)
