"""Read a toy-world video from its pixels alone: its style, background, camera, and each shape's colour and kind.

The reader has no learned weights, so it shares nothing with the toy CLIP it may be used to check. It fits the
world's own palettes (plain or negated) and shape geometry to the pixels, frame by frame, and votes over the
frames, so a few bad generated frames do not flip a verdict. It judges synthetic data: does a video show its
caption (`shows_caption`), and does an edited video show the edit while keeping the rest (`edit_verdict`).

Its own accuracy is measured on rendered held-out scenes with exact labels, clean or degraded:
`python -m insv2v.toyworld.reader --n 200 [--noise 10 --blur 0.7] [--verdicts]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np

from insv2v.toyworld.world import (
    BACKGROUNDS,
    HELDOUT_SEEDS,
    SHAPE_COLOURS,
    SHAPES,
    SIZE,
    STYLES,
    Scene,
    Triplet,
    _signed_distance,
    apply_edit,
    article,
    random_scene,
    render,
    sample_triplet,
)

COLOUR_NAMES = tuple(SHAPE_COLOURS)
SHAPE_RGB = np.array([SHAPE_COLOURS[c] for c in COLOUR_NAMES], np.float32)  # (7, 3)
BACKGROUND_NAMES = tuple(BACKGROUNDS)
BACKGROUND_RGB = np.array([BACKGROUNDS[b] for b in BACKGROUND_NAMES], np.float32)  # (6, 2, 3): base, texture
# Style and colours
TRUNCATE = 40.0  # colour distance past which a pixel is simply unexplained: outliers cap their cost
INK = 40.0  # grey of a sketch's pencil lines (the paper is ~235)
SHAPE_MATCH = 60.0  # a pixel farther than this from every shape colour is no shape's (blurred edges, noise)
RIM = 2  # pixels around a shape that are not trusted as background (blur mixes them with the shape)
# Shapes
MIN_AREA = 20  # pixels: smallest visible part of a shape counted in a frame (a whole one covers ~60-380)
PRESENT_SHARE = 0.25  # a shape is in the video when seen in this share of frames: occlusion hides some
FIT_FRAMES = 6  # a shape's kind is fitted in this many frames, those where most of it shows
MARGIN = 6  # pixels around a blob where a template may spill over and be penalised for it
CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))  # 4-neighbourhood: opening removes one-pixel lines
# Area of each kind in units of r^2 (r: the world's half-extent), to start a template fit from a blob's area.
KIND_AREA = {"circle": np.pi, "square": 1.7**2, "triangle": 3 * np.sqrt(3) / 4, "cross": 2.8 - 0.49}
# The 27 moves (x, y, r) of a hill-climbing step, in units of the step sizes.
MOVES = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(np.float64)
# Sketches
INK_LEVEL = 140.0  # sketch pixels darker than this are pencil
MIN_FIT = 0.6  # sketch outlines whose best template overlaps less than this are merged or cut, not counted
SINGLE_FIT = 0.9  # a sketch outline fitted this well by one template is one shape, not two overlapping
PAIR_GAIN = 0.05  # two overlapping templates must fit an outline this much better than one to be read as two
INSIDE = 2.0  # weight on template pixels outside the blob when fitting the first of two shapes inside their union
# Camera
PAN_SPEED = 0.5  # pixels per frame: a camera this fast pans (the world's pans move 1, a still camera 0)
# Pixels per frame: an edit whose pan differs more from the input's has turned the camera (a reversed pan of the
# world's differs by 2, a right angle by 1.4; reading noise of blurred, noisy frames by up to about 0.7).
MAX_PAN_CHANGE = 1.0
TONE_BLUR = 1.5  # pixels: texture tones are averaged this wide before frames are aligned
MIN_CAMERA_FRAMES = 4  # fewer frames cannot tell a pan from a one-pixel misalignment
# The texture has not moved when no shift aligns it clearly better than none: within this ratio of the best
# error (the noise floor), plus this share of a typical misalignment's error.
STILL_RATIO = 0.5
STILL_SHARE = 0.01
MIN_OVERLAP = 0.25  # share of the window that must be background in both frames for a shift to be judged
MAX_SPAN = 10  # frames: a pan is measured over spans this long, so the shifted windows stay in the frame
# Verdicts
MAX_DRIFT = 3.0  # pixels: a kept shape may sit this far (median over frames) from its place in the input
WRONG_EDITS = ("identity", "wrong value", "moved", "extra change")  # ways `wrong_edit` spoils an edit
CAPTION_PREFIXES = {"a pencil sketch of ": "sketch", "a photo negative of ": "negative"}
PAN_SUFFIX = ", camera panning"


@dataclass(frozen=True)
class Reading:
    """What a video (or a caption) shows. None means unreadable: a sketch has no colours and no background."""

    background: str | None
    style: str | None  # None: a plain rendering, as in the world's `Scene.style`
    shapes: dict[str, str] | None  # colour -> kind (colours in a scene are distinct)
    kinds: tuple[str, ...] = ()  # the distinct kinds shown, sorted: readable in a sketch too
    camera: bool | None = None  # True: the camera pans
    # The number behind each value: the share of frames that voted for it; for camera, the pan speed (px/frame).
    evidence: dict[str, float] = field(default_factory=dict, compare=False)
    # Colour -> where its shape is in each frame, (f, 2) x, y centroids, NaN where it is not seen.
    tracks: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    # The same by kind (a kind shown once), so a sketch can be followed too.
    kind_tracks: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    # How the background scrolls, (x, y) pixels per frame (None: not read), so a pan's direction can be compared.
    pan: tuple[float, float] | None = field(default=None, compare=False)


# ---------------------------------------------------------------- pixels


def _palette_distance(x: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Distance (..., k) from colours x (..., 3) to each colour of palette (k, 3)."""
    return np.linalg.norm(x[..., None, :] - palette, axis=-1)


