"""Benchmark inputs: frames from a video file (PyAV) or a deterministic synthetic clip, as model pixels."""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["load_video", "synthetic_video", "to_pixels"]


def load_video(path: str, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``frames`` frames sampled uniformly over the file at ``path``.

    Returns (uint8 RGB array (frames, h, w, 3), timestamps in seconds (frames,)). Raises ``ValueError`` for
    an unreadable file or a video shorter than one frame.
    """
    import av

    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    try:
        container = av.open(path)
    except (OSError, av.error.FFmpegError) as exc:  # type: ignore[attr-defined]
        raise ValueError(f"video must be a readable video file, got {path!r}: {exc}") from None
    with container:
        stream = container.streams.video[0]
        decoded, times = [], []
        for frame in container.decode(stream):
            decoded.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time) if frame.time is not None else len(times) / 30.0)
    if not decoded:
        raise ValueError(f"video {path!r} has no decodable frames")
    pick = np.round(np.linspace(0, len(decoded) - 1, frames)).astype(int)
    return np.stack([decoded[i] for i in pick]), np.asarray([times[i] for i in pick], dtype=np.float64)


def synthetic_video(frames: int, size: int, seed: int = 0, fps: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic clip: a textured background with a few moving discs and one scene cut at mid-length.

    Returns (uint8 RGB (frames, size, size, 3), timestamps (frames,) = arange / fps).
    """
    if frames < 1 or size < 8:
        raise ValueError(f"frames must be >= 1 and size >= 8, got frames={frames}, size={size}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    scenes = [rng.uniform(0, 255, 3) for _ in range(2)]
    discs = rng.uniform(0.1, 0.9, (4, 4))                               # x, y, vx, vy
    for t in range(frames):
        scene = 0 if t < max(1, frames // 2) else 1
        base = scenes[scene][None, None, :] * (0.6 + 0.4 * np.sin(6 * (xx + scene * yy)))[..., None]
        img = base.copy()
        for i, (x, y, vx, vy) in enumerate(discs):
            cx = (x + 0.05 * (vx - 0.5) * t) % 1.0
            cy = (y + 0.05 * (vy - 0.5) * t) % 1.0
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < (0.06 + 0.02 * i) ** 2
            img[mask] = 255.0 * np.array([i % 2, (i // 2) % 2, 1.0])
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out, np.arange(frames, dtype=np.float64) / fps


def to_pixels(frames: np.ndarray, size: int, mean: float = 0.5, std: float = 0.5) -> torch.Tensor:
    """Resize RGB frames to ``size`` x ``size`` (bilinear) and normalise like SigLIP: (1, T, 3, size, size) fp32."""
    from PIL import Image

    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, h, w, 3), got {frames.shape}")
    arr = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in frames])
    x = torch.from_numpy(arr).float().div_(255.0).sub_(mean).div_(std)
    return x.permute(0, 3, 1, 2).unsqueeze(0).contiguous()


def tokens_per_frame(image_size: int, patch_size: int) -> int:
    """LLaVA-OneVision video tokens per frame: the patch grid bilinearly pooled to ceil(g / 2) squared."""
    return math.ceil(image_size // patch_size / 2) ** 2
