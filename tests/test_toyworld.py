"""The toy world against ground truth written in the tests: rendering, edits, captions, splits and the autoencoder."""

import dataclasses

import numpy as np
import pytest
import torch

from insv2v.models.autoencoder import PixelUnshuffleAutoencoder
from insv2v.toyworld import world as W
from insv2v.toyworld.world import (
    BACKGROUNDS,
    HELDOUT_SEEDS,
    LINEAR_HORIZON,
    SHAPE_COLOURS,
    SIZE,
    TRAIN_SEEDS,
    Scene,
    Shape,
    apply_edit,
    article,
    caption,
    render,
    sample_triplet,
    shape_centres,
    shape_masks,
)

FRAMES = 4
SEEDS = range(12)  # enough to cover one- and two-shape scenes, both motions, still and panning cameras
EDIT_KINDS = ("colour", "background", "shape", "style")


def _colour_pixels(frames: np.ndarray, where: np.ndarray) -> np.ndarray:
    """The RGB values (n, 3) of `frames` (f, h, w, 3) at a boolean (f, h, w) selection, as ints."""
    return frames[where].astype(int)


def _background_tones(name: str) -> np.ndarray:
    return np.array(BACKGROUNDS[name])  # (2, 3): base and texture colour


def _is_one_of(pixels: np.ndarray, tones: np.ndarray) -> np.ndarray:
    """(n,) True where an (n, 3) pixel equals one of the (k, 3) tones exactly."""
    return (pixels[:, None, :] == tones[None]).all(-1).any(-1)


def _scene(*shapes: Shape, background: str = "ocean", pan=(0.0, 0.0), style=None) -> Scene:
    return Scene(shapes=tuple(shapes), background=background, texture_seed=7, pan=pan, style=style)


# ---------------------------------------------------------------------------------------------- render


@pytest.mark.parametrize("seed", [0, 3])
def test_render_shape_and_dtype(seed):
    video = render(sample_triplet(seed).scene, FRAMES)
    assert video.shape == (FRAMES, SIZE, SIZE, 3) == (FRAMES, 64, 64, 3)
    assert video.dtype == np.uint8
    assert render(sample_triplet(seed).scene, 3, first=5).shape == (3, 64, 64, 3)


def test_same_seed_same_triplet_and_pixels():
    a, b = sample_triplet(1234), sample_triplet(1234)
    assert a == b
    for x, y in zip(a.render(FRAMES), b.render(FRAMES), strict=True):
        np.testing.assert_array_equal(x, y)
    assert sample_triplet(1235) != a  # the seed matters


@pytest.mark.parametrize("seed", [0, 5])
@pytest.mark.parametrize("style", [None, "negative"])
def test_render_window_equals_slice_of_longer_render(seed, style):
    scene = dataclasses.replace(sample_triplet(seed).scene, style=style)
    long = render(scene, 12)
    for first in (0, 3, 8):
        np.testing.assert_array_equal(render(scene, 4, first=first), long[first : first + 4])
    np.testing.assert_array_equal(shape_masks(scene, 4, first=5), shape_masks(scene, 12)[:, 5:9])


def test_sketch_window_equals_slice_of_longer_render():
    scene = _scene(Shape("circle", "white", 11.0, 32.0, 32.0, 3.0, 0.0), background="night", style="sketch")
    np.testing.assert_array_equal(render(scene, 1, first=30)[0], render(scene, 31)[30])


