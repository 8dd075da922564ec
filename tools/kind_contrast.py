"""Does guiding away from the other shape kinds make the toy text-to-video model draw the kind its caption names?

    python tools/kind_contrast.py --n 40 --seed 950000 --weights 0 2 4 8 --out docs/results/t2v_kind_contrast.json

The toy models draw the colour a caption names but an outline the noise suggests (docs/toy-generators.md). Here each
held-out caption is sampled with classifier-free guidance plus a contrast term: the caption with one shape's kind word
replaced by each other kind of the world (three per shape) is run as extra branches, and

    guided = uncond + s (cond - uncond) + w (cond - mean(contrasts))

so that `w` pushes along what the kind words alone change, leaving colours and backgrounds to `s`. Every weight samples
from the same noise per caption (seeded as `insv2v eval --toyworld --t2v`), and the attribute reader reads each video
back as that command does (`t2v_fidelity`). w = 0 is plain guidance.
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from insv2v.assets import TOY_T2V
from insv2v.synth.t2v import load_t2v, recommended_guidance
from insv2v.toyworld.reader import heldout_scene
from insv2v.toyworld.synthetic import caption_rates_by_weight, caption_row, format_rate
from insv2v.toyworld.world import SHAPES, Scene, caption


def contrast_captions(scene: Scene) -> list[str]:
    """The scene's caption with one shape's kind replaced by each other kind, shape by shape."""
    out = []
    for i, shape in enumerate(scene.shapes):
        for kind in SHAPES:
            if kind != shape.kind:
                shapes = list(scene.shapes)
                shapes[i] = dataclasses.replace(shape, kind=kind)
                out.append(caption(dataclasses.replace(scene, shapes=tuple(shapes))))
    return out


@torch.no_grad()
def sample(pipe, text: str, contrasts: list[str], guidance: float, weight: float, frames: int, steps: int, seed: int):
    """One video (f, h, w, 3) uint8 of `text`, guided by `guidance` and away from `contrasts` by `weight`."""
    texts = ["", text] + (contrasts if weight else [])
    embeds = pipe.encode_prompt(texts)
    pipe.scheduler.set_timesteps(steps)
    size = pipe.default_resolution
    latents = pipe.prepare_latents(1, frames, size, size, torch.Generator().manual_seed(seed))
    for t in pipe.scheduler.timesteps:
        x_in = pipe.scheduler.scale_model_input(latents, t)
        out = pipe.model_output(x_in.expand(len(texts), *x_in.shape[1:]), t, embeds)
        uncond, cond = out[:1], out[1:2]
        guided = uncond + guidance * (cond - uncond)
        if weight:
            guided = guided + weight * (cond - out[2:].mean(0, keepdim=True))
        latents = pipe.scheduler.step(guided, t, latents).prev_sample
    return pipe.decode_latents(latents)[0]


def measure(pipe, n: int, seed: int, weights: list[float], guidance: float, frames: int, steps: int) -> dict:
    rows = {w: [] for w in weights}
    for i in range(n):
        scene = heldout_scene(seed + i)
        text = caption(scene)
        for w in weights:
            video = sample(pipe, text, contrast_captions(scene), guidance, w, frames, steps, seed + i)
            rows[w].append(caption_row(text, video))
        print(f"{i + 1}/{n} {time.strftime('%H:%M:%S')}", flush=True)
    return caption_rates_by_weight(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t2v", default=str(TOY_T2V))
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=950000, help="offset into the held-out scenes")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 2.0, 4.0, 8.0])
    parser.add_argument("--cfg", type=float, help="text guidance s (the model's sampling.json)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_t2v(args.t2v, "cpu")
    cfg = recommended_guidance(args.t2v) if args.cfg is None else args.cfg
    results = measure(pipe, args.n, args.seed, args.weights, cfg, args.frames, args.steps)
    for w in args.weights:
        r = results[str(w)]
        print(f"w={w:g}: " + "; ".join(f"{k} {format_rate(r[k])}" for k in ("background", "colours", "shapes")))
        if "shapes_less_first" in r:
            print(f"   kinds less w={args.weights[0]:g}: {r['shapes_less_first']}")
    if args.out:
        command = "python tools/kind_contrast.py " + " ".join(
            f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(args).items()
            if k not in ("out", "threads", "t2v") and v is not None
        )  # fmt: skip
        model = Path(args.t2v).resolve()
        root = Path(__file__).resolve().parents[1]
        named = str(model.relative_to(root)) if model.is_relative_to(root) else args.t2v  # no machine's path
        record = {"command": command, "t2v": named, "guidance": cfg, "frames": args.frames, "steps": args.steps,
                  "results": results}  # fmt: skip
        Path(args.out).write_text(json.dumps(record, indent=1))
