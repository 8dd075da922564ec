"""The data engine's commands: `insv2v generate` (a video from a caption) and `insv2v synth generate|filter|...`.

insv2v generate "a red circle moving right on a beach" -o out.mp4        # the shipped toy text-to-video model
insv2v synth generate --prompts toy --n 200 --out data/toy --seed 0     # pairs, filtered, resumable
accelerate launch -m insv2v.cli synth generate ...                      # the samples split across processes
insv2v synth filter data/toy --sim-dir 0.1                              # other thresholds, nothing regenerated
insv2v synth rescore data/toy --clip runs/clip/final                    # another CLIP's scores and thresholds
insv2v synth export data/toy --out shards/                              # WebDataset tar shards of the kept pairs
insv2v synth report data/toy                                            # the filter against the toy-world judge
insv2v synth calibrate data/toy --clip CLIP --min-kept 0.35             # CLIP's thresholds from judged pairs
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import shlex
import sys
from pathlib import Path

from insv2v.argtypes import (
    non_negative_float,
    non_negative_int,
    number_in,
    open_fraction,
    positive_float,
    positive_int,
    positive_int_at_most,
    seed,
    share,
)

MAX_SAMPLES = 1_000_000  # per dataset: its prompts are fixed (and held in memory) before the first sample


def _add_threshold_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("CLIP filter thresholds (default: the CLIP folder's filter_thresholds.json, else the "
                             "reference's 0.2, 0.2, 0.2, 0.5 for ViT-L/14)")  # fmt: skip
    g.add_argument("--sim-0", type=float, help="input frames vs input caption")
    g.add_argument("--sim-1", type=float, help="edited frames vs output caption")
    g.add_argument("--sim-dir", type=float, help="directional similarity")
    g.add_argument("--sim-image", type=float, help="input vs edited frames")
    g.add_argument("--top-per-prompt", type=non_negative_int, metavar="M", help="keep at most M of each prompt's "
                   "passing samples, those of the highest directional similarity (InstructPix2Pix: 4 of 100); 0: no "
                   "limit (default: the dataset's, else none)")  # fmt: skip


def _with_flags(base, args: argparse.Namespace):
    """`base` thresholds with those the threshold flags give in place."""
    flags = {"sim_0": args.sim_0, "sim_1": args.sim_1, "sim_dir": args.sim_dir, "sim_image": args.sim_image}
    return dataclasses.replace(base, **{k: v for k, v in flags.items() if v is not None})


def _top_per_prompt(card: dict, args: argparse.Namespace) -> int | None:
    """--top-per-prompt, else the dataset's; None for no limit."""
    return (args.top_per_prompt if args.top_per_prompt is not None else card.get("top_per_prompt")) or None


def _blending(args: argparse.Namespace) -> dict:
    """GenerateConfig's local blending from --local-blend or --diff-blend (at most one is given)."""
    if args.diff_blend is not None:
        return {"local_blend": args.diff_blend, "blend_maps": "difference"}
    return {"local_blend": args.local_blend, "blend_maps": "attention"}


