"""Where does the toy text-to-image model lose the shapes: in composing them from noise, or in drawing them?

    python tools/t2i_structure.py --n 30 --seed 900000 --out docs/results/t2i_structure.json
    python tools/t2i_structure.py --n 30 --seed 900000 --told-kinds other --out docs/results/t2i_kind_words.json

Rendered held-out frames (no style) are noised to a fraction of the schedule (`--strengths`; 1.0 is generation from
noise) and denoised with their own caption by DDIM (30 steps over the whole schedule, the later part run), at each
`--cfg`; the attribute reader (insv2v/toyworld/reader.py) then reads each shape's colour and kind back. Kinds kept
from a small strength say the model can draw the outlines; kinds lost at large strengths say it cannot compose them.
With `--told-kinds other` each caption names every shape as the next kind of the world's list instead of its own:
whether the redrawn shapes follow the caption's kind word or the frame's outline says whether the model reads that word.
"""

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from insv2v.assets import TOY_T2I
from insv2v.synth.t2v import load_t2v
from insv2v.toyworld.reader import heldout_scene, read_caption, read_frames
from insv2v.toyworld.synthetic import rate
from insv2v.toyworld.world import SHAPES, caption, render

STEPS = 30


@torch.no_grad()
def redraw(pipe, frame, text: str, strength: float, cfg: float, seed: int):
    """`frame` (h, w, 3) uint8 noised to `strength` of the schedule, denoised with `text`; a frame back."""
    x = torch.from_numpy(frame).float().permute(2, 0, 1)[None] / 127.5 - 1
    latents = pipe.vae.encode(x).latent_dist.mode() * pipe.vae.config.scaling_factor  # (1, c, h, w)
    pipe.scheduler.set_timesteps(STEPS)
    timesteps = pipe.scheduler.timesteps[round((1 - strength) * STEPS) :]
    if len(timesteps):
        noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
        latents = pipe.scheduler.add_noise(latents, noise, timesteps[:1])
    embeds = pipe.encode_prompt(["", text])
    for t in timesteps:
        video = latents[:, :, None]  # (1, c, 1, h, w)
        uncond, cond = pipe.model_output(torch.cat([video, video]), t, embeds).chunk(2)
        latents = pipe.scheduler.step((uncond + cfg * (cond - uncond))[:, :, 0], t, latents).prev_sample
    return pipe.decode_latents(latents[:, :, None])[0, 0]


def told_scene(scene, told_kinds: str):
    """The scene whose caption the model is given: itself, or each shape named as the next kind in SHAPES."""
    if told_kinds == "own":
        return scene
    shapes = [dataclasses.replace(s, kind=SHAPES[(SHAPES.index(s.kind) + 1) % len(SHAPES)]) for s in scene.shapes]
    return dataclasses.replace(scene, shapes=tuple(shapes))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(TOY_T2I), help="text-to-image model (the shipped toy t2i)")
    parser.add_argument("--n", type=int, default=30, help="held-out scenes")
    parser.add_argument("--seed", type=int, default=900000, help="first held-out scene (not 500000, 600000, 800000)")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.7, 0.9, 1.0])
    parser.add_argument("--cfg", type=float, nargs="+", default=[1.0, 3.0, 9.0])
    parser.add_argument("--told-kinds", choices=("own", "other"), default="own",
                        help="caption each shape as its own kind, or as the next one in the world's list")  # fmt: skip
    parser.add_argument("--out")
    args = parser.parse_args()
    pipe = load_t2v(args.model, "cpu")
    scenes = [heldout_scene(args.seed + i, style_rate=0) for i in range(args.n)]
    results = []
    for strength in args.strengths:
        for cfg in args.cfg if strength > 0 else args.cfg[:1]:  # nothing is denoised at strength 0
            colours = kinds = told = shapes = 0
            for i, scene in enumerate(scenes):
                text = caption(told_scene(scene, args.told_kinds))
                drawn, named = read_caption(caption(scene)).shapes, read_caption(text).shapes
                got = read_frames(redraw(pipe, render(scene, 1)[0], text, strength, cfg, i)).shapes or {}
                shapes += len(drawn)
                colours += sum(c in got for c in drawn)
                kinds += sum(got.get(c) == k for c, k in drawn.items())
                told += sum(got.get(c) == k for c, k in named.items())
            row = {"strength": strength, "cfg": cfg, "colours": rate(colours, shapes), "kinds": rate(kinds, shapes)}
            if args.told_kinds == "other":  # kinds: the frame's outline kept; told: the caption's kind drawn
                row["told_kinds"] = rate(told, shapes)
            results.append(row)
            print(
                f"strength {strength:.1f}, CFG {cfg:g}: colours {colours}/{shapes}, kinds {kinds}/{shapes}"
                + (f", the caption's kinds {told}/{shapes}" if args.told_kinds == "other" else ""),
                flush=True,
            )
    if args.out:
        record = {"model": args.model if not Path(args.model).is_absolute() else Path(args.model).name,
                  "n": args.n, "seed": args.seed, "steps": STEPS, "told_kinds": args.told_kinds,
                  "results": results}  # fmt: skip
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
