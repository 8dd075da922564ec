"""Does injecting the source's UNet features, not only its attention, hold a toy text-to-video model's layout?

    python tools/p2p_features.py --variants none 0,1:0.5 0,1:0.8 0,1,2:0.3 --out results.json

A variant `LEVELS:END` gives the target videos the source's output of every resnet in the listed up blocks (0: 4x4,
1: 8x8, 2: 16x16 in the toy model) for the first END of the steps, on top of Prompt-to-Prompt, as Plug-and-Play
diffusion features do; `none` is Prompt-to-Prompt alone. Held-out toy prompts from `--seed`, 8 frames, 30 DDIM
steps, CFG 8, self-attention injected for 0.4 of the steps, cross-attention edited until 0.8, edit weight 2; the same
prompts and noise for every variant. Each pair is judged by the attribute reader, and the pairs are counted where a
kept shape moved and where the input video itself contradicts its caption (which no injection can mend).
"""

import argparse
import itertools
import json
from contextlib import contextmanager
from pathlib import Path

from insv2v.assets import TOY_CLIP, TOY_T2V
from insv2v.metrics import load_clip
from insv2v.synth.clip_filter import Thresholds
from insv2v.synth.generate import GenerateConfig, make_sample
from insv2v.synth.p2p import VIDEOS, P2PSettings
from insv2v.synth.prompts import toy_prompts
from insv2v.synth.t2v import load_t2v
from insv2v.toyworld.synthetic import toy_judge

STEPS, SA_END, CA_END, EDIT_WEIGHT, CFG = 30, 0.4, 0.8, 2.0, 8.0


@contextmanager
def source_features(unet, levels: list[int], end: float, progress: dict):
    """While fewer than `end` of the steps are done, each listed up block's resnets hand the target videos (rows 1
    and 3 of the video-major batch [source_uncond, target_uncond, source_cond, target_cond]) the source's output."""

    def inject(module, inputs, out):
        if progress["done"] >= end * progress["total"]:
            return out
        videos = out.unflatten(0, (VIDEOS, -1)).clone()  # (4, f, c, h, w)
        videos[1], videos[3] = videos[0], videos[2]
        return videos.flatten(0, 1)

    handles = [resnet.register_forward_hook(inject) for level in levels for resnet in unet.up_blocks[level].resnets]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def parse_variant(text: str) -> tuple[list[int], float]:
    if text == "none":
        return [], 0.0
    levels, colon, end = text.partition(":")
    if not colon:
        raise SystemExit(f"a variant is none or LEVELS:END (such as 0,1:0.5), got {text!r}")
    return [int(level) for level in levels.split(",")], float(end)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["none", "0,1:0.5", "0,1:0.8", "0,1,2:0.3"])
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--seed", type=int, default=800000)
    parser.add_argument("--out")
    args = parser.parse_args()
    pipe = load_t2v(str(TOY_T2V), "cpu")
    pipe.set_progress_bar_config(disable=True)
    clip = str(TOY_CLIP)
    config = GenerateConfig(out_dir="", t2v=str(TOY_T2V), prompts="toy", n=1, clip=clip,
                            thresholds=Thresholds.for_clip(clip), frames=8, steps=STEPS)  # fmt: skip
    settings = P2PSettings(CFG, SA_END, CA_END, EDIT_WEIGHT)
    pairs = list(itertools.islice(toy_prompts(args.seed, "heldout"), args.n))
    progress = {"done": 0, "total": STEPS}

    def follow(step: int, total: int) -> None:
        progress.update(done=step, total=total)

    results = {}
    for variant in args.variants:
        verdicts = []
        with source_features(pipe.unet, *parse_variant(variant), progress):
            for i, pair in enumerate(pairs):
                progress["done"] = 0
                source, target, _ = make_sample(pipe, load_clip(clip), pair, args.seed + i, config, settings, follow)
                verdicts.append({"kind": pair.kind, **toy_judge(pair, source, target)})
        reasons = [v["reason"] or "" for v in verdicts]
        row = {"right": sum(v["edit_right"] for v in verdicts), "n": len(verdicts),
               "kept_shape_moved": sum("px from where" in r for r in reasons),
               "input_contradicts_its_caption": sum("the input video shows" in r for r in reasons),
               "verdicts": verdicts}  # fmt: skip
        results[variant] = row
        print(f"{variant}: right {row['right']} of {row['n']}; a kept shape moved > 3 px in {row['kept_shape_moved']}; "
              f"the input contradicts its caption in {row['input_contradicts_its_caption']}", flush=True)  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
