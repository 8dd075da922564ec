"""Video Prompt-to-Prompt on tiny random text-to-video pipelines: the invariants the method promises, the attention
edits against explicit maps, the token alignment (with the reference's off-by-a-word bug fixed), the settings draw."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from insv2v.clip_tokenizer import clip_tokenizer
from insv2v.synth.p2p import (
    CA_END_CHOICES,
    SA_END_CHOICES,
    Alignment,
    LocalBlend,
    P2PAttnProcessor,
    P2PSettings,
    P2PState,
    Phase,
    align_tokens,
    blend_mask,
    check_value_weighting,
    difference_mask,
    edit_embeddings,
    generate_pair,
    has_coarse_cross_attention,
    p2p_attention,
    phase_at,
)
from insv2v.synth.p2p import prompt_difference as p2p_difference
from insv2v.testing.tiny import tiny_t2v_pipeline

FRAMES, SIZE, STEPS, CFG = 3, 32, 3, 7.0  # 3 frames of 4x4 latents, 3 DDIM steps
SOURCE, TARGET = "a man riding a horse", "a man riding a zebra"


@pytest.fixture(scope="module")
def pipes():
    return {}


def get_pipe(pipes, kind):
    if kind not in pipes:
        pipes[kind] = tiny_t2v_pipeline(kind)
    return pipes[kind]


def noise(seed=0, size=SIZE):
    return torch.randn(1, 4, FRAMES, size // 8, size // 8, generator=torch.Generator().manual_seed(seed))


def pair(pipe, source, target, sa_end, ca_end, edit_weight=3.0, shared_end=0.0, **kwargs):
    settings = P2PSettings(CFG, sa_end, ca_end, edit_weight, shared_end)
    kwargs = {"output_type": "latent", "height": SIZE, "width": SIZE, "latents": noise(), **kwargs}
    return generate_pair(
        pipe, source, target, settings, num_frames=FRAMES, num_inference_steps=STEPS, **kwargs
    )  # fmt: skip


def plain(pipe, prompt):
    out = pipe(
        prompt, num_frames=FRAMES, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=CFG,
        latents=noise(), output_type="latent",
    )  # fmt: skip
    return out.frames[0]  # (c, f, h, w)


def max_diff(a, b):
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------- the sampler


@pytest.mark.parametrize("kind", ["motion", "3d"])
def test_identical_prompts_give_identical_videos(pipes, kind):
    out = pair(get_pipe(pipes, kind), SOURCE, SOURCE, sa_end=0.5, ca_end=1.0)
    assert out.source.shape == (4, FRAMES, SIZE // 8, SIZE // 8)
    # Measured: exactly 0 for both kinds (the batch rows compute bit-identically on CPU).
    assert max_diff(out.source, out.target) <= 1e-5
    assert not out.source.requires_grad and not out.target.requires_grad  # sampling records no autograd graph


@pytest.mark.parametrize("kind", ["motion", "3d"])
def test_injection_edits_the_target_and_never_the_source(pipes, kind):
    pipe = get_pipe(pipes, kind)
    plain_source, plain_target = plain(pipe, SOURCE), plain(pipe, TARGET)
    assert max_diff(plain_source, plain_target) > 0.1  # measured 0.46 motion, 0.32 3d: the prompts matter

    # No injection: both equal plain generations (measured 1.4e-5 motion, 1.3e-5 3d: batch of 4 vs 2 rounding).
    off = pair(pipe, SOURCE, TARGET, sa_end=0.0, ca_end=0.0)
    assert max_diff(off.target, plain_target) <= 1e-4
    assert max_diff(off.source, plain_source) <= 1e-4

    # Self-attention injection on every step (measured target change 0.038 motion, 0.062 3d). The source staying
    # plain also shows every attention's batch is video-major: a wrong `chunk(4)` would mix source rows in.
    injected = pair(pipe, SOURCE, TARGET, sa_end=1.0, ca_end=1.0)
    assert max_diff(injected.target, plain_target) > 1e-2
    assert max_diff(injected.source, plain_source) <= 1e-4

    # Cross-attention edit alone (measured target change 0.16 motion, 0.15 3d).
    crossed = pair(pipe, SOURCE, TARGET, sa_end=0.0, ca_end=1.0)
    assert max_diff(crossed.target, plain_target) > 1e-2
    assert max_diff(crossed.source, plain_source) <= 1e-4
    assert {type(p) for p in pipe.unet.attn_processors.values()} == {AttnProcessor2_0}  # restored after each pair


@pytest.mark.parametrize("kind", ["motion", "2d"])
def test_a_shared_start_holds_the_target_to_the_source_then_lets_it_go(pipes, kind):
    pipe = get_pipe(pipes, kind)
    whole = pair(pipe, SOURCE, TARGET, sa_end=0.0, ca_end=0.0, shared_end=1.0)
    assert torch.equal(whole.target, whole.source)  # copied after every step
    plain_target = plain(pipe, TARGET)
    batches = []  # the UNet's batch per call: the shared step runs the source's half alone
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        first = pair(pipe, SOURCE, TARGET, sa_end=0.0, ca_end=0.0, shared_end=0.25)  # the first of 3 steps shared
    finally:
        hook.remove()
    assert batches[1:] == [2 * batches[0]] * (STEPS - 1)
    assert max_diff(first.source, plain(pipe, SOURCE)) <= 1e-4  # the source never changes
    # The target's last steps follow its own prompt from where the source was: it differs from the source, yet far
    # less than a plain generation of the target does (measured 0.070 against 0.456 motion, 0.076 against 0.415 2d).
    assert 1e-2 < max_diff(first.target, first.source) < 0.5 * max_diff(plain_target, first.source)


def test_image_prompt_to_prompt_on_a_2d_unet(pipes):
    pipe = get_pipe(pipes, "2d")
    same = pair(pipe, SOURCE, SOURCE, sa_end=0.5, ca_end=1.0)
    assert max_diff(same.source, same.target) <= 1e-5  # measured 0
    injected = pair(pipe, SOURCE, TARGET, sa_end=1.0, ca_end=1.0)
    assert max_diff(injected.target, plain(pipe, TARGET)) > 1e-2  # measured 0.033
    assert max_diff(injected.source, plain(pipe, SOURCE)) <= 1e-4


def test_frames_progress_and_processors_restored(pipes):
    pipe = get_pipe(pipes, "3d")
    before = pipe.unet.attn_processors
    assert {type(p) for p in before.values()} == {AttnProcessor2_0}
    steps = []
    out = pair(pipe, SOURCE, TARGET, 0.3, 0.8, output_type="np", callback=lambda i, n: steps.append((i, n)))
    assert out.source.shape == out.target.shape == (FRAMES, SIZE, SIZE, 3) and out.source.dtype == np.uint8
    assert steps == [(i, STEPS) for i in range(1, STEPS + 1)]
    after = pipe.unet.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)

    def fail(i, n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # an interrupted pair leaves the pipeline unchanged too
        pair(pipe, SOURCE, TARGET, 0.3, 0.8, callback=fail)
    assert all(pipe.unet.attn_processors[k] is before[k] for k in before)


def test_phases_follow_the_reference_step_rule():
    settings = P2PSettings(9.0, sa_end=0.35, ca_end=0.8, edit_weight=2.0)
    phases = [phase_at(i, 30, settings) for i in range(30)]
    # i < 10.5 -> steps 0..10; i < 24 -> steps 11..23
    assert phases == [Phase.SELF] * 11 + [Phase.CROSS] * 13 + [Phase.PLAIN] * 6
    shared = P2PSettings(9.0, sa_end=0.35, ca_end=0.8, edit_weight=2.0, shared_end=0.2)
    assert [phase_at(i, 30, shared) for i in range(30)] == [Phase.SHARED] * 6 + phases[6:]
    assert P2PSettings.from_dict({k: v for k, v in shared.to_dict().items() if k != "shared_end"}) == settings


# ---------------------------------------------------------------------------------------------- local blending


def test_blend_mask_dilates_scales_per_frame_and_unites_source_and_target():
    maps = torch.zeros(2, 2, 4, 4)  # (source | target, frames, h, w)
    maps[0, 0, 0, 0] = 1.0  # frame 0: the source's word at the top-left cell...
    maps[1, 0, 3, 3] = 0.2  # ...the target's at the bottom-right, weaker: each map is scaled to its own peak
    maps[1, 0, 3, 0] = 0.05  # below 0.3 of the target's peak
    maps[0, 1] = 5.0  # frame 1: flat, every cell at the peak
    mask = blend_mask(maps, 0.3, (8, 8))
    expected = torch.zeros(4, 4)
    expected[:2, :2] = 1  # top-left dilated by one cell
    expected[2:, 2:] = 1  # bottom-right dilated by one cell
    assert torch.equal(mask[0], expected.repeat_interleave(2, 0).repeat_interleave(2, 1))  # nearest, 4x4 -> 8x8
    assert torch.equal(mask[1], torch.ones(8, 8))
    assert torch.equal(blend_mask(torch.zeros(2, 1, 4, 4), 0.3, (8, 8)), torch.zeros(1, 8, 8))  # no edited word


@pytest.mark.parametrize("kind", ["motion", "3d", "2d"])
def test_local_blend_keeps_the_source_outside_the_edited_words_attention(pipes, kind):
    pipe = get_pipe(pipes, kind)
    size = 2 * SIZE  # 8x8 latents: the mid block's 4x4 cross-attention is at half the latents' resolution
    kwargs = dict(height=size, width=size, latents=noise(size=size))
    free = pair(pipe, SOURCE, TARGET, 0.3, 0.8, **kwargs)
    blended = pair(pipe, SOURCE, TARGET, 0.3, 0.8, local_blend=LocalBlend(threshold=0.9, start=0.0), **kwargs)
    mask = blended.blend_mask
    assert mask.shape == (FRAMES, size // 8, size // 8) and free.blend_mask is None
    assert 0 < mask.mean() < 1  # a mask, not all or nothing
    outside, inside = (mask == 0).expand_as(blended.target), (mask == 1).expand_as(blended.target)
    assert torch.equal(blended.target[outside], blended.source[outside])  # the source's, exactly
    assert max_diff(blended.target[inside], blended.source[inside]) > 1e-2  # the edit, where its words draw attention
    assert torch.equal(blended.source, free.source)  # the source is never blended

    # At threshold 0 every cell passes (softmax attention is never 0): the blend changes nothing
    everywhere = pair(pipe, SOURCE, TARGET, 0.3, 0.8, local_blend=LocalBlend(threshold=0.0, start=0.0), **kwargs)
    assert torch.equal(everywhere.blend_mask, torch.ones_like(mask))
    assert torch.equal(everywhere.target, free.target)  # the same operations: the blend only chooses

    # Identical prompts edit no word: the mask is empty and the target is the source
    same = pair(pipe, SOURCE, SOURCE, 0.3, 0.8, local_blend=LocalBlend(), **kwargs)
    assert torch.equal(same.blend_mask, torch.zeros_like(mask)) and torch.equal(same.target, same.source)


def test_local_blend_on_latents_of_odd_and_unequal_sides(pipes):
    height, width = 72, 64  # 9x8 latents: the mid block's cross-attention is at 5x4 (downsampling rounds up)
    latents = torch.randn(1, 4, FRAMES, 9, 8, generator=torch.Generator().manual_seed(0))
    out = pair(get_pipe(pipes, "motion"), SOURCE, TARGET, 0.3, 0.8, local_blend=LocalBlend(threshold=0.9, start=0.0),
               height=height, width=width, latents=latents)  # fmt: skip
    assert out.blend_mask.shape == (FRAMES, 9, 8) and 0 < out.blend_mask.mean() < 1
    outside = (out.blend_mask == 0).expand_as(out.target)
    assert torch.equal(out.target[outside], out.source[outside])


def test_local_blend_blends_at_least_the_last_step(pipes):
    out = generate_pair(get_pipe(pipes, "motion"), SOURCE, TARGET, P2PSettings(CFG, 0.3, 0.8, 3.0), num_frames=FRAMES,
                        height=2 * SIZE, width=2 * SIZE, num_inference_steps=1, latents=noise(size=2 * SIZE),
                        output_type="latent", local_blend=LocalBlend(threshold=0.9, start=0.5))  # fmt: skip
    assert out.blend_mask is not None and 0 < out.blend_mask.mean() < 1


def test_difference_mask_scales_each_frame_to_its_peak():
    differences = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.2, 0.0], [0.0, 0.1]]])
    expected = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]])
    assert torch.equal(difference_mask(differences, 0.5), expected)  # 0.75 and 1 of frame 0's peak; 1 of frame 2's
    # Differences in the last bits of predictions of size 1e5 (identical prompts, on some CPUs) are no edit
    assert torch.equal(difference_mask(differences, 0.5, scale=1e5), torch.zeros_like(expected))
    assert torch.equal(difference_mask(differences, 0.5, scale=1e3), expected)


@pytest.mark.parametrize("kind", ["motion", "3d"])
def test_difference_blend_is_diffedits_mask_of_what_the_target_prompt_changes(pipes, kind):
    pipe = get_pipe(pipes, kind)
    blend = LocalBlend(threshold=0.5, start=0.0, maps="difference")  # read on the first step only, then fixed
    free = pair(pipe, SOURCE, TARGET, 0.3, 0.8, shared_end=0.3)
    blended = pair(pipe, SOURCE, TARGET, 0.3, 0.8, shared_end=0.3, local_blend=blend)

    # The mask from the first step's predictions on the shared noise, computed here as the sampler's shared phase does
    negative, source, target = pipe.encode_prompt(["", SOURCE, TARGET]).split(1)
    pipe.scheduler.set_timesteps(STEPS)
    t = pipe.scheduler.timesteps[0]
    x = pipe.scheduler.scale_model_input(noise(), t)
    with p2p_attention(pipe.unet, P2PState(phase=Phase.SHARED)):
        out = pipe.model_output(torch.cat([x, x, x]), t, torch.cat([negative, source, target]))
    expected = difference_mask((out[2] - out[1]).abs().mean(dim=0), 0.5)
    assert torch.equal(blended.blend_mask, expected) and 0 < expected.mean() < 1

    outside, inside = (expected == 0).expand_as(blended.target), (expected == 1).expand_as(blended.target)
    assert torch.equal(blended.target[outside], blended.source[outside])  # the source's, exactly
    assert max_diff(blended.target[inside], blended.source[inside]) > 1e-2
    # The source is never blended (reading makes the first step's batch three videos, not two: equal within float noise)
    assert max_diff(blended.source, free.source) <= 1e-4

    # At threshold 0 every cell whose prediction moves passes (all of them here): the blend changes nothing
    everywhere = pair(pipe, SOURCE, TARGET, 0.3, 0.8, shared_end=0.3, local_blend=LocalBlend(0.0, 0.0, "difference"))
    assert torch.equal(everywhere.blend_mask, torch.ones_like(expected))
    assert max_diff(everywhere.target, free.target) <= 1e-4  # the reading runs beside the sampling

    # Identical prompts change nothing: the mask is empty and the target is the source
    same = pair(pipe, SOURCE, SOURCE, 0.3, 0.8, local_blend=LocalBlend(0.5, 0.0, "difference"))
    assert torch.equal(same.blend_mask, torch.zeros_like(expected)) and torch.equal(same.target, same.source)


@pytest.mark.parametrize(
    ("shared_end", "start", "reads"),
    [(0.0, 0.6, 2), (0.0, 0.0, 1), (0.5, None, 2), (0.0, None, 1)],  # steps i < 1.8; the first; i < 1.5; i < 0.6
)
def test_difference_blend_reads_the_steps_before_its_first_blend(pipes, monkeypatch, shared_end, start, reads):
    import insv2v.synth.p2p as p2p

    calls = []
    monkeypatch.setattr(p2p, "prompt_difference", lambda both: calls.append(both.shape) or p2p_difference(both))
    blend = LocalBlend(threshold=0.5, start=start, maps="difference")  # None: the shared start's end, else 0.2
    out = pair(get_pipe(pipes, "motion"), SOURCE, TARGET, 0.7, 0.8, shared_end=shared_end, local_blend=blend)
    assert len(calls) == reads  # over the self-attention phase too, beside the P2P batch of four
    assert 0 < out.blend_mask.mean() < 1
    outside = (out.blend_mask == 0).expand_as(out.target)
    assert torch.equal(out.target[outside], out.source[outside])


def test_difference_blend_needs_no_coarse_cross_attention():
    pipe = tiny_t2v_pipeline("2d")
    pipe.unet = UNet2DConditionModel(**{**pipe.unet.config, "mid_block_type": None})  # attention at 4x4 only
    out = pair(pipe, SOURCE, TARGET, 0.3, 0.8, local_blend=LocalBlend(0.5, 0.0, "difference"))
    assert out.blend_mask.shape == (FRAMES, SIZE // 8, SIZE // 8)


def test_local_blend_needs_cross_attention_below_the_latents_resolution(pipes):
    pipe = tiny_t2v_pipeline("2d")
    assert has_coarse_cross_attention(pipe.unet)  # its mid block's
    for kind in ("motion", "3d"):
        assert has_coarse_cross_attention(get_pipe(pipes, kind).unet)
    pipe.unet = UNet2DConditionModel(**{**pipe.unet.config, "mid_block_type": None})  # attention at 4x4 only
    assert not has_coarse_cross_attention(pipe.unet)
    with pytest.raises(ValueError, match="local blending reads cross-attention below the latents' resolution"):
        pair(pipe, SOURCE, TARGET, 0.3, 0.8, local_blend=LocalBlend())
    assert pair(pipe, SOURCE, TARGET, 0.3, 0.8).blend_mask is None  # without it, the UNet samples as ever


@pytest.mark.parametrize(
    ("field", "value"), [("threshold", 1.0), ("threshold", -0.1), ("start", 1.5), ("maps", "words")]
)
def test_local_blend_settings_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"local blend `{field}` must be"):
        LocalBlend(**{field: value})


# ------------------------------------------------------------------------------ the attention edits, explicitly


def heads(x, n_heads):
    return x.unflatten(-1, (n_heads, -1)).transpose(1, 2)  # (b, heads, n, d)


def explicit_attention(attn, q_in, k_in, v_in):
    """softmax(Q K^T * scale) V with the map materialised, heads merged, through to_out."""
    q, k, v = (heads(proj(x), attn.heads) for proj, x in ((attn.to_q, q_in), (attn.to_k, k_in), (attn.to_v, v_in)))
    probs = (q @ k.transpose(-1, -2) * attn.scale).softmax(-1)  # (b, heads, n_q, n_k)
    return attn.to_out[0]((probs @ v).transpose(1, 2).flatten(2))


@torch.no_grad()
def test_self_attention_injection_is_the_source_map_on_target_values():
    torch.manual_seed(0)
    attn = Attention(query_dim=32, heads=4, dim_head=8).eval()  # random weights
    x = torch.randn(4 * 3, 10, 32)  # 4 videos x 3 sequences (frames or pixels), 10 tokens each
    out = P2PAttnProcessor(P2PState(Phase.SELF))(attn, x).unflatten(0, (4, 3))
    videos = x.unflatten(0, (4, 3))
    for target, source in ((1, 0), (3, 2)):  # per guidance half
        expected = explicit_attention(attn, videos[source], videos[source], videos[target])
        assert max_diff(out[target], expected) <= 1e-5  # measured 9e-8
    plain_out = AttnProcessor2_0()(attn, x).unflatten(0, (4, 3))
    assert torch.equal(out[[0, 2]], plain_out[[0, 2]])  # the sources are untouched
    assert max_diff(out[[1, 3]], plain_out[[1, 3]]) > 1e-2  # measured 0.24


@torch.no_grad()
def test_cross_attention_edit_takes_keys_and_values_from_the_two_halves():
    torch.manual_seed(0)
    attn = Attention(query_dim=32, cross_attention_dim=16, heads=4, dim_head=8).eval()
    assert attn.to_v.bias is None  # so scaling an embedding scales its values
    x, keys, values = torch.randn(8, 10, 32), torch.randn(8, 7, 16), torch.randn(8, 7, 16)
    out = P2PAttnProcessor(P2PState(Phase.CROSS))(attn, x, torch.cat([keys, values], dim=1))
    assert max_diff(out, explicit_attention(attn, x, keys, values)) <= 1e-5  # measured 1.5e-7
    scaled = P2PAttnProcessor(P2PState(Phase.CROSS))(attn, x, torch.cat([keys, values * 3], dim=1))
    with_scaled_v = explicit_attention(attn, x, keys, values) - attn.to_out[0].bias
    assert max_diff(scaled - attn.to_out[0].bias, with_scaled_v * 3) <= 1e-5


def test_value_weighting_needs_bias_free_values(pipes):
    for kind in ("motion", "3d"):
        check_value_weighting(get_pipe(pipes, kind).unet)  # every cross-attention's to_v has no bias
    biased = torch.nn.ModuleDict({"attn": Attention(query_dim=32, cross_attention_dim=16, bias=True)})
    with pytest.raises(ValueError, match="attn"):
        check_value_weighting(biased)


@torch.no_grad()
def test_outside_the_edits_the_processor_is_attn_processor_2_0():
    torch.manual_seed(0)
    attn = Attention(
        query_dim=32, heads=4, dim_head=8, norm_num_groups=8, spatial_norm_dim=6, residual_connection=True,
        rescale_output_factor=2.0,
    ).eval()  # fmt: skip
    x, temb = torch.randn(4, 32, 3, 5), torch.randn(4, 6, 3, 5)  # (b, c, h, w) images, as VAE attention sees them
    for phase in Phase:  # a self-attention is edited only in phase 1
        out = P2PAttnProcessor(P2PState(phase))(attn, x, temb=temb)
        expected = AttnProcessor2_0()(attn, x, temb=temb)
        if phase is Phase.SELF:
            assert torch.equal(out[[0, 2]], expected[[0, 2]])
        else:
            assert torch.equal(out, expected)
    cross = Attention(query_dim=32, cross_attention_dim=16, heads=4, dim_head=8).eval()
    x, text = torch.randn(4, 10, 32), torch.randn(4, 7, 16)
    for phase in (Phase.PLAIN, Phase.SELF):  # a cross-attention is edited only in phase 2
        assert torch.equal(P2PAttnProcessor(P2PState(phase))(cross, x, text), AttnProcessor2_0()(cross, x, text))
    with pytest.raises(NotImplementedError, match="mask"):
        P2PAttnProcessor(P2PState())(cross, x, text, attention_mask=torch.ones(4, 7))


# ------------------------------------------------------------------------------------------ token alignment

L = 77


def test_a_replaced_word_gets_the_weight_not_the_first_a():
    tok = clip_tokenizer()
    assert tok.tokenize("zebra") == ["zebra</w>"]  # one BPE token
    a = align_tokens(tok, SOURCE, TARGET)  # <bos> a man riding a zebra <eos> ...
    assert a.edited == (5,)  # the reference (1 token per piece) scales position 1, the first "a"
    assert a.source_edited == (5,)  # "horse", whose attention local blending reads in the source
    assert a.source_index == tuple(range(L))  # zebra's key comes from horse's position; same lengths elsewhere
    source, target = torch.randn(1, L, 8), torch.randn(1, L, 8)
    key, value = edit_embeddings(source, target, a, edit_weight=3.0)
    assert torch.equal(key, source)
    changed = (value != target).any(-1)[0].nonzero().flatten().tolist()
    assert changed == [5] and torch.allclose(value[0, 5], 3 * target[0, 5])


def test_a_multi_token_word_is_weighted_on_all_its_tokens():
    tok = clip_tokenizer()
    assert tok.tokenize("zebracorn") == ["ze", "brac", "orn</w>"]
    a = align_tokens(tok, SOURCE, "a man riding a zebracorn")
    assert a.edited == (5, 6, 7)
    assert a.source_index[:8] == (0, 1, 2, 3, 4, 5, 5, 5)  # all three onto "horse"
    assert a.source_index[8:11] == (6, 7, 8)  # EOS onto the source's EOS, padding after it
    assert a.source_index[-1] == L - 3  # padding keeps its offset from the source's EOS
    value = edit_embeddings(torch.zeros(1, L, 4), torch.ones(1, L, 4), a, 2.5)[1]
    assert value[0, :, 0].tolist() == [2.5 if p in (5, 6, 7) else 1.0 for p in range(L)]


def test_an_insertion_maps_to_nothing_and_shifts_the_rest():
    tok = clip_tokenizer()
    a = align_tokens(tok, SOURCE, "a man riding a big black horse")
    assert a.edited == (5, 6) and a.source_edited == ()
    assert a.source_index[:9] == (0, 1, 2, 3, 4, -1, -1, 5, 6)  # horse -> horse, EOS -> EOS
    assert a.source_index[-1] == L - 3  # padding keeps its offset from the source's EOS
    source, target = torch.randn(1, L, 8), torch.randn(1, L, 8)
    key = edit_embeddings(source, target, a, 2.0)[0]
    assert torch.equal(key[0, 5:7], target[0, 5:7]) and torch.equal(key[0, 7], source[0, 5])


def test_a_deletion_and_identical_prompts():
    tok = clip_tokenizer()
    a = align_tokens(tok, "a man riding a big black horse", SOURCE)
    assert a.edited == () and a.source_edited == (5, 6)  # "big black"
    assert a.source_index[:7] == (0, 1, 2, 3, 4, 7, 8)
    assert a.source_index[-3:] == (L - 1,) * 3  # clamped
    assert align_tokens(tok, SOURCE, SOURCE) == Alignment(tuple(range(L)), ())
    assert align_tokens(tok, "A man riding a Horse", SOURCE).edited == ()  # words compare by their tokens


def test_punctuation_changed_beside_a_word_does_not_edit_the_word():
    tok = clip_tokenizer()
    assert tok.tokenize("circle,") == ["circle</w>", ",</w>"]  # one word, two tokens
    a = align_tokens(tok, "a red circle, on a beach", "a red circle on a beach")  # only the comma went
    assert a.edited == () and a.source_edited == (4,)  # <bos> a red circle , on: the comma, not "circle"
    assert a.source_index[:7] == (0, 1, 2, 3, 5, 6, 7)  # "circle" keeps its key, "on" follows past the comma
    a = align_tokens(tok, "a red circle on a beach", "a blue circle, on a beach")
    assert a.edited == (2, 4)  # "blue" and the comma; "circle" is kept


class CharTokenizer:
    """One token per character, spaces included: words tokenised alone do not add up to the text's tokens."""

    model_max_length, bos_token_id = 12, 1

    def num_special_tokens_to_add(self):
        return 2

    def __call__(self, text, add_special_tokens=True, truncation=False, max_length=None):
        ids = [ord(c) for c in text][: (max_length or 10**9) - 2 * add_special_tokens]
        return SimpleNamespace(input_ids=[1, *ids, 2] if add_special_tokens else ids)


