"""Paired prompts: the toy grammar's exact triplets, jsonl files, parsing and validation of model completions, the
few-shot request, and the LLM loop on a scripted stand-in and on a tiny random causal LM (its text is gibberish,
so only the bookkeeping is checked, never the content)."""

from __future__ import annotations

import itertools
import json
import os

import pytest
import torch

from insv2v.synth.prompts import (
    DEFAULT_LLM,
    FEW_SHOT,
    INSTRUCTION,
    MAX_CHARS,
    MAX_WORDS,
    LLMSettings,
    PromptPair,
    PromptStats,
    RejectedCompletion,
    build_prompt,
    chat_messages,
    check_completion,
    format_completion,
    jsonl_prompts,
    llm_prompts,
    load_llm,
    parse_completion,
    plain_prompt,
    prompt_source,
    propose_output_caption,
    read_captions,
    toy_captions,
    toy_prompts,
    validate_pair,
    write_jsonl,
)
from insv2v.toyworld.world import HELDOUT_SEEDS, TRAIN_SEEDS, sample_triplet

OFFLINE = os.environ.get("HF_HUB_OFFLINE") == "1"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def take(iterable, n):
    return list(itertools.islice(iterable, n))


# ---------------------------------------------------------------- the toy world


def test_toy_pairs_are_the_toy_worlds_triplets_from_the_seed_offset():
    pairs = take(toy_prompts(seed=5), 4)
    for i, pair in enumerate(pairs):
        t = sample_triplet(TRAIN_SEEDS.start + 5 + i)
        assert pair == PromptPair(t.input_caption, t.edit.instruction, t.edited_caption, t.edit.kind)
    assert take(toy_prompts(seed=5), 4) == pairs  # deterministic
    assert take(toy_prompts(seed=6), 3) == pairs[1:]  # the i-th pair comes from seed offset + i
    assert take(toy_captions(seed=5), 4) == [p.input for p in pairs]


def test_toy_pairs_cover_every_edit_kind_and_splits_differ():
    train = take(toy_prompts(), 60)
    assert {p.kind for p in train} == {"colour", "background", "shape", "style"}
    assert all(validate_pair(p.input, p.edit, p.output) is None for p in train)
    assert any(p.output.startswith("a pencil sketch of ") for p in train if p.kind == "style")
    heldout = take(toy_prompts(split="heldout"), 60)
    t = sample_triplet(HELDOUT_SEEDS.start)
    assert heldout[0] == PromptPair(t.input_caption, t.edit.instruction, t.edited_caption, t.edit.kind)
    assert heldout != train and heldout[0] != train[0]


def test_toy_source_ends_with_its_split_counts_and_checks_arguments():
    stats = PromptStats()
    assert len(list(toy_prompts(seed=len(HELDOUT_SEEDS) - 2, split="heldout", stats=stats))) == 2
    assert stats.to_dict() == {"generated": 2, "valid": 2, "rejected": {}, "captions": 0, "gave_up": 0}
    with pytest.raises(ValueError, match="split must be one of train, heldout, got 'test'"):
        toy_prompts(split="test")
    with pytest.raises(ValueError, match=r"`seed` must be in \[0, 1000000\) for the heldout split, got 1000000"):
        toy_prompts(seed=10**6, split="heldout")


# ---------------------------------------------------------------- jsonl files


def test_pairs_round_trip_through_a_jsonl_file(tmp_path):
    pairs = [*take(toy_prompts(), 3), PromptPair("a man riding a horse", "make it a zebra", "a man riding a zebra")]
    path = tmp_path / "pairs.jsonl"
    assert write_jsonl(pairs, path) == 4
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert list(rows[0]) == ["input", "edit", "output", "kind"] and list(rows[3]) == ["input", "edit", "output"]
    stats = PromptStats()
    assert list(jsonl_prompts(path, stats)) == pairs
    assert (stats.generated, stats.valid, stats.rejected) == (4, 4, {})


