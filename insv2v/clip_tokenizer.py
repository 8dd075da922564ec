"""The CLIP tokenizer (openai/clip-vit-large-patch14 vocabulary) built offline from the BPE file open_clip ships, and
the token ids every text encoder here takes (`token_ids`)."""

from __future__ import annotations

import copy
import gzip
import json
import logging
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

CLIP_VOCAB_SIZE = 49408  # 256 bytes + 256 end-of-word bytes + 48894 merges + 2 special tokens
CLIP_MAX_LENGTH = 77


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's reversible map of the 256 byte values to printable unicode characters, in id order."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    order = printable + [b for b in range(256) if b not in printable]
    return [chars[b] for b in order]


def _bpe_merges() -> list[str]:
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    return lines[1 : CLIP_VOCAB_SIZE - 256 - 256 - 2 + 1]  # first line is a header


def write_clip_tokenizer_files(directory: str | os.PathLike) -> Path:
    """Write vocab.json and merges.txt of the CLIP vocabulary into `directory` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    merges = _bpe_merges()
    base = _bytes_to_unicode()
    tokens = base + [c + "</w>" for c in base] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == CLIP_VOCAB_SIZE, len(tokens)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return directory


@lru_cache(maxsize=1)
def _built_tokenizer() -> CLIPTokenizer:
    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer_files(tmp)
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=CLIP_MAX_LENGTH)


def clip_tokenizer() -> CLIPTokenizer:
    """A CLIPTokenizer identical in ids to openai/clip-vit-large-patch14's, built with no network.

    Built once per process; each caller gets its own copy, so that one changing its `model_max_length` (the toy
    models use 32 tokens) changes no one else's."""
    return copy.deepcopy(_built_tokenizer())


def token_ids(tokenizer, texts: str | list[str], say_cut: bool = True):
    """(n, L) token ids of `texts`, padded or cut to the tokenizer's max length L, as CLIP text encoders take them.
    With `say_cut`, a text longer than that is named in a warning: its end has no effect on the edit."""
    length = tokenizer.model_max_length
    if say_cut:
        for text in [texts] if isinstance(texts, str) else texts:
            n = len(tokenizer(text, verbose=False).input_ids)
            if n > length:
                logging.getLogger("insv2v").warning(
                    "the text %r is %d tokens long; the model reads its first %d, the rest has no effect",
                    text,
                    n,
                    length,
                )
    return tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
