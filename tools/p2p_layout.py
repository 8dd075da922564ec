"""Does injecting the source's self-attention (longer), or sharing its first steps, hold a toy model's layout?

    python tools/p2p_layout.py --sa-end 0.4 1.0 --n 24 --seed 800000 --out results.json
    python tools/p2p_layout.py --t2v runs/t2i-fine/final --frames 1      # image Prompt-to-Prompt
    python tools/p2p_layout.py --t2v assets/toy-t2i --frames 1 --n 48 --seed 870000 --sa-end 0.4 \
        --shared-end 0 0.3 0.5 0.7
    python tools/p2p_layout.py --t2v runs/t2i-swapall/final --frames 1 --n 48 --seed 870000 --sa-end 0.4 \
        --shared-end 0.5 --diff-blend 0 0.5     # without and with DiffEdit's mask (0: none)

Held-out toy prompts from `--seed` (not the shipped set's 600000), 8 frames (`--frames`), 30 DDIM steps, CFG 8
(`--cfg`), cross-attention edited until 0.8 of the steps, edit weight 2; the same prompts and noise for every
`--sa-end`, `--shared-end` (the steps the edited sample shares the input's latents) and `--diff-blend` (DiffEdit's mask
at this threshold; 0: none); each pair judged by the attribute reader (insv2v/toyworld/reader.py), with and without
shape kinds (and per edit kind), and counted where a kept shape moved.
"""

import argparse
import collections
import itertools
import json
from dataclasses import replace
from pathlib import Path

from insv2v.assets import TOY_CLIP, TOY_T2V
from insv2v.metrics import load_clip
from insv2v.synth.clip_filter import Thresholds
from insv2v.synth.generate import GenerateConfig, make_sample
from insv2v.synth.p2p import P2PSettings
from insv2v.synth.prompts import toy_prompts
from insv2v.synth.t2v import load_t2v
from insv2v.toyworld.synthetic import toy_judge

STEPS, CA_END, EDIT_WEIGHT = 30, 0.8, 2.0  # the other settings, fixed

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sa-end", type=float, nargs="+", default=[0.4, 1.0])
    parser.add_argument("--shared-end", type=float, nargs="+", default=[0.0])
    parser.add_argument("--diff-blend", type=float, nargs="+", default=[0.0], help="DiffEdit's mask (0: none)")
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--seed", type=int, default=800000)
    parser.add_argument("--t2v", default=str(TOY_T2V), help="text-to-video (or -image) model (the shipped toy t2v)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--cfg", type=float, default=8.0, help="classifier-free guidance of both (8)")
    parser.add_argument("--out")
    args = parser.parse_args()
    pipe = load_t2v(args.t2v, "cpu")
    pipe.set_progress_bar_config(disable=True)
    clip = str(TOY_CLIP)
    config = GenerateConfig(out_dir="", t2v=args.t2v, prompts="toy", n=1, clip=clip,
                            thresholds=Thresholds.for_clip(clip), frames=args.frames, steps=STEPS)  # fmt: skip
    pairs = list(itertools.islice(toy_prompts(args.seed, "heldout"), args.n))
    results = {}
    for sa_end, shared_end, blend in itertools.product(args.sa_end, args.shared_end, args.diff_blend):
        settings = P2PSettings(args.cfg, sa_end, CA_END, EDIT_WEIGHT, shared_end)
        run = replace(config, local_blend=blend or None, blend_maps="difference")
        name = str(sa_end) if len(args.shared_end) == 1 else f"sa_end {sa_end}, shared_end {shared_end}"
        name += f", DiffEdit's mask {blend}" if len(args.diff_blend) > 1 else ""
        verdicts = []
        for i, pair in enumerate(pairs):
            source, target, _ = make_sample(pipe, load_clip(clip), pair, args.seed + i, run, settings)
            verdicts.append({"kind": pair.kind, **toy_judge(pair, source, target)})
        loose = [v["edit_right_ignoring_kinds"] for v in verdicts if v["edit_right_ignoring_kinds"] is not None]
        moved = sum("px from where" in (v["reason"] or "") for v in verdicts)
        by_kind = collections.defaultdict(lambda: [0, 0])  # ignoring kinds: right, judged
        for v in verdicts:
            if v["edit_right_ignoring_kinds"] is not None:
                by_kind[v["kind"]][0] += v["edit_right_ignoring_kinds"]
                by_kind[v["kind"]][1] += 1
        results[name] = {"right": sum(v["edit_right"] for v in verdicts), "n": len(verdicts),
                         "right_ignoring_kinds": sum(loose), "n_ignoring_kinds": len(loose),
                         "right_ignoring_kinds_by_kind": dict(by_kind), "kept_shape_moved": moved,
                         "verdicts": verdicts}  # fmt: skip
        kinds = ", ".join(f"{kind} {right} of {n}" for kind, (right, n) in by_kind.items())
        print(f"{name}: right {results[name]['right']} of {len(verdicts)}, ignoring kinds "
              f"{sum(loose)} of {len(loose)} ({kinds}); a kept shape moved > 3 px in {moved}", flush=True)  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
