"""The data engine measured in the toy world, with the attribute reader (reader.py) as the judge.

- `toy_judge`: a generated pair's verdict (does it show the edit and keep the rest), recorded in the manifest
- `calibrate_thresholds`: the CLIP filter's thresholds for the toy CLIP, from exact pairs and broken ones (written
  into a CLIP folder by `calibrate_clip_folder`, which `insv2v train clip` runs at its end)
- `t2v_fidelity`: does a text-to-video model draw what held-out captions say
- `filter_report`: the filter against the judge on a generated dataset (precision, recall, share kept)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from insv2v.metrics import load_clip, text_similarity
from insv2v.stats import bootstrap_interval, wilson_interval
from insv2v.synth.clip_filter import SCORE_NAMES, THRESHOLDS_FILE, PairScores, Thresholds, score_pair
from insv2v.toyworld.reader import heldout_scene, is_toy_size, judge_edit, read_caption, read_frames
from insv2v.toyworld.world import TRAIN_SEEDS, apply_edit, caption, random_edit, render, sample_triplet

CALIBRATION_OFFSET = 10**8  # calibration triplets come from here in the train split, far from anything else


def toy_judge(pair, input_frames: np.ndarray, edited_frames: np.ndarray) -> dict | None:
    """The reader's verdict on a generated pair: `edit_right` judges everything the reader reads; the verdict
    without shape kinds judges colours, background, style, camera and placement only (None for a shape-kind edit,
    which then has nothing to show), for a generator that draws colours but not outlines. None (not judged) for
    frames of another size than the toy world's, which the reader cannot read."""
    if not is_toy_size(input_frames):
        return None
    readings = read_frames(input_frames), read_frames(edited_frames)
    verdict = judge_edit(*readings, pair.input, pair.output)
    loose = judge_edit(*readings, pair.input, pair.output, kinds=False)
    shape_edit = read_caption(pair.input).kinds != read_caption(pair.output).kinds and not loose.changed
    return {
        "edit_right": verdict.ok,
        "faithful": verdict.faithful,
        "reason": verdict.reason,
        "edit_right_ignoring_kinds": None if shape_edit else loose.ok,
        "reason_ignoring_kinds": None if shape_edit else loose.reason,
    }


def rate(k: int, n: int) -> dict:
    low, high = wilson_interval(k, n) if n else (0.0, 1.0)
    return {"k": k, "n": n, "rate": k / n if n else None, "interval": [round(low, 4), round(high, 4)]}


def format_rate(r: dict) -> str:
    """'12 of 20 (60%, 95% interval 39-78%)', or 'n/a (0 of 0)'."""
    if not r["n"]:
        return "n/a (0 of 0)"
    low, high = r["interval"]
    return f"{r['k']} of {r['n']} ({100 * r['rate']:.0f}%, 95% interval {100 * low:.0f}-{100 * high:.0f}%)"


# ---------------------------------------------------------------- the filter's thresholds for the toy CLIP


def calibration_scores(scorer, n: int, frames: int = 16) -> dict[str, list[PairScores]]:
    """Scores of exact toy-world pairs (input, re-rendered edit) and of the same pairs broken: the edit not made
    (the input twice) and the input video swapped for another scene's."""
    out = {"exact": [], "unedited": [], "other_scene": []}
    for i in range(n):
        t = sample_triplet(TRAIN_SEEDS.start + CALIBRATION_OFFSET + i)
        source, target = t.render(frames)
        other = sample_triplet(TRAIN_SEEDS.start + CALIBRATION_OFFSET + n + i).render(frames)[0]
        out["exact"].append(score_pair(scorer, source, target, t.input_caption, t.edited_caption))
        out["unedited"].append(score_pair(scorer, source, source, t.input_caption, t.edited_caption))
        out["other_scene"].append(score_pair(scorer, other, target, t.input_caption, t.edited_caption))
    return out


# Which broken pair each score must tell from an exact one: the input video of another scene (sim_0, sim_image), or
# the edit not made at all (sim_1, sim_dir).
BROKEN_FOR = {"sim_0": "other_scene", "sim_1": "unedited", "sim_dir": "unedited", "sim_image": "other_scene"}


