"""A procedural world of moving shapes where every edit has an exact, re-rendered ground truth.

A `Scene` is a few shapes in named colours moving (straight or bouncing) over a named, textured background,
seen by a camera that may pan. `render` draws it; an `Edit` changes the scene (a shape's colour or type, the
background, or the style) and the edited video is the same scene, re-rendered — pixel-exact ground truth.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import numpy as np

SIZE = 64  # pixels, square frames

# Named colours (RGB 0-255): shapes and backgrounds use disjoint names so captions are unambiguous.
SHAPE_COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (245, 215, 40),
    "purple": (150, 60, 200),
    "orange": (250, 140, 20),
    "white": (250, 250, 250),
}
BACKGROUNDS = {  # base colour and texture colour: the texture makes camera motion visible
    "beach": ((225, 205, 150), (205, 180, 120)),
    "forest": ((30, 90, 40), (55, 120, 55)),
    "ocean": ((30, 110, 170), (60, 140, 200)),
    "night": ((15, 20, 50), (40, 45, 90)),
    "desert": ((200, 120, 60), (175, 95, 45)),
    "meadow": ((120, 190, 90), (95, 165, 70)),
}
SHAPES = ("circle", "square", "triangle", "cross")
STYLES = ("sketch", "negative")
MOTIONS = ("linear", "bouncing")
EDIT_MIX = {"colour": 0.3, "background": 0.3, "shape": 0.3, "style": 0.1}  # how often each kind of edit is drawn
LINEAR_HORIZON = 32  # frames a straight-moving shape is guaranteed to stay in view


@dataclass(frozen=True)
class Shape:
    kind: str  # one of SHAPES
    colour: str  # one of SHAPE_COLOURS
    radius: float  # pixels, half the extent
    x: float  # world position of the centre at frame 0
    y: float
    vx: float  # pixels per frame
    vy: float
    motion: str = "linear"  # "bouncing" reflects at the frame's edges


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    background: str  # one of BACKGROUNDS
    texture_seed: int
    pan: tuple[float, float] = (0.0, 0.0)  # camera velocity, pixels per frame
    style: str | None = None  # None or one of STYLES


@dataclass(frozen=True)
class Edit:
    kind: str  # "colour", "background", "shape" or "style"
    target: int | None  # index of the shape edited (colour, shape edits)
    value: str  # new colour / background / shape kind / style
    instruction: str


# ---------------------------------------------------------------- rendering


def _texture(seed: int, size: int) -> np.ndarray:
    """A tileable blobby texture in [0, 1], (size, size): low-frequency sinusoids with random phases."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] * (2 * np.pi / size)
    t = np.zeros((size, size))
    for _ in range(4):
        fx, fy = rng.integers(1, 5, size=2)
        t += np.sin(fx * xs + fy * ys + rng.uniform(0, 2 * np.pi))
    return (t - t.min()) / (t.max() - t.min())


