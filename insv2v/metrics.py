"""Video-editing metrics: CLIP text alignment, frame consistency and direction, PickScore, warp error, seams, PSNR.

Frames are (f, h, w, 3) uint8 RGB throughout. CLIP metrics take a `ClipScorer`, built from any CLIP source:
an open_clip name (`open_clip:ViT-L-14/openai`) or folder, a transformers id or folder (the toy CLIPs included).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from insv2v.flow import optical_flow, warp
from insv2v.loading import ModelCache

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ClipScorer:
    """Unit-norm image and text embeddings from one CLIP model."""

    encode_image_fn: object  # (n, 3, s, s) normalised pixels -> (n, d)
    encode_text_fn: object  # list[str] -> (n, d)
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    logit_scale: float = 100.0

    @torch.no_grad()
    def images(self, frames: np.ndarray, batch: int = 32) -> torch.Tensor:
        """(f, h, w, 3) uint8 -> (f, d) unit vectors."""
        out = []
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        for i in range(0, len(frames), batch):
            x = clip_pixels(frames[i : i + batch], self.image_size)
            out.append(F.normalize(self.encode_image_fn((x - mean) / std).float(), dim=-1))
        return torch.cat(out)

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.encode_text_fn(texts).float(), dim=-1)


def clip_pixels(frames: np.ndarray, size: int) -> torch.Tensor:
    """(f, h, w, 3) uint8 -> (f, 3, size, size) in [0, 1], as CLIP's own processors make them: the shorter side
    resized to `size` (bicubic, antialiased), then the centre cropped square (a wide frame is not squashed)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255
    h, w = x.shape[-2:]
    if min(h, w) != size:
        scale = size / min(h, w)
        x = F.interpolate(x, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bicubic",
                          antialias=True, align_corners=False).clamp(0, 1)  # fmt: skip
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size]


CLIP_MODELS = ModelCache(size=4)  # what `load_clip` loaded


def load_clip(source: str) -> ClipScorer:
    """A ClipScorer for `open_clip:ARCH/PRETRAINED` or an open_clip folder, or a transformers CLIPModel id or folder;
    loaded once per process and read again when the folder's files change (a CLIP retrained in place while a server
    runs)."""
    return CLIP_MODELS.get((source,), source, lambda: _load_clip(source))


def processor_constants(source: str) -> tuple[tuple, tuple]:
    """(mean, std) of a transformers CLIP's pixels: its preprocessor_config.json's (found in the folder or the hub
    cache), else OpenAI's; the toy CLIP, a folder without that file, takes raw [0, 1] pixels."""
    from transformers import CLIPImageProcessor

    if Path(source).is_dir() and not (Path(source) / "preprocessor_config.json").exists():
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    try:
        processor = CLIPImageProcessor.from_pretrained(source)
    except (OSError, ValueError):  # a hub model without one (or with one of another kind): CLIP's own
        return OPENAI_MEAN, OPENAI_STD
    return tuple(processor.image_mean), tuple(processor.image_std)


def open_clip_name(source: str) -> tuple[str, str | None] | None:
    """(model name, pretrained tag) to give open_clip for `open_clip:ARCH/PRETRAINED` or a folder open_clip saved
    (its config beside the weights: `local-dir:FOLDER`); None for a transformers CLIP."""
    from open_clip.constants import HF_CONFIG_NAME

    if source.startswith("open_clip:"):
        arch, _, pretrained = source.removeprefix("open_clip:").partition("/")
        return arch, pretrained or None
    return (f"local-dir:{source}", None) if (Path(source) / HF_CONFIG_NAME).is_file() else None


def _load_clip(source: str) -> ClipScorer:
    if named := open_clip_name(source):
        import open_clip

        model = open_clip.create_model_and_transforms(named[0], pretrained=named[1])[0]
        tokenizer = open_clip.get_tokenizer(named[0])
        model.eval()
        size = model.visual.image_size
        config = getattr(model.visual, "preprocess_cfg", None) or {}  # the model's own constants (SigLIP's differ)
        return ClipScorer(
            model.encode_image,
            lambda texts: model.encode_text(tokenizer(texts)),
            size if isinstance(size, int) else min(size),
            tuple(config.get("mean", OPENAI_MEAN)),
            tuple(config.get("std", OPENAI_STD)),
            float(model.logit_scale.exp().item()),
        )
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(source).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    mean, std = processor_constants(source)

    def encode_text(texts: list[str]) -> torch.Tensor:
        tokens = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return model.get_text_features(**tokens)

    def features(output) -> torch.Tensor:  # transformers 5 may wrap features in an output object
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    return ClipScorer(
        lambda x: features(model.get_image_features(pixel_values=x)),
        lambda texts: features(encode_text(texts)),
        model.config.vision_config.image_size,
        mean,
        std,
        float(model.logit_scale.exp().item()),
    )


def text_similarity(images: torch.Tensor, text: torch.Tensor) -> float:
    """Mean cosine of unit image embeddings (f, d) with one unit text embedding (d,)."""
    return float((images @ text).mean())


