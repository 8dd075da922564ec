"""Video-editing metrics against values computed by hand: PSNR, flow-warp error, seam score and the CLIP scores."""

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from insv2v import metrics as M
from insv2v.toyworld import world as W

# ---------------------------------------------------------------------------------------------- videos


def _texture(h, w, seed=0, sigma=2.0):
    """Smoothed colour noise (h, w, 3) uint8 in [20, 220]: textured everywhere, with headroom for offsets."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.standard_normal((h, w, 3)).astype(np.float32), (0, 0), sigma)
    return ((noise - noise.min()) / (noise.max() - noise.min()) * 200 + 20).round().astype(np.uint8)


def _translating(num_frames, shift=(2, 1), size=64, seed=0, margin=40):
    """Crops of one texture, frame t = base[p + t * shift]: an exact integer translation per frame."""
    base = _texture(size + 2 * margin, size + 2 * margin, seed)
    dx, dy = shift
    rows = [slice(margin + dy * t, margin + dy * t + size) for t in range(num_frames)]
    cols = [slice(margin + dx * t, margin + dx * t + size) for t in range(num_frames)]
    return np.stack([base[r, c] for r, c in zip(rows, cols, strict=True)])  # (f, size, size, 3)


def _noise(num_frames, size=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (num_frames, size, size, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------- psnr


def test_psnr_of_identical_videos_is_the_cap_so_that_a_mean_stays_finite():
    a = _texture(16, 16)[None]
    assert M.psnr(a, a.copy()) == M.PSNR_MAX == 100.0
    assert math.isfinite(np.mean([M.psnr(a, a.copy()), M.psnr(a, 255 - a)]))


@pytest.mark.parametrize("offset", [1, 10, 100])
def test_psnr_constant_offset(offset):
    a = _texture(32, 32)[None]  # values in [20, 220]: no clipping for offset <= 35, and below for larger
    b = a.astype(int) + offset if offset <= 35 else np.where(a < 128, a.astype(int) + offset, a.astype(int) - offset)
    b = b.astype(np.uint8)
    expected = 10 * math.log10(255**2 / offset**2)
    assert M.psnr(a, b) == pytest.approx(expected, abs=1e-9)
    assert M.psnr(b, a) == pytest.approx(expected, abs=1e-9)  # symmetric, and no uint8 wrap-around


def test_psnr_extremes():
    black, white = np.zeros((2, 8, 8, 3), np.uint8), np.full((2, 8, 8, 3), 255, np.uint8)
    assert M.psnr(black, white) == pytest.approx(0.0, abs=1e-12)
    one = black.copy()
    one[1, 3, 4, 2] = 255  # one value in N = 384 off by the full range: MSE = 255^2 / N
    assert M.psnr(black, one) == pytest.approx(10 * math.log10(black.size), abs=1e-9)


# ---------------------------------------------------------------------------------------------- warp error


def test_warp_error_of_a_still_video_is_zero():
    still = np.repeat(_texture(64, 64)[None], 4, axis=0)
    errors = M.pair_warp_errors(still)
    assert errors.shape == (3,)
    assert (errors == 0).all()
    assert M.warp_error(still) == 0.0
    toy = W.render(W.Scene((W.Shape("circle", "red", 9.0, 32.0, 32.0, 0.0, 0.0),), "beach", 1), 3)
    assert M.warp_error(toy) == 0.0


@pytest.mark.parametrize("num_frames", [1, 2, 5])
def test_pair_warp_errors_length(num_frames):
    video = _translating(num_frames)
    errors = M.pair_warp_errors(video)
    assert errors.shape == (num_frames - 1,)
    assert M.warp_error(video) == (errors.mean() if num_frames > 1 else 0.0)


@pytest.mark.parametrize("shift", [(2, 1), (0, -3)])
def test_warp_error_small_for_a_translation(shift):
    smooth = M.warp_error(_translating(4, shift))
    assert 0 < smooth < 1e-3
    # Compensating motion matters: the same frames compared in place (zero flow from a still guide) are far off.
    assert M.warp_error(_translating(4, shift), flow_frames=np.repeat(_translating(1), 4, axis=0)) > 10 * smooth


def test_warp_error_large_for_unrelated_frames():
    smooth = M.warp_error(_translating(4))
    unrelated = np.stack([_texture(64, 64, seed) for seed in range(4)])  # textures, but no motion between them
    assert M.warp_error(unrelated) > 100 * smooth
    assert M.warp_error(_noise(4)) > 100 * smooth


def test_warp_error_of_a_brightness_step_is_its_square():
    """No motion, every value up by 10 per frame: the error is (10 / 255)^2 in [0, 1] units."""
    a = _texture(64, 64)
    video = np.stack([a, a + 10, a + 20])
    np.testing.assert_allclose(M.pair_warp_errors(video), (10 / 255) ** 2, rtol=0.02)


def test_warp_error_follows_the_flow_frames():
    """An edit judged by the input's motion: a recoloured copy of a translating video is as smooth as the input."""
    source = _translating(5, (2, 1))
    edited = 255 - source  # inverted, so its own flow would differ in nothing but the motion is the same
    assert M.warp_error(edited, flow_frames=source) == pytest.approx(M.warp_error(source), rel=0.5, abs=1e-5)
    assert M.warp_error(edited, flow_frames=source) < 1e-3
    with pytest.raises(ValueError, match=r"`flow_frames` must hold the 5 frames of .* scored, got 3 of"):
        M.warp_error(edited, flow_frames=source[:3])  # the pairs without a flow scored 0 before


