"""How the benchmark drives each supported upstream model class: inputs, the encoder pass, and call kwargs.

One small class per model family, all with the same methods, so :mod:`.runner` measures every family the same
way (one encoder pass per video reused by every run, TTFT split vision / pruning / prefill):

- :meth:`inputs` builds the video in the model's layout, the prompt ids and the per-call extras;
- :meth:`encode` / :meth:`encode_warmup` call the tango_prune adapter's encoder pass (vision + saliency);
- :meth:`unpruned_kwargs` / :meth:`pruned_kwargs` are the ``generate`` kwargs of the unpruned run (encoder
  output passed in) and of the pruned runs (pixels passed, the adapter serves the cached encoder pass);
- :meth:`first_video_features` gives the first video's features as (T, H, W, D) for the similarity summary.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import torch

from .video import load_video, qwen_patches, synthetic_video, to_pixels, tokens_per_frame

__all__ = ["BenchInputs", "family_for"]

#: OpenAI CLIP normalisation used by the Qwen2-VL / Qwen2.5-VL processors.
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class BenchInputs:
    """One benchmark prompt: the video pixels in the model's layout, the prompt ids, extras, and a description."""

    pixels: torch.Tensor
    input_ids: torch.Tensor
    #: kwargs every ``generate`` call needs besides ids / mask / video (grids, token types, timing of steps)
    common: dict[str, Any]
    #: the per-video frame times the pruned runs pass as ``video_timestamps=``
    timestamps: list[list[float]]
    info: dict[str, Any]


def _frames(spec: Any, size: int) -> tuple[np.ndarray, np.ndarray, str]:
    if spec.video:
        frames, ts = load_video(spec.video, spec.frames)
        return frames, ts, os.path.basename(spec.video)
    frames, ts = synthetic_video(spec.frames, size, seed=spec.seed)
    return frames, ts, "synthetic"