def test_jsonl_skips_blank_lines_ignores_extra_keys_and_counts_invalid_pairs(tmp_path):
    rows = [
        {"input": "a cat on a mat", "edit": "make it a dog", "output": "a dog on a mat", "url": "x"},
        {"input": "a cat on a mat", "edit": "do nothing", "output": "A  Cat on a MAT "},  # same_as_input
        {"input": "a cat", "edit": " ", "output": "a dog"},  # empty
        {"input": "a cat", "edit": "make it long", "output": "word " * (MAX_WORDS + 1)},  # too_long
    ]
    path = tmp_path / "gpt-generated-prompts.jsonl"
    path.write_text(
        "\n".join(json.dumps(r) for r in rows[:2]) + "\n\n  \n" + "\n".join(json.dumps(r) for r in rows[2:])
    )
    stats = PromptStats()
    assert list(jsonl_prompts(path, stats)) == [PromptPair("a cat on a mat", "make it a dog", "a dog on a mat")]
    assert stats.generated == 4 and stats.valid == 1
    assert stats.rejected == {"same_as_input": 1, "empty": 1, "too_long": 1}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"input": "a cat", "edit": "make it a dog"', r"bad\.jsonl line 3: Expecting ',' delimiter"),
        ('{"input": "a cat", "edit": "make it a dog"}', r"bad\.jsonl line 3: missing field 'output'"),
        ('{"input": "a cat"}', r"bad\.jsonl line 3: missing fields 'edit', 'output'"),
        ('["a cat", "make it a dog", "a dog"]', r"bad\.jsonl line 3: expected a JSON object, got list"),
        (
            '{"input": "a cat", "edit": 3, "output": "a dog"}',
            r"bad\.jsonl line 3: field 'edit' must be a string, got int",
        ),
    ],
)
def test_a_malformed_jsonl_line_is_named_by_its_number(tmp_path, line, message):
    good = json.dumps({"input": "a cat", "edit": "make it a dog", "output": "a dog"})
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n\n{line}\n{good}\n")
    pairs = jsonl_prompts(path)
    assert next(pairs) == PromptPair("a cat", "make it a dog", "a dog")  # streamed: earlier lines come first
    with pytest.raises(ValueError, match=message):
        next(pairs)


def test_a_line_that_is_not_utf8_is_named_by_its_number(tmp_path):
    path = tmp_path / "latin1.jsonl"
    good = json.dumps({"input": "a cat", "edit": "make it a dog", "output": "a dog"}).encode()
    path.write_bytes(good + b"\n" + '{"input": "a caf\u00e9"}'.encode("latin-1") + b"\n")
    pairs = jsonl_prompts(path)
    assert next(pairs) == PromptPair("a cat", "make it a dog", "a dog")
    with pytest.raises(ValueError, match=r"latin1\.jsonl line 2: 'utf-8' codec can't decode"):
        next(pairs)


def test_a_missing_jsonl_file_fails_before_iterating(tmp_path):
    with pytest.raises(ValueError, match=r"prompt file .*nope\.jsonl does not exist"):
        jsonl_prompts(tmp_path / "nope.jsonl")


def test_read_captions_skips_blank_lines(tmp_path):
    (tmp_path / "captions.txt").write_text("a cat on a mat\n\n  a dog in a park  \n")
    assert read_captions(tmp_path / "captions.txt") == ["a cat on a mat", "a dog in a park"]
    with pytest.raises(ValueError, match=r"caption file .* does not exist"):
        read_captions(tmp_path / "none.txt")


# ---------------------------------------------------------------- parsing and validation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("make it snowy\n%%\na snowy street at night\nEND", ("make it snowy", "a snowy street at night")),
        (" make it snowy \n%%\n a snowy street\nEND\n\na dog\n##\nmore", ("make it snowy", "a snowy street")),
        ("make it snowy %% a snowy street END", ("make it snowy", "a snowy street")),
        ("make it snowy\n%%\n\nEND", ("make it snowy", "")),  # structure fine; validate_pair says "empty"
        ("make it snowy\na snowy street\nEND", "no_delimiter"),
        ("make it snowy\n%%\na snowy street\n%%\na dog\nEND", "extra_fields"),
        ("make it snowy\n%%\na snowy street", "no_end"),  # ran out of tokens: the caption may be cut short
        ("make it a poster\n%%\na LEGEND poster\nEND", ("make it a poster", "a LEGEND poster")),  # END, the word
        ('Edit: make it snowy\n%%\nOutput: "a snowy street"\nEND', ("make it snowy", "a snowy street")),  # dressed
        ("", "no_end"),
    ],
)
def test_parse_completion(text, expected):
    if isinstance(expected, tuple):
        assert parse_completion(text) == expected
    else:
        with pytest.raises(RejectedCompletion) as err:
            parse_completion(text)
        assert err.value.reason == expected


