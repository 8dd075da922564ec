"""Train the toy world's kind classifier (`insv2v.models.kind_classifier`), and measure it on held-out scenes.

    python -m insv2v.toyworld.kind_classifier train --out runs/kind-classifier --steps 3000 [--absence]
    python -m insv2v.toyworld.kind_classifier accuracy runs/kind-classifier --n 200

It learns from noised frames of training-split scenes, with their exact labels as the text-to-image model learns from
their captions; plain frames and photo negatives (a negative names the colours it inverts), never pencil sketches,
which show no colour. The attribute reader that judges the toy generators has no weights, so it shares nothing with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from insv2v.models.kind_classifier import KindClassifier
from insv2v.toyworld.models import toy_train_scheduler
from insv2v.toyworld.world import HELDOUT_SEEDS, SHAPE_COLOURS, SHAPES, TRAIN_SEEDS, Scene, random_scene, render
from insv2v.train import to_pixels

NEGATIVE_RATE = 0.1  # share of training frames drawn as photo negatives
ACCURACY_OFFSET = 990000  # held-out scenes the accuracy is measured on (the reader's own accuracy offset)


def toy_kind_classifier(absence: bool = False) -> KindClassifier:
    return KindClassifier(colours=tuple(SHAPE_COLOURS), kinds=SHAPES, unseen=("pencil sketch",), absence=absence)


def kind_labels(scene: Scene) -> np.ndarray:
    """Each colour's kind index in the scene (colours,), -1 where the colour is absent."""
    labels = np.full(len(SHAPE_COLOURS), -1)
    for shape in scene.shapes:
        labels[list(SHAPE_COLOURS).index(shape.colour)] = SHAPES.index(shape.kind)
    return labels


def labelled_frames(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n frames of random training scenes in [-1, 1] (n, 3, 64, 64), and their `kind_labels` (n, colours)."""
    frames, labels = [], []
    for _ in range(n):
        scene = random_scene(np.random.default_rng(int(rng.integers(TRAIN_SEEDS.stop))))
        if rng.random() < NEGATIVE_RATE:
            scene = dataclasses.replace(scene, style="negative")
        frames.append(render(scene, 1, first=int(rng.integers(0, 16)))[0])
        labels.append(kind_labels(scene))
    return to_pixels(np.stack(frames)), torch.from_numpy(np.stack(labels))


def noised(scheduler, pixels: torch.Tensor, t: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t of `pixels` at timesteps `t`, and its noise level sqrt(1 - abar) (n,)."""
    abar = scheduler.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    noise = torch.randn(pixels.shape, generator=generator)
    return abar.sqrt() * pixels + (1 - abar).sqrt() * noise, (1 - abar).sqrt().flatten()


def kind_loss(logits: torch.Tensor, labels: torch.Tensor, absence: bool = False) -> torch.Tensor:
    """Cross-entropy over the colours present, or with `absence` (the logits' last class) over every colour."""
    if absence:
        return F.cross_entropy(logits.flatten(0, 1), labels.where(labels >= 0, len(SHAPES)).flatten())
    present = labels >= 0
    return F.cross_entropy(logits[present], labels[present])


def train(
    out: Path, steps: int = 3000, batch: int = 64, lr: float = 2e-3, seed: int = 0, absence: bool = False
) -> KindClassifier:
    """AdamW with 100 warm-up steps and cosine decay, every timestep of the toy schedule equally often."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    scheduler = toy_train_scheduler()
    model = toy_kind_classifier(absence)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    losses = []
    start = time.time()
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, step / 100) * 0.5 * (1 + np.cos(np.pi * step / steps))
        pixels, labels = labelled_frames(rng, batch)
        t = torch.from_numpy(rng.integers(0, scheduler.config.num_train_timesteps, batch))
        x_t, level = noised(scheduler, pixels, t)
        loss = kind_loss(model(x_t, level), labels, absence)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 100 == 0:
            print(f"step {step} loss {np.mean(losses[-100:]):.4f} {time.time() - start:.0f}s", flush=True)
    model.save_pretrained(out)
    record = {"steps": steps, "batch": batch, "lr": lr, "seed": seed, "absence": absence,
              "loss_last_100": float(np.mean(losses[-100:]))}  # fmt: skip
    (Path(out) / "train.json").write_text(json.dumps(record))
    return model


@torch.no_grad()
def accuracy(model: KindClassifier, n: int = 200, timesteps: tuple[int, ...] = (0, 250, 500, 700, 850, 950)) -> dict:
    """Of the shapes of n held-out scenes' first frames (no style), the share whose kind it reads right, at each
    timestep of the toy schedule (the same noise draw for every run); with an absent class, also the share of
    the colours (present or not) whose class it reads right ("TIMESTEP colours")."""
    from insv2v.toyworld.synthetic import rate

    scenes = [random_scene(np.random.default_rng(HELDOUT_SEEDS.start + ACCURACY_OFFSET + i)) for i in range(n)]
    pixels = to_pixels(np.stack([render(scene, 1)[0] for scene in scenes]))
    labels = torch.from_numpy(np.stack([kind_labels(scene) for scene in scenes]))
    present = labels >= 0
    scheduler = toy_train_scheduler()
    out = {}
    for t in timesteps:
        x_t, level = noised(scheduler, pixels, torch.full((n,), t), torch.Generator().manual_seed(t))
        logits = model(x_t, level)
        predicted = logits[..., : len(SHAPES)].argmax(-1)
        out[str(t)] = rate(int((predicted[present] == labels[present]).sum()), int(present.sum()))
        if model.config.absence:
            classes = labels.where(present, model.absent)
            out[f"{t} colours"] = rate(int((logits.argmax(-1) == classes).sum()), classes.numel())
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--absence", action="store_true", help="also read which colours have no shape")
    a = sub.add_parser("accuracy")
    a.add_argument("classifier")
    a.add_argument("--n", type=int, default=200)
    for p in (t, a):
        p.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.command == "train":
        train(Path(args.out), args.steps, args.batch_size, args.lr, args.seed, args.absence)
    else:
        for level, r in accuracy(KindClassifier.from_pretrained(args.classifier), args.n).items():
            print(f"t={level}: {r['k']} of {r['n']} ({100 * r['rate']:.0f}%)")