@pytest.mark.parametrize("seed", SEEDS)
def test_shape_cores_have_their_colour_and_background_its_two_tones(seed):
    scene = sample_triplet(seed).scene
    video, masks = render(scene, FRAMES), shape_masks(scene, FRAMES)  # (f, h, w, 3), (n, f, h, w)
    for shape, mask in zip(scene.shapes, masks, strict=True):
        colour = np.array(SHAPE_COLOURS[shape.colour])
        full = mask == 1.0
        assert full.any()
        assert (_colour_pixels(video, full) == colour).all()  # fully covered: exactly the named colour
        # Almost fully covered: within the 1% blend with whatever lies behind.
        assert np.abs(_colour_pixels(video, mask > 0.99) - colour).max() <= 3
    front = scene.shapes[-1]  # never occluded: the pixel under its centre is its colour
    for f, (cx, cy) in enumerate(shape_centres(front, FRAMES)):
        assert masks[-1, f, int(cy), int(cx)] == 1.0
        np.testing.assert_array_equal(video[f, int(cy), int(cx)], SHAPE_COLOURS[front.colour])
    background = (masks == 0).all(axis=0)  # (f, h, w)
    pixels = _colour_pixels(video, background)
    assert _is_one_of(pixels, _background_tones(scene.background)).all()
    # Both tones occur: the texture is really there (it is what makes camera motion visible).
    for tone in _background_tones(scene.background):
        assert (pixels == tone).all(-1).any()


@pytest.mark.parametrize("seed", SEEDS)
def test_shape_masks_are_coverages(seed):
    masks = shape_masks(sample_triplet(seed).scene, FRAMES)
    assert masks.dtype == np.float32 and masks.shape[1:] == (FRAMES, SIZE, SIZE)
    assert masks.min() >= 0 and masks.max() <= 1
    assert masks.sum(axis=0).max() <= 1 + 1e-6  # occlusion: coverages of all shapes add up to at most one pixel


def test_later_shape_is_in_front():
    back = Shape("square", "red", 10.0, 30.0, 30.0, 0.0, 0.0)
    front = Shape("circle", "blue", 6.0, 30.0, 30.0, 0.0, 0.0)
    video = render(_scene(back, front), 1)
    np.testing.assert_array_equal(video[0, 30, 30], SHAPE_COLOURS["blue"])
    np.testing.assert_array_equal(render(_scene(front, back), 1)[0, 30, 30], SHAPE_COLOURS["red"])
    assert shape_masks(_scene(back, front), 1)[0, 0, 30, 30] == 0  # hidden behind the circle


# ---------------------------------------------------------------------------------------------- motion