@pytest.mark.parametrize(
    ("edit", "output", "reason"),
    [
        ("make it snowy", "a snowy street at night", None),
        ("make it snowy", "A  street AT night ", "same_as_input"),
        ("make it snowy", "a street, at night.", "same_as_input"),  # punctuation is no edit
        ("", "a snowy street", "empty"),
        ("make it snowy", "   ", "empty"),
        ("make it snowy", "a snowy\nstreet", "multiline"),
        ("make it snowy ##", "a snowy street", "delimiter_left"),
        ("make it snowy", "a snowy %% street", "delimiter_left"),
        ("make it snowy", "x" * MAX_CHARS, None),
        ("make it snowy", "x" * (MAX_CHARS + 1), "too_long"),
        (" ".join(["snow"] * MAX_WORDS), "a snowy street", None),
        (" ".join(["snow"] * (MAX_WORDS + 1)), "a snowy street", "too_long"),
    ],
)
def test_validate_pair(edit, output, reason):
    assert validate_pair("a street at night", edit, output) == reason


def test_check_completion_gives_a_pair_or_the_reason():
    assert check_completion("a street", "make it snowy\n%%\na snowy street\nEND") == PromptPair(
        "a street", "make it snowy", "a snowy street"
    )
    assert check_completion("a street", "make it snowy\n%%\na  Street\nEND") == "same_as_input"
    assert check_completion("a street", "make it snowy\n%%\na snowy") == "no_end"


def test_the_few_shot_examples_are_valid_and_parse_back():
    assert len(FEW_SHOT) >= 4 and any("circle" in p.input for p in FEW_SHOT)  # real-world and toy-world ones
    for pair in FEW_SHOT:
        assert validate_pair(pair.input, pair.edit, pair.output) is None
        assert check_completion(pair.input, format_completion(pair)) == pair


# ---------------------------------------------------------------- the request


class PlainTokenizer:
    chat_template = None


def test_the_plain_prompt_is_instruction_examples_then_the_caption():
    prompt = build_prompt(PlainTokenizer(), "  a cat on a mat ")
    assert prompt == plain_prompt("a cat on a mat")
    assert prompt.startswith(INSTRUCTION + "\n\n") and prompt.endswith("\n\na cat on a mat\n##\n")
    first = FEW_SHOT[0]
    assert f"{first.input}\n##\n{first.edit}\n%%\n{first.output}\nEND\n\n" in prompt
    assert prompt.count("\n##\n") == len(FEW_SHOT) + 1 and prompt.count("\nEND") == len(FEW_SHOT)


def test_the_chat_request_has_one_turn_per_example():
    messages = chat_messages("a cat on a mat")
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * len(FEW_SHOT) + ["user"]
    assert messages[0]["content"] == INSTRUCTION and messages[-1]["content"] == "a cat on a mat\n##\n"
    assert messages[2]["content"] == format_completion(FEW_SHOT[0])


# ---------------------------------------------------------------- the LLM loop on a scripted stand-in


class ScriptedLLM:
    """A text-generation pipeline stand-in: returns the next scripted continuation, records each call."""

    def __init__(self, script, tokenizer=None):
        self.script = iter(script)
        self.tokenizer = tokenizer or PlainTokenizer()
        self.calls = []

    def __call__(self, prompt, **kwargs):
        self.calls.append((prompt, kwargs))
        return [{"generated_text": next(self.script)}]