def test_warp_error_of_a_panning_toy_video_is_small():
    shape = W.Shape("circle", "red", 9.0, 20.0, 32.0, 1.0, 0.0)
    video = W.render(W.Scene((shape,), "beach", 1, pan=(1.0, 0.0)), 5)
    assert M.warp_error(video) < 1e-3
    assert M.warp_error(video, flow_frames=video[[0] * 5]) > 5 * M.warp_error(video)  # motion not compensated


# ---------------------------------------------------------------------------------------------- seams


def test_seam_score_of_a_uniform_translation_is_about_one():
    assert 0.5 < M.seam_score(_translating(12), [4, 8]) < 2.0


def test_seam_score_of_a_cut_is_large():
    video = np.concatenate([_translating(6, seed=0), _translating(6, seed=5)])  # smooth clips, a cut at 6
    assert M.seam_score(video, [6]) > 100
    assert M.seam_score(video, [3]) < 2  # a boundary elsewhere is as smooth as the rest


def test_seam_score_of_a_noise_frame_is_large():
    video = _translating(12)
    video[6] = _noise(1)[0]  # both pairs touching frame 6 break; one of them counts as "elsewhere"
    assert M.seam_score(video, [6]) > 5


def test_seam_score_ignores_seams_outside_the_video():
    video = np.concatenate([_translating(3, seed=0), _translating(3, seed=5)])
    assert M.seam_score(video, []) == 1.0
    assert M.seam_score(video, [0, 6, 20]) == 1.0  # a seam s needs frames s - 1 and s
    assert M.seam_score(video, [0, 3, 20]) == M.seam_score(video, [3]) > 100


def test_seam_score_of_a_still_video_is_one():
    assert M.seam_score(np.repeat(_texture(64, 64)[None], 6, axis=0), [3]) == 1.0


def test_seam_error_is_the_warp_error_of_the_boundary_pairs_alone():
    video = np.concatenate([_translating(6, seed=0), _translating(6, seed=5)])  # a cut at 6
    errors = M.pair_warp_errors(video)
    assert M.seam_error(video, [6]) == pytest.approx(errors[5]) and M.seam_error(video, [3, 6]) == pytest.approx(
        (errors[2] + errors[5]) / 2
    )
    assert M.seam_error(video, [6, 6]) == M.seam_error(video, [6])  # a boundary named twice counts once
    assert np.isnan(M.seam_error(video, [0, 20]))  # no boundary inside the video: nothing measured, not smooth
    assert M.seam_error(video, [6], flows=M.consecutive_flows(video)) == M.seam_error(video, [6])


def test_flicker_inside_a_clip_lowers_the_seam_score_but_not_the_seam_error():
    """Why the score needs the error beside it: a flickering frame away from the seam is not a smoother seam."""
    video = np.concatenate([_translating(6, seed=0), _translating(6, seed=5)])
    flickering = video.copy()
    flickering[9] = 255 - flickering[9]
    assert M.seam_score(flickering, [6]) < M.seam_score(video, [6]) / 2
    assert M.seam_error(flickering, [6]) == pytest.approx(M.seam_error(video, [6]))