def image_similarity(images_0: torch.Tensor, images_1: torch.Tensor) -> float:
    """Mean cosine of paired unit image embeddings, frame by frame: (f, d) x (f, d)."""
    return float((images_0 * images_1).sum(-1).mean())


def direction_similarity(
    images_0: torch.Tensor, images_1: torch.Tensor, text_0: torch.Tensor, text_1: torch.Tensor
) -> float:
    """Cosine between each frame's image change and the caption change, averaged (Gal et al. 2022)."""
    return float(F.cosine_similarity(images_1 - images_0, (text_1 - text_0)[None], dim=-1).mean())


def clip_text_alignment(scorer: ClipScorer, frames: np.ndarray, caption: str) -> float:
    """Mean cosine similarity of each frame with the caption of the edited video."""
    return text_similarity(scorer.images(frames), scorer.texts([caption])[0])


def clip_frame_consistency(scorer: ClipScorer, frames: np.ndarray) -> float:
    """Mean cosine similarity of consecutive frames' image embeddings (1 for a still video)."""
    if len(frames) < 2:
        return 1.0
    e = scorer.images(frames)
    return image_similarity(e[1:], e[:-1])


def all_pairs_similarity(images: torch.Tensor) -> float:
    """Mean cosine over all distinct pairs of unit frame embeddings (f, d); 1 for a single frame."""
    f = len(images)
    if f < 2:
        return 1.0
    gram = images @ images.T  # (f, f)
    return float((gram.sum() - gram.diagonal().sum()) / (f * (f - 1)))


def loveu_scores(scorer: ClipScorer, frames: np.ndarray, caption: str) -> dict[str, float]:
    """LOVEU-TGVE's CLIP scores (x100, so they sit beside its leaderboard): text alignment, the mean cosine of each
    frame with the caption, and frame consistency, the mean cosine over ALL frame pairs (not consecutive ones)."""
    e = scorer.images(frames)
    return {
        "loveu_text": 100 * text_similarity(e, scorer.texts([caption])[0]),
        "loveu_consistency": 100 * all_pairs_similarity(e),
    }


def clip_directional_similarity(
    scorer: ClipScorer, source: np.ndarray, edited: np.ndarray, source_caption: str, edited_caption: str
) -> float:
    """Cosine between the image change and the caption change, per frame, averaged (Gal et al. 2022)."""
    text = scorer.texts([source_caption, edited_caption])
    return direction_similarity(scorer.images(source), scorer.images(edited), text[0], text[1])


def pick_score(scorer: ClipScorer, frames: np.ndarray, prompt: str) -> float:
    """PickScore (Kirstain et al. 2023): logit_scale * cosine, averaged over frames.

    Meaningful with the PickScore model (`yuvalkirstain/PickScore_v1`); with another CLIP it is a scaled CLIP score.
    """
    return scorer.logit_scale * clip_text_alignment(scorer, frames, prompt)


def _gray(frame: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frame.mean(axis=-1).astype(np.uint8))


def consecutive_flows(frames: np.ndarray) -> list[np.ndarray]:
    """Optical flow (h, w, 2) from each frame t+1 back to frame t: where each pixel came from."""
    return [optical_flow(_gray(frames[t + 1]), _gray(frames[t])) for t in range(len(frames) - 1)]


def pair_warp_errors(
    frames: np.ndarray, flow_frames: np.ndarray | None = None, flows: list[np.ndarray] | None = None
) -> np.ndarray:
    """Per consecutive pair (f-1,): MSE between frame t+1 and frame t warped onto it, over the pixels whose source
    lies inside the frame (occlusions are not masked: a moving shape's uncovered background counts, so even an
    exact edit scores a little above 0).

    Flow comes from `flow_frames` (e.g. the input video, so an edit is judged by the input's motion) or from
    `frames` themselves; or pass `flows = consecutive_flows(flow_frames)` computed once, to score many edits of
    one input. Values in [0, 1] pixel units squared.
    """
    if flow_frames is not None and (len(flow_frames) < len(frames) or flow_frames.shape[1:3] != frames.shape[1:3]):
        (f, h, w), (ff, fh, fw) = frames.shape[:3], flow_frames.shape[:3]
        raise ValueError(f"`flow_frames` must hold the {f} frames of {w}x{h} scored, got {ff} of {fw}x{fh}")
    if flows is None:
        flows = consecutive_flows((frames if flow_frames is None else flow_frames)[: len(frames)])
    elif len(flows) != max(len(frames) - 1, 0):
        raise ValueError(f"`flows` must hold one flow per consecutive pair ({len(frames) - 1}), got {len(flows)}")
    errors = np.zeros(max(len(frames) - 1, 0))
    for t, flow in enumerate(flows):  # frame t+1 -> t: where each pixel came from
        prev = torch.from_numpy(frames[t]).permute(2, 0, 1)[None].float() / 255  # (1, 3, h, w)
        warped, weight = warp(prev, torch.from_numpy(flow).permute(2, 0, 1)[None])
        nxt = torch.from_numpy(frames[t + 1]).permute(2, 0, 1)[None].float() / 255
        mask = (weight > 0.999).float()
        errors[t] = float((((warped - nxt) ** 2) * mask).sum() / (3 * mask.sum()).clamp(min=1))
    return errors