def _prompt(spec: Any, video: list[int]) -> torch.Tensor:
    """Prompt text ids around the video placeholder ids (any ids below the special tokens behave alike for timing)."""
    gen = torch.Generator().manual_seed(spec.seed)
    pre = torch.randint(10, 1000, (spec.prompt_tokens,), generator=gen)
    post = torch.randint(10, 1000, (max(1, spec.prompt_tokens // 2),), generator=gen)
    return torch.cat([pre, torch.tensor(video, dtype=torch.long), post])[None].to(dtype=torch.long)


class LlavaOneVisionFamily:
    """``LlavaOnevisionForConditionalGeneration``: (1, T, 3, S, S) pixels, one newline token per video."""

    model_class = "LlavaOnevisionForConditionalGeneration"

    def frame_size(self, model: Any, requested: int | None, default: int | None = None) -> int:
        """The frame size in pixels: the vision tower's fixed ``image_size`` (``requested`` must match it)."""
        size = model.config.vision_config.image_size
        if requested is not None and requested != size:
            raise ValueError(f"frame_size must be {size} (the fixed SigLIP input size) for {self.model_class}, "
                             f"got {requested}")
        return size

    def inputs(self, model: Any, spec: Any, size: int, device: torch.device) -> BenchInputs:
        """Video pixels at ``size`` px (from :meth:`frame_size`), prompt ids with T * tokens-per-frame + 1 video
        placeholders, and the info block."""
        vc = model.config.vision_config
        frames, ts, source = _frames(spec, size)
        pv = to_pixels(frames, size).to(device)
        per_frame = tokens_per_frame(size, vc.patch_size)
        n_video = spec.frames * per_frame + 1                      # upstream OV layout: one newline per video
        ids = _prompt(spec, [model.config.video_token_id] * n_video).to(device)
        info = {"source": source, "frames": spec.frames, "frame_size": size, "tokens_per_frame": per_frame,
                "video_tokens": n_video, "prompt_tokens": int(ids.shape[1] - n_video), "timestamps": ts.tolist()}
        return BenchInputs(pv, ids, {}, [ts.tolist()], info)

    def _layer_args(self, model: Any) -> tuple[Any, str]:
        return model.config.vision_feature_layer, model.config.vision_feature_select_strategy

    def encode(self, adapter: Any, model: Any, inp: BenchInputs) -> Any:
        """The adapter's encoder pass over the whole video: (features (V, T, H, W, D), saliency)."""
        return adapter.encode(model, inp.pixels, *self._layer_args(model))

    def encode_warmup(self, adapter: Any, model: Any, inp: BenchInputs) -> None:
        """The same encoder pass on the first frame only (first-call costs off the timed pass)."""
        adapter.encode(model, inp.pixels[:, :1], *self._layer_args(model))

    def unpruned_kwargs(self, inp: BenchInputs, mask: torch.Tensor, video_output: Any) -> dict[str, Any]:
        """Upstream ``generate`` kwargs with the encoder output passed in."""
        return dict(input_ids=inp.input_ids, attention_mask=mask, mm_encoder_outputs={"video": video_output},
                    **inp.common)

    def pruned_kwargs(self, inp: BenchInputs, mask: torch.Tensor) -> dict[str, Any]:
        """``generate`` kwargs for a patched model (the adapter encodes, prunes and re-inserts)."""
        return dict(input_ids=inp.input_ids, attention_mask=mask, pixel_values_videos=inp.pixels,
                    video_timestamps=inp.timestamps, **inp.common)

    def first_video_features(self, encoded: Any, inp: BenchInputs) -> torch.Tensor:
        """The first video's features (T, H, W, D) from :meth:`encode`'s output."""
        return encoded[0][0]


class Qwen25VLFamily(LlavaOneVisionFamily):
    """``Qwen2_5_VLForConditionalGeneration``: flattened patches, ``video_grid_thw``, M-RoPE step timing.

    Frames are resized to ``frame_size`` square (a multiple of patch * merge = 28 px; default the preset's), CLIP
    normalised and patchified like the upstream processor; two frames form one temporal step of
    (S / 28)^2 tokens. ``second_per_grid_ts`` is temporal_patch_size times the mean frame interval, and the
    pruned runs get the start time of every step as ``video_timestamps``.
    """

    model_class = "Qwen2_5_VLForConditionalGeneration"

    def frame_size(self, model: Any, requested: int | None, default: int | None = None) -> int:
        """``requested`` (a positive multiple of patch x merge), else ``default`` (the preset's size), else 16
        merge units (448 px for patch 14)."""
        vc = model.config.vision_config
        unit = vc.patch_size * vc.spatial_merge_size
        size = requested if requested is not None else (default or 16 * unit)
        if isinstance(size, bool) or not isinstance(size, int) or size < unit or size % unit:
            raise ValueError(f"frame_size must be a positive multiple of {unit} (patch x merge) for "
                             f"{self.model_class}, got {size!r}")
        return size

    def inputs(self, model: Any, spec: Any, size: int, device: torch.device) -> BenchInputs:
        """Patch rows at ``size`` px, prompt ids with vision start / video placeholders / vision end, grid and
        step timing."""
        cfg = model.config
        vc = cfg.vision_config
        frames, ts, source = _frames(spec, size)
        rows, grid = qwen_patches(to_pixels(frames, size, _CLIP_MEAN, _CLIP_STD), vc.patch_size,
                                  vc.spatial_merge_size, vc.temporal_patch_size)
        tps = vc.temporal_patch_size
        interval = float(np.mean(np.diff(ts))) if len(ts) > 1 else 1.0
        step_ts = [float(ts[min(i * tps, len(ts) - 1)]) for i in range(grid[0])]
        per_step = grid[1] * grid[2] // vc.spatial_merge_size ** 2
        n_video = grid[0] * per_step
        ids = _prompt(spec, [cfg.vision_start_token_id] + [cfg.video_token_id] * n_video + [cfg.vision_end_token_id])
        ids = ids.to(device)
        common = dict(video_grid_thw=torch.tensor([grid], device=device),
                      second_per_grid_ts=torch.tensor([tps * interval], device=device),
                      mm_token_type_ids=(2 * (ids == cfg.video_token_id)).to(torch.int))
        info = {"source": source, "frames": spec.frames, "frame_size": size, "temporal_steps": grid[0],
                "tokens_per_step": per_step, "video_tokens": n_video, "prompt_tokens": int(ids.shape[1] - n_video),
                "timestamps": ts.tolist()}
        return BenchInputs(rows.to(device), ids, common, [step_ts], info)

    def encode(self, adapter: Any, model: Any, inp: BenchInputs) -> Any:
        """The adapter's encoder pass: (per-video features (n, D), per-video saliency (t, h, w))."""
        return adapter.encode(model, inp.pixels, inp.common["video_grid_thw"])

    def encode_warmup(self, adapter: Any, model: Any, inp: BenchInputs) -> None:
        """The same encoder pass on the first temporal step only."""
        t, h, w = inp.common["video_grid_thw"][0].tolist()
        adapter.encode(model, inp.pixels[: h * w], torch.tensor([[1, h, w]], device=inp.pixels.device))

    def first_video_features(self, encoded: Any, inp: BenchInputs) -> torch.Tensor:
        """The first video's features (T, H, W, D): temporal steps x merged rows x merged columns."""
        feats, sal = encoded
        t, h, w = sal[0].shape
        return feats[0].reshape(t, h, w, -1)


_FAMILIES = {f.model_class: f for f in (LlavaOneVisionFamily(), Qwen25VLFamily())}


def family_for(model: Any) -> Any:
    """The benchmark driver for ``model``'s class; ``ValueError`` naming the supported classes otherwise."""
    cls = type(model).__name__
    if cls not in _FAMILIES:
        raise ValueError(f"model: the benchmark drives {sorted(_FAMILIES)}, got {cls}")
    return _FAMILIES[cls]