def _clipped_frames(shape: Shape, num_frames: int) -> list[int]:
    """Frames in which part of `shape` is cut off by the frame's edge.

    A shape wholly inside the frame covers exactly as much as the same shape standing still at the frame's centre
    with the same sub-pixel offset (the pixel grid is invariant to integer shifts); a cut-off one covers less.
    The tolerance allows the anti-aliasing fringe at a triangle's apex, which reaches up to one pixel (not half)
    beyond the radius, to be trimmed: a few hundredths of a pixel. Cutting off a one-pixel sliver costs pixels.
    """
    clipped = []
    for f, (cx, cy) in enumerate(shape_centres(shape, num_frames)):
        here = dataclasses.replace(shape, x=cx, y=cy, vx=0.0, vy=0.0, motion="linear")
        centred = dataclasses.replace(here, x=cx % 1 + SIZE // 2, y=cy % 1 + SIZE // 2)
        area = shape_masks(_scene(here), 1).sum()
        if abs(area - shape_masks(_scene(centred), 1).sum()) > 0.05:
            clipped.append(f)
    return clipped


def test_clipped_frames_detects_a_shape_crossing_the_edge():
    """The check above can fail: a circle moving left touches the edge at frame 3 and is cut off from frame 4 on."""
    shape = Shape("circle", "red", 8.0, 11.0, 32.0, -1.0, 0.0)
    assert _clipped_frames(shape, 6) == [4, 5]


def _sampled_shapes(motion: str, count: int) -> list[Shape]:
    shapes = [s for seed in range(200) for s in sample_triplet(seed).scene.shapes if s.motion == motion]
    assert len(shapes) >= count
    return shapes[:count]


def test_bouncing_shapes_stay_inside_for_64_frames():
    fast = [Shape(kind, "red", 11.0, 30.0, 20.0, 2.0, -1.7, motion="bouncing") for kind in W.SHAPES]
    for shape in _sampled_shapes("bouncing", 6) + fast:
        centres = shape_centres(shape, 64)
        assert (centres >= shape.radius - 1e-9).all() and (centres <= SIZE - shape.radius + 1e-9).all()
        assert _clipped_frames(shape, 64) == []
    # The fast ones do reach all four walls (within a frame's travel) in 64 frames: the check is not vacuous.
    centres = shape_centres(fast[0], 64)
    np.testing.assert_allclose(centres.min(0), [11.0, 11.0], atol=2.0)
    np.testing.assert_allclose(centres.max(0), [SIZE - 11.0, SIZE - 11.0], atol=2.0)


def test_bounce_reflects_at_the_wall():
    shape = Shape("circle", "red", 10.0, 50.0, 32.0, 3.0, 0.0, motion="bouncing")
    # 50, 53 -> wall at 54: 56 folds back to 52, 59 to 49.
    np.testing.assert_allclose(shape_centres(shape, 4)[:, 0], [50.0, 53.0, 52.0, 49.0])


def test_linear_shapes_stay_inside_for_the_linear_horizon():
    for shape in _sampled_shapes("linear", 8):
        assert _clipped_frames(shape, LINEAR_HORIZON) == []
        centres = shape_centres(shape, LINEAR_HORIZON)
        np.testing.assert_allclose(np.diff(centres, axis=0), [[shape.vx, shape.vy]] * (LINEAR_HORIZON - 1))


@pytest.mark.parametrize("pan", [(1.0, 0.0), (0.0, -1.0), (2.0, 1.0), (-1.0, -2.0)])
def test_camera_pan_scrolls_the_background_by_the_pan(pan):
    """Camera velocity (dx, dy): frame t+1 at p shows what frame t showed at p + (dx, dy)."""
    shape = Shape("circle", "red", 8.0, 20.0, 30.0, 1.0, 0.5)
    scene = _scene(shape, background="beach", pan=pan)
    video, masks = render(scene, FRAMES), shape_masks(scene, FRAMES)
    background = (masks == 0).all(axis=0)  # (f, h, w)
    dx, dy = int(pan[0]), int(pan[1])
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    inside = (xs + dx >= 0) & (xs + dx < SIZE) & (ys + dy >= 0) & (ys + dy < SIZE)
    ys, xs = ys[inside], xs[inside]
    for t in range(FRAMES - 1):
        both = background[t + 1][ys, xs] & background[t][ys + dy, xs + dx]
        assert both.sum() > 2000
        np.testing.assert_array_equal(video[t + 1][ys, xs][both], video[t][ys + dy, xs + dx][both])
        # Not trivially so: without the shift the texture does not line up.
        assert (video[t + 1] != video[t])[background[t] & background[t + 1]].any()


def test_still_camera_keeps_background_pixels_identical():
    scene = _scene(Shape("cross", "yellow", 9.0, 20.0, 30.0, 1.5, 0.5), background="meadow")
    video, masks = render(scene, FRAMES), shape_masks(scene, FRAMES)
    background = (masks == 0).all(axis=0)
    for t in range(FRAMES - 1):
        both = background[t] & background[t + 1]
        np.testing.assert_array_equal(video[t + 1][both], video[t][both])
    assert (video[0] != video[-1]).any()  # the shape did move


# ---------------------------------------------------------------------------------------------- edits


def _triplets(kind: str, count: int = 6):
    return [sample_triplet(seed, kind=kind) for seed in range(count)]


def test_sample_triplet_honours_kind():
    for kind in EDIT_KINDS:
        for triplet in _triplets(kind):
            assert triplet.edit.kind == kind
            assert triplet.edited == apply_edit(triplet.scene, triplet.edit)
            assert triplet.edited != triplet.scene
    # Without a kind, all four occur.
    assert {sample_triplet(seed).edit.kind for seed in range(60)} == set(EDIT_KINDS)


@pytest.mark.parametrize("triplet", _triplets("colour"), ids=lambda t: t.edit.instruction)
def test_colour_edit_changes_only_the_target_colour(triplet):
    edit = triplet.edit
    source, edited = triplet.render(FRAMES)
    masks = shape_masks(triplet.scene, FRAMES)
    np.testing.assert_array_equal(masks, shape_masks(triplet.edited, FRAMES))  # geometry untouched
    assert edit.value != triplet.scene.shapes[edit.target].colour
    others = masks[edit.target] == 0  # other shapes and background
    np.testing.assert_array_equal(edited[others], source[others])
    core = masks[edit.target] == 1
    assert core.any()
    assert (_colour_pixels(edited, core) == SHAPE_COLOURS[edit.value]).all()
    assert (_colour_pixels(source, core) == SHAPE_COLOURS[triplet.scene.shapes[edit.target].colour]).all()


@pytest.mark.parametrize("triplet", _triplets("background"), ids=lambda t: t.edit.instruction)
def test_background_edit_keeps_shapes_and_swaps_background_tones(triplet):
    source, edited = triplet.render(FRAMES)
    masks = shape_masks(triplet.scene, FRAMES)
    core = (masks == 1).any(axis=0)
    assert core.any()
    np.testing.assert_array_equal(edited[core], source[core])
    background = (masks == 0).all(axis=0)
    assert triplet.edited.background == triplet.edit.value != triplet.scene.background
    assert _is_one_of(_colour_pixels(edited, background), _background_tones(triplet.edit.value)).all()
    assert not _is_one_of(_colour_pixels(source, background), _background_tones(triplet.edit.value)).any()
    # Same texture layout: a pixel in the base tone before is in the base tone after.
    base_before = (_colour_pixels(source, background) == _background_tones(triplet.scene.background)[0]).all(-1)
    base_after = (_colour_pixels(edited, background) == _background_tones(triplet.edit.value)[0]).all(-1)
    np.testing.assert_array_equal(base_before, base_after)


@pytest.mark.parametrize("triplet", _triplets("shape"), ids=lambda t: t.edit.instruction)
def test_shape_edit_changes_the_mask_not_the_colour(triplet):
    target = triplet.edit.target
    old, new = triplet.scene.shapes[target], triplet.edited.shapes[target]
    assert new.kind == triplet.edit.value != old.kind
    assert dataclasses.replace(new, kind=old.kind) == old  # nothing else changed
    source, edited = triplet.render(FRAMES)
    before, after = shape_masks(triplet.scene, FRAMES)[target], shape_masks(triplet.edited, FRAMES)[target]
    assert (before != after).mean() > 0.01
    core = after == 1
    assert core.any()
    assert (_colour_pixels(edited, core) == SHAPE_COLOURS[old.colour]).all()
    # Where neither the old nor the new shape reaches, nothing changes.
    untouched = (before == 0) & (after == 0)
    np.testing.assert_array_equal(edited[untouched], source[untouched])


@pytest.mark.parametrize("seed", SEEDS)
def test_negative_style_inverts_up_to_rounding(seed):
    """255 - input exactly wherever a pixel is pure background or pure shape; within one level elsewhere."""
    scene = sample_triplet(seed).scene
    source = render(scene, FRAMES).astype(int)
    negative = render(dataclasses.replace(scene, style="negative"), FRAMES).astype(int)
    masks = shape_masks(scene, FRAMES)
    pure = ((masks == 0) | (masks == 1)).all(axis=0)
    np.testing.assert_array_equal(negative[pure], 255 - source[pure])
    assert np.abs(negative - (255 - source)).max() <= 1


def test_negative_style_is_exactly_255_minus_input():
    scene = sample_triplet(10).scene
    source = render(scene, 8).astype(int)
    np.testing.assert_array_equal(render(dataclasses.replace(scene, style="negative"), 8), 255 - source)


def test_style_edit_keeps_geometry():
    for triplet in _triplets("style", 8):
        assert triplet.edited == dataclasses.replace(triplet.scene, style=triplet.edit.value)
        _, edited = triplet.render(2)
        if triplet.edit.value == "sketch":  # pencil on paper: grey
            assert (edited[..., 0] == edited[..., 1]).all() and (edited[..., 1] == edited[..., 2]).all()
            assert np.median(edited) > 200


# ---------------------------------------------------------------------------------------------- captions


def test_caption_hand_written():
    scene = _scene(
        Shape("circle", "red", 8.0, 20.0, 20.0, 1.0, 0.2),
        Shape("square", "orange", 8.0, 40.0, 40.0, 0.1, -0.5),
        Shape("cross", "white", 8.0, 40.0, 40.0, 0.1, -0.5, motion="bouncing"),
        pan=(1.0, 0.0),
    )
    assert caption(scene) == (
        "a red circle moving right and an orange square moving up and a white cross bouncing on an ocean, "
        "camera panning"
    )
    still = dataclasses.replace(scene, shapes=scene.shapes[:1], pan=(0.0, 0.0), background="beach")
    assert caption(still) == "a red circle moving right on a beach"
    assert caption(dataclasses.replace(still, style="sketch")) == (
        "a pencil sketch of a red circle moving right on a beach"
    )
    assert caption(dataclasses.replace(still, style="negative")) == (
        "a photo negative of a red circle moving right on a beach"
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_caption_names_every_shape_and_the_background(seed):
    scene = sample_triplet(seed).scene
    words = caption(scene).replace(",", "").split()
    for shape in scene.shapes:
        assert shape.colour in words and shape.kind in words
    assert scene.background in words
    assert ("panning" in words) == (scene.pan != (0.0, 0.0))
    named = {w for w in words if w in SHAPE_COLOURS or w in BACKGROUNDS}
    assert named == {s.colour for s in scene.shapes} | {scene.background}


@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_instruction_and_edited_caption_name_the_change(kind):
    for t in _triplets(kind, 8):
        e, old_scene = t.edit, t.scene
        assert t.input_caption == caption(old_scene) and t.edited_caption == caption(t.edited)
        assert e.value in e.instruction.split() or kind == "style"
        if kind == "colour":
            shape = old_scene.shapes[e.target]
            before, after = f"{article(shape.colour)} {shape.kind}", f"{article(e.value)} {shape.kind}"
            assert t.input_caption.count(before) == 1
            assert t.edited_caption == t.input_caption.replace(before, after)
            assert shape.colour not in t.edited_caption.split()
        elif kind == "background":
            before, after = f"on {article(old_scene.background)}", f"on {article(e.value)}"
            assert t.edited_caption == t.input_caption.replace(before, after) != t.input_caption
        elif kind == "shape":
            shape = old_scene.shapes[e.target]
            before, after = f"{shape.colour} {shape.kind}", f"{shape.colour} {e.value}"
            assert t.edited_caption == t.input_caption.replace(before, after) != t.input_caption
        else:
            prefix = {"sketch": "a pencil sketch of ", "negative": "a photo negative of "}[e.value]
            assert t.edited_caption == prefix + t.input_caption
            words = {"sketch": {"sketch", "drawing", "hand-drawn"}, "negative": {"negative", "invert"}}[e.value]
            assert words & set(e.instruction.split())


@pytest.mark.parametrize("kind", ["colour", "background", "shape"])
def test_the_undoing_instruction_names_the_input_scene_in_every_phrasing(kind):
    for t in _triplets(kind, 8):
        undos = [W.undo_instruction(t.input_caption, t.edit.instruction, t.edited_caption, p) for p in range(4)]
        assert len(set(undos)) == 4  # the four phrasings
        was = {"colour": t.scene.shapes[t.edit.target].colour if kind != "background" else None,
               "shape": t.scene.shapes[t.edit.target].kind if kind != "background" else None,
               "background": t.scene.background}[kind]  # fmt: skip
        for undo in undos:
            assert W.parse_instruction(undo)["value"] == was and W.parse_instruction(undo)["kind"] == kind
            assert W.edit_caption(t.edited_caption, undo) == t.input_caption == caption(t.scene)


def test_the_undoing_instruction_hand_written_and_where_the_grammar_cannot_say_it():
    before = "a red triangle moving left and a green square moving up on a desert, camera panning"
    after = before.replace("green square", "purple square")
    assert W.undo_instruction(before, "turn the green square purple", after) == "make the square green"
    assert W.undo_instruction(before, "turn the green square purple", after, 1) == "turn the purple square green"
    shaped = "an orange cross bouncing on a beach, camera panning"
    assert (W.undo_instruction(shaped.replace("cross", "triangle"), "make the triangle a cross", shaped, 3)
            == "change the orange cross to a triangle")  # fmt: skip
    assert W.undo_instruction(shaped, "make it a pencil sketch", "a pencil sketch of " + shaped) is None  # a style
    assert W.undo_instruction(before, "turn the green square purple", before) is None  # the captions do not differ
    assert W.undo_instruction(before, "add a hat", after) is None  # not the toy grammar


# ---------------------------------------------------------------------------------------------- splits


def test_train_and_heldout_seeds_are_disjoint():
    assert TRAIN_SEEDS.step == HELDOUT_SEEDS.step == 1
    assert len(TRAIN_SEEDS) > 0 and len(HELDOUT_SEEDS) > 0
    assert max(TRAIN_SEEDS.start, HELDOUT_SEEDS.start) >= min(TRAIN_SEEDS.stop, HELDOUT_SEEDS.stop)
    assert TRAIN_SEEDS[-1] not in HELDOUT_SEEDS and HELDOUT_SEEDS[0] not in TRAIN_SEEDS


# ---------------------------------------------------------------------------------------------- autoencoder


def _images(n=2, h=64, w=64, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1  # in [-1, 1]


def test_autoencoder_round_trip_is_exact():
    vae = PixelUnshuffleAutoencoder()
    x = _images()
    latents = vae.encode(x).latent_dist.mode()
    assert latents.shape == (2, 48, 16, 16) == (2, vae.latent_channels, 64 // vae.spatial_compression_ratio, 16)
    torch.testing.assert_close(vae.decode(latents).sample, x, rtol=0, atol=0)
    torch.testing.assert_close(vae(x), x, rtol=0, atol=0)
    # The folding is space-to-depth: channel c * 16 + i * 4 + j holds pixel (4y + i, 4x + j) of channel c.
    assert latents[1, 2 * 16 + 1 * 4 + 3, 5, 7] == x[1, 2, 4 * 5 + 1, 4 * 7 + 3]


def test_autoencoder_other_patch_size_and_tuple_outputs():
    vae = PixelUnshuffleAutoencoder(patch_size=2)
    x = _images(1, 32, 48, seed=1)
    (dist,) = vae.encode(x, return_dict=False)
    assert dist.mode().shape == (1, 12, 16, 24)
    (pixels,) = vae.decode(dist.mode(), return_dict=False)
    torch.testing.assert_close(pixels, x, rtol=0, atol=0)


def test_autoencoder_sample_is_the_mode():
    dist = PixelUnshuffleAutoencoder().encode(_images()).latent_dist
    sample = dist.sample(generator=torch.Generator().manual_seed(0))
    assert not torch.equal(sample, dist.mode())  # it does draw noise...
    torch.testing.assert_close(sample, dist.mode(), rtol=0, atol=1e-5)  # ...of std e^-15 ~ 3e-7


def test_autoencoder_save_and_load(tmp_path):
    PixelUnshuffleAutoencoder(patch_size=2, scaling_factor=0.5).save_pretrained(tmp_path / "vae")
    vae = PixelUnshuffleAutoencoder.from_pretrained(tmp_path / "vae")
    assert (vae.config.patch_size, vae.config.in_channels, vae.config.scaling_factor) == (2, 3, 0.5)
    x = _images(1, seed=2)
    torch.testing.assert_close(vae.decode(vae.encode(x).latent_dist.mode()).sample, x, rtol=0, atol=0)
    assert vae.encode(x).latent_dist.mode().shape == (1, 12, 32, 32)


@pytest.mark.parametrize("source_conditioned", [False, True])
def test_grown_fine_attention_computes_what_the_unet_did_and_can_learn(source_conditioned):
    """Attention grown at 16x16 starts as the identity (zero output projection), so the grown model equals the
    trained one exactly; the new layers still receive gradients, so they learn."""
    from insv2v.toyworld.models import grow_fine_attention, has_fine_attention, toy_unet2d

    torch.manual_seed(0)
    unet = toy_unet2d(source_conditioned)
    grown = grow_fine_attention(unet)
    assert not has_fine_attention(unet) and has_fine_attention(grown)
    assert grown.down_blocks[0].attentions[0].proj_in.in_channels == 96  # attention at the 16x16 level
    x = torch.randn(2, unet.config.in_channels, 16, 16)
    t, text = torch.tensor([10, 700]), torch.randn(2, 5, unet.config.cross_attention_dim)
    with torch.no_grad():
        before = unet(x, t, encoder_hidden_states=text).sample
    after = grown(x, t, encoder_hidden_states=text).sample
    assert torch.equal(before, after)
    after.pow(2).mean().backward()
    assert grown.down_blocks[0].attentions[0].proj_out.weight.grad.abs().sum() > 0
    assert grow_fine_attention(grown) is grown  # already grown: nothing to add


def test_a_text_to_image_unet_given_source_channels_starts_as_itself_whatever_the_source():
    """InstructPix2Pix's initialisation: the source's input channels start with zero weights."""
    from insv2v.models import add_source_channels
    from insv2v.toyworld.models import toy_unet2d

    torch.manual_seed(0)
    t2i = toy_unet2d(source_conditioned=False)
    editing = add_source_channels(t2i)
    assert (editing.config.in_channels, editing.config.out_channels) == (96, 48)
    x, text, t = torch.randn(2, 48, 16, 16), torch.randn(2, 5, 64), torch.tensor([3, 900])
    with torch.no_grad():
        alone = t2i(x, t, encoder_hidden_states=text).sample
        for source in (torch.zeros_like(x), torch.randn_like(x)):
            got = editing(torch.cat([x, source], 1), t, encoder_hidden_states=text).sample
            assert torch.allclose(got, alone, atol=1e-5)  # a wider convolution may sum in another order
    with pytest.raises(ValueError, match="not a text-to-image UNet"):
        add_source_channels(editing)


def test_held_out_edits_of_some_kinds_are_those_of_the_whole_sample():
    from insv2v.toyworld.evaluate import EDIT_KINDS, heldout_edits

    every = list(heldout_edits(10, seed=40))
    assert [triplet.edit.kind for _, triplet in every] == [EDIT_KINDS[i % 4] for i in range(10)]
    some = list(heldout_edits(10, seed=40, kinds=("colour", "style")))
    assert [i for i, _ in some] == [1, 3, 5, 7, 9]
    assert [t.edit for _, t in some] == [t.edit for i, t in every if i % 2 == 1]
    assert [t.input_caption for _, t in some] == [t.input_caption for i, t in every if i % 2 == 1]


def test_the_edits_table_pools_the_kinds_its_record_holds():
    from insv2v.toyworld.evaluate import markdown_table

    def record(kind: str, correct: bool, psnr: float) -> dict:
        return {"kind": kind, "correct": correct, "psnr": psnr, "psnr_identity": 20.0}

    colour = [record("colour", True, 22.0), record("colour", False, 17.0)]
    lines = markdown_table({"edits": {"records": colour}}).splitlines()
    assert "| edits follow the instruction | colour | correct | 50% of 2 (9%-91%) |" in lines
    assert [line for line in lines if "PSNR gain" in line] == [
        "| edits match ground truth | colour | PSNR gain over the input (dB) | -0.50 (-3.00 to +2.00, n=2) |"
    ]  # not again as "all"
    assert "| | colour | PSNR (dB) | 19.50 (17.00-22.00) |" in lines
    both = markdown_table({"edits": {"records": [*colour, record("style", True, 30.0)]}}).splitlines()
    assert "| edits match ground truth | all | PSNR gain over the input (dB) | +3.00 (-3.00 to +10.00, n=3) |" in both
    assert any(line.startswith("| | all | PSNR (dB) | 23.00") for line in both)