def separating_threshold(good: np.ndarray, bad: np.ndarray) -> float:
    """The threshold that best tells `good` scores from `bad` ones (Youden's J: pass rate of good minus bad)."""
    candidates = np.unique(np.concatenate([good, bad]))
    j = [(good >= c).mean() - (bad >= c).mean() for c in candidates]
    return float(candidates[int(np.argmax(j))])


def calibrate_thresholds(scorer, n: int = 200) -> tuple[Thresholds, dict]:
    """Each threshold where its score best separates exact toy-world pairs from the broken pairs that score is
    there to catch (BROKEN_FOR), on training-split scenes; and how often each group then passes."""
    scores = calibration_scores(scorer, n)

    def values(group: str, name: str) -> np.ndarray:
        return np.array([getattr(s, name) for s in scores[group]])

    thresholds = Thresholds(**{
        name: round(separating_threshold(values("exact", name), values(BROKEN_FOR[name], name)), 4)
        for name in SCORE_NAMES
    })  # fmt: skip
    report = {
        group: {"pass_all": sum(s.passes(thresholds) for s in items) / len(items),
                **{name: float((values(group, name) >= getattr(thresholds, name)).mean()) for name in SCORE_NAMES}}
        for group, items in scores.items()
    }  # fmt: skip
    return thresholds, report


def write_thresholds(clip_dir: str | Path, thresholds: Thresholds, report: dict, how: str) -> Path:
    path = Path(clip_dir) / THRESHOLDS_FILE
    path.write_text(json.dumps({"thresholds": thresholds.to_dict(), "how": how, "pass_rates": report}, indent=2))
    return path


def calibrate_clip_folder(clip_dir: str | Path, n: int) -> Path:
    """A trained toy CLIP's folder given the thresholds calibrated for it on `n` exact pairs, so that the data
    engine's filter uses them whenever it scores with this CLIP."""
    thresholds, report = calibrate_thresholds(load_clip(str(clip_dir)), n=n)
    how = (
        f"insv2v.toyworld.synthetic.calibrate_thresholds(load_clip(CLIP_FOLDER), n={n}): on {n} exact toy-world pairs "
        "of the training split (input, re-rendered edit) and the same pairs broken, each threshold where its score "
        "best separates exact pairs from the broken ones it is there to catch (Youden's J): sim_0 and sim_image "
        "against the input swapped for another scene, sim_1 and sim_dir against the edit not made"
    )
    return write_thresholds(clip_dir, thresholds, report, how)


# where `judged_thresholds` tries each threshold: its score's 0-70% quantiles
JUDGED_QUANTILES = np.arange(0, 0.75, 0.05)


def judged_thresholds(records: list[dict], min_kept: float) -> tuple[Thresholds, dict]:
    """The thresholds under which the kept pairs of a judged generated dataset are most often right (the judge's
    `edit_right`), keeping at least `min_kept` of the judged pairs (ties: more kept); each threshold tried at its
    score's JUDGED_QUANTILES. Generated pairs fail in ways exact ones do not (a kept shape drawn as another kind, a
    background half made), and score lower throughout, so thresholds set on exact pairs reject right generated pairs
    and keep wrong ones. Also the calibration sample's kept share and precision under them."""
    judged = [r for r in records if r.get("judge") and r["judge"].get("edit_right") is not None]
    if not judged:
        raise ValueError("no judged pairs to calibrate on (the toy judge reads 64 px toy-world pairs only)")
    scores = np.array([[r["scores"][name] for name in SCORE_NAMES] for r in judged])  # (n, 4)
    right = np.array([r["judge"]["edit_right"] for r in judged])
    candidates = np.quantile(scores, JUDGED_QUANTILES, axis=0)  # (q, 4)
    p0, p1, p2, p3 = (scores[None, :, k] >= candidates[:, k, None] for k in range(len(SCORE_NAMES)))  # each (q, n)
    kept = p0[:, None, None, None] & p1[:, None, None] & p2[:, None] & p3  # (q, q, q, q, n): every combination
    n_kept, n_right = kept.sum(-1), (kept & right).sum(-1)
    precision = np.where(n_kept >= min_kept * len(judged), n_right / np.maximum(n_kept, 1), -1.0)
    best = np.lexsort((n_kept.ravel(), precision.ravel()))[-1]  # highest precision, then most kept
    index = np.unravel_index(best, n_kept.shape)
    # rounded down to 4 places, so that every pair counted above still passes what is written
    thresholds = Thresholds(**{name: float(np.floor(candidates[i, k] * 1e4) / 1e4) for k, (name, i) in
                               enumerate(zip(SCORE_NAMES, index, strict=True))})  # fmt: skip
    kept = np.array([PairScores(**r["scores"]).passes(thresholds) for r in judged])
    return thresholds, {"pairs": len(judged), "right": rate(int(right.sum()), len(judged)),
                        "kept": rate(int(kept.sum()), len(judged)),
                        "precision": rate(int((kept & right).sum()), int(kept.sum()))}  # fmt: skip


