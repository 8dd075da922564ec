"""`insv2v study build|report`: a blind pairwise user study of video-editing methods.

insv2v study build --inputs runs/baseline --methods insv2v,tav,frame2d --out STUDY.db   # imports items.jsonl
insv2v study report STUDY.db --csv ratings.csv --plot win_rates.png                    # markdown on stdout
"""

from __future__ import annotations

import argparse
from pathlib import Path

from insv2v.argtypes import positive_float, positive_int, torch_device


def _methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if len(methods) < 2:
        raise argparse.ArgumentTypeError(f"a pairwise study needs at least 2 methods, comma-separated, got {text!r}")
    return methods


def _size(text: str) -> tuple[int, int] | None:
    """ "256x256" -> (256, 256); "keep" -> None."""
    if text == "keep":
        return None
    width, _, height = text.lower().partition("x")
    try:
        return int(width), int(height or width)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT, a side, or keep, got {text!r}") from None


def add_parsers(commands) -> None:
    s = commands.add_parser("study", help="blind pairwise user studies: build one, report its ratings")
    actions = s.add_subparsers(dest="action", required=True)
    b = actions.add_parser("build", help="a study database and its served videos (random names) from method outputs")
    b.add_argument("--inputs", required=True, help="folder with items.jsonl (as `insv2v eval --toyworld --baseline "
                   "tav --save-outputs` writes), or a .jsonl file of such lines")  # fmt: skip
    b.add_argument("--methods", required=True, type=_methods, help="method keys compared, e.g. insv2v,tav,frame2d; "
                   "items without outputs have them run (insv2v, frame2d, tav)")  # fmt: skip
    b.add_argument("--out", required=True, help="the study's database, e.g. STUDY.db (videos go to STUDY_files/)")
    b.add_argument("--seed", type=int, default=0, help="sides, gold items, comparison order, plans (0)")
    b.add_argument("--size", type=_size, default=(256, 256), help="WIDTHxHEIGHT of every served video, or keep "
                   "(each item's input size) (256x256)")  # fmt: skip
    b.add_argument("--fps", type=positive_float, default=8.0, help="frame rate of every served video (8)")
    b.add_argument("--frames", type=positive_int, help="frames of every served video (default: the shortest's)")
    b.add_argument("--per-participant", type=positive_int, help="regular comparisons per participant, the least "
                   "rated first (default: all); every gold comparison comes on top")  # fmt: skip
    b.add_argument("--gold", type=int, default=2, help="attention checks: items with a reference shown unedited "
                   "against the exact edit (2)")  # fmt: skip
    g = b.add_argument_group("running the methods on items without outputs")
    g.add_argument("--model", help="InsV2V pipeline of insv2v, frame2d (default: $INSV2V_MODEL, else the toy editor)")
    g.add_argument("--tav-model", help="Tune-A-Video's text-to-image base (default: the shipped toy text-to-image)")
    g.add_argument("--tav-preset", choices=("space", "official"), default="space", help="Tune-A-Video's settings")
    g.add_argument("--steps", type=positive_int, help="denoising steps of insv2v and frame2d (the recipe's)")
    g.add_argument("--max-frames", type=positive_int, help="input frames insv2v and frame2d edit (all)")
    g.add_argument("--device", type=torch_device, help="cpu, cuda, mps (default: the best available)")

    r = actions.add_parser("report", help="the study's statistics as markdown (win rates, sign tests, Bradley-Terry, "
                           "agreement, side bias, attention checks)")  # fmt: skip
    r.add_argument("study", help="the study's database")
    r.add_argument("--csv", help="also write every rating, with the methods it compared, here")
    r.add_argument("--plot", help="also draw the win rates with their intervals here (.png)")
    r.add_argument("--json", help="also write the report's numbers here")
    r.add_argument("--keep-failed-gold", action="store_true", help="keep participants who failed an attention check")
    r.add_argument("--resamples", type=positive_int, default=1000, help="participant resamples for Bradley-Terry")


def study(args: argparse.Namespace) -> None:
    from insv2v.study.store import StudyStore

    if args.action == "build":
        from insv2v.study.build import RunSettings, build_study, read_items

        run = RunSettings(model=args.model, tav_model=args.tav_model, tav_preset=args.tav_preset, steps=args.steps,
                          max_frames=args.max_frames, seed=args.seed, device=args.device)  # fmt: skip
        path = build_study(read_items(args.inputs), args.methods, args.out, seed=args.seed, size=args.size,
                           fps=args.fps, frames=args.frames, comparisons_per_participant=args.per_participant,
                           gold=args.gold, run=run)  # fmt: skip
        store = StudyStore(path)
        regular, gold = store.comparison_count()
        frames, fps = store.settings["frames"], store.settings["fps"]
        print(f"wrote {path}: {store.settings['items']} items, {regular} comparisons and {gold} attention checks; "
              f"videos in {store.files_dir} ({frames} frames at {fps:g} fps)")  # fmt: skip
        return

    import sqlite3

    from insv2v.files import write_json_atomically
    from insv2v.study.report import format_report, report, win_rate_plot, write_csv
    from insv2v.study.store import StudyError

    store = StudyStore(args.study)
    outputs = [Path(p) for p in (args.csv, args.plot, args.json) if p]
    protected = [Path(f"{args.study}{suffix}").resolve() for suffix in ("", "-wal", "-shm", "-journal")]
    for out in outputs:  # checked before anything is written
        if out.resolve() in protected or out.resolve().is_relative_to(store.files_dir.resolve()):
            raise ValueError(f"{out} is the study's own file (its database or videos); write the report elsewhere")
    if len({o.resolve() for o in outputs}) < len(outputs):
        raise ValueError("--csv, --plot and --json name the same file; give each its own")
    for out in outputs:
        if not out.parent.is_dir():
            raise ValueError(f"{out}: its folder {out.parent} does not exist")
    try:
        result = report(store, exclude_failed_gold=not args.keep_failed_gold, resamples=args.resamples)
    except sqlite3.DatabaseError as err:  # a table dropped or damaged since the study was built
        raise StudyError(f"{args.study}: its ratings cannot be read ({err})") from err
    print(format_report(result), end="")
    if args.csv:
        write_csv(store, args.csv)
    if args.plot:
        win_rate_plot(result, args.plot)
    if args.json:  # an undecided win rate is null, not JSON's invalid NaN
        write_json_atomically(args.json, result)
