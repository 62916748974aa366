"""Small synthetic videos shared by the method tests."""

from __future__ import annotations

import torch

import tango_prune as tp


def dynamic_video(T: int = 4, H: int = 6, W: int = 6, D: int = 16, seed: int = 0, saliency: bool = True):
    """Independent random frames: no static positions, so every method's budget is exact."""
    g = torch.Generator().manual_seed(seed)
    F = torch.randn(T, H, W, D, generator=g)
    S = torch.rand(T, H, W, generator=g) if saliency else None
    return tp.VideoTokens(F, S, timestamps=torch.arange(T, dtype=torch.float64) * 0.5)


def scene_video(T: int = 8, H: int = 6, W: int = 6, D: int = 16, seed: int = 0):
    """Two scenes of T/2 frames, each a fixed background with small noise and a moving square."""
    g = torch.Generator().manual_seed(seed)
    F = torch.empty(T, H, W, D)
    for start in (0, T // 2):
        bg = torch.randn(H, W, D, generator=g)
        for t in range(start, min(T, start + T // 2)):
            F[t] = bg + 0.02 * torch.randn(H, W, D, generator=g)
            F[t, t % H, :2] = torch.randn(2, D, generator=g) * 3
    S = torch.rand(T, H, W, generator=g)
    return tp.VideoTokens(F, S)