def add_parsers(commands) -> None:
    from insv2v.synth.p2p import DEFAULT_BLEND_THRESHOLD
    from insv2v.synth.t2v import (
        DEFAULT_FRAMES,
        DEFAULT_GUIDANCE,
        DEFAULT_STEPS,
        GUIDANCE_RANGE,
        KIND_GUIDANCE_RANGE,
        MAX_FRAMES,
    )

    kind_guidance_help = ("classifier guidance towards the shape kinds the caption names, for a model with a kind "
                          "classifier (the toy t2v); 0: off (default: the model's sampling.json, else 0)")  # fmt: skip

    g = commands.add_parser("generate", help="a video from a caption with a text-to-video model")
    g.add_argument("caption")
    g.add_argument("-o", "--output", required=True, help="output .mp4 or .gif")
    g.add_argument("--model", help="text-to-video pipeline folder or hub id (default: the shipped toy model)")
    frames = positive_int_at_most(MAX_FRAMES)  # what the model takes, said before it loads
    g.add_argument("--frames", type=frames, default=DEFAULT_FRAMES, help=f"({DEFAULT_FRAMES})")
    g.add_argument("--steps", type=positive_int, default=DEFAULT_STEPS, help=f"DDIM steps ({DEFAULT_STEPS})")
    g.add_argument(
        "--cfg",
        type=number_in(*GUIDANCE_RANGE),
        help=f"text guidance (the model's sampling.json, else {DEFAULT_GUIDANCE:g})",
    )
    g.add_argument("--kind-guidance", type=number_in(*KIND_GUIDANCE_RANGE), help=kind_guidance_help)
    g.add_argument("--size", type=positive_int, help="side in pixels (default: the model's)")
    g.add_argument("--seed", type=seed, default=0)
    g.add_argument("--fps", type=positive_float, default=8.0)

    s = commands.add_parser("synth", help="the synthetic paired-video data engine").add_subparsers(
        dest="action", required=True
    )
    gen = s.add_parser("generate", help="make paired videos with video Prompt-to-Prompt, scored by the CLIP filter")
    gen.add_argument("--out", required=True, help="dataset folder; an existing one resumes")
    gen.add_argument("--prompts", default="toy", help="toy | FILE.jsonl ({input, edit, output} lines) | llm:MODEL")
    gen.add_argument("--n", type=positive_int_at_most(MAX_SAMPLES), required=True,
                     help=f"samples (kept and rejected), at most {MAX_SAMPLES:,}: a larger set is several datasets, "
                     "seeds n apart")  # fmt: skip
    gen.add_argument("--samples-per-prompt", type=positive_int, default=1, metavar="K",
                     help="samples of each prompt, each with its own seed, settings and noise (1; InstructPix2Pix: "
                     "100); --n counts samples and must be a multiple of K")  # fmt: skip
    gen.add_argument("--seed", type=int, default=0, help="sample i uses seed + i (settings, noise), toy prompt p "
                     "seed + p; datasets meant to differ need seeds at least n apart")  # fmt: skip
    gen.add_argument("--split", choices=("train", "heldout"), default="train",
                     help="toy-world seeds of the toy prompts and of an LLM's default captions (train)")  # fmt: skip
    gen.add_argument("--t2v", help="text-to-video pipeline folder or hub id, e.g. damo-vilab/text-to-video-ms-1.7b "
                     "(default: the shipped toy model)")  # fmt: skip
    gen.add_argument("--clip", help="CLIP for the filter (default: the toy CLIP for toy models, else "
                     "open_clip:ViT-L-14/openai)")  # fmt: skip
    gen.add_argument("--frames", type=frames, default=16, help="(16; 1 for image pairs)")
    gen.add_argument("--recipe", choices=("video", "image"), default="video", help="settings each sample draws: "
                     "video (InsV2V's reference: CFG 5-12, self- then cross-attention edits) or image "
                     "(InstructPix2Pix's: self-attention shared for 10-90%% of the steps, CFG 7.5-15)")  # fmt: skip
    gen.add_argument("--cfg-range", type=non_negative_float, nargs=2, metavar=("LOW", "HIGH"),
                     help="each sample's CFG uniform in [LOW, HIGH] instead of the --recipe's (for a model that "
                     "draws best at other guidance than Stable Diffusion or ModelScope)")  # fmt: skip
    gen.add_argument("--kind-guidance", type=number_in(*KIND_GUIDANCE_RANGE), help=kind_guidance_help)
    gen.add_argument("--kind-edit-only", action="store_true", help="kind guidance for the kept shapes only while "
                     "the pair shares its start (--shared-end), after it only for the edited shapes, in the edited "
                     "video, so kept shapes follow the same path in both")  # fmt: skip
    gen.add_argument("--steps", type=positive_int, default=30, help="DDIM steps (30)")
    gen.add_argument("--size", type=positive_int, help="side in pixels (default: the model's)")
    blending = gen.add_mutually_exclusive_group()
    thresholds = DEFAULT_BLEND_THRESHOLD
    blending.add_argument("--local-blend", type=open_fraction, nargs="?", const=thresholds["attention"],
                          metavar="THRESHOLD", help="Prompt-to-Prompt's local blending (not the InsV2V reference's): "
                          "the edited video is the input outside where the edited words draw more than THRESHOLD of "
                          f"each frame's peak cross-attention ({thresholds['attention']}, Prompt-to-Prompt's, when "
                          "given alone)")  # fmt: skip
    blending.add_argument("--diff-blend", type=open_fraction, nargs="?", const=thresholds["difference"],
                          metavar="THRESHOLD", help="local blending with DiffEdit's mask instead, for models whose "
                          "words draw attention everywhere: the edited video is the input outside where the edited "
                          "caption's noise prediction on the input differs by more than THRESHOLD of each frame's peak "
                          "difference, read over the shared start (--shared-end) or the first fifth of the steps "
                          f"({thresholds['difference']}, DiffEdit's, when given alone)")  # fmt: skip
    gen.add_argument("--shared-end", type=share, default=0.0, metavar="FRACTION",
                     help="the edited video shares the input's latents for this fraction of the steps, then follows "
                     "its own prompt (0, the reference: only the initial noise is shared); keeps the input's layout "
                     "where attention injection alone does not")  # fmt: skip
    _add_threshold_flags(gen)

    f = s.add_parser("filter", help="re-apply other thresholds to a dataset without regenerating")
    f.add_argument("dataset")
    f.add_argument("--clip", help="start from the thresholds calibrated for the CLIP that scored the dataset (its "
                   "folder; default: the thresholds the dataset has)")  # fmt: skip
    _add_threshold_flags(f)

    rs = s.add_parser("rescore", help="score every pair again with another CLIP (from its videos; nothing is "
                      "regenerated) and filter with that CLIP's thresholds")  # fmt: skip
    rs.add_argument("dataset")
    rs.add_argument("--clip", required=True, help="CLIP folder or hub id, or open_clip:ARCH/PRETRAINED")
    _add_threshold_flags(rs)

    r = s.add_parser("report", help="the CLIP filter against the toy-world judge: share right, kept, precision, recall")
    r.add_argument("dataset")
    r.add_argument("--rejudge", action="store_true", help="judge every pair again from its files first")
    r.add_argument("--out", help="also write the report as JSON here")

    c = s.add_parser("calibrate", help="the CLIP filter's thresholds from a toy dataset's judged pairs, written into "
                     "the folder of the CLIP that scored them")  # fmt: skip
    c.add_argument("dataset", help="a toy dataset judged by the toy-world judge, scored by --clip")
    c.add_argument("--clip", required=True, help="the CLIP folder the dataset was scored by (its "
                   "filter_thresholds.json is replaced)")  # fmt: skip
    c.add_argument("--min-kept", type=open_fraction, required=True, metavar="SHARE", help="keep at least this share "
                   "of the judged pairs; among such thresholds the most precise")  # fmt: skip

    e = s.add_parser("export", help="the kept pairs as WebDataset tar shards")
    e.add_argument("dataset")
    e.add_argument("--out", required=True)
    e.add_argument("--shard-size", type=positive_int, default=1000, help="pairs per shard (1000)")


