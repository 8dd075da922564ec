"""argparse types the commands share: a bad number or device is refused, naming its flag, before anything runs."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """A count where 0 means none (or no limit, as the flag says)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def positive_int_at_most(limit: int):
    """`positive_int`, refusing counts above `limit` (one so large it would fill memory before starting is a typo)."""

    def parse(text: str) -> int:
        value = positive_int(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"must be at most {limit:,}, got {value:,}")
        return value

    parse.__name__ = positive_int.__name__  # argparse names the type when int() fails: "invalid positive_int value"
    return parse


def number_in(low: float, high: float):
    """A finite number from `low` to `high`: a setting whose range the model would refuse only after loading."""

    def parse(text: str) -> float:
        value = float(text)
        if not low <= value <= high:  # NaN fails this too
            raise argparse.ArgumentTypeError(f"must be from {low:g} to {high:g}, got {text}")
        return value

    parse.__name__ = "number"  # argparse names the type when float() fails: "invalid number value"
    return parse


def resolution(text: str) -> int:
    """A short side in pixels that read_video resizes to."""
    from insv2v.video import MAX_RESOLUTION, MIN_RESOLUTION

    value = int(text)
    if not MIN_RESOLUTION <= value <= MAX_RESOLUTION:
        raise argparse.ArgumentTypeError(f"must be between {MIN_RESOLUTION} and {MAX_RESOLUTION}, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


SEED_LIMIT = 2**63  # torch's generators take seeds below it


def seed(text: str) -> int:
    """A random seed torch takes: 0 to 2**63 - 1."""
    value = int(text)
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**63 - 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0: a start time, or a weight that adds to a loss (a negative one would push the error up)."""
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def share(text: str) -> float:
    """A number from 0 to 1: how much of something."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


def open_fraction(text: str) -> float:
    """A number strictly between 0 and 1: a threshold relative to a peak that lets some but not all through."""
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def torch_device(text: str) -> str:
    """A torch device this machine has: "cpu", "cuda", "cuda:1", "mps"."""
    import torch

    try:
        kind = torch.device(text).type
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a device: {text!r} (cpu, cuda, cuda:1, mps)") from None
    have = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not have.get(kind, False):
        raise argparse.ArgumentTypeError(f"this machine has no {kind} device")
    return text
