"""A synthetic paired-video dataset on disk: written so that a run killed at any moment resumes cleanly.

    DIR/card.json, README.md   the dataset card: models, CLIP, thresholds, settings, counts
    DIR/prompts.jsonl          the paired prompts, fixed before any video is made (sample i renders line
                               i // K with K samples per prompt, InstructPix2Pix's way; line i when K is 1)
    DIR/manifest.jsonl         one line per finished sample, rejected ones included: prompts, seed, P2P
                               settings, the four CLIP scores, kept (and the toy judge's verdict where known)
    DIR/pairs/NNNNNN/          input.mp4 and edited.mp4 of sample NNNNNN
    DIR/.lock                  the write lock of a generate or filter run

A pair's videos are written to a temporary folder renamed into place, and only then is its manifest line
appended, in one write, flushed to disk. So a pair folder without a line, a temporary folder or a line cut short
are leftovers of a kill, which `recover` removes before a run goes on. Several processes (`accelerate launch`)
each append to their own `manifest.partK.jsonl`, merged into `manifest.jsonl` at the end (`refilter`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path

from insv2v.files import LOCK, complete_lines, folder_lock, truncate_partial_line
from insv2v.synth.clip_filter import SCORE_NAMES, PairScores, Thresholds

MANIFEST = "manifest.jsonl"
PROMPTS = "prompts.jsonl"
CARD = "card.json"
PAIRS = "pairs"
RECORD_FIELDS = ("scores", "kept", "files")  # what every reader of a sample's record needs


def writing(root: str | os.PathLike) -> AbstractContextManager[None]:
    """Hold the dataset's write lock (a `synth generate` run, a `synth filter` or `rescore`): a second writer is
    refused at once instead of rewriting the manifest under the first, which would lose its lines."""
    return folder_lock(root, f"{root} is being written by another run (synth generate, filter or rescore); try again "
                             "when it ends")  # fmt: skip


def pair_id(index: int) -> str:
    return f"{index:06d}"


def pair_folder(root: Path, index: int) -> Path:
    return root / PAIRS / pair_id(index)


def manifest_files(root: Path) -> list[Path]:
    """The merged manifest and any per-process parts not merged yet."""
    return sorted(p for p in root.glob("manifest*.jsonl") if p.name == MANIFEST or p.name.startswith("manifest.part"))


def _read_lines(path: Path) -> list[dict]:
    """Complete JSON records of `path`, each with its sample's index; a last line cut short by a kill is ignored,
    any other damaged line is an error naming the file and line."""
    records = []
    for number, line in enumerate(complete_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {number} is not a JSON record ({e.msg}); repair or delete it") from None
        if not isinstance(record, dict) or not isinstance(record.get("index"), int):
            raise ValueError(f"{path} line {number} is not a sample's record (no integer index); repair or delete it")
        missing = [k for k in RECORD_FIELDS if k not in record]
        scores = record.get("scores")
        numbers = isinstance(scores, dict) and all(isinstance(scores.get(n), int | float) for n in SCORE_NAMES)
        if missing or not numbers:
            what = f"no {', '.join(missing)}" if missing else "scores that are not four numbers"
            raise ValueError(f"{path} line {number} is not a sample's record ({what}); repair or delete it")
        records.append(record)
    return records


def dataset_folder(folder: str | os.PathLike) -> Path:
    """`folder` as a Path, refused if it is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder (a dataset made by insv2v synth generate)")
    return folder


def read_manifest(root: str | os.PathLike) -> list[dict]:
    """Every finished sample's record, by index (the merged manifest and any unmerged parts)."""
    root = dataset_folder(root)
    records = {r["index"]: r for path in manifest_files(root) for r in _read_lines(path)}
    return [records[i] for i in sorted(records)]


def append_record(path: Path, record: dict) -> None:
    """One complete line in one write, on disk before returning."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def recover(root: str | os.PathLike, owns=lambda index: True, manifests: list[Path] | None = None) -> set[int]:
    """Remove what a killed run left half-done among the samples this process `owns` and in the manifests it
    writes (default: all); the finished indices."""
    root = Path(root)
    for path in manifest_files(root) if manifests is None else [p for p in manifests if p.exists()]:
        truncate_partial_line(path)
    # A sample whose videos are gone (a copy cut short) is not done: it is made again, and its new line wins.
    done = {r["index"] for r in read_manifest(root) if all(p.is_file() for p in pair_paths(root, r))}
    pairs = root / PAIRS
    for folder in pairs.iterdir() if pairs.is_dir() else ():
        name = folder.name.removeprefix(".tmp-")
        if name.isdigit() and owns(int(name)) and (folder.name.startswith(".tmp-") or int(name) not in done):
            shutil.rmtree(folder)
    return done


def pair_paths(root: Path, record: dict) -> list[Path]:
    """The sample's input and edited videos, refused unless they lie inside the dataset's folder (a manifest from
    elsewhere must not make an export pack, training or the judge read, or the app show, any other file)."""
    paths = [(root / record["files"][k]).resolve() for k in ("input", "edited")]
    if not all(p.is_relative_to(root.resolve()) for p in paths):
        raise ValueError(f"sample {record['index']} of {root} names files outside the dataset; it is refused")
    return paths


def read_pair(root: Path, record: dict) -> tuple:
    """The sample's input and edited frames, (f, h, w, 3) uint8 arrays, as they were written (uncropped)."""
    from insv2v.video import read_video

    source, edited = (read_video(path, multiple=1).frames for path in pair_paths(root, record))
    return source, edited