def generate_video(args: argparse.Namespace) -> None:
    import torch

    from insv2v.assets import TOY_T2V
    from insv2v.editing import check_output
    from insv2v.synth.t2v import load_t2v, recommended_guidance, recommended_kind_guidance
    from insv2v.video import write_gif, write_video

    if not args.caption.strip():
        raise ValueError('the caption is empty: say what the video shows, e.g. "a red circle moving right on a beach"')
    check_output(Path(args.output))  # before the model loads and the video is made
    source = args.model or str(TOY_T2V)
    cfg = recommended_guidance(source) if args.cfg is None else args.cfg  # a malformed file refused before loading
    kinds = recommended_kind_guidance(source) if args.kind_guidance is None else args.kind_guidance
    pipe = load_t2v(source)
    out = pipe(args.caption, num_frames=args.frames, num_inference_steps=args.steps, guidance_scale=cfg,
               height=args.size, width=args.size, generator=torch.Generator().manual_seed(args.seed),
               kind_guidance=kinds)  # fmt: skip
    frames = out.frames[0]
    (write_gif if str(args.output).lower().endswith(".gif") else write_video)(args.output, frames, args.fps)
    size = f"{frames.shape[2]}x{frames.shape[1]}"
    guided = f", kind guidance {kinds:g}" if kinds else ""
    print(f"wrote {args.output} ({len(frames)} frames, {size}, CFG {cfg:g}{guided}, seed {args.seed})")


