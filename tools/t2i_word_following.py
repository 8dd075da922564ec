"""How far does the toy text-to-image model's x0 prediction follow a shape's colour word, and its kind word?

    python tools/t2i_word_following.py --n 20 --seed 980000 --out docs/results/t2i_word_following.json

Each of `--n` held-out scenes is cut to its first shape (no style, no pan) and rendered; the frame is noised to each
fraction of the schedule (`--levels`, the same noise for every caption) and the model predicts x0 from it twice: with
the scene's caption, and with the caption naming the shape as another kind (each of the three) or another colour
(three). Following is the change of the prediction projected on the change between the two rendered frames,
<pred(other) - pred(own), frame(other) - frame(own)> / |frame(other) - frame(own)|^2: 1 when the prediction becomes
the named shape, 0 when the word is ignored. Where the noise still shows the outline a good model follows it
little; where it no longer does (from about 0.8) the words are all the model has to go by. The colour word's following
is also given per colour the shape starts from.
"""

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from insv2v.assets import TOY_T2I
from insv2v.synth.t2v import load_t2v
from insv2v.toyworld.reader import heldout_scene
from insv2v.toyworld.world import SHAPE_COLOURS, SHAPES, caption, render


def encode(pipe, scene) -> torch.Tensor:
    frame = torch.from_numpy(render(scene, 1)[0]).float().permute(2, 0, 1)[None] / 127.5 - 1
    return pipe.vae.encode(frame).latent_dist.mode() * pipe.vae.config.scaling_factor  # (1, c, h, w)


@torch.no_grad()
def predicted_x0(pipe, noisy: torch.Tensor, t: int, text: str) -> torch.Tensor:
    return pipe.model_output(noisy[:, :, None], torch.tensor(t), pipe.encode_prompt([text]))[:, :, 0]


def following(pipe, scene, level: float, seed: int) -> dict[str, list[float]]:
    """{"kind": [...], "colour": [...]}: the following of each other kind and colour named for the scene's shape."""
    shape = scene.shapes[0]
    x0 = encode(pipe, scene)
    t = min(round(level * pipe.scheduler.config.num_train_timesteps), pipe.scheduler.config.num_train_timesteps - 1)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    noisy = pipe.scheduler.add_noise(x0, noise, torch.tensor([t]))
    own = predicted_x0(pipe, noisy, t, caption(scene))
    others = {"kind": [k for k in SHAPES if k != shape.kind], "colour": [c for c in SHAPE_COLOURS if c != shape.colour]}
    result = {}
    for word, values in others.items():
        result[word] = []
        for value in values[:3]:
            other = dataclasses.replace(scene, shapes=(dataclasses.replace(shape, **{word: value}),))
            truth = (encode(pipe, other) - x0).flatten()
            change = (predicted_x0(pipe, noisy, t, caption(other)) - own).flatten()
            result[word].append(float(change @ truth / (truth @ truth)))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(TOY_T2I), help="text-to-image model (the shipped toy t2i)")
    parser.add_argument("--n", type=int, default=20, help="held-out scenes")
    parser.add_argument("--seed", type=int, default=980000, help="first held-out scene")
    parser.add_argument("--levels", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9, 1.0])
    parser.add_argument("--out")
    args = parser.parse_args()
    pipe = load_t2v(args.model, "cpu")
    assert pipe.scheduler.config.prediction_type == "sample", "the model must predict x0"
    scenes = [heldout_scene(args.seed + i, style_rate=0) for i in range(args.n)]
    scenes = [dataclasses.replace(s, shapes=s.shapes[:1], pan=(0.0, 0.0)) for s in scenes]
    rows = []
    for level in args.levels:
        kind, colour, by_source = [], [], {}
        for i, scene in enumerate(scenes):
            got = following(pipe, scene, level, seed=i)
            kind += got["kind"]
            colour += got["colour"]
            by_source.setdefault(scene.shapes[0].colour, []).extend(got["colour"])
        row = {"level": level, "n": len(kind), "kind": float(np.mean(kind)), "colour": float(np.mean(colour)),
               "kind_quartiles": np.percentile(kind, [25, 50, 75]).round(3).tolist(),
               "colour_by_source": {c: round(float(np.mean(v)), 3) for c, v in sorted(by_source.items())}}  # fmt: skip
        rows.append(row)
        print(f"noised to {level:.2f}: kind word followed {row['kind']:+.3f}, colour word {row['colour']:+.3f}; "
              f"from each colour: {row['colour_by_source']}")  # fmt: skip
    if args.out:
        record = {"model": args.model if not Path(args.model).is_absolute() else Path(args.model).name,
                  "n": args.n, "seed": args.seed, "results": rows}  # fmt: skip
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
