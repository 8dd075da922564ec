"""The CLIP filter's thresholds calibrated on judged generated pairs, measured on other generated pairs.

    python tools/judged_filter.py CALIBRATION TEST --min-kept 0.35 [--clip CLIP] [--out RECORD]

CALIBRATION and TEST are datasets of `insv2v synth generate` in the toy world, judged by the toy judge and scored by
the same CLIP (`insv2v synth rescore DIR --clip CLIP` first where they were scored by another). The thresholds are
`judged_thresholds` on CALIBRATION (highest precision keeping at least --min-kept of it); TEST is filtered under
them and reported against the judge (share kept, precision, recall), beside TEST's own filter. With --clip, also
how often that CLIP tells a held-out frame's caption from the same caption with one shape named as another kind.
"""

import argparse
import json
from pathlib import Path

from insv2v.synth import dataset
from insv2v.synth.clip_filter import Thresholds
from insv2v.toyworld.synthetic import filter_report, format_rate, judged_thresholds, kind_reading

KIND_READING_SEED = 930000  # held-out scenes of the kind-reading measure


def summary(report: dict) -> dict:
    return {name: report[name] for name in ("pairs", "right", "kept", "precision", "recall")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("calibration")
    parser.add_argument("test")
    parser.add_argument("--min-kept", type=float, required=True, help="share of the calibration pairs to keep at least")
    parser.add_argument("--clip", help="the CLIP both were scored by, for its kind reading")
    parser.add_argument("--out", help="JSON record")
    args = parser.parse_args()

    thresholds, calibration = judged_thresholds(dataset.read_manifest(args.calibration), args.min_kept)
    test = dataset.read_manifest(args.test)
    own = Thresholds.from_dict(dataset.read_card(args.test)["thresholds"])
    record = {
        "calibration": {"dataset": args.calibration, "min_kept": args.min_kept, **calibration},
        "thresholds": thresholds.to_dict(),
        "test": {"dataset": args.test},
    }
    for name, under in (("judged thresholds", thresholds), ("its own thresholds", own)):
        kept = dataset.kept_under(test, under)
        record["test"][name] = summary(filter_report([{**r, "kept": k} for r, k in zip(test, kept, strict=True)]))
    if args.clip:
        from insv2v.metrics import load_clip

        record["kind_reading"] = {"seed": KIND_READING_SEED, **kind_reading(load_clip(args.clip), 200,
                                                                             KIND_READING_SEED)}  # fmt: skip
    print(f"calibration {args.calibration}: kept {format_rate(calibration['kept'])}, precision "
          f"{format_rate(calibration['precision'])}; thresholds {thresholds.to_dict()}")  # fmt: skip
    for name, report in record["test"].items():
        if name != "dataset":
            print(f"test {args.test}, {name}: right {format_rate(report['right'])}; "
                  f"kept {format_rate(report['kept'])}, precision {format_rate(report['precision'])}, "
                  f"recall {format_rate(report['recall'])}")  # fmt: skip
    if "kind_reading" in record:
        print(f"kind reading: {format_rate(record['kind_reading'])}")
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
