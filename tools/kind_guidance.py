"""Does classifier guidance from the kind classifier make the toy text-to-video model draw the kinds its caption names?

    python -m insv2v.toyworld.kind_classifier train --out runs/kind-classifier --steps 3000
    python tools/kind_guidance.py --classifier runs/kind-classifier --n 40 --seed 950000 --weights 0 16 64 256 \
        --space xt --out docs/results/t2v_kind_guidance_xt.json
    python tools/kind_guidance.py --classifier runs/kind-classifier --n 40 --seed 950000 --weights 0 10 30 100 \
        --space x0 --out docs/results/t2v_kind_guidance_x0.json
    python -m insv2v.toyworld.kind_classifier train --out runs/kind-classifier-absence --steps 3000 --absence
    python tools/kind_guidance.py --classifier runs/kind-classifier-absence --n 40 --seed 950000 --weights 10 30 100 \
        --out docs/results/t2v_kind_guidance_absence_950000.json

The toy models draw the colour a caption names but the outline the noise suggests, and keep an outline they are given
(docs/toy-generators.md). A small classifier (`insv2v.models.kind_classifier`) reads which kind each shape colour has,
and guides sampling in one of two places:

- "xt", classifier guidance proper (Dhariwal & Nichol 2021): read from the noisy latents at their noise level, the
  guided prediction's epsilon moves by -w sqrt(1 - abar) grad log p(the caption's kinds | x_t);
- "x0", what the engine ships (`kind_guidance`): read from the predicted x0 as a clean frame, x0 moves by
  w grad log p(the caption's kinds | x0), and the next x_t holds the outline.

It shares nothing with the attribute reader, which has no weights and reads each video back as `t2v_fidelity` does.
Every weight samples from the same noise per caption; w = 0 is plain guidance.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from insv2v.assets import TOY_T2V
from insv2v.models.kind_classifier import KindClassifier, kind_guided
from insv2v.synth.t2v import load_t2v, recommended_guidance
from insv2v.toyworld.reader import heldout_scene
from insv2v.toyworld.synthetic import caption_rates_by_weight, caption_row, format_rate
from insv2v.toyworld.world import caption


def kind_score(model: KindClassifier, vae, latents: torch.Tensor, level: float, targets) -> torch.Tensor:
    """grad of sum log p(target kinds | x_t) w.r.t. latents (1, c, f, h, w), every frame, read at noise `level`."""
    with torch.enable_grad():
        x = latents.detach().requires_grad_(True)
        frames = x[0].transpose(0, 1)  # (f, c, h, w)
        pixels = vae.decode(frames / vae.config.scaling_factor).sample
        logp = model(pixels, torch.full((len(frames),), level)).log_softmax(-1)
        total = sum(logp[:, c, k].sum() for c, k in targets)
        (grad,) = torch.autograd.grad(total, x)
    return grad


@torch.no_grad()
def sample(pipe, model, text: str, guidance: float, weight: float, frames: int, steps: int, seed: int, space="xt"):
    """One video (f, h, w, 3) uint8 of `text`, with kind guidance of `weight`: on the noisy latents ("xt", classifier
    guidance proper) or on the predicted x0 read as a clean frame ("x0")."""
    embeds = pipe.encode_prompt(["", text])
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps)
    size = pipe.default_resolution
    latents = pipe.prepare_latents(1, frames, size, size, torch.Generator().manual_seed(seed))
    targets = model.targets(text) if weight else []
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(latents, t)
        uncond, cond = pipe.model_output(torch.cat([x_in, x_in]), t, embeds).chunk(2)
        x0 = uncond + guidance * (cond - uncond)  # the toy models predict x0
        if targets and space == "x0":  # what the engine does (`kind_guidance`)
            x0 = kind_guided(model, pipe.vae, x0, [targets], weight)
        elif targets:
            abar = scheduler.alphas_cumprod[t].float()
            eps = (latents - abar.sqrt() * x0) / (1 - abar).sqrt()
            eps = eps - weight * (1 - abar).sqrt() * kind_score(model, pipe.vae, latents, float((1 - abar).sqrt()),
                                                                targets)  # fmt: skip
            x0 = (latents - (1 - abar).sqrt() * eps) / abar.sqrt()
        latents = scheduler.step(x0, t, latents).prev_sample
    return pipe.decode_latents(latents)[0]


def measure(pipe, model, n, seed, weights: list[float], guidance: float, frames: int, steps: int, space: str) -> dict:
    rows = {w: [] for w in weights}
    for i in range(n):
        text = caption_of(seed + i)
        for w in weights:
            video = sample(pipe, model, text, guidance, w, frames, steps, seed + i, space)
            rows[w].append(caption_row(text, video))
        print(f"{i + 1}/{n} {time.strftime('%H:%M:%S')} " + " ".join(
            f"w{w:g}:{int(rows[w][-1].get('colours', 0))}{int(rows[w][-1].get('shapes', 0))}" for w in weights
        ), flush=True)  # fmt: skip
    return caption_rates_by_weight(rows)


def caption_of(index: int) -> str:
    return caption(heldout_scene(index))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", required=True, help="a KindClassifier folder")
    parser.add_argument("--t2v", default=str(TOY_T2V))
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=950000, help="offset into the held-out scenes")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 10.0, 30.0, 100.0])
    parser.add_argument("--cfg", type=float, help="text guidance s (the model's sampling.json)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--space", choices=("xt", "x0"), default="x0", help="guide the noisy latents or the x0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_t2v(args.t2v, "cpu")
    classifier = KindClassifier.from_pretrained(args.classifier).eval()
    cfg = recommended_guidance(args.t2v) if args.cfg is None else args.cfg
    results = measure(pipe, classifier, args.n, args.seed, args.weights, cfg, args.frames, args.steps, args.space)
    for w in args.weights:
        r = results[str(w)]
        print(f"w={w:g}: " + "; ".join(f"{k} {format_rate(r[k])}" for k in ("background", "colours", "shapes")))
        if "shapes_less_first" in r:
            print(f"   kinds less w={args.weights[0]:g}: {r['shapes_less_first']}")
    if args.out:
        named = ("n", "seed", "weights", "cfg", "frames", "steps", "space")
        command = "python tools/kind_guidance.py " + " ".join(
            f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k in named and v is not None
        )  # fmt: skip
        record = {"command": command, "classifier": Path(args.classifier).name, "guidance": cfg, "results": results}
        Path(args.out).write_text(json.dumps(record, indent=1))