def calibrate_on_judged(root: str | Path, clip_dir: str | Path, min_kept: float) -> dict:
    """Write into the CLIP folder `clip_dir` the thresholds `judged_thresholds` finds on the judged pairs of the toy
    dataset `root`, which that CLIP scored; they replace its exact-pair ones. Returns them with the dataset's kept
    share and precision under them."""
    from insv2v.synth import dataset

    if not Path(clip_dir).is_dir():
        raise ValueError(f"CLIP folder {str(clip_dir)!r} does not exist")
    card = dataset.read_card(root)
    if not card.get("clip") or not dataset.scored_by(card, str(clip_dir)):
        raise ValueError(f"{root} was scored by the CLIP {card.get('clip')}, not {clip_dir}: score it first with "
                         f"`insv2v synth rescore {root} --clip {clip_dir}`")  # fmt: skip
    thresholds, report = judged_thresholds(dataset.read_manifest(root), min_kept)
    how = (
        f"insv2v synth calibrate {dataset.source_name(str(root))} --clip CLIP_FOLDER --min-kept {min_kept:g}: on the "
        f"{report['pairs']} generated pairs of that dataset judged by the toy-world judge ({report['right']['k']} "
        "right), each threshold tried at its score's 0-70% quantiles; of the thresholds that keep at least "
        f"{min_kept:.0%} of the pairs, those whose kept pairs are most often right"
    )
    write_thresholds(clip_dir, thresholds, {"calibration": report}, how)
    return {"thresholds": thresholds.to_dict(), **report}


def kind_reading(scorer, n: int = 200, seed: int = 0) -> dict:
    """How often a CLIP scores a held-out frame's caption above the same caption with one shape named as another
    kind (chance: 50%): whether it can tell the shape edits the filter is asked to judge. Frame 0 of held-out scenes
    `seed`.. `seed + n - 1`, the kind drawn per scene."""
    preferred = 0
    for i in range(n):
        scene = heldout_scene(seed + i)
        swapped = apply_edit(scene, random_edit(np.random.default_rng(seed + i), scene, "shape"))
        image = scorer.images(render(scene, 1))
        own, other = scorer.texts([caption(scene), caption(swapped)])
        preferred += text_similarity(image, own) > text_similarity(image, other)
    return rate(int(preferred), n)


# ---------------------------------------------------------------- the text-to-video model against held-out captions


def t2v_fidelity(
    pipe, n: int, seed: int = 0, frames: int = 16, steps: int = 30, guidance: float = 9.0, kind_guidance: float = 0.0
) -> dict:
    """Generate one video per held-out caption (scenes of the held-out split, 20% in a style) and read it back:
    how often the style, and (captions not of a sketch) the background, the set of shape colours and each colour's
    shape kind are drawn as the caption says; `kind_guidance` as the pipeline takes it."""
    records = []
    for i in range(n):
        scene = heldout_scene(seed + i)
        text = caption(scene)
        video = pipe(text, num_frames=frames, num_inference_steps=steps, guidance_scale=guidance,
                     generator=torch.Generator().manual_seed(seed + i),
                     kind_guidance=kind_guidance).frames[0]  # fmt: skip
        records.append(caption_row(text, video))
    return {"n": n, "seed": seed, "frames": frames, "steps": steps, "guidance": guidance,
            **({"kind_guidance": kind_guidance} if kind_guidance else {}), **caption_rates(records),
            "records": records}  # fmt: skip