def _signed_distance(kind: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (pixels, negative inside) from offsets (dx, dy) to a shape of half-extent r."""
    if kind == "circle":
        return np.hypot(dx, dy) - r
    if kind == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - r * 0.85
    if kind == "triangle":  # apex at the bottom of the frame (image rows grow downwards)
        return np.maximum(np.abs(dx) * 0.866 + dy * 0.5, -dy) - r * 0.5
    if kind == "cross":
        arm = r * 0.35
        return np.minimum(np.maximum(np.abs(dx) - r, np.abs(dy) - arm), np.maximum(np.abs(dx) - arm, np.abs(dy) - r))
    raise ValueError(f"unknown shape {kind!r}")


def _bounce(p: np.ndarray, low: float, high: float) -> np.ndarray:
    """Fold positions into [low, high] as a ball bouncing between two walls."""
    span = high - low
    q = np.mod(p - low, 2 * span)
    return low + np.where(q > span, 2 * span - q, q)


def shape_centres(shape: Shape, num_frames: int, first: int = 0) -> np.ndarray:
    """Screen positions (f, 2) of a shape's centre in frames first..first+f-1.

    Shapes move on screen; a camera pan scrolls the background behind them.
    """
    t = np.arange(first, first + num_frames)
    x, y = shape.x + shape.vx * t, shape.y + shape.vy * t
    if shape.motion == "bouncing":
        x = _bounce(x, shape.radius, SIZE - shape.radius)
        y = _bounce(y, shape.radius, SIZE - shape.radius)
    return np.stack([x, y], axis=1)


def shape_masks(scene: Scene, num_frames: int, first: int = 0) -> np.ndarray:
    """Coverage of each shape (n_shapes, f, h, w) in [0, 1], anti-aliased over one pixel, later shapes on top."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    masks = np.zeros((len(scene.shapes), num_frames, SIZE, SIZE), np.float32)
    for i, shape in enumerate(scene.shapes):
        centres = shape_centres(shape, num_frames, first)
        for f, (cx, cy) in enumerate(centres):
            sd = _signed_distance(shape.kind, xs - cx, ys - cy, shape.radius)
            masks[i, f] = np.clip(0.5 - sd, 0, 1)
    for i in range(len(scene.shapes) - 1):  # occlusion: what is in front hides what is behind
        masks[i] *= 1 - masks[i + 1 :].max(axis=0)
    return masks


def render(scene: Scene, num_frames: int, first: int = 0) -> np.ndarray:
    """Frames first..first+f-1 of the scene's video, (f, h, w, 3) uint8."""
    base, accent = (np.array(c, np.float32) for c in BACKGROUNDS[scene.background])
    tex = _texture(scene.texture_seed, 2 * SIZE)
    t = np.arange(first, first + num_frames)
    ox = np.round(scene.pan[0] * t).astype(int)  # camera offset into the tiled texture
    oy = np.round(scene.pan[1] * t).astype(int)
    rows = (np.arange(SIZE)[None, :] + oy[:, None]) % (2 * SIZE)  # (f, h)
    cols = (np.arange(SIZE)[None, :] + ox[:, None]) % (2 * SIZE)  # (f, w)
    weight = tex[rows[:, :, None], cols[:, None, :]][..., None]  # (f, h, w, 1)
    video = base + (accent - base) * (weight > 0.5)  # two-tone blobs
    masks = shape_masks(scene, num_frames, first)
    for shape, mask in zip(scene.shapes, masks, strict=True):
        colour = np.array(SHAPE_COLOURS[shape.colour], np.float32)
        video = video * (1 - mask[..., None]) + colour * mask[..., None]
    if scene.style == "sketch":
        video = _sketch(video, masks)
    video = np.clip(np.round(video), 0, 255).astype(np.uint8)
    return 255 - video if scene.style == "negative" else video  # exactly the photo negative


def _sketch(video: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Pencil drawing: paper white, shapes as dark outlines, background texture as faint grey."""
    gray = video.mean(axis=-1, keepdims=True)
    paper = 235 + 0.08 * (gray - gray.mean(axis=(1, 2, 3), keepdims=True))  # per frame: chunks render alike
    covered = masks.max(axis=0)  # (f, h, w)
    edge = np.zeros_like(covered)
    edge[:, 1:-1, 1:-1] = np.maximum(
        np.abs(covered[:, 2:, 1:-1] - covered[:, :-2, 1:-1]), np.abs(covered[:, 1:-1, 2:] - covered[:, 1:-1, :-2])
    )
    ink = np.clip(edge * 1.5, 0, 1)[..., None]
    return np.repeat(paper * (1 - ink) + 40 * ink, 3, axis=-1)


# ---------------------------------------------------------------- captions


def _motion_words(shape: Shape) -> str:
    if shape.motion == "bouncing":
        return "bouncing"
    horizontal = "right" if shape.vx > 0 else "left"
    vertical = "down" if shape.vy > 0 else "up"
    return "moving " + (horizontal if abs(shape.vx) >= abs(shape.vy) else vertical)


def article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def caption(scene: Scene) -> str:
    """'a red circle moving right and a blue square bouncing on a beach, camera panning' (+ style)."""
    things = " and ".join(f"{article(s.colour)} {s.kind} {_motion_words(s)}" for s in scene.shapes)
    text = f"{things} on {article(scene.background)}"
    if scene.pan != (0.0, 0.0):
        text += ", camera panning"
    if scene.style == "sketch":
        text = "a pencil sketch of " + text
    elif scene.style == "negative":
        text = "a photo negative of " + text
    return text


PHRASINGS = {
    "colour": (
        "make the {kind} {value}",
        "turn the {old} {kind} {value}",
        "paint the {kind} {value}",
        "change the colour of the {kind} to {value}",
    ),
    "background": (
        "make the background {a_value}",
        "put it on {a_value}",
        "change the scene to {a_value}",
        "replace the {old} with {a_value}",
    ),
    "shape": (
        "turn the {kind} into {a_value}",
        "replace the {kind} with {a_value}",
        "make the {kind} {a_value}",
        "change the {old} {kind} to {a_value}",
    ),
    "style": {
        "sketch": ("make it a pencil sketch", "turn it into a drawing", "make it look hand-drawn"),
        "negative": ("make it a photo negative", "invert the colours", "make it look like a negative"),
    },
}


def apply_edit(scene: Scene, edit: Edit) -> Scene:
    """The edited scene: everything else (motion, camera, texture) unchanged."""
    if edit.kind == "background":
        return dataclasses.replace(scene, background=edit.value)
    if edit.kind == "style":
        return dataclasses.replace(scene, style=edit.value)
    shapes = list(scene.shapes)
    field_name = {"colour": "colour", "shape": "kind"}[edit.kind]
    shapes[edit.target] = dataclasses.replace(shapes[edit.target], **{field_name: edit.value})
    return dataclasses.replace(scene, shapes=tuple(shapes))


def _phrasing_pattern(template: str, values: tuple[str, ...]) -> re.Pattern:
    """A PHRASINGS template as a regex with named groups: kind, old (a colour or background), value."""
    olds = tuple(SHAPE_COLOURS) + tuple(BACKGROUNDS)
    groups = {
        "kind": rf"(?P<kind>{'|'.join(SHAPES)})",
        "old": rf"(?P<old>{'|'.join(olds)})",
        "value": rf"(?P<value>{'|'.join(values)})",
        "a_value": rf"an? (?P<value>{'|'.join(values)})",
    }
    parts = re.split(r"\{(\w+)\}", template)  # literal, name, literal, name, ...
    body = "".join(re.escape(part) if i % 2 == 0 else groups[part] for i, part in enumerate(parts))
    return re.compile(rf"\s*{body}\s*\.?\s*", re.IGNORECASE)


def parse_instruction(instruction: str) -> dict[str, str] | None:
    """The toy grammar's reading of an instruction: {"kind": edit kind, "value", and "shape"/"old" where it names
    them}, or None when no phrasing of PHRASINGS says it."""
    for value, phrases in PHRASINGS["style"].items():
        if instruction.strip().rstrip(".").lower() in phrases:
            return {"kind": "style", "value": value}
    values = {"colour": tuple(SHAPE_COLOURS), "background": tuple(BACKGROUNDS), "shape": SHAPES}
    for kind, templates in PHRASINGS.items():
        for template in templates if kind != "style" else ():
            match = _phrasing_pattern(template, values[kind]).fullmatch(instruction)
            if match:
                found = {k: v.lower() for k, v in match.groupdict().items() if v}
                shape = found.pop("kind", None)
                return {"kind": kind, **found, **({"shape": shape} if shape else {})}
    return None


STYLE_PREFIXES = {"sketch": "a pencil sketch of ", "negative": "a photo negative of "}


def edit_caption(text: str, instruction: str) -> str | None:
    """The caption `caption` would give the edited scene, from the input's caption and the instruction, by the toy
    grammar: exact for the world's own captions and phrasings; None when the instruction is not in the grammar or
    names what the caption does not have."""
    edit = parse_instruction(instruction)
    if edit is None:
        return None
    kind, value = edit["kind"], edit["value"]
    if kind == "style":
        for prefix in STYLE_PREFIXES.values():
            text = text.removeprefix(prefix)
        return STYLE_PREFIXES[value] + text
    if kind == "background":
        found = re.findall(rf"\bon an? ({edit.get('old', '|'.join(BACKGROUNDS))})\b", text)
        if len(found) != 1 or found[0] == value:
            return None
        return re.sub(rf"\bon an? {found[0]}\b", f"on {article(value)}", text)
    colours = "|".join(SHAPE_COLOURS)
    old = edit.get("old", colours)
    found = re.findall(rf"\b(?:an?) ({old}) ({edit['shape']})\b", text)
    if len(found) != 1:
        return None
    colour, shape = found[0]
    after = f"{article(value)} {shape}" if kind == "colour" else f"{article(colour)} {value}"
    taken = rf"\b{value} ({'|'.join(SHAPES)})\b" if kind == "colour" else rf"\b({colours}) {value}\b"
    if after == f"{article(colour)} {shape}" or re.search(taken, text):
        return None  # no change, or the value is already another shape's (colours and kinds name shapes)
    return re.sub(rf"\ban? {colour} {shape}\b", after, text)


def undo_instruction(input_caption: str, instruction: str, output_caption: str, phrasing: int = 0) -> str | None:
    """The toy grammar's instruction that edits `output_caption` back into `input_caption` (its `phrasing`-th
    phrasing, cyclically), checked by `edit_caption`; None where the grammar cannot say it: an instruction it does not
    read, a style edit (no phrasing removes a style), or captions that do not differ as the instruction says."""
    edit = parse_instruction(instruction)
    if edit is None or edit["kind"] == "style":
        return None
    kind, new = edit["kind"], edit["value"]
    words = {"colour": SHAPE_COLOURS, "background": BACKGROUNDS, "shape": SHAPES}[kind]
    before, after = (set(re.findall(r"\w+", caption)) for caption in (input_caption, output_caption))
    gone = [word for word in before - after if word in words]
    if len(gone) != 1:
        return None
    old = gone[0]
    templates = PHRASINGS[kind]
    template = templates[phrasing % len(templates)]
    if kind == "background":
        undo = template.format(a_value=article(old), old=new)
    elif kind == "colour":
        undo = template.format(kind=edit["shape"], value=old, old=new)
    else:  # the phrasing "change the {old} {kind} to ..." names the shape's colour: the output caption's
        colour = re.search(rf"\b({'|'.join(SHAPE_COLOURS)}) {new}\b", output_caption)
        if colour is None:
            return None
        undo = template.format(kind=new, a_value=article(old), old=colour[1])
    return undo if edit_caption(output_caption, undo) == input_caption else None


# ---------------------------------------------------------------- sampling


@dataclass(frozen=True)
class Triplet:
    """A sample: the input scene, the instruction, the edited scene, and the captions of both."""

    scene: Scene
    edit: Edit
    edited: Scene
    input_caption: str = field(default="")
    edited_caption: str = field(default="")

    def render(self, num_frames: int, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
        return render(self.scene, num_frames, first), render(self.edited, num_frames, first)


def random_scene(rng: np.random.Generator, camera_motion: float = 0.5) -> Scene:
    """One or two shapes of different kinds and colours; with probability `camera_motion` the camera pans."""
    n = rng.integers(1, 3)
    kinds = rng.choice(SHAPES, size=n, replace=False)
    colours = rng.choice(list(SHAPE_COLOURS), size=n, replace=False)
    shapes = []
    for kind, colour in zip(kinds, colours, strict=True):
        radius = float(rng.uniform(7, 11))
        motion = str(rng.choice(MOTIONS))
        speed = float(rng.uniform(0.5, 2.0) if motion == "bouncing" else rng.uniform(0.3, 0.9))
        angle = float(rng.uniform(0, 2 * np.pi))
        vx, vy = speed * np.cos(angle), speed * np.sin(angle)
        travel = 0.0 if motion == "bouncing" else LINEAR_HORIZON - 1  # a straight mover stays in frame this long
        x = rng.uniform(radius - min(0.0, vx * travel), SIZE - radius - max(0.0, vx * travel))
        y = rng.uniform(radius - min(0.0, vy * travel), SIZE - radius - max(0.0, vy * travel))
        shapes.append(Shape(str(kind), str(colour), radius, float(x), float(y), float(vx), float(vy), motion))
    pan = (0.0, 0.0)
    if rng.random() < camera_motion:
        angle = float(rng.uniform(0, 2 * np.pi))
        pan = (float(np.cos(angle)), float(np.sin(angle)))
    return Scene(
        shapes=tuple(shapes),
        background=str(rng.choice(list(BACKGROUNDS))),
        texture_seed=int(rng.integers(2**31)),
        pan=pan,
    )


def random_edit(rng: np.random.Generator, scene: Scene, kind: str | None = None) -> Edit:
    """An edit of `kind` (random if None) with one of its phrasings."""
    kind = kind or str(rng.choice(list(EDIT_MIX), p=list(EDIT_MIX.values())))
    if kind == "background":
        old = scene.background
        value = str(rng.choice([b for b in BACKGROUNDS if b != old]))
        template = str(rng.choice(PHRASINGS["background"]))
        return Edit(kind, None, value, template.format(a_value=article(value), old=old))
    if kind == "style":
        value = str(rng.choice(STYLES))
        return Edit(kind, None, value, str(rng.choice(PHRASINGS["style"][value])))
    target = int(rng.integers(len(scene.shapes)))
    shape = scene.shapes[target]
    taken = {s.colour if kind == "colour" else s.kind for s in scene.shapes}
    choices = [c for c in (SHAPE_COLOURS if kind == "colour" else SHAPES) if c not in taken]
    value = str(rng.choice(choices))
    template = str(rng.choice(PHRASINGS[kind]))
    return Edit(
        kind, target, value, template.format(kind=shape.kind, old=shape.colour, value=value, a_value=article(value))
    )


def sample_triplet(seed: int, kind: str | None = None) -> Triplet:
    """The triplet with this seed: deterministic, so a split is just a range of seeds."""
    rng = np.random.default_rng(seed)
    scene = random_scene(rng)
    edit = random_edit(rng, scene, kind)
    edited = apply_edit(scene, edit)
    return Triplet(scene, edit, edited, caption(scene), caption(edited))


# Splits are disjoint seed ranges: training draws from TRAIN_SEEDS, evaluation from HELDOUT_SEEDS.
TRAIN_SEEDS = range(10**9)
HELDOUT_SEEDS = range(10**9, 10**9 + 10**6)
SPLITS = {"train": TRAIN_SEEDS, "heldout": HELDOUT_SEEDS}


def split_range(split: str) -> range:
    """The seeds of a split, "train" or "heldout"."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return SPLITS[split]