# ---------------------------------------------------------------------------------------------- CLIP


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The toy CLIP is tiny: one thread is faster, and far faster on a busy machine (no OpenMP spin-waits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    from insv2v.toyworld.models import toy_clip, toy_tokenizer

    folder = tmp_path_factory.mktemp("toy_clip")
    torch.manual_seed(0)
    toy_clip().save_pretrained(folder)
    toy_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def scorer(clip_folder):
    return M.load_clip(str(clip_folder))


@pytest.fixture(scope="module")
def reference(clip_folder):
    """The same CLIP through transformers directly: (image embeddings fn, text embeddings fn), unit vectors."""
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(clip_folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(clip_folder)

    @torch.no_grad()
    def images(frames):  # 64x64 frames: the toy CLIP's own size, raw [0, 1] pixels (no preprocessor config)
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255  # (f, 3, h, w)
        return F.normalize(model.visual_projection(model.vision_model(pixel_values=x).pooler_output), dim=-1)

    @torch.no_grad()
    def text(caption):
        tokens = tokenizer([caption], return_tensors="pt")  # one caption: no padding
        return F.normalize(model.text_projection(model.text_model(**tokens).pooler_output), dim=-1)[0]

    return images, text, float(model.logit_scale.exp())


@pytest.fixture(scope="module")
def toy_videos():
    triplet = W.sample_triplet(3, kind="colour")
    source, edited = triplet.render(3)
    return triplet, source, edited


def test_load_clip_reads_the_toy_folder(scorer, reference):
    assert scorer.image_size == 64
    assert scorer.mean == (0.0, 0.0, 0.0) and scorer.std == (1.0, 1.0, 1.0)  # no preprocessor_config.json
    assert scorer.logit_scale == pytest.approx(reference[2], rel=1e-6)
    assert scorer.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)  # CLIP's initial temperature


def test_a_wide_frame_is_centre_cropped_as_clips_processors_do_not_squashed(scorer, toy_videos):
    _, source, _ = toy_videos  # 64x64, the toy CLIP's size
    wide = np.concatenate([source[:, :, ::-1][:, :, :16], source, source[:, :, :16]], axis=2)  # 64 x 96
    torch.testing.assert_close(scorer.images(wide), scorer.images(source), rtol=0, atol=0)  # cropped back exactly
    large = M.clip_pixels(np.repeat(np.repeat(wide, 2, axis=1), 2, axis=2), 64)  # 128 x 192: halved, then cropped
    assert large.shape == (3, 3, 64, 64)
    assert (large - M.clip_pixels(source, 64)).abs().mean() < 0.01  # the same frames, but for the edges' filtering
    pixels = torch.from_numpy(wide.copy()).permute(0, 3, 1, 2).float() / 255
    squashed = F.interpolate(pixels, size=(64, 64), mode="bicubic").clamp(0, 1)  # as it was scored before
    assert (squashed - M.clip_pixels(source, 64)).abs().mean() > 0.03


def test_pixel_constants_are_the_models_own(tmp_path):
    import json

    from transformers import CLIPImageProcessor

    assert M.processor_constants(str(tmp_path)) == ((0.0,) * 3, (1.0,) * 3)  # the toy CLIP: no processor file
    CLIPImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(tmp_path)
    assert M.processor_constants(str(tmp_path)) == ((0.5,) * 3, (0.5,) * 3)
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["image_mean"] == [0.5] * 3


def test_images_are_unit_vectors_matching_the_model(scorer, reference, toy_videos):
    _, source, edited = toy_videos
    frames = np.concatenate([source, edited])
    embeddings = scorer.images(frames)
    assert embeddings.shape == (6, 64)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(6), rtol=0, atol=1e-5)
    torch.testing.assert_close(embeddings, reference[0](frames), rtol=0, atol=1e-5)
    torch.testing.assert_close(scorer.images(frames, batch=4), embeddings, rtol=0, atol=1e-6)  # batching invisible
    # The untrained toy CLIP barely tells frames apart (cosines ~0.9999), but it does: the edit moves the embedding.
    assert (embeddings[:3] - embeddings[3:]).norm(dim=-1).min() > 1e-3


