"""Benchmark inputs: frames from a video file (PyAV) or a deterministic synthetic clip, as model pixels."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..video import load_video  # the one decoder; re-exported for the bench

__all__ = ["load_video", "synthetic_video", "to_pixels", "qwen_patches", "tokens_per_frame"]


def _texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A multi-scale random RGB texture (float32, 0..255), like natural image statistics at a glance."""
    from PIL import Image

    out = np.zeros((h, w, 3), dtype=np.float32)
    for cells, weight in ((4, 0.45), (16, 0.3), (64, 0.25)):
        g = rng.uniform(0, 255, (max(2, h * cells // max(h, w)), max(2, w * cells // max(h, w)), 3))
        img = Image.fromarray(g.astype(np.uint8)).resize((w, h), Image.BICUBIC)
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
    step = max(1, round(0.06 * size))                                   # pan per frame, pixels
    scenes = [_texture(size, size + step * frames, rng) for _ in range(2)]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    discs = rng.uniform(0.1, 0.9, (4, 4))                               # x, y, vx, vy
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        scene = 0 if t < max(1, frames // 2) else 1
        img = scenes[scene][:, t * step: t * step + size].copy()
        for i, (x, y, vx, vy) in enumerate(discs):
            cx = (x + 0.05 * (vx - 0.5) * t) % 1.0
            cy = (y + 0.05 * (vy - 0.5) * t) % 1.0
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < (0.06 + 0.02 * i) ** 2
            img[mask] = 255.0 * np.array([i % 2, (i // 2) % 2, 1.0])
        img += rng.normal(0, 6, img.shape)
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out, np.arange(frames, dtype=np.float64) / fps


def to_pixels(frames: np.ndarray, size: int, mean: float | Sequence[float] = 0.5,
              std: float | Sequence[float] = 0.5) -> torch.Tensor:
    """Resize RGB frames to ``size`` x ``size`` (bilinear) and normalise (default like SigLIP; ``mean`` / ``std``
    may be per channel): (1, T, 3, size, size) fp32."""
    from PIL import Image

    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, h, w, 3), got {frames.shape}")
    arr = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in frames])
    m = torch.as_tensor(mean, dtype=torch.float32)
    s = torch.as_tensor(std, dtype=torch.float32)
    x = torch.from_numpy(arr).float().div_(255.0).sub_(m).div_(s)
    return x.permute(0, 3, 1, 2).unsqueeze(0).contiguous()


def qwen_patches(pixels: torch.Tensor, patch: int, merge: int, temporal: int) -> tuple[torch.Tensor, list[int]]:
    """Qwen2-VL / Qwen2.5-VL ``pixel_values_videos`` for one video, in the upstream processor's layout.

    ``pixels`` (1, T, 3, H, W) normalised frames; T is padded to a multiple of ``temporal`` by repeating the last
    frame, as the processor does. Rows are patches ordered by temporal step, then 2-D merge unit in raster order,
    then patch inside the unit; each row is (channel, frame in step, y, x) flattened. Returns (rows (n, 3 *
    temporal * patch * patch), grid [t, h, w] in patches). Raises ``ValueError`` when H or W is not a multiple of
    ``patch * merge``.
    """
    if pixels.dim() != 5 or pixels.shape[0] != 1 or pixels.shape[2] != 3:
        raise ValueError(f"pixels must have shape (1, T, 3, H, W), got {tuple(pixels.shape)}")
    _, T, C, H, W = pixels.shape
    if H % (patch * merge) or W % (patch * merge):
        raise ValueError(f"pixels height and width must be multiples of patch * merge = {patch * merge}, got {H}x{W}")
    if pad := -T % temporal:
        pixels = torch.cat([pixels, pixels[:, -1:].expand(-1, pad, -1, -1, -1)], dim=1)
    gt, gh, gw = (T + pad) // temporal, H // patch, W // patch
    x = pixels.reshape(gt, temporal, C, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, C * temporal * patch * patch).contiguous(), [gt, gh, gw]


def tokens_per_frame(image_size: int, patch_size: int) -> int:
    """LLaVA-OneVision video tokens per frame: the patch grid bilinearly pooled to ceil(g / 2) squared."""
    return math.ceil(image_size // patch_size / 2) ** 2