def test_the_llm_loop_retries_invalid_samples_and_counts_every_outcome():
    script = [
        "gibberish",  # a cat: no_end
        "turn it into a tiger\n%%\na tiger on a mat\nEND",  # a cat: valid on the first retry
        "keep it\n%%\na dog in a park\nEND",  # a dog: same_as_input, then 3 more failures: gives up
        "make it snow\n%%\na snowy park\n%%\nEND",
        "make it snow\na snowy park\nEND",
        "make it snow\n%%\na snowy",
        "make it fly\n%%\na bird in the sky\nEND",  # a bird: valid at once
    ]
    llm = ScriptedLLM(script)
    stats = PromptStats()
    settings = LLMSettings(temperature=0.5, top_p=0.8, max_new_tokens=40, max_retries=3)
    captions = ["a cat on a mat", "", "a dog in a park", "a bird on a branch"]
    state = torch.get_rng_state()
    pairs = list(llm_prompts(llm, captions, settings=settings, stats=stats))
    assert torch.equal(torch.get_rng_state(), state)  # seeded per caption without touching the caller's state
    assert pairs == [  # each with the index of the caption it answers
        PromptPair("a cat on a mat", "turn it into a tiger", "a tiger on a mat", caption_index=0),
        PromptPair("a bird on a branch", "make it fly", "a bird in the sky", caption_index=3),
    ]
    assert stats.to_dict() == {
        "generated": 7,
        "valid": 2,
        "rejected": {"extra_fields": 1, "no_delimiter": 1, "no_end": 2, "same_as_input": 1},
        "captions": 3,
        "gave_up": 1,
    }
    assert stats.summary() == (
        "7 generated, 2 valid; rejected: extra_fields 1, no_delimiter 1, no_end 2, same_as_input 1; "
        "3 captions, 1 without a valid pair"
    )
    prompt, kwargs = llm.calls[0]
    assert prompt == plain_prompt("a cat on a mat") and llm.calls[2][0] == plain_prompt("a dog in a park")
    assert kwargs == dict(
        do_sample=True, temperature=0.5, top_p=0.8, max_new_tokens=40, stop_sequence="END", return_full_text=False
    )


def test_a_resumed_run_asks_the_llm_only_about_captions_not_answered(tmp_path):
    """Killed while the model writes prompts, a run keeps those written, and resumed it starts after the last caption
    answered: the model is not run again over the captions before it."""
    from insv2v.synth.generate import fix_prompts, read_prompts

    llm = ScriptedLLM(f"make it snowy\n%%\na snowy scene {i}\nEND" for i in itertools.count())
    captions = [f"a scene {i}" for i in range(10)]

    def pairs(start):
        return llm_prompts(llm, captions, start=start)

    first = fix_prompts(tmp_path, pairs, 3)
    assert [p.caption_index for p in first] == [0, 1, 2] and len(llm.calls) == 3
    more = fix_prompts(tmp_path, pairs, 5)
    assert more[:3] == first and [p.caption_index for p in more] == [0, 1, 2, 3, 4]
    assert len(llm.calls) == 5 and [prompt for prompt, _ in llm.calls[3:]] == [plain_prompt(c) for c in captions[3:5]]
    assert read_prompts(tmp_path) == more  # the index is kept in prompts.jsonl


def test_the_llm_captions_default_to_the_toy_worlds():
    llm = ScriptedLLM(itertools.repeat("make it a sketch\n%%\na pencil sketch\nEND"))
    pairs = take(llm_prompts(llm, seed=3, split="heldout"), 3)
    assert [p.input for p in pairs] == take(toy_captions(seed=3, split="heldout"), 3)
    assert [prompt for prompt, _ in llm.calls] == [plain_prompt(p.input) for p in pairs]


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("temperature", 0.0, "> 0"),
        ("top_p", 1.5, r"in \(0, 1\]"),
        ("max_new_tokens", 0, ">= 1"),
        ("max_retries", -1, ">= 0"),
    ],
)
def test_llm_settings_name_the_bad_value(name, value, rule):
    with pytest.raises(ValueError, match=f"`{name}` must be {rule}, got {value}"):
        LLMSettings(**{name: value})