FIDELITY_KEYS = ("background", "colours", "shapes", "style")


def caption_row(text: str, video: np.ndarray) -> dict:
    """Whether `video` draws caption `text`'s style and (not a sketch) its background, set of shape colours and each
    colour's kind, as the reader reads it."""
    want, got = read_caption(text), read_frames(video)
    row = {"caption": text, "style": got.style == want.style}
    if want.style != "sketch":  # a pencil sketch shows no background and no colours, by the world's rendering
        row["background"] = got.background == want.background
        row["colours"] = got.shapes is not None and set(got.shapes) == set(want.shapes)
        row["shapes"] = got.shapes is not None and all(got.shapes.get(c) == k for c, k in want.shapes.items())
    return row


def caption_rates(rows: list[dict]) -> dict:
    """Each FIDELITY_KEYS rate over the rows that judge it (`caption_row`)."""
    return {key: rate(sum(r[key] for r in rows if key in r), sum(key in r for r in rows)) for key in FIDELITY_KEYS}


def caption_rates_by_weight(rows: dict[float, list[dict]]) -> dict:
    """`caption_rates` per guidance weight (each weight's rows of the same captions in the same order), each weight's
    kinds paired against the first weight's caption by caption: the mean difference and its bootstrap interval."""
    results = {str(w): caption_rates(records) | {"records": records} for w, records in rows.items()}
    first, *others = rows
    for w in others:
        diffs = [float(b["shapes"]) - float(a["shapes"]) for a, b in zip(rows[first], rows[w], strict=True)
                 if a.get("shapes") is not None]  # fmt: skip
        results[str(w)]["shapes_less_first"] = {"mean": sum(diffs) / len(diffs), "interval": bootstrap_interval(diffs)}
    return results


# ---------------------------------------------------------------- the filter against the judge


def filter_report(records: list[dict], verdict: str = "edit_right") -> dict:
    """Of all pairs the judge could judge (`verdict`: its strict verdict, or "edit_right_ignoring_kinds"), the share
    that shows the edit; the filter's (each record's `kept`) share kept, precision and recall."""
    judged = [r for r in records if r.get("judge") and r["judge"].get(verdict) is not None]
    kept = [r["kept"] for r in judged]
    right = [r["judge"][verdict] for r in judged]
    per_kind = {}
    for kind in sorted({r.get("kind") or "unknown" for r in judged}):
        idx = [i for i, r in enumerate(judged) if (r.get("kind") or "unknown") == kind]
        per_kind[kind] = {
            "right": rate(sum(right[i] for i in idx), len(idx)),
            "kept": rate(sum(kept[i] for i in idx), len(idx)),
            "precision": rate(sum(right[i] and kept[i] for i in idx), sum(kept[i] for i in idx)),
        }
    return {
        "pairs": len(judged),
        "right": rate(sum(right), len(judged)),
        "kept": rate(sum(kept), len(judged)),
        "precision": rate(sum(r and k for r, k in zip(right, kept, strict=True)), sum(kept)),
        "recall": rate(sum(r and k for r, k in zip(right, kept, strict=True)), sum(right)),
        "by_kind": per_kind,
    }  # fmt: skip


def rejudge(root) -> list[dict]:
    """Judge every pair of a toy dataset again from its files (after the judge changed); manifest and card updated."""
    from insv2v.synth import dataset
    from insv2v.synth.prompts import PromptPair

    root = Path(root)
    with dataset.writing(root):  # a run still generating would lose the lines it appends meanwhile
        records = dataset.read_manifest(root)
        for r in records:
            frames = dataset.read_pair(root, r)
            r["judge"] = toy_judge(PromptPair(r["input"], r["edit"], r["output"], r.get("kind")), *frames)
        dataset.rewrite_manifest(root, records)
        card = dataset.read_card(root)
        if card:
            card["counts"] = dataset.counts(records)
            dataset.write_card(root, card)
    return records