def synth(args: argparse.Namespace) -> None:
    from insv2v.synth import dataset

    if args.action != "generate":  # the others read (and lock, and rewrite) a dataset: never another folder
        dataset.check_dataset(args.dataset)
    if args.action == "generate":
        from insv2v.assets import TOY_T2V
        from insv2v.synth.clip_filter import Thresholds, default_clip
        from insv2v.synth.generate import GenerateConfig, generate
        from insv2v.synth.prompts import prompt_source

        if not 0 <= args.seed <= 2**32 - args.n:  # sample i < n draws its settings from RandomState(seed + i)
            raise ValueError(f"--seed must be in [0, 2**32 - n], got {args.seed}")
        from insv2v.synth.t2v import recommended_kind_guidance

        t2v = args.t2v or str(TOY_T2V)
        clip = args.clip or default_clip(t2v)
        kinds = recommended_kind_guidance(t2v) if args.kind_guidance is None else args.kind_guidance
        # A resumed dataset keeps the thresholds it is filtered with now (a `synth filter` may have changed them).
        card = dataset.read_card(args.out)
        base = Thresholds.from_dict(card["thresholds"]) if card.get("thresholds") else Thresholds.for_clip(clip)
        config = GenerateConfig(
            out_dir=args.out, t2v=t2v, prompts=args.prompts, split=args.split, n=args.n, seed=args.seed, clip=clip,
            thresholds=_with_flags(base, args), frames=args.frames, steps=args.steps,
            size=args.size, recipe=args.recipe, cfg_range=tuple(args.cfg_range) if args.cfg_range else None,
            shared_end=args.shared_end, kind_guidance=kinds, kind_edit_only=args.kind_edit_only, **_blending(args),
            samples_per_prompt=args.samples_per_prompt, top_per_prompt=_top_per_prompt(card, args),
            command=shlex.join(["insv2v", *sys.argv[1:]]),
        )  # fmt: skip
        from insv2v.synth.prompts import PromptStats, is_llm_spec, toy_captions

        judge = None
        if args.prompts == "toy":
            from insv2v.toyworld.synthetic import toy_judge

            judge = toy_judge
        stats = PromptStats()

        def pairs(start: int):
            captions = None
            if is_llm_spec(args.prompts):  # a bounded caption stream: an LLM that never succeeds stops
                captions = itertools.islice(toy_captions(args.seed, args.split), 10 * args.n // args.samples_per_prompt)
            return prompt_source(args.prompts, seed=args.seed, split=args.split, captions=captions, stats=stats,
                                 start=start)  # fmt: skip

        counts = generate(config, pairs, judge, stats.to_dict)
        if stats.generated:  # what this run asked of its prompt source
            print(f"prompts: {stats.summary()}")
        if counts:
            print(f"{args.out}: {counts['kept']} of {counts['samples']} samples kept")
    elif args.action == "filter":
        from insv2v.synth.clip_filter import Thresholds

        card = dataset.read_card(args.dataset)
        if args.clip and card.get("clip") and not dataset.scored_by(card, args.clip):
            raise ValueError(f"{args.dataset} was scored by the CLIP {card['clip']}; thresholds of {args.clip} "
                             f"belong to its own scores: score the pairs again with `insv2v synth rescore "
                             f"{args.dataset} --clip {args.clip}`")  # fmt: skip
        if args.clip:
            base = Thresholds.for_clip(args.clip)
        elif card.get("thresholds"):
            base = Thresholds.from_dict(card["thresholds"])  # what the dataset was filtered with
        else:
            base = Thresholds()
        with dataset.writing(args.dataset):
            counts = dataset.refilter(args.dataset, _with_flags(base, args), _top_per_prompt(card, args))
        print(f"{args.dataset}: {counts['kept']} of {counts['samples']} samples kept")
    elif args.action == "rescore":
        from tqdm.auto import tqdm

        from insv2v.synth.clip_filter import Thresholds

        thresholds = _with_flags(Thresholds.for_clip(args.clip), args)  # the new CLIP's own, not the dataset's
        top = _top_per_prompt(dataset.read_card(args.dataset), args)
        with dataset.writing(args.dataset):
            counts = dataset.rescore(args.dataset, args.clip, thresholds, top,
                                     progress=lambda items: tqdm(items, unit="pair", desc="scoring"))  # fmt: skip
        print(f"{args.dataset}: {counts['kept']} of {counts['samples']} samples kept")
    elif args.action == "report":
        import json

        from insv2v.files import check_record_file, write_text_atomically
        from insv2v.toyworld.synthetic import filter_report, format_rate, rejudge

        if args.out:  # before the judge reads every pair again, not after
            check_record_file(args.out)
            dataset.check_not_own_file(args.dataset, args.out)
        if args.rejudge:
            rejudge(args.dataset)
        records = dataset.filtered_records(args.dataset)
        reports = {verdict: filter_report(records, verdict=verdict)
                   for verdict in ("edit_right", "edit_right_ignoring_kinds")}  # fmt: skip
        if not reports["edit_right"]["pairs"]:
            raise ValueError(f"{args.dataset} has no judged pairs (the judge runs with --prompts toy)")
        for verdict, report in reports.items():
            print("judged on everything the reader reads:" if verdict == "edit_right" else
                  "judged without shape kinds (shape-kind edits left out):")  # fmt: skip
            for key in ("right", "kept", "precision", "recall"):
                print(f"  {key}: {format_rate(report[key])}")
        if args.out:
            write_text_atomically(args.out, json.dumps(reports, indent=2) + "\n")
    elif args.action == "calibrate":
        from insv2v.toyworld.synthetic import calibrate_on_judged, format_rate

        dataset.check_dataset(args.dataset)
        report = calibrate_on_judged(args.dataset, args.clip, args.min_kept)
        print(f"{args.clip}: thresholds {report['thresholds']}; on {args.dataset} they keep "
              f"{format_rate(report['kept'])}, right {format_rate(report['precision'])}")  # fmt: skip
    else:
        shards = dataset.export_webdataset(args.dataset, args.out, args.shard_size)
        print(f"wrote {len(shards)} shard(s) to {args.out}")