# ---------------------------------------------------------------- the LLM loop on a tiny random causal LM


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A folder holding a 1-layer, 16-wide Llama and a 300-token byte-level BPE tokenizer with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([plain_prompt(c) for c in take(toy_captions(), 10)], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-lm")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class Recording:
    """Wraps a pipeline, keeping each raw continuation."""

    def __init__(self, llm):
        self.llm, self.tokenizer, self.device, self.prompts, self.texts = llm, llm.tokenizer, llm.device, [], []

    def __call__(self, prompt, **kwargs):
        out = self.llm(prompt, **kwargs)
        self.prompts.append(prompt)
        self.texts.append(out[0]["generated_text"])
        return out


CAPTIONS = ["a cat on a mat", "a red circle moving right on a beach"]
SETTINGS = LLMSettings(max_new_tokens=12, max_retries=2)


def check_bookkeeping(pairs, stats, captions=CAPTIONS, settings=SETTINGS):
    assert all(validate_pair(p.input, p.edit, p.output) is None for p in pairs)
    assert stats.generated == stats.valid + sum(stats.rejected.values()) and stats.valid == len(pairs)
    assert stats.captions == len(captions) and stats.gave_up == len(captions) - len(pairs)
    assert len(captions) <= stats.generated <= len(captions) * (1 + settings.max_retries)
    assert set(stats.rejected) <= {"no_end", "no_delimiter", "extra_fields", "empty", "multiline", "delimiter_left",
                                   "same_as_input", "too_long"}  # fmt: skip


def test_a_tiny_lm_runs_end_to_end_through_its_chat_template(tiny_lm):
    llm = Recording(load_llm(tiny_lm, device="cpu"))
    assert llm.tokenizer.chat_template == CHAT_TEMPLATE
    stats = PromptStats()
    pairs = list(llm_prompts(llm, CAPTIONS, seed=1, settings=SETTINGS, stats=stats))
    check_bookkeeping(pairs, stats)
    assert len(llm.texts) == stats.generated
    prompt = llm.prompts[0]
    assert prompt == build_prompt(llm.tokenizer, CAPTIONS[0])
    assert prompt.startswith(f"<|im_start|>system\n{INSTRUCTION}<|im_end|>\n")
    assert prompt.endswith("<|im_start|>user\na cat on a mat\n##\n<|im_end|>\n<|im_start|>assistant\n")
    assert f"<|im_start|>assistant\n{format_completion(FEW_SHOT[0])}<|im_end|>" in prompt

    again = Recording(llm.llm)
    list(llm_prompts(again, CAPTIONS, seed=1, settings=SETTINGS))
    assert again.texts == llm.texts  # seeded: the same run twice samples the same text
    other = Recording(llm.llm)
    list(llm_prompts(other, CAPTIONS, seed=2, settings=SETTINGS))
    assert other.texts[0] != llm.texts[0]


def test_a_tiny_lm_without_a_chat_template_gets_the_plain_prompt(tiny_lm):
    llm = load_llm(tiny_lm, device="cpu")
    llm.tokenizer.chat_template = None
    recording, stats = Recording(llm), PromptStats()
    pairs = list(llm_prompts(recording, CAPTIONS, settings=SETTINGS, stats=stats))
    check_bookkeeping(pairs, stats)
    assert recording.prompts[0] == plain_prompt(CAPTIONS[0])


def test_prompt_source_loads_an_llm_folder(tiny_lm):
    stats = PromptStats()
    pairs = list(prompt_source(f"llm:{tiny_lm}", captions=CAPTIONS, settings=SETTINGS, stats=stats))
    check_bookkeeping(pairs, stats)


# ---------------------------------------------------------------- the spec


def test_prompt_source_parses_its_spec(tmp_path):
    assert take(prompt_source("toy", seed=4), 3) == take(toy_prompts(seed=4), 3)
    assert take(prompt_source(" toy ", seed=4, split="heldout"), 3) == take(toy_prompts(seed=4, split="heldout"), 3)
    path = tmp_path / "pairs.jsonl"
    write_jsonl(take(toy_prompts(), 2), path)
    stats = PromptStats()
    assert list(prompt_source(str(path), stats=stats)) == take(toy_prompts(), 2) and stats.valid == 2


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("toys", {}, "unknown prompt source 'toys': expected 'toy', a .jsonl file .*, or 'llm:MODEL'"),
        ("pairs.json", {}, "unknown prompt source 'pairs.json'"),
        ("missing.jsonl", {}, "prompt file missing.jsonl does not exist"),
        ("llm:", {}, f"'llm:' names no model: use llm:MODEL_ID_OR_DIR, e.g. llm:{DEFAULT_LLM}"),
        ("toy", {"captions": ["a cat"]}, "captions and LLM settings apply to an llm:MODEL source, not 'toy'"),
        ("toy", {"split": "val"}, "split must be one of train, heldout, got 'val'"),
    ],
)
def test_prompt_source_errors_say_what_is_wrong(spec, kwargs, message):
    with pytest.raises(ValueError, match=message):
        prompt_source(spec, **kwargs)