def _segment_distance(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (...) from colours x (..., 3) to the segment a-b, and the position along it in [0, 1].

    A blurred two-tone background mixes its tones, so its pixels lie on the segment, not only at its ends.
    """
    ab = b - a
    t = np.clip(((x - a) @ ab) / float(ab @ ab), 0, 1)
    return np.linalg.norm(x - a - t[..., None] * ab, axis=-1), t


def _robust(d: np.ndarray) -> np.ndarray:
    return np.minimum(d, TRUNCATE) ** 2


def _hypotheses() -> list[tuple[str | None, str | None]]:
    """(style, background) pairs a frame can be: plain or negative with each background, or a sketch."""
    return [(s, b) for s in (None, "negative") for b in BACKGROUND_NAMES] + [("sketch", None)]


def _hypothesis_costs(video: np.ndarray) -> np.ndarray:
    """Cost (f, k) of explaining each frame by each hypothesis: summed truncated squared colour distances."""
    video = video[:, ::2, ::2]  # a quarter of the pixels decide as well, four times faster
    costs = []
    for polar in (video, 255 - video):
        shapes = _palette_distance(polar, SHAPE_RGB).min(axis=-1)
        for base, texture in BACKGROUND_RGB:
            d = np.minimum(_segment_distance(polar, base, texture)[0], shapes)
            costs.append(_robust(d).sum(axis=(1, 2)))
    grey = np.clip(video.mean(axis=-1), INK, 255)  # a sketch is grey from pencil to paper
    costs.append(_robust(np.linalg.norm(video - grey[..., None], axis=-1)).sum(axis=(1, 2)))
    return np.stack(costs, axis=1)


def _vote(values: list) -> tuple[object, float]:
    """The most common value (first seen wins a tie) and its share."""
    if not values:
        return None, 0.0
    value, count = Counter(values).most_common(1)[0]
    return value, count / len(values)


def _open(image: np.ndarray, kernel: np.ndarray, iterations: int = 1) -> np.ndarray:
    return cv2.morphologyEx(image, cv2.MORPH_OPEN, kernel, iterations=iterations)


def _morph(operation, mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    """A morphological operation (cv2.erode, cv2.dilate or `_open`) with the 4-neighbourhood on a bool mask (h, w).

    Outside the frame counts as inside the mask for erosion, so a shape cut by the frame edge is not eaten away.
    """
    return operation(mask.astype(np.uint8), CROSS, iterations=iterations).astype(bool)


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected parts of a bool mask (h, w): labels (0 outside the mask, 1..n) and their number n."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    return labels, n - 1


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask (h, w) with every region it encloses filled: all but what is connected to the frame's border."""
    outside = np.pad(~mask, 1).astype(np.uint8)  # a ring of "outside" around the frame joins the border up
    outside[0, :] = outside[-1, :] = outside[:, 0] = outside[:, -1] = 1
    cv2.floodFill(outside, None, (0, 0), 2, flags=4)
    return outside[1:-1, 1:-1] != 2


def _label_pixels(x: np.ndarray, background: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel (f, h, w): the shape colour index it shows or -1, whether it is background, and its texture tone.

    A pixel is a shape's when that shape colour is nearer than the background's tones and near enough at all.
    A pixel is background when it is near the background's tones and away from every shape: a shape's blurred
    rim mixes it with the background, and that rim, moving with the shape, must not pass for the texture.
    """
    base, texture = BACKGROUND_RGB[BACKGROUND_NAMES.index(background)]
    d_background, tone = _segment_distance(x, base, texture)
    d_shapes = _palette_distance(x, SHAPE_RGB)
    nearest = d_shapes.argmin(axis=-1)
    d_nearest = np.take_along_axis(d_shapes, nearest[..., None], axis=-1)[..., 0]
    is_shape = (d_nearest < d_background) & (d_nearest <= SHAPE_MATCH)
    rim = np.stack([_morph(cv2.dilate, _morph(_open, m), RIM) for m in is_shape])  # noise specks are no shapes
    return np.where(is_shape, nearest, -1), ~rim & (d_background <= TRUNCATE), tone


# ---------------------------------------------------------------- geometry


def _template_iou(kind: str, params: np.ndarray, points: tuple[np.ndarray, ...], outside: float = 0.0) -> np.ndarray:
    """Soft IoU (c,) of the kind's template at each (cx, cy, r) in params (c, 3) with a mask at points (gx, gy, m).

    `outside` > 0 also charges the template for what it covers outside the mask, so it fits inside a blob.
    """
    gx, gy, mask = points
    cx, cy, r = (params[:, i : i + 1] for i in range(3))
    template = np.clip(0.5 - _signed_distance(kind, gx - cx, gy - cy, r), 0, 1)  # the world's anti-aliasing
    union = np.maximum(template, mask).sum(axis=1) + outside * (template * (1 - mask)).sum(axis=1)
    return np.minimum(template, mask).sum(axis=1) / np.maximum(union, 1e-9)


def _fit(kind: str, points: tuple, start: np.ndarray, outside: float = 0.0) -> tuple[float, np.ndarray]:
    """Best IoU of the kind's template with a mask at points (gx, gy, mask), and its (cx, cy, r).

    Hill-climbs position and size from `start`, halving the steps when no move helps.
    """
    params, steps = start, np.array([1.0, 1.0, 0.1 * start[2]])
    best = _template_iou(kind, params[None], points, outside)[0]
    for _ in range(40):
        candidates = params + MOVES * steps
        candidates[:, 2] = np.maximum(candidates[:, 2], 2.0)
        scores = _template_iou(kind, candidates, points, outside)
        i = int(scores.argmax())
        if scores[i] > best + 1e-6:
            params, best = candidates[i], scores[i]
        elif steps[0] > 0.25:
            steps = steps / 2
        else:
            break
    return float(best), params


def _points(blob: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The known pixels near a blob (h, w) bool: their centres gx, gy and whether each is the blob's."""
    ys, xs = np.nonzero(blob)
    y0, y1 = max(ys.min() - MARGIN, 0), min(ys.max() + MARGIN + 1, blob.shape[0])
    x0, x1 = max(xs.min() - MARGIN, 0), min(xs.max() + MARGIN + 1, blob.shape[1])
    rows, cols = np.nonzero(known[y0:y1, x0:x1])
    gx, gy = (cols + x0 + 0.5).astype(np.float64), (rows + y0 + 0.5).astype(np.float64)  # pixel centres
    return gx, gy, blob[y0:y1, x0:x1][rows, cols].astype(np.float64)


def _start(blob: np.ndarray, kind: str) -> np.ndarray:
    """Where a fit of the kind starts: the blob's centroid, and the size whose area is the blob's."""
    ys, xs = np.nonzero(blob)
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5, np.sqrt(len(ys) / KIND_AREA[kind])])


