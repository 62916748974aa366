"""Benchmark inputs: frames from a video file (PyAV) or a deterministic synthetic clip, as model pixels."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..preprocess import normalise, pooled_size, qwen_patches  # one home; re-exported for the bench
from ..video import load_video  # the one decoder; re-exported for the bench

__all__ = ["load_video", "synthetic_video", "to_pixels", "qwen_patches", "tokens_per_frame"]


def _texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A multi-scale random RGB texture (float32, 0..255), like natural image statistics at a glance."""
    from PIL import Image

    out = np.zeros((h, w, 3), dtype=np.float32)
    for cells, weight in ((4, 0.45), (16, 0.3), (64, 0.25)):
        g = rng.uniform(0, 255, (max(2, h * cells // max(h, w)), max(2, w * cells // max(h, w)), 3))
        img = Image.fromarray(g.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
        out += weight * np.asarray(img, dtype=np.float32)
    return out


def synthetic_video(frames: int, size: int, seed: int = 0, fps: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic clip with camera motion: a textured scene panned at ~1.5 patches per frame, moving
    discs, sensor noise, and one scene cut at mid-length.

    Camera motion matters: a perfectly static background would let temporal methods (Tango, HoliTom) collapse
    almost every position and keep far fewer tokens than their retention, which is not what real footage
    does. Returns (uint8 RGB (frames, size, size, 3), timestamps (frames,) = arange / fps).
    """
    if frames < 1 or size < 8:
        raise ValueError(f"frames must be >= 1 and size >= 8, got frames={frames}, size={size}")
    rng = np.random.default_rng(seed)
    step = max(1, round(0.06 * size))  # pan per frame, pixels
    scenes = [_texture(size, size + step * frames, rng) for _ in range(2)]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    discs = rng.uniform(0.1, 0.9, (4, 4))  # x, y, vx, vy
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        scene = 0 if t < max(1, frames // 2) else 1
        img = scenes[scene][:, t * step : t * step + size].copy()
        for i, (x, y, vx, vy) in enumerate(discs):
            cx = (x + 0.05 * (vx - 0.5) * t) % 1.0
            cy = (y + 0.05 * (vy - 0.5) * t) % 1.0
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < (0.06 + 0.02 * i) ** 2
            img[mask] = 255.0 * np.array([i % 2, (i // 2) % 2, 1.0])
        img += rng.normal(0, 6, img.shape)
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out, np.arange(frames, dtype=np.float64) / fps


def to_pixels(
    frames: np.ndarray, size: int, mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5
) -> torch.Tensor:
    """Resize RGB frames to ``size`` x ``size`` and normalise (default like SigLIP; ``mean`` / ``std`` may be per
    channel), with :func:`tango_prune.preprocess.normalise`: (1, T, 3, size, size) fp32."""
    m = [float(mean)] * 3 if isinstance(mean, (int, float)) else list(mean)
    s = [float(std)] * 3 if isinstance(std, (int, float)) else list(std)
    return normalise(frames, (size, size), m, s).unsqueeze(0).contiguous()


def tokens_per_frame(image_size: int, patch_size: int) -> int:
    """LLaVA-OneVision video tokens per frame: the patch grid bilinearly pooled to ceil(g / 2) squared."""
    return pooled_size(image_size, patch_size) ** 2