def test_texts_are_batch_invariant_unit_vectors(scorer, reference):
    captions = ["a red circle moving right on a beach", "a pencil sketch of an orange cross bouncing on a desert"]
    together = scorer.texts(captions)  # padded to the longer caption
    torch.testing.assert_close(together.norm(dim=-1), torch.ones(2), rtol=0, atol=1e-5)
    for row, text in zip(together, captions, strict=True):
        torch.testing.assert_close(row, scorer.texts([text])[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(row, reference[1](text), rtol=0, atol=1e-5)


def test_clip_frame_consistency(scorer, reference, toy_videos):
    _, source, _ = toy_videos
    assert M.clip_frame_consistency(scorer, np.repeat(source[:1], 4, axis=0)) == pytest.approx(1.0, abs=1e-5)
    assert M.clip_frame_consistency(scorer, source[:1]) == 1.0
    e = reference[0](source)
    expected = float(np.mean([float(e[t] @ e[t + 1]) for t in range(len(source) - 1)]))
    assert M.clip_frame_consistency(scorer, source) == pytest.approx(expected, abs=1e-5)
    mixed = np.stack([source[0], _noise(1)[0], source[0]])
    assert M.clip_frame_consistency(scorer, mixed) < M.clip_frame_consistency(scorer, source)


def test_clip_text_alignment_is_the_mean_cosine(scorer, reference, toy_videos):
    triplet, _, edited = toy_videos
    images, text, _ = reference
    cosines = [float(images(edited[t : t + 1])[0] @ text(triplet.edited_caption)) for t in range(len(edited))]
    assert M.clip_text_alignment(scorer, edited, triplet.edited_caption) == pytest.approx(np.mean(cosines), abs=1e-5)


def test_pick_score_is_scaled_alignment(scorer, reference, toy_videos):
    triplet, _, edited = toy_videos
    alignment = M.clip_text_alignment(scorer, edited, triplet.edited_caption)
    assert M.pick_score(scorer, edited, triplet.edited_caption) == pytest.approx(reference[2] * alignment, rel=1e-5)


def test_clip_directional_similarity(scorer, reference, toy_videos):
    triplet, source, edited = toy_videos
    images, text, _ = reference
    text_delta = text(triplet.edited_caption) - text(triplet.input_caption)
    image_delta = images(edited) - images(source)  # (f, d)
    expected = float(np.mean([float(d @ text_delta / (d.norm() * text_delta.norm())) for d in image_delta]))
    got = M.clip_directional_similarity(scorer, source, edited, triplet.input_caption, triplet.edited_caption)
    assert got == pytest.approx(expected, abs=1e-5)
    # Swapping both directions leaves the cosine unchanged; swapping one negates it.
    swapped = M.clip_directional_similarity(scorer, edited, source, triplet.edited_caption, triplet.input_caption)
    assert swapped == pytest.approx(got, abs=1e-5)
    flipped = M.clip_directional_similarity(scorer, edited, source, triplet.input_caption, triplet.edited_caption)
    assert flipped == pytest.approx(-got, abs=1e-5)


def test_clip_directional_similarity_of_no_change_is_zero(scorer, toy_videos):
    """Identical source and edit: the image delta is zero and the cosine is 0 (cosine_similarity's eps), not NaN."""
    triplet, source, _ = toy_videos
    got = M.clip_directional_similarity(scorer, source, source.copy(), triplet.input_caption, triplet.edited_caption)
    assert got == 0.0


def test_loveu_scores_are_x100_and_consistency_spans_all_frame_pairs(scorer, reference, toy_videos):
    triplet, source, _ = toy_videos
    images = reference[0]
    e = images(source)  # (3, d)
    pairs = [float(e[i] @ e[j]) for i in range(3) for j in range(3) if i != j]
    got = M.loveu_scores(scorer, source, triplet.input_caption)
    assert got["loveu_consistency"] == pytest.approx(100 * np.mean(pairs), abs=1e-3)
    assert got["loveu_text"] == pytest.approx(100 * M.clip_text_alignment(scorer, source, triplet.input_caption))
    # All pairs, not consecutive ones: a video that returns to its first frame differs in the two definitions.
    there_and_back = np.stack([source[0], _noise(1)[0], source[0]])
    e = images(there_and_back)
    consecutive = float(e[0] @ e[1])  # both consecutive pairs are (frame, noise)
    all_pairs = (2 * float(e[0] @ e[1]) + 1.0) / 3  # ... and the pair (0, 2) is the same frame twice
    assert M.clip_frame_consistency(scorer, there_and_back) == pytest.approx(consecutive, abs=1e-5)
    assert M.loveu_scores(scorer, there_and_back, "x")["loveu_consistency"] == pytest.approx(100 * all_pairs, abs=1e-3)
    assert M.all_pairs_similarity(e[:1]) == 1.0


def test_compare_scores_hold_each_method_row(scorer, toy_videos):
    triplet, source, edited = toy_videos
    caption = triplet.edited_caption
    scores = M.compare_scores(edited, source, caption, scorer, pick_scorer=scorer, target=edited)
    assert set(scores) == set(M.COMPARE_SCORES)
    assert scores["psnr"] == M.PSNR_MAX  # the exact target itself
    assert scores["pick_score"] == pytest.approx(M.pick_score(scorer, edited, caption))
    assert set(M.compare_scores(edited, source, caption)) == {"warp_error"}  # no CLIP, no target: flow only