def fit_kinds(blob: np.ndarray, known: np.ndarray | None = None) -> dict[str, tuple[float, np.ndarray]]:
    """Per kind, the best IoU of its template with a blob (h, w) bool, and the template's (cx, cy, r).

    Pixels outside `known` (hidden behind another shape) count neither for nor against a template, so a partly
    occluded shape is fitted on what shows; pixels outside the frame do not exist, so a cut shape is fitted too.
    """
    if not blob.any():
        return {kind: (0.0, np.zeros(3)) for kind in SHAPES}
    points = _points(blob, np.ones_like(blob) if known is None else known | blob)
    return {kind: _fit(kind, points, _start(blob, kind)) for kind in SHAPES}


def kind_scores(blob: np.ndarray, known: np.ndarray | None = None) -> dict[str, float]:
    """How well each kind's template fits a blob (h, w) bool: the best IoU over position and size."""
    return {kind: score for kind, (score, _) in fit_kinds(blob, known).items()}


def _template(kind: str, params: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The kind's soft template (h, w) at (cx, cy, r), as the world draws it."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    return np.clip(0.5 - _signed_distance(kind, xs - params[0], ys - params[1], params[2]), 0, 1)


def _fit_pair(blob: np.ndarray, first: str, second: str) -> float:
    """IoU with a blob of the union of two templates: how well it reads as two overlapping shapes.

    A sketch outlines only the union of overlapping shapes. The first shape is fitted inside the blob, the second
    to what the first leaves out, as if hidden behind it; then the first is refitted with the second's pixels
    unknown.
    """
    p1 = _fit(first, _points(blob, np.ones_like(blob)), _start(blob, first), outside=INSIDE)[1]
    one = _template(first, p1, blob.shape) < 0.5
    rest, solid = _main_blob(blob & one)
    if solid < MIN_AREA:
        return 0.0
    p2 = _fit(second, _points(rest, one | rest), _start(rest, second))[1]
    p1 = _fit(first, _points(blob, _template(second, p2, blob.shape) < 0.5), p1)[1]
    union = np.maximum(_template(first, p1, blob.shape), _template(second, p2, blob.shape))
    return float(np.minimum(union, blob).sum() / max(np.maximum(union, blob).sum(), 1e-9))


def _main_blob(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The connected part of mask (h, w) with the most solid pixels, and that count (0: nothing solid).

    Solid pixels survive a morphological opening, so thin lines (blurred edges between other colours) do not count.
    """
    solid = _morph(_open, mask)
    if not solid.any():
        return np.zeros_like(mask), 0
    parts, _ = _components(mask)
    counts = np.bincount(parts[solid])
    counts[0] = 0
    best = int(counts.argmax())
    return parts == best, int(counts[best])


# ---------------------------------------------------------------- reading


def is_toy_size(frames: np.ndarray) -> bool:
    """Whether a video (f, h, w, 3) or frame (h, w, 3) has the toy world's size, the only one the reader reads."""
    return np.shape(frames)[-3:-1] == (SIZE, SIZE)


def _as_video(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"`frames` must be (f, h, w, 3) or (h, w, 3) RGB, got shape {frames.shape}")
    if not is_toy_size(frames):  # its templates and tracks are the toy world's pixels
        raise ValueError(f"the reader reads the toy world's {SIZE} x {SIZE} frames, got {frames.shape[2]} x "
                         f"{frames.shape[1]}: generate at {SIZE} px")  # fmt: skip
    return frames.astype(np.float32)


def _read_shapes(labels: np.ndarray) -> tuple[dict[str, str], dict[str, float], dict[str, np.ndarray]]:
    """Colour -> kind from per-pixel shape labels (f, h, w), the share of frames each colour is seen in, its track.

    A colour seen in enough frames is a shape; its kind is the one whose templates fit best, summed over the
    frames where it shows most (least occluded), other shapes' pixels counting as unknown.
    """
    shapes, evidence, tracks = {}, {}, {}
    for c, colour in enumerate(COLOUR_NAMES):
        seen, track = [], np.full((len(labels), 2), np.nan)
        for f, frame in enumerate(labels):
            blob, solid = _main_blob(frame == c)
            if solid >= MIN_AREA:
                seen.append((solid, blob, frame < 0))
                ys, xs = np.nonzero(blob)
                track[f] = xs.mean() + 0.5, ys.mean() + 0.5
        if len(seen) < PRESENT_SHARE * len(labels):
            continue
        totals = dict.fromkeys(SHAPES, 0.0)
        for _, blob, known in sorted(seen, key=lambda s: -s[0])[:FIT_FRAMES]:
            for kind, score in kind_scores(blob, known).items():
                totals[kind] += score
        shapes[colour] = max(totals, key=totals.get)
        evidence[f"shape:{colour}"] = len(seen) / len(labels)
        tracks[colour] = track
    return shapes, evidence, tracks


def _blob_kinds(blob: np.ndarray) -> set[str]:
    """The kinds a sketch's filled outline shows: one template, or two overlapping ones when they fit clearly better."""
    fits = fit_kinds(blob)
    kind = max(fits, key=lambda k: fits[k][0])
    best, kinds = fits[kind][0], {kind}
    if best < SINGLE_FIT:
        pairs = {(a, b): _fit_pair(blob, a, b) for a, b in itertools.permutations(SHAPES, 2)}
        pair = max(pairs, key=pairs.get)
        if pairs[pair] > best + PAIR_GAIN:
            best, kinds = pairs[pair], set(pair)
    return kinds if best >= MIN_FIT else set()


def _read_sketch_kinds(video: np.ndarray) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """The kinds drawn in a sketch, and each kind's track: each closed outline, filled and thinned back by its
    pencil width, is fitted.

    The video shows as many shapes as at least two frames show (one frame in a one-frame video), of the kinds
    read in the most frames: a frame where one shape hides behind another reads one kind fewer. A kind's track
    has the centroids of the outlines read as that kind alone.
    """
    counts: Counter[str] = Counter()
    per_frame = []
    tracks: dict[str, np.ndarray] = {}
    for f, frame in enumerate(video.mean(axis=-1) < INK_LEVEL):
        parts, n = _components(_morph(cv2.erode, _fill_holes(frame)))
        seen: set[str] = set()
        alone: dict[str, list] = {}  # kind -> centroids of the outlines read as that kind alone
        for i in range(1, n + 1):
            if (parts == i).sum() < MIN_AREA:
                continue
            kinds = _blob_kinds(parts == i)
            seen |= kinds
            if len(kinds) == 1:
                ys, xs = np.nonzero(parts == i)
                alone.setdefault(next(iter(kinds)), []).append((xs.mean() + 0.5, ys.mean() + 0.5))
        for kind, centroids in alone.items():
            if len(centroids) == 1:  # two outlines of one kind: which is which is unknown
                tracks.setdefault(kind, np.full((len(video), 2), np.nan))[f] = centroids[0]
        counts.update(seen)
        per_frame.append(len(seen))
    enough = min(2, len(video))
    number = max((k for k in range(1, len(SHAPES) + 1) if sum(n >= k for n in per_frame) >= enough), default=0)
    kinds = tuple(sorted(kind for kind, _ in counts.most_common(number)))
    return kinds, {kind: track for kind, track in tracks.items() if kind in kinds}


def _shift(tone: np.ndarray, known: np.ndarray, first: int, last: int) -> tuple[int, int]:
    """How the background texture moves from frame `first` to `last`: the best-aligning shift (dx, dy), pixels.

    Texture tones of a central window of `last` are compared with the shifted window of `first`, on background
    pixels of both; shifts up to one pixel per frame (the world's pan speed) and one more are tried. The window
    is the same for every shift, so no shift wins by comparing an easier part of the frame. When no shift aligns
    clearly better than none (as measured by the noise floor and a typical misalignment), it has not moved: a
    striped texture looks the same shifted along its stripes, where only noise would pick a shift.
    """
    reach = last - first + 1
    h, w = tone.shape[1:]
    window = (slice(reach, h - reach), slice(reach, w - reach))
    errors = {}
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            then = (slice(reach + dy, h - reach + dy), slice(reach + dx, w - reach + dx))
            valid = known[last][window] & known[first][then]
            if valid.sum() >= MIN_OVERLAP * valid.size:
                errors[dx, dy] = float(((tone[last][window] - tone[first][then])[valid] ** 2).mean())
    if not errors:
        return 0, 0
    values = np.array(list(errors.values()))
    best, typical = values.min(), np.median(values)
    if errors.get((0, 0), np.inf) <= best * (1 + STILL_RATIO) + STILL_SHARE * (typical - best) + 1e-9:
        return 0, 0
    return min(errors, key=errors.get)


def _smooth_tone(tone: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Texture tones averaged over nearby background pixels (normalised convolution), and where that is reliable.

    The texture varies slowly, the noise of a generated frame does not: averaging keeps one and removes the other.
    """
    weight = known.astype(np.float32)
    num = np.stack([cv2.GaussianBlur(t * w, (0, 0), TONE_BLUR) for t, w in zip(tone, weight, strict=True)])
    den = np.stack([cv2.GaussianBlur(w, (0, 0), TONE_BLUR) for w in weight])
    return num / np.maximum(den, 1e-6), known & (den > 0.5)


def _read_camera(tone: np.ndarray, background: np.ndarray) -> tuple[bool | None, float, tuple[float, float] | None]:
    """Whether the background scrolls (the camera pans), its speed and its velocity (x, y) in pixels per frame
    (None and None: too few frames).

    Speed and velocity are medians over three spans of frames (at the start, middle and end), so one bad frame cannot
    decide them; the world's pans move one pixel per frame.
    """
    f = len(tone)
    if f < MIN_CAMERA_FRAMES:
        return None, 0.0, None
    tone, background = _smooth_tone(tone, background)
    span = min(f - 1, MAX_SPAN)
    starts = (0, (f - 1 - span) // 2, f - 1 - span)
    shifts = np.array([_shift(tone, background, a, a + span) for a in starts], dtype=np.float64) / span  # (3, 2)
    speed = float(np.median(np.hypot(shifts[:, 0], shifts[:, 1])))
    velocity = np.median(shifts, axis=0)
    return speed >= PAN_SPEED, speed, (float(velocity[0]), float(velocity[1]))


def read_frames(frames: np.ndarray) -> Reading:
    """Read a video (f, h, w, 3) uint8 (or one frame (h, w, 3)) from its pixels: frame by frame, then a vote.

    The style is decided first (which of plain/negative x 6 backgrounds, or a grey sketch, explains each frame's
    pixels best); a negative is un-negated; then the background, the shapes' colours and kinds, and the camera.
    """
    video = _as_video(frames)
    hypotheses = _hypotheses()
    costs = _hypothesis_costs(video)
    style, style_share = _vote([hypotheses[i][0] for i in costs.argmin(axis=1)])
    if style == "sketch":
        kinds, kind_tracks = _read_sketch_kinds(video)
        return Reading(None, "sketch", None, kinds, None, {"style": style_share}, kind_tracks=kind_tracks)
    offset = 0 if style is None else len(BACKGROUND_NAMES)
    per_frame = costs[:, offset : offset + len(BACKGROUND_NAMES)].argmin(axis=1)
    background, background_share = _vote([BACKGROUND_NAMES[i] for i in per_frame])
    x = video if style is None else 255 - video
    labels, is_background, tone = _label_pixels(x, background)
    shapes, shape_shares, tracks = _read_shapes(labels)
    camera, camera_speed, pan = _read_camera(tone, is_background)
    evidence = {"style": style_share, "background": background_share, "camera": camera_speed, **shape_shares}
    kinds = tuple(sorted(set(shapes.values())))
    kind_tracks = {kind: tracks[c] for c, kind in shapes.items() if list(shapes.values()).count(kind) == 1}
    return Reading(background, style, shapes, kinds, camera, evidence, tracks, kind_tracks, pan)


def read_caption(text: str) -> Reading:
    """Parse a toy caption (the world's `caption` grammar) into what a video of it should show."""
    rest, style = text.strip(), None
    for prefix, name in CAPTION_PREFIXES.items():
        if rest.startswith(prefix):
            rest, style = rest[len(prefix) :], name
    camera = rest.endswith(PAN_SUFFIX)
    if camera:
        rest = rest[: -len(PAN_SUFFIX)]
    things, on, place = rest.rpartition(" on ")
    background = place.split()[-1] if place.split() else ""
    if not on or background not in BACKGROUNDS or place != article(background):
        raise ValueError(f"not a toy caption (no 'on <background>'): {text!r}")
    shapes = {}
    for thing in things.split(" and "):
        words = thing.split()
        readable = len(words) >= 3 and words[1] in SHAPE_COLOURS and words[2] in SHAPES
        if not readable or " ".join(words[:2]) != article(words[1]) or words[1] in shapes:
            raise ValueError(f"not a toy caption (cannot read the shape {thing!r}): {text!r}")
        shapes[words[1]] = words[2]
    return Reading(background, style, shapes, tuple(sorted(set(shapes.values()))), camera)


# ---------------------------------------------------------------- verdicts


def agrees(reading: Reading, expected: Reading) -> dict[str, bool | None]:
    """Per attribute, whether the reading shows what is expected; None where either side cannot tell.

    colours: the same set of shape colours; shapes: every expected shape is there with its kind (an extra one
    fails `colours`); kinds: the same set of kinds (the one shape check a sketch allows).
    """

    def same(a: object, b: object) -> bool | None:
        return None if a is None or b is None else a == b

    if reading.shapes is None or expected.shapes is None:
        colours = shapes = None
    else:
        colours = set(reading.shapes) == set(expected.shapes)
        shapes = all(reading.shapes.get(colour) == kind for colour, kind in expected.shapes.items())
    return {
        "background": same(reading.background, expected.background),
        "colours": colours,
        "shapes": shapes,
        "kinds": reading.kinds == expected.kinds,
        "style": reading.style == expected.style,
        "camera": same(reading.camera, expected.camera),
    }


def shows_caption(frames: np.ndarray, caption: str) -> dict[str, bool | None]:
    """Per attribute, whether a video shows its caption (None: unreadable, e.g. a sketch's colours)."""
    return agrees(read_frames(frames), read_caption(caption))


def attributes(reading: Reading, kinds: bool = True) -> dict[str, object]:
    """A reading as flat attributes, one per thing an edit can change or must keep; None is unreadable.

    Every colour of the palette is an attribute ("shape:red" -> its kind or "absent"), so a colour edit is two
    changes (the old colour goes, the new one comes) and a shape appearing from nowhere is a change too. Without
    `kinds`, shapes are only "present" or "absent" (for a generator that draws colours but not outlines).
    """
    flat: dict[str, object] = {
        "background": reading.background,
        "style": reading.style or "plain",
        "camera": None if reading.camera is None else ("panning" if reading.camera else "still"),
    }
    if kinds:
        flat["kinds"] = reading.kinds
    for colour in COLOUR_NAMES:
        if reading.shapes is None:
            flat[f"shape:{colour}"] = None
        elif kinds:
            flat[f"shape:{colour}"] = reading.shapes.get(colour, "absent")
        else:
            flat[f"shape:{colour}"] = "present" if colour in reading.shapes else "absent"
    return flat


@dataclass(frozen=True)
class EditVerdict:
    """Whether an (input, edited) pair shows its edit while keeping the rest, and why not."""

    ok: bool  # the edit is shown and nothing else changed (the verdict for a training pair)
    faithful: bool  # moreover, no readable attribute of either video contradicts its caption
    changed: tuple[str, ...]  # attributes the captions differ on
    failures: tuple[str, ...]  # what is wrong, one line each; empty when ok
    unchecked: tuple[str, ...] = ()  # kept attributes that one of the videos does not show (a sketch's colours)

    @property
    def reason(self) -> str:
        return "; ".join(self.failures) if self.failures else "the edit is shown and the rest is kept"


def judge_edit(
    input_reading: Reading, edited_reading: Reading, input_caption: str, output_caption: str, kinds: bool = True
) -> EditVerdict:
    """`edit_verdict` on readings already made (so a video read once can be judged against several captions);
    without `kinds`, shape kinds are not judged (a shape edit then has nothing to show)."""
    want_in = attributes(read_caption(input_caption), kinds)
    want_out = attributes(read_caption(output_caption), kinds)
    got_in, got_out = attributes(input_reading, kinds), attributes(edited_reading, kinds)
    changed = tuple(k for k in want_in if want_in[k] != want_out[k])
    failures, unchecked = [], []
    if not changed:
        failures.append("the captions describe the same video: there is no edit to show")
    for key in changed:  # the input shows the old value and the edited video the new one
        for got, want, which in ((got_in, want_in, "input"), (got_out, want_out, "edited")):
            if got[key] is None:
                failures.append(f"{key}: unreadable in the {which} video, cannot show {want[key]}")
            elif got[key] != want[key]:
                failures.append(f"{key}: the {which} video shows {got[key]}, its caption says {want[key]}")
    for key in want_in:  # what the edit keeps must read the same in both videos, whatever the captions say
        if key in changed:
            continue
        if got_in[key] is None or got_out[key] is None:
            unchecked.append(key)
        elif got_in[key] != got_out[key]:
            failures.append(f"{key}: changed from {got_in[key]} to {got_out[key]}, but the edit keeps it")
    turned = _pan_change(input_reading, edited_reading)
    if "camera" not in changed and turned is not None and turned > MAX_PAN_CHANGE:
        failures.append(f"camera: pans {_pan_words(input_reading.pan)} in the input and "
                        f"{_pan_words(edited_reading.pan)} in the edit, but the edit keeps it")  # fmt: skip
    drift = _drift(input_reading, edited_reading, read_caption(input_caption), read_caption(output_caption))
    for colour, distance in drift.items():
        if distance is None:
            unchecked.append(f"place:{colour}")
        elif np.isinf(distance):
            failures.append(f"place:{colour}: gone from most frames the input shows it in, but the edit keeps it")
        elif distance > MAX_DRIFT:
            failures.append(f"place:{colour}: {distance:.1f} px from where the input shows it, but the edit keeps it")
    contradicts = any(
        got[k] is not None and got[k] != want[k] for got, want in ((got_in, want_in), (got_out, want_out)) for k in want
    )
    return EditVerdict(not failures, not failures and not contradicts, changed, tuple(failures), tuple(unchecked))


def _pan_change(before: Reading, after: Reading) -> float | None:
    """How far apart (px/frame) two panning videos' pans are; None unless both are read panning."""
    if not (before.camera and after.camera) or before.pan is None or after.pan is None:
        return None
    return float(np.hypot(*np.subtract(before.pan, after.pan)))


def _pan_words(pan: tuple[float, float]) -> str:
    return f"({pan[0]:+.1f}, {pan[1]:+.1f}) px/frame"


def _drift(before: Reading, after: Reading, want_in: Reading, want_out: Reading) -> dict[str, float | None]:
    """Per shape of the output caption, how far (px, median over frames) the edited video moved it from the input.

    A shape keeps its colour unless the captions swap one colour for another (a colour edit), so the new colour
    is followed in the edited video and the old one in the input; in a sketch, which has no colours, the shape
    is followed by its kind. None: not seen in both videos. Where the edit changes no outline (colour, background
    and photo-negative edits: every shape is seen in the same frames of an exact pair), a frame the input shows the
    shape in and the edited video does not counts as infinitely far, so a shape gone from most of them fails;
    elsewhere (a new kind occludes and shows differently, a sketch is read sparsely) such frames are not counted.
    """
    gone, new = set(want_in.shapes) - set(want_out.shapes), set(want_out.shapes) - set(want_in.shapes)
    origin = {new.pop(): gone.pop()} if len(gone) == len(new) == 1 else {}
    same_outlines = after.shapes is not None and sorted(want_in.shapes.values()) == sorted(want_out.shapes.values())
    drift: dict[str, float | None] = {}
    for colour, kind in want_out.shapes.items():
        old = origin.get(colour, colour)
        a, b = _track(before, old, want_in.shapes.get(old)), _track(after, colour, kind)
        if a is None or b is None:
            drift[colour] = None
            continue
        f = min(len(a), len(b))
        seen_in, seen_out = ~np.isnan(a[:f, 0]), ~np.isnan(b[:f, 0])
        d = np.where(seen_out, np.linalg.norm(a[:f] - b[:f], axis=1), np.inf)[seen_in]
        if not same_outlines:
            d = d[np.isfinite(d)]
        drift[colour] = float(np.median(d)) if len(d) and seen_out.any() else None
    return drift


def _track(reading: Reading, colour: str, kind: str | None) -> np.ndarray | None:
    """Where a reading sees the shape of this colour and kind: by colour, or by kind where colours are unreadable."""
    if reading.shapes is not None:
        return reading.tracks.get(colour)
    return reading.kind_tracks.get(kind) if kind is not None else None


def edit_verdict(
    input_frames: np.ndarray, edited_frames: np.ndarray, input_caption: str, output_caption: str
) -> EditVerdict:
    """Does the edited video show the edit the captions imply, and keep the rest of the input video?

    Lenient where generated data needs it: what the captions share only has to read the same in both videos;
    what they differ on must read as the input caption in the input and as the output caption in the edit.
    `faithful` adds that nothing readable in either video contradicts its caption.
    """
    return judge_edit(read_frames(input_frames), read_frames(edited_frames), input_caption, output_caption)


# ---------------------------------------------------------------- measurement


def degrade(frames: np.ndarray, noise: float = 10.0, blur: float = 0.7, seed: int = 0) -> np.ndarray:
    """Frames as a generator might make them: slightly blurred (Gaussian, sigma in pixels), with Gaussian noise."""
    x = frames.astype(np.float32)
    if blur > 0:
        x = np.stack([cv2.GaussianBlur(f, (0, 0), blur) for f in x])
    x = x + np.random.default_rng(seed).normal(0, noise, x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def heldout_scene(index: int, style_rate: float = 0.2) -> Scene:
    """The index-th held-out scene; with probability style_rate it is drawn as a sketch or a negative."""
    rng = np.random.default_rng(HELDOUT_SEEDS.start + index)
    scene = random_scene(rng)
    if rng.random() < style_rate:
        scene = dataclasses.replace(scene, style=str(rng.choice(STYLES)))
    return scene


def sample_settings(n: int, seed: int, frames: int, noise: float, blur: float) -> dict:
    """What a measurement ran on, recorded beside its numbers."""
    return {"n": n, "seed": seed, "frames": frames, "noise": noise, "blur": blur}


def measure_accuracy(
    n: int, seed: int = 0, frames: int = 16, noise: float = 0.0, blur: float = 0.0, style_rate: float = 0.2
) -> dict:
    """The reader's accuracy per attribute on n rendered held-out scenes (indices seed..seed+n-1), exact labels.

    style: every scene; background, colours (the set), camera and each shape's kind: plain and negative scenes;
    kinds (the set): sketches. With noise/blur the frames are degraded first. Failures are listed for diagnosis.
    """
    tallies: dict[str, list[int]] = {}
    confusions: dict[str, Counter] = {}
    failures = []

    def tally(name: str, want: object, got: object, index: int) -> None:
        right = want == got
        tallies.setdefault(name, [0, 0])[0] += right
        tallies[name][1] += 1
        if not right:
            confusions.setdefault(name, Counter())[f"{want} -> {got}"] += 1
            failures.append({"index": index, "attribute": name, "expected": str(want), "read": str(got)})

    for index in range(seed, seed + n):
        scene = heldout_scene(index, style_rate)
        video = render(scene, frames)
        if noise > 0 or blur > 0:
            video = degrade(video, noise, blur, seed=index)
        reading = read_frames(video)
        tally("style", scene.style, reading.style, index)
        if scene.style == "sketch":
            tally("kinds (sketch)", tuple(sorted(s.kind for s in scene.shapes)), reading.kinds, index)
            continue
        shapes = reading.shapes or {}
        tally("background", scene.background, reading.background, index)
        tally("colours", sorted(s.colour for s in scene.shapes), sorted(shapes), index)
        tally("camera", scene.pan != (0.0, 0.0), reading.camera, index)
        for shape in scene.shapes:
            tally("shape kind", shape.kind, shapes.get(shape.colour), index)
    return {
        **sample_settings(n, seed, frames, noise, blur),
        "accuracy": {k: {"correct": c, "total": t, "accuracy": round(c / t, 4)} for k, (c, t) in tallies.items()},
        "confusions": {k: dict(v) for k, v in confusions.items()},
        "failures": failures,
    }


def wrong_edit(triplet: Triplet, how: str) -> Scene:
    """A wrongly edited scene for the triplet, to check that a judge refuses it; `how` is one of WRONG_EDITS.

    identity: the input unchanged; wrong value: the edit's kind with another value than the caption says;
    moved: the right edit, but the edited (or first) shape starts 8 px away; extra change: the right edit and
    another attribute changed too (the background, or for a background edit the first shape's colour).
    """
    scene, edit, edited = triplet.scene, triplet.edit, triplet.edited
    if how == "identity":
        return scene
    if how == "wrong value":
        pools = {
            "colour": [c for c in COLOUR_NAMES if c not in {s.colour for s in scene.shapes}],
            "shape": [k for k in SHAPES if k not in {s.kind for s in scene.shapes}],
            "background": [b for b in BACKGROUND_NAMES if b != scene.background],
            "style": list(STYLES),
        }
        return apply_edit(scene, dataclasses.replace(edit, value=next(v for v in pools[edit.kind] if v != edit.value)))
    shapes = list(edited.shapes)
    if how == "moved":
        i = edit.target or 0
        shapes[i] = dataclasses.replace(shapes[i], x=shapes[i].x + (8 if shapes[i].x < 32 else -8))
        return dataclasses.replace(edited, shapes=tuple(shapes))
    if how == "extra change":
        if edit.kind != "background":
            return dataclasses.replace(edited, background=next(b for b in BACKGROUND_NAMES if b != scene.background))
        colour = next(c for c in COLOUR_NAMES if c not in {s.colour for s in shapes})
        shapes[0] = dataclasses.replace(shapes[0], colour=colour)
        return dataclasses.replace(edited, shapes=tuple(shapes))
    raise ValueError(f"`how` must be one of {WRONG_EDITS}, got {how!r}")


def measure_verdicts(n: int, seed: int = 0, frames: int = 16, noise: float = 0.0, blur: float = 0.0) -> dict:
    """How `edit_verdict` judges n held-out triplets (HELDOUT_SEEDS offsets seed..seed+n-1): exact ones accepted,
    each kind of wrong edit refused; per edit kind, with the reasons of exact triplets refused."""
    rows: dict[str, Counter] = {}
    refused_exact = []

    def count(name: str, kind: str, right: bool) -> None:
        for key in (name, f"{name} ({kind})"):
            rows.setdefault(key, Counter())["right" if right else "wrong"] += 1

    for i in range(seed, seed + n):
        triplet = sample_triplet(HELDOUT_SEEDS.start + i)

        def read(scene: Scene, salt: int, i: int = i) -> Reading:
            video = render(scene, frames)
            return read_frames(degrade(video, noise, blur, seed=7 * i + salt) if noise > 0 or blur > 0 else video)

        source = read(triplet.scene, 0)
        captions = (triplet.input_caption, triplet.edited_caption)
        verdict = judge_edit(source, read(triplet.edited, 1), *captions)
        count("exact accepted", triplet.edit.kind, verdict.ok)
        if not verdict.ok:
            refused_exact.append({"index": i, "kind": triplet.edit.kind, "reason": verdict.reason})
        for salt, how in enumerate(WRONG_EDITS, start=2):
            wrong = source if how == "identity" else read(wrong_edit(triplet, how), salt)
            count(f"{how} refused", triplet.edit.kind, not judge_edit(source, wrong, *captions).ok)
    return {
        **sample_settings(n, seed, frames, noise, blur),
        "rates": {
            k: {"right": v["right"], "total": v.total(), "rate": round(v["right"] / v.total(), 4)}
            for k, v in sorted(rows.items())
        },
        "exact refused": refused_exact,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Measure the toy-world attribute reader on held-out scenes (or edit triplets)."
    )
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--noise", type=float, default=0.0)
    parser.add_argument("--blur", type=float, default=0.0)
    parser.add_argument("--verdicts", action="store_true", help="judge held-out edit triplets instead")
    args = parser.parse_args()
    measure = measure_verdicts if args.verdicts else measure_accuracy
    print(json.dumps(measure(args.n, args.seed, args.frames, args.noise, args.blur), indent=1))


if __name__ == "__main__":
    main()