def warp_error(
    frames: np.ndarray, flow_frames: np.ndarray | None = None, flows: list[np.ndarray] | None = None
) -> float:
    """Motion-aware MSE: mean flow-warp error between consecutive frames (0 for a still video)."""
    errors = pair_warp_errors(frames, flow_frames, flows)
    return float(errors.mean()) if len(errors) else 0.0


def seam_measures(errors: np.ndarray, seams: list[int]) -> tuple[float, float]:
    """(seam score, seam error) of a video's per-pair warp errors (`pair_warp_errors`), its clips meeting at `seams`
    (frame s-1 -> s crosses seam s; seams outside the video, or named twice, count once or not at all).

    The score divides the error across the boundaries by the error elsewhere: 1 means a boundary is as smooth as any
    other pair of frames (1 too without a seam, or in a still video whose seams are still). The error is the
    boundaries' own, in absolute terms (NaN without a seam): a correction that adds flicker inside clips lowers the
    score's ratio without smoothing a boundary, and only the error tells.
    """
    at = np.unique([s - 1 for s in seams if 0 < s < len(errors) + 1]).astype(int)
    if len(at) == 0:
        return 1.0, float("nan")
    across = float(errors[at].mean())
    rest = np.delete(errors, at)
    baseline = rest.mean() if len(rest) else errors.mean()
    if baseline < 1e-8:  # a still video: seams are as smooth as the rest if they are still too
        return (1.0 if across < 1e-8 else float("inf")), across
    return float(across / baseline), across


def seam_error(
    frames: np.ndarray, seams: list[int], flow_frames: np.ndarray | None = None, flows: list[np.ndarray] | None = None
) -> float:
    """Mean warp error across the clip boundaries alone (`seam_measures`); flow as in `pair_warp_errors`."""
    return seam_measures(pair_warp_errors(frames, flow_frames, flows), seams)[1]


def seam_score(
    frames: np.ndarray, seams: list[int], flow_frames: np.ndarray | None = None, flows: list[np.ndarray] | None = None
) -> float:
    """Warp error across clip boundaries over the error elsewhere (`seam_measures`); LVSC should bring it towards 1.
    A ratio: more error elsewhere lowers it too, so read it with `seam_error`. Flow as in `pair_warp_errors`."""
    return seam_measures(pair_warp_errors(frames, flow_frames, flows), seams)[0]


PSNR_MAX = 100.0  # dB: identical videos score this, so that a mean over edits stays finite


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 videos, at most PSNR_MAX."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return PSNR_MAX if mse == 0 else min(PSNR_MAX, float(10 * np.log10(255.0**2 / mse)))


# Scores shown beside an edit, and whether higher (+1) or lower (-1) is better.
EDIT_SCORES = {"clip_text": 1, "clip_consistency": 1, "warp_error": -1}


def edit_scores(
    edited: np.ndarray,
    source: np.ndarray,
    text: str,
    scorer: ClipScorer | None = None,
    flows: list[np.ndarray] | None = None,
) -> dict[str, float]:
    """EDIT_SCORES of one edit: CLIP text alignment with `text` and frame consistency (only with a `scorer`),
    and warp error along the input's motion (`flows = consecutive_flows(source)`, computed here if not given)."""
    scores = {}
    if scorer is not None:
        scores["clip_text"] = clip_text_alignment(scorer, edited, text)
        scores["clip_consistency"] = clip_frame_consistency(scorer, edited)
    scores["warp_error"] = warp_error(edited, source, flows)
    return scores


# Scores of the Compare tab's table, and whether higher (+1) or lower (-1) is better.
COMPARE_SCORES = {
    "clip_text": 1, "clip_consistency": 1, "loveu_text": 1, "loveu_consistency": 1, "pick_score": 1,
    "warp_error": -1, "psnr": 1,
}  # fmt: skip


def compare_scores(
    edited: np.ndarray,
    source: np.ndarray,
    caption: str,
    scorer: ClipScorer | None = None,
    pick_scorer: ClipScorer | None = None,
    flows: list[np.ndarray] | None = None,
    target: np.ndarray | None = None,
) -> dict[str, float]:
    """COMPARE_SCORES of one method's output against the edited `caption` (a caption, as LOVEU-TGVE and PickScore
    score, not an instruction): CLIP ones with a `scorer`, PickScore with a `pick_scorer`, PSNR with an exact
    `target` (the toy world's)."""
    scores = edit_scores(edited, source, caption, scorer, flows)
    if scorer is not None:
        scores.update(loveu_scores(scorer, edited, caption))
    if pick_scorer is not None:
        scores["pick_score"] = pick_score(pick_scorer, edited, caption)
    if target is not None:
        scores["psnr"] = psnr(edited, target)
    return scores