@pytest.mark.skipif(not OFFLINE, reason="only runs offline (HF_HUB_OFFLINE=1), so that it never downloads")
def test_a_missing_hub_model_says_how_to_download_it():
    from insv2v.loading import ModelLoadError

    with pytest.raises(ModelLoadError) as err:
        prompt_source("llm:nobody/no-such-language-model", captions=CAPTIONS)
    message = str(err.value)
    assert "could not load language model 'nobody/no-such-language-model'" in message
    assert "`hf download nobody/no-such-language-model`" in message


# ---------------------------------------------------------------- an edited caption from an instruction


def test_the_toy_grammar_edits_captions_exactly():
    """Every phrasing of every edit kind, read back: the edited caption is the one the world renders the edit for."""
    seeds = [*range(400), *range(HELDOUT_SEEDS.start, HELDOUT_SEEDS.start + 400)]
    for seed in seeds:
        t = sample_triplet(seed)
        assert propose_output_caption(t.input_caption, t.edit.instruction) == t.edited_caption, seed
    caption = "a red circle moving right and a blue square bouncing on a beach"
    assert propose_output_caption(caption, "Turn the circle into a triangle.") == (
        "a red triangle moving right and a blue square bouncing on a beach"
    )
    assert propose_output_caption(caption, "make the square orange") == (
        "a red circle moving right and an orange square bouncing on a beach"
    )
    assert propose_output_caption("a pencil sketch of " + caption, "make it a photo negative") == (
        "a photo negative of " + caption
    )


@pytest.mark.parametrize(
    "instruction",
    [
        "make the sky purple",  # not in the grammar
        "make the triangle green",  # no triangle in the caption
        "make the circle blue",  # another shape is blue already
        "turn the circle into a square",  # another shape is a square already ("the square" would name two)
        "make the circle red",  # no change
        "put it on a beach",  # no change
        "replace the forest with a desert",  # names a background the caption does not have
    ],
)
def test_the_toy_grammar_refuses_what_it_cannot_apply(instruction):
    caption = "a red circle moving right and a blue square bouncing on a beach"
    assert propose_output_caption(caption, instruction) is None


def test_a_language_model_completes_the_output_caption_after_the_given_instruction():
    llm = ScriptedLLM([" a snowy street at night\nEND", "a dog\n%%\nEND"])
    caption = "a street at night"
    assert propose_output_caption(caption, "make it snowy", llm) == "a snowy street at night"
    prompt, kwargs = llm.calls[0]
    assert prompt == plain_prompt(caption) + "make it snowy\n%%\n"  # the edit half written, the model writes the rest
    assert kwargs == dict(do_sample=False, max_new_tokens=60, stop_sequence="END", return_full_text=False)
    assert propose_output_caption(caption, "make it a dog", llm) is None  # a third field: rejected, nothing proposed
    assert propose_output_caption(caption, "make it snowy") is None  # no grammar match and no model
    toy = "a red circle moving right on a beach"
    assert propose_output_caption(toy, "make the circle blue", llm) == "a blue circle moving right on a beach"
    assert len(llm.calls) == 2  # the grammar answered: the model was not asked