def publish_pair(root: Path, index: int, write) -> dict[str, str]:
    """Let `write(folder)` fill a temporary folder, then rename it into place; the files, relative to root."""
    final = pair_folder(root, index)
    tmp = final.with_name(".tmp-" + final.name)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = write(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _fsync_dir(final.parent)  # the rename is on disk before the manifest line that announces it
    return {key: str((final / name).relative_to(root)) for key, name in names.items()}


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rewrite_manifest(root: str | os.PathLike, records: list[dict]) -> None:
    """manifest.jsonl holding exactly `records` (written whole, then renamed into place); parts removed."""
    root = Path(root)
    tmp = root / (MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / MANIFEST)
    _fsync_dir(root)  # the merged manifest is on disk before the parts it replaces are removed
    for path in manifest_files(root):
        if path.name != MANIFEST:
            path.unlink()


# ---------------------------------------------------------------- the card, filtering again, export


def counts(records: Iterable[dict]) -> dict:
    """Samples and kept ones, in all and per edit kind; the judge's verdicts where recorded."""
    records = list(records)
    kinds = Counter(r.get("kind") or "unknown" for r in records)
    kept_kinds = Counter(r.get("kind") or "unknown" for r in records if r["kept"])
    result = {
        "samples": len(records),
        "kept": sum(r["kept"] for r in records),
        "by_kind": {k: {"samples": kinds[k], "kept": kept_kinds[k]} for k in sorted(kinds)},
    }
    judged = [r for r in records if r.get("judge")]
    if judged:
        right = [r for r in judged if r["judge"]["edit_right"]]
        kept = [r for r in judged if r["kept"]]
        result["judge"] = {
            "judged": len(judged),
            "right": len(right),  # the pair shows the edit while keeping the rest
            "kept_right": sum(r["judge"]["edit_right"] for r in kept),
            "kept": len(kept),
        }
    return result


def write_card(root: str | os.PathLike, card: dict) -> None:
    """card.json and a README.md saying the same in words."""
    root = Path(root)
    tmp = root / (CARD + ".tmp")
    tmp.write_text(json.dumps(card, indent=2))
    os.replace(tmp, root / CARD)
    c, run = card.get("counts", {}), card.get("run") or {}
    blending = "no local blending"
    if run.get("local_blend") is not None:
        of = (
            "difference of the edited caption's noise prediction"
            if run.get("blend_maps") == "difference"
            else "attention"
        )
        blending = f"local blending at {run['local_blend']} of each frame's peak {of}"
    shared = (
        f"; the edited sample shares the input's first {run['shared_end']:.0%} of steps"
        if run.get("shared_end")
        else ""
    )
    top = card.get("top_per_prompt")
    limit = f"; at most {top} kept per prompt, those of the highest directional similarity" if top else ""
    lines = [
        "# Synthetic paired-video dataset",
        "",
        "Made by `insv2v synth generate` (video Prompt-to-Prompt, CLIP filter). One folder per pair under `pairs/`;",
        "`manifest.jsonl` has one line per sample, rejected ones included. `insv2v synth filter DIR` re-applies",
        "other thresholds without regenerating, `insv2v synth rescore DIR --clip CLIP` scores with another CLIP.",
        "",
        f"- text-to-video model: `{card.get('t2v')}`",
        f"- prompts: `{card.get('prompts')}`, seed {card.get('seed')}"
        + (f", {run['samples_per_prompt']} samples of each" if run.get("samples_per_prompt", 1) > 1 else ""),
        f"- frames {card.get('frames')}, {card.get('steps')} steps, {card.get('size')} px",
        f"- Prompt-to-Prompt settings drawn per sample by the {run.get('recipe', 'video')} recipe"
        + (f", CFG from {run['cfg_range'][0]} to {run['cfg_range'][1]}" if run.get("cfg_range") else "")
        + shared
        + f"; {blending}",
        f"- CLIP: `{card.get('clip')}`; thresholds {card.get('thresholds')}{limit}",
        f"- samples {c.get('samples', 0)}, kept {c.get('kept', 0)}",
    ]
    if c.get("judge"):
        j = c["judge"]
        lines.append(
            f"- toy-world judge: {j['right']} of {j['judged']} pairs show the edit and keep the rest; "
            f"{j['kept_right']} of the {j['kept']} kept ones"
        )
    if card.get("command"):
        lines += ["", "```bash", card["command"], "```"]
    (root / "README.md").write_text("\n".join(lines) + "\n")


def source_name(source: str | None) -> str | None:
    """A model source as a card records it: a shipped model as `assets/NAME`, anything else as given."""
    from insv2v.assets import ASSETS

    if source and Path(source).is_absolute() and Path(source).resolve().is_relative_to(ASSETS.resolve()):
        return f"assets/{Path(source).resolve().relative_to(ASSETS.resolve())}"
    return source


def same_source(a: str, b: str) -> bool:
    """Whether two model sources name the same model: folders (a shipped one as `assets/NAME` too) compared where they
    are, hub ids and other names as written."""
    from insv2v.assets import ASSETS

    def where(source: str) -> str:
        name = source_name(source.rstrip("/"))
        if name.startswith("assets/") and not Path(name).exists():
            return str((ASSETS / name.removeprefix("assets/")).resolve())
        return str(Path(name).resolve()) if Path(name).exists() else name

    return where(a) == where(b)


def clip_fields(clip: str) -> dict:
    """How a card names the CLIP that scored its pairs: as given (`source_name`) and, for a local folder, by its
    weights (`clip_weights`), which tell it wherever the folder is later named from."""
    from insv2v.loading import weights_digest

    return {"clip": source_name(clip), "clip_weights": weights_digest(clip)}


def scored_by(card: dict, clip: str) -> bool:
    """Whether the pairs of a dataset with this card were scored by `clip`: the same weights where the card and the
    folder tell them (a copy of the folder is the same CLIP), else the same model source (`same_source`)."""
    from insv2v.loading import weights_digest

    if card.get("clip_weights") and (weights := weights_digest(clip)):
        return weights == card["clip_weights"]
    return same_source(clip, card["clip"])


def read_card(root: str | os.PathLike) -> dict:
    path = Path(root) / CARD
    return json.loads(path.read_text()) if path.exists() else {}


def kept_under(records: Iterable[dict], thresholds: Thresholds, top_per_prompt: int | None = None) -> list[bool]:
    """Whether each recorded sample passes `thresholds` (its recorded scores; nothing is scored again) and, with
    `top_per_prompt` M, is one of the M passing samples of its prompt (`prompt`: its line in prompts.jsonl; a
    record from before samples per prompt is its own) with the highest directional similarity, as InstructPix2Pix
    keeps 4 of the 100 it draws per prompt (ties: the earlier sample)."""
    records = list(records)
    kept = [PairScores(**r["scores"]).passes(thresholds) for r in records]
    if top_per_prompt:
        passing = defaultdict(list)
        for i, r in enumerate(records):
            if kept[i]:
                passing[r.get("prompt", r["index"])].append(i)
        for positions in passing.values():
            positions.sort(key=lambda i: -records[i]["scores"]["sim_dir"])  # stable
            for i in positions[top_per_prompt:]:
                kept[i] = False
    return kept


def filtered_records(root: str | os.PathLike) -> list[dict]:
    """Every sample of the manifest, `kept` as the card's filter says (its thresholds and its limit per prompt): a run
    applies the limit to the manifest only at its end, so one stopped early has marked every passing sample kept."""
    records, card = read_manifest(root), read_card(root)
    if not card.get("thresholds"):  # a card from before the filter was recorded: the manifest's word
        return records
    kept = kept_under(records, Thresholds.from_dict(card["thresholds"]), card.get("top_per_prompt"))
    return [{**r, "kept": k} for r, k in zip(records, kept, strict=True)]


def check_not_own_file(root: str | os.PathLike, path: str | os.PathLike) -> None:
    """Refuse to write `path` if it is one of the dataset's own files (its manifests, card, prompts, pairs)."""
    root, target = Path(root).resolve(), Path(path).resolve()
    own = {MANIFEST, PROMPTS, CARD, "README.md", LOCK, PAIRS}
    if target.parent == root and (target.name in own or target.name.startswith("manifest.")):
        raise ValueError(f"{path} is one of the dataset's own files; write elsewhere")
    if target.is_relative_to(root / PAIRS):
        raise ValueError(f"{path} is inside the dataset's pairs; write elsewhere")


def is_dataset(folder: str | os.PathLike) -> bool:
    return Path(folder).is_dir() and bool(manifest_files(Path(folder)))


def check_dataset(folder: str | os.PathLike) -> None:
    """Refuse a folder that is not a dataset before a command locks or writes anything in it."""
    dataset_folder(folder)
    if not (is_dataset(folder) or read_card(folder)):  # a run whose source gave nothing has its card alone
        raise ValueError(f"{folder} holds neither {MANIFEST} nor {CARD}: not a dataset made by insv2v synth generate")


def refilter(root: str | os.PathLike, thresholds: Thresholds, top_per_prompt: int | None = None) -> dict:
    """Re-apply `thresholds` (and `top_per_prompt`, `kept_under`) to every recorded sample (no video is made again),
    merging the processes' manifests into one; the new counts."""
    root = Path(root)
    records = read_manifest(root)
    if not records:
        raise ValueError(f"{root} holds no finished samples (no {MANIFEST})")
    return _write_filtered(root, records, thresholds, top_per_prompt)


def _write_filtered(root: Path, records: list[dict], thresholds: Thresholds, top_per_prompt: int | None,
                    **card_fields) -> dict:  # fmt: skip
    """`records` kept as the filter says, the manifest written whole, then the card with the filter, the counts and
    `card_fields`; the counts."""
    for r, kept in zip(records, kept_under(records, thresholds, top_per_prompt), strict=True):
        r["kept"] = kept
    rewrite_manifest(root, records)
    card = read_card(root)
    card.update(thresholds=thresholds.to_dict(), top_per_prompt=top_per_prompt, counts=counts(records), **card_fields)
    write_card(root, card)
    return card["counts"]


def rescore(
    root: str | os.PathLike,
    clip: str,
    thresholds: Thresholds,
    top_per_prompt: int | None = None,
    progress=lambda items: items,
) -> dict:
    """Score every recorded sample again with another CLIP, from its videos (nothing is generated again), and filter
    under `thresholds`, which belong to that CLIP; the card then names it. The manifest is replaced whole once every
    sample is scored, then the card: a kill before leaves the earlier scores, one between the two a card naming the
    earlier CLIP. `progress` wraps the samples (a progress bar); the new counts."""
    from insv2v.metrics import load_clip
    from insv2v.synth.clip_filter import score_pair

    root = Path(root)
    records = read_manifest(root)
    if not records:
        raise ValueError(f"{root} holds no finished samples (no {MANIFEST})")
    scorer = load_clip(clip)
    for r in progress(records):
        source, edited = read_pair(root, r)
        r["scores"] = score_pair(scorer, source, edited, r["input"], r["output"]).to_dict()
    fields, run = clip_fields(clip), read_card(root).get("run")
    if run:  # a resumed run must score with it too
        fields["run"] = {**run, "clip": fields["clip"]}
    return _write_filtered(root, records, thresholds, top_per_prompt, **fields)


def export_webdataset(root: str | os.PathLike, out_dir: str | os.PathLike, shard_size: int = 1000) -> list[Path]:
    """The kept pairs as WebDataset tar shards: per sample KEY.input.mp4, KEY.edited.mp4 and KEY.json. Shards of an
    earlier export in `out_dir` are removed once this one is written, so the folder holds exactly this export."""
    root, out_dir = Path(root), Path(out_dir)
    if out_dir.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"export the shards outside the dataset, not into {out_dir} (it would carry them along)")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file; name a folder for the shards")
    records = filtered_records(root)
    kept = [r for r in records if r["kept"]]
    if not kept:
        raise ValueError(f"{root} has no kept pairs to export ({len(records)} samples, none kept); nothing was changed")
    files = {r["index"]: pair_paths(root, r) for r in kept}
    missing = [path for paths in files.values() for path in paths if not path.is_file()]
    if missing:
        raise ValueError(f"{root}: {len(missing)} video(s) named in the manifest are missing, e.g. {missing[0]}")
    out_dir.mkdir(parents=True, exist_ok=True)
    earlier = set(out_dir.glob("shard-*.tar"))
    written: list[Path] = []  # every shard whole before any replaces one of an earlier export
    try:
        for start in range(0, len(kept), shard_size):
            written.append(out_dir / f"shard-{start // shard_size:06d}.tar.tmp")
            with tarfile.open(written[-1], "w") as tar:
                for r in kept[start : start + shard_size]:
                    key = pair_id(r["index"])
                    source, edited = files[r["index"]]
                    tar.add(source, arcname=f"{key}.input.mp4")
                    tar.add(edited, arcname=f"{key}.edited.mp4")
                    meta = json.dumps(r).encode()
                    info = tarfile.TarInfo(f"{key}.json")
                    info.size = len(meta)
                    tar.addfile(info, io.BytesIO(meta))
    except BaseException:
        for tmp in written:
            tmp.unlink(missing_ok=True)
        raise
    shards = [tmp.with_suffix("") for tmp in written]  # shard-000000.tar.tmp -> shard-000000.tar
    for tmp, path in zip(written, shards, strict=True):
        os.replace(tmp, path)
    for old in earlier - set(shards):  # only once the new export is whole
        old.unlink()
    return shards
