"""Frames to model pixels: the one home of the normalisation constants, resizing and Qwen patchification.

Used by ``tango-prune run``, the benchmark and the model families; upstream video processors are not used
because they need torchvision (a CUDA build on PyPI that breaks a CPU torch).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

__all__ = ["SIGLIP_MEAN_STD", "CLIP_MEAN_STD", "IMAGENET_MEAN_STD", "normalise", "qwen_patches", "pooled_size"]

#: SigLIP (LLaVA-OneVision / LLaVA-Video) normalisation: mean 0.5, std 0.5 per channel.
SIGLIP_MEAN_STD: tuple[tuple[float, ...], tuple[float, ...]] = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
#: OpenAI CLIP normalisation used by the Qwen2-VL / Qwen2.5-VL processors.
CLIP_MEAN_STD: tuple[tuple[float, ...], tuple[float, ...]] = (
    (0.48145466, 0.4578275, 0.40821073),
    (0.26862954, 0.26130258, 0.27577711),
)
#: ImageNet normalisation used by the InternVL processors.
IMAGENET_MEAN_STD: tuple[tuple[float, ...], tuple[float, ...]] = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def normalise(frames: np.ndarray, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 RGB frames (T, H, W, 3) -> float32 (T, 3, h, w): bicubic resize to ``size`` = (h, w) as the
    upstream processors do, rescale to [0, 1], normalise per channel."""
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be a uint8 array of shape (T, H, W, 3), got {getattr(frames, 'shape', frames)}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False).clamp(0, 255) / 255.0
    m = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.as_tensor(std, dtype=torch.float32)[:, None, None]
    return (x - m) / s


def qwen_patches(pixels: torch.Tensor, patch: int, merge: int, temporal: int) -> tuple[torch.Tensor, list[int]]:
    """Qwen2-VL / Qwen2.5-VL ``pixel_values_videos`` for one video, in the upstream processor's layout.

    ``pixels`` (1, T, 3, H, W) normalised frames; T is padded to a multiple of ``temporal`` by
    repeating the last frame, as the processor does. Rows are patches ordered by temporal step, then 2-D merge
    unit in raster order, then patch inside the unit; each row is (channel, frame in step, y, x) flattened.
    Returns (rows (n, 3 * temporal * patch * patch), grid [t, h, w] in patches). Raises ``ValueError`` when H
    or W is not a multiple of ``patch * merge``.
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


def pooled_size(image_size: int, patch_size: int) -> int:
    """Side of the LLaVA-OneVision token grid of one frame: the patch grid bilinearly pooled to ceil(g / 2)."""
    return math.ceil(image_size // patch_size / 2)
