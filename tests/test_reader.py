"""The toy-world attribute reader against the world's exact labels: accuracy on held-out renders (clean and
degraded), caption parsing, styles, and edit verdicts on exact, unedited and wrongly edited triplets."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest

from insv2v.toyworld.reader import (
    WRONG_EDITS,
    Reading,
    agrees,
    attributes,
    degrade,
    edit_verdict,
    judge_edit,
    kind_scores,
    measure_accuracy,
    read_caption,
    read_frames,
    shows_caption,
    wrong_edit,
)
from insv2v.toyworld.world import (
    HELDOUT_SEEDS,
    SHAPE_COLOURS,
    SHAPES,
    STYLES,
    TRAIN_SEEDS,
    Scene,
    Shape,
    caption,
    random_scene,
    render,
    sample_triplet,
    shape_masks,
)

FRAMES = 8  # enough frames for the votes, half the time of 16


def _scene(**changes) -> Scene:
    """A still two-shape scene on a beach, apart from `changes`."""
    shapes = (Shape("circle", "red", 9.0, 20.0, 20.0, 0.5, 0.3), Shape("square", "blue", 8.0, 44.0, 40.0, -0.4, 0.2))
    return dataclasses.replace(Scene(shapes, "beach", texture_seed=3), **changes)


def _accuracy(result: dict) -> dict[str, float]:
    return {name: row["accuracy"] for name, row in result["accuracy"].items()}


def test_reads_clean_heldout_renders():
    # measured on 200 held-out scenes (172 plain or negative with 251 shapes, 28 sketches): 16 frames, 100% on
    # every attribute; 8 frames, 100% but colours 171/172, shape kind 249/251 and sketch kinds 27/28 (small
    # shapes hidden behind another in most of the 8 frames). Here 60 scenes, 8 frames.
    accuracy = _accuracy(measure_accuracy(60, seed=0, frames=FRAMES))
    for name in ("style", "background", "colours", "camera", "shape kind"):
        assert accuracy[name] >= 0.98, (name, accuracy)
    assert accuracy["kinds (sketch)"] >= 0.75, accuracy


def test_reads_degraded_renders():
    # measured with noise sigma 10 and blur sigma 0.7 on 200 held-out scenes: 100% on every attribute with 16
    # frames, as clean with 8; with noise 20 and blur 1.0 (16 frames) >= 98.8% (camera 170/172, colours
    # 171/172, shape kind 250/251). Here 40 other scenes, 8 frames.
    result = measure_accuracy(40, seed=1000, frames=FRAMES, noise=10.0, blur=0.7)
    accuracy = _accuracy(result)
    for name in ("style", "background", "colours", "camera", "shape kind"):
        assert accuracy[name] >= 0.95, (name, accuracy, result["failures"])


def test_read_caption_round_trips_random_scenes():
    rng = np.random.default_rng(0)
    for _ in range(200):
        scene = random_scene(rng)
        if rng.random() < 0.3:
            scene = dataclasses.replace(scene, style=str(rng.choice(STYLES)))
        reading = read_caption(caption(scene))
        shapes = {s.colour: s.kind for s in scene.shapes}
        assert reading == Reading(
            scene.background, scene.style, shapes, tuple(sorted(shapes.values())), scene.pan != (0.0, 0.0)
        )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a red circle moving right",
        "a red blob moving right on a beach",
        "a red circle on the moon",
        "an red circle bouncing on a beach",
        "a red circle bouncing and a red square bouncing on a beach",
    ],
)
def test_read_caption_refuses_what_is_not_a_toy_caption(text):
    with pytest.raises(ValueError, match="not a toy caption"):
        read_caption(text)


def test_reads_a_negative_as_the_scene_it_inverts():
    plain, negative = read_frames(render(_scene(), FRAMES)), read_frames(render(_scene(style="negative"), FRAMES))
    assert negative.style == "negative" and plain.style is None
    assert negative.shapes == plain.shapes == {"red": "circle", "blue": "square"}
    assert negative.background == plain.background == "beach"
    assert negative.camera is plain.camera is False


def test_reads_a_sketch_by_its_outlines_only():
    reading = read_frames(render(_scene(style="sketch"), FRAMES))
    assert reading.style == "sketch"
    assert reading.background is None and reading.shapes is None  # a pencil drawing has no colours
    assert reading.kinds == ("circle", "square")
    verdict = agrees(reading, read_caption(caption(_scene(style="sketch"))))
    assert verdict["style"] and verdict["kinds"] and verdict["background"] is None and verdict["colours"] is None


def test_reads_one_frame_and_refuses_other_arrays():
    reading = read_frames(render(_scene(), 1)[0])
    assert (reading.background, reading.shapes, reading.camera) == ("beach", {"red": "circle", "blue": "square"}, None)
    with pytest.raises(ValueError, match="frames"):
        read_frames(np.zeros((4, 64, 64)))
    with pytest.raises(ValueError, match="64 x 64 frames, got 128 x 96"):
        read_frames(np.zeros((2, 96, 128, 3), np.uint8))


def test_reads_a_panning_camera():
    assert read_frames(render(_scene(pan=(0.6, -0.8)), FRAMES)).camera is True
    assert read_frames(render(_scene(), FRAMES)).camera is False


@pytest.mark.parametrize("kind", SHAPES)
def test_each_kind_fits_its_own_template_best(kind):
    shape = Shape(kind, "red", 7.5, 30.3, 33.7, 0.0, 0.0)
    blob = shape_masks(Scene((shape,), "beach", 0), 1)[0, 0] > 0.5
    scores = kind_scores(blob)
    assert max(scores, key=scores.get) == kind and scores[kind] > 0.9, scores


def test_shows_caption_per_attribute():
    frames = render(_scene(), FRAMES)
    assert all(shows_caption(frames, caption(_scene())).values())
    wrong = shows_caption(frames, caption(_scene(background="desert")))
    assert wrong["background"] is False and wrong["colours"] and wrong["shapes"] and wrong["style"]
    fewer = shows_caption(frames, caption(_scene(shapes=_scene().shapes[:1])))  # the video shows one shape more
    assert fewer["colours"] is False and fewer["shapes"] is True


def test_attributes_make_a_colour_edit_two_changes():
    before = attributes(read_caption("a red circle bouncing on a beach"))
    after = attributes(read_caption("a green circle bouncing on a beach"))
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"shape:red", "shape:green"}
    assert len([k for k in before if k.startswith("shape:")]) == len(SHAPE_COLOURS)


def test_edit_verdict_on_heldout_triplets():
    # measured on 200 held-out triplets (16 frames): exact ones accepted 200/200 (197/200 with noise 10 and blur
    # 0.7); unedited, wrongly valued and displaced ones refused 200/200; over-edited ones 194/200 (the 6 are
    # sketch edits that also change the background, which a sketch does not show). Here 24 triplets, 8 frames.
    n, accepted, refused = 24, 0, Counter()
    for i in range(n):
        triplet = sample_triplet(HELDOUT_SEEDS.start + i)
        source = read_frames(render(triplet.scene, FRAMES))
        captions = (triplet.input_caption, triplet.edited_caption)
        verdict = judge_edit(source, read_frames(render(triplet.edited, FRAMES)), *captions)
        accepted += verdict.ok and verdict.faithful
        how = WRONG_EDITS[i % len(WRONG_EDITS)]
        wrong = source if how == "identity" else read_frames(render(wrong_edit(triplet, how), FRAMES))
        refused[how] += not judge_edit(source, wrong, *captions).ok
    assert accepted == n
    assert refused == dict.fromkeys(WRONG_EDITS, n // len(WRONG_EDITS))


def test_edit_verdict_says_why():
    triplet = sample_triplet(TRAIN_SEEDS.start + 4, kind="colour")
    source, target = triplet.render(FRAMES)
    assert edit_verdict(source, target, triplet.input_caption, triplet.edited_caption).ok
    verdict = edit_verdict(source, source, triplet.input_caption, triplet.edited_caption)
    assert not verdict.ok and f"shape:{triplet.edit.value}" in verdict.reason
    same = edit_verdict(source, target, triplet.input_caption, triplet.input_caption)
    assert not same.ok and "no edit" in same.reason
    extra = render(wrong_edit(triplet, "extra change"), FRAMES)
    verdict = edit_verdict(source, extra, triplet.input_caption, triplet.edited_caption)
    assert not verdict.ok and "background: changed from" in verdict.reason and "keeps it" in verdict.reason
    moved = render(wrong_edit(triplet, "moved"), FRAMES)
    verdict = edit_verdict(source, moved, triplet.input_caption, triplet.edited_caption)
    assert not verdict.ok and verdict.reason.startswith(f"place:{triplet.edit.value}: ")


def test_a_kept_shape_gone_from_most_frames_of_the_edit_is_refused():
    """Seen in 3 of 8 frames it is still 'present' (PRESENT_SHARE); its place is judged over the frames the input shows
    it in, so losing it in most of them fails, where the drift over the 3 frames left passed before."""

    def kept_in_view(t) -> bool:  # a colour edit of one of two shapes, the other seen in every frame
        if not (t.edit.kind == "colour" and len(t.scene.shapes) == 2 and t.scene.style is None):
            return False
        track = read_frames(render(t.scene, FRAMES)).tracks.get(t.scene.shapes[1 - t.edit.target].colour)
        return track is not None and not np.isnan(track).any()

    triplet = next(filter(kept_in_view, map(sample_triplet, range(HELDOUT_SEEDS.start, HELDOUT_SEEDS.start + 200))))
    kept = 1 - triplet.edit.target
    source, target = triplet.render(FRAMES)
    without = dataclasses.replace(triplet.edited, shapes=(triplet.edited.shapes[triplet.edit.target],))
    flickering = np.concatenate([target[:3], render(without, FRAMES)[3:]])
    captions = triplet.input_caption, triplet.edited_caption
    assert edit_verdict(source, target, *captions).ok
    verdict = edit_verdict(source, flickering, *captions)
    assert not verdict.ok
    assert f"place:{triplet.scene.shapes[kept].colour}: gone from most frames the input shows it in" in verdict.reason


def test_an_edit_that_turns_the_camera_is_refused():
    """'Panning' in both videos is not enough: the edit must pan the way the input does."""
    triplet = next(t for t in map(sample_triplet, range(HELDOUT_SEEDS.start, HELDOUT_SEEDS.start + 200))
                   if t.edit.kind == "colour" and t.scene.pan != (0.0, 0.0) and t.scene.style is None)  # fmt: skip
    source, target = triplet.render(FRAMES)
    captions = triplet.input_caption, triplet.edited_caption
    assert edit_verdict(source, target, *captions).ok
    back = dataclasses.replace(triplet.edited, pan=tuple(-v for v in triplet.edited.pan))
    verdict = edit_verdict(source, render(back, FRAMES), *captions)
    assert not verdict.ok and verdict.reason.startswith("camera: pans (") and "but the edit keeps it" in verdict.reason


def test_a_sketch_edit_checks_what_a_sketch_shows():
    scene, sketch = _scene(), _scene(style="sketch")
    verdict = edit_verdict(render(scene, FRAMES), render(sketch, FRAMES), caption(scene), caption(sketch))
    assert verdict.ok and verdict.changed == ("style",)
    assert "background" in verdict.unchecked and "kinds" not in verdict.unchecked
    redrawn = _scene(style="sketch", shapes=(dataclasses.replace(scene.shapes[0], kind="triangle"), scene.shapes[1]))
    wrong = edit_verdict(render(scene, FRAMES), render(redrawn, FRAMES), caption(scene), caption(sketch))
    assert not wrong.ok and "kinds" in wrong.reason


def test_degrade_keeps_shape_and_type():
    frames = render(_scene(), 2)
    out = degrade(frames, noise=10.0, blur=0.7, seed=1)
    assert out.shape == frames.shape and out.dtype == np.uint8 and not np.array_equal(out, frames)