def test_alignment_falls_back_to_tokens_when_words_disagree():
    a = align_tokens(CharTokenizer(), "ab cd", "ab xd")  # word level would edit "xd" (2 tokens); tokens: "x" only
    assert a.edited == (4,)
    assert a.source_index == (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)


# ---------------------------------------------------------------------------------------------- settings


def test_image_recipe_draws_instructpix2pix_settings():
    draws = [P2PSettings.draw_image(seed) for seed in range(300)]
    assert P2PSettings.draw_for("image", 7) == draws[7] and P2PSettings.draw_for("video", 7) == P2PSettings.draw(7)
    rng = np.random.RandomState(3)  # its order: the self-attention fraction, then CFG, both uniform
    expected_sa, expected_cfg = rng.uniform(0.1, 0.9), rng.uniform(7.5, 15)
    assert (draws[3].sa_end, draws[3].guidance_scale) == (round(expected_sa, 2), round(expected_cfg, 2))
    assert all(d.ca_end == d.sa_end and d.edit_weight == 1.0 for d in draws)  # no cross-attention edit
    sa, cfg = np.array([d.sa_end for d in draws]), np.array([d.guidance_scale for d in draws])
    assert 0.1 <= sa.min() < 0.15 and 0.85 < sa.max() <= 0.9 and 7.5 <= cfg.min() < 8 and 14.5 < cfg.max() <= 15
    assert all(phase_at(step, 30, d) is not Phase.CROSS for d in draws[:20] for step in range(30))
    with pytest.raises(ValueError, match="recipe must be one of video, image"):
        P2PSettings.draw_for("audio", 0)


