"""What the benchmark needs from a model family, and the pieces every family shares.

Each family module (:mod:`tango_prune.models.base`) implements ``bench_frame_size``, ``bench_inputs``,
``bench_encode`` and ``bench_first_video_features``; :mod:`.runner` measures every family the same way (one
encoder pass per video reused by every run through :func:`tango_prune.models.reuse_encoding`, TTFT split
vision / pruning / prefill). This module holds the shared parts: the inputs record, the frames (file or
synthetic), the prompt, and the ``generate`` kwargs of the unpruned and pruned runs.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import torch

from ..models.base import family_for as _family_for
from .video import load_video, synthetic_video

__all__ = [
    "BenchInputs",
    "family_for",
    "bench_frames",
    "bench_prompt",
    "framewise_inputs",
    "framewise_encode",
    "unpruned_kwargs",
    "encoder_output",
    "pruned_kwargs",
]


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


def bench_frames(spec: Any, size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The spec's frames: sampled from its video file, else the synthetic clip at ``size`` px; with times and a
    description of the source."""
    if spec.video:
        frames, ts = load_video(spec.video, spec.frames)
        return frames, ts, os.path.basename(spec.video)
    frames, ts = synthetic_video(spec.frames, size, seed=spec.seed)
    return frames, ts, "synthetic"


def bench_prompt(spec: Any, video: list[int]) -> torch.Tensor:
    """Prompt text ids around the video placeholder ids (any ids below the special tokens behave alike for timing)."""
    gen = torch.Generator().manual_seed(spec.seed)
    pre = torch.randint(10, 1000, (spec.prompt_tokens,), generator=gen)
    post = torch.randint(10, 1000, (max(1, spec.prompt_tokens // 2),), generator=gen)
    return torch.cat([pre, torch.tensor(video, dtype=torch.long), post])[None].to(dtype=torch.long)


def framewise_inputs(
    family: Any, model: Any, spec: Any, size: int, device: torch.device, token_id: int, per_frame: int, extra: int = 0
) -> BenchInputs:
    """Benchmark inputs of a family that takes frames as pixels (1, T, 3, size, size) with the family's
    normalisation and a prompt of ``T * per_frame + extra`` placeholders ``token_id`` (LLaVA, InternVL)."""
    from ..preprocess import normalise

    frames, ts, source = bench_frames(spec, size)
    pv = normalise(frames, (size, size), *family.normalisation)[None].to(device)
    n_video = spec.frames * per_frame + extra
    ids = bench_prompt(spec, [token_id] * n_video).to(device)
    info = {
        "source": source,
        "frames": spec.frames,
        "frame_size": size,
        "tokens_per_frame": per_frame,
        "video_tokens": n_video,
        "prompt_tokens": int(ids.shape[1] - n_video),
        "timestamps": ts.tolist(),
    }
    return BenchInputs(pv, ids, {}, [ts.tolist()], info)


def framewise_encode(adapter: Any, model: Any, inp: BenchInputs, warmup: bool = False) -> Any:
    """The encoder pass of a frames-as-pixels family over the whole video (``warmup``: its first frame only),
    with the checkpoint's vision layer and selection strategy."""
    pixels = inp.pixels[:, :1] if warmup else inp.pixels
    return adapter.encode(model, pixels, model.config.vision_feature_layer, model.config.vision_feature_select_strategy)


def encoder_output(out: Any) -> Any:
    """An upstream encoder output without its hidden states (``last_hidden_state``, ``hidden_states``,
    ``attentions``), which the LLM does not take; every other field stays (Qwen3-VL's DeepStack levels)."""
    return type(out)(**{k: v for k, v in out.items() if k not in ("last_hidden_state", "hidden_states", "attentions")})


def unpruned_kwargs(inp: BenchInputs, mask: torch.Tensor, encoder_outputs: dict[str, Any]) -> dict[str, Any]:
    """Upstream ``generate`` kwargs with the encoder outputs (the family's ``bench_upstream_encode``) passed in."""
    return dict(input_ids=inp.input_ids, attention_mask=mask, mm_encoder_outputs=encoder_outputs, **inp.common)


def pruned_kwargs(inp: BenchInputs, mask: torch.Tensor) -> dict[str, Any]:
    """``generate`` kwargs for a patched model (the family encodes, prunes and re-inserts)."""
    return dict(
        input_ids=inp.input_ids,
        attention_mask=mask,
        pixel_values_videos=inp.pixels,
        video_timestamps=inp.timestamps,
        **inp.common,
    )


def family_for(model: Any) -> Any:
    """The model's family (it drives the benchmark); ``ValueError`` naming the supported classes otherwise."""
    try:
        return _family_for(model)
    except ValueError:
        from ..models.base import supported_classes

        raise ValueError(f"model: the benchmark drives {supported_classes()}, got {type(model).__name__}") from None