def test_a_cfg_range_replaces_the_recipes_guidance_and_nothing_else():
    for seed in range(50):
        image, video = P2PSettings.draw_for("image", seed, (2, 4)), P2PSettings.draw_for("video", seed, (2, 4))
        assert 2 <= image.guidance_scale <= 4 and 2 <= video.guidance_scale <= 4
        assert image.sa_end == image.ca_end == P2PSettings.draw_image(seed).sa_end and image.edit_weight == 1.0
        reference = P2PSettings.draw(seed)
        assert (video.sa_end, video.ca_end, video.edit_weight) == (reference.sa_end, reference.ca_end,
                                                                   reference.edit_weight)  # fmt: skip
    assert P2PSettings.draw_for("image", 3, (2, 4)).guidance_scale == round(
        np.random.RandomState(3).uniform(2, 4, 2)[1], 2
    )
    assert P2PSettings.draw_for("image", 3, (5, 5)).guidance_scale == 5
    for bad in ((4, 2), (-1, 2)):
        with pytest.raises(ValueError, match=r"a CFG range is LOW HIGH with 0 <= LOW <= HIGH"):
            P2PSettings.draw_for("image", 0, bad)


def test_settings_draw_matches_the_reference_and_covers_every_value():
    draws = [P2PSettings.draw(seed) for seed in range(300)]
    assert P2PSettings.draw(7) == draws[7]
    for seed in (0, 7, 123):  # the reference's order: randint, choice, choice, randint
        rng = np.random.RandomState(seed)
        expected = (rng.randint(5, 13), rng.choice(np.linspace(0.3, 0.45, 4)), rng.choice(np.linspace(0.6, 0.85, 6)))
        expected = (*expected, rng.randint(1, 6))
        got = draws[seed]
        assert (got.guidance_scale, got.edit_weight) == (expected[0], expected[3])
        assert (got.sa_end, got.ca_end) == (round(expected[1], 2), round(expected[2], 2))
    assert {d.guidance_scale for d in draws} == set(map(float, range(5, 13)))
    assert {d.sa_end for d in draws} == set(SA_END_CHOICES)
    assert {d.ca_end for d in draws} == set(CA_END_CHOICES)
    assert {d.edit_weight for d in draws} == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert P2PSettings.from_dict(draws[3].to_dict()) == draws[3] == P2PSettings(**draws[3].to_dict())


@pytest.mark.parametrize(
    ("field", "value"), [("sa_end", 1.5), ("ca_end", -0.1), ("edit_weight", 0.0), ("guidance_scale", -1.0)]
)
def test_settings_errors_name_the_field_and_value(field, value):
    kwargs = {"guidance_scale": 9.0, "sa_end": 0.3, "ca_end": 0.8, "edit_weight": 2.0, field: value}
    with pytest.raises(ValueError, match=rf"`{field}`.*{value}"):
        P2PSettings(**kwargs)
