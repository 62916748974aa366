"""Uniform spatial pooling: average every frame's token grid down to the budget.

The pooling baseline of the video-LLM literature (LLaVA-OneVision itself 2x2-pools its video grid, Li et
al., arXiv 2408.03326; FastVID, arXiv 2503.11187, reports it as the "uniform pooling" row).

Defaults: per frame ``K = max(1, ceil(H W r))`` cells. The cells are the centres of a near-square
h' x w' lattice laid evenly over the H x W grid (h' w' >= K, the smallest such lattice with the grid's
aspect ratio; when h' w' > K, K lattice cells evenly spaced in raster order are used). Every token is
assigned to the spatially nearest cell (ties: the first cell) and each cell carries the fp32 mean of its
tokens, placed at the cell's centre position. Same pooling for every frame. Needs no saliency; any T and
any grid, square or not.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch

from ..config import PruneConfig
from ..core.dpc import nearest
from ..core.merge import widen
from ..tokens import PruneResult, TokenKind, VideoTokens
from . import register
from ._common import flat_index, frame_budget, spread


@dataclasses.dataclass(frozen=True)
class UniformConfig(PruneConfig):
    """Uniform spatial pooling. Only field: ``retention`` in (0, 1]."""

    method: ClassVar[str] = "uniform"


def lattice(H: int, W: int, K: int) -> torch.Tensor:
    """Flat positions (K,) of K pooling cells spread evenly over an H x W grid (distinct, ascending)."""
    if not 1 <= K <= H * W:
        raise ValueError(f"K must be in [1, {H * W}], got {K}")
    h = min(H, max(1, round(math.sqrt(K * H / W))))
    w = min(W, max(1, math.ceil(K / h)))
    while h * w < K:  # w was clamped to W: add rows (h <= H holds because K <= H * W)
        h += 1
        w = min(W, math.ceil(K / h))
    # Cell centres: floor((i + 0.5) H / h) is strictly increasing in i for h <= H, so cells are distinct.
    rows = torch.floor((torch.arange(h, dtype=torch.float64) + 0.5) * H / h).long()
    cols = torch.floor((torch.arange(w, dtype=torch.float64) + 0.5) * W / w).long()
    cells = (rows[:, None] * W + cols[None, :]).reshape(-1)
    return cells[spread(cells.numel(), K)]


def pooling_matrix(H: int, W: int, K: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(cells (K,), P (K, H W) fp32) with P averaging every token into its spatially nearest cell."""
    cells = lattice(H, W, K).to(device)
    L = H * W
    p = torch.arange(L, device=device)
    coords = torch.stack([torch.div(p, W, rounding_mode="floor"), p % W], 1).float()
    assign = nearest(coords, coords[cells])  # (L,) cell of every token
    P = torch.zeros(K, L, device=device)
    P[assign, p] = 1.0
    P /= P.sum(1, keepdim=True).clamp_min(1.0)
    return cells, P


def run(tokens: VideoTokens, config: UniformConfig) -> PruneResult:
    """Average-pool every frame to ``frame_budget`` cells."""
    T, H, W = tokens.grid
    L = H * W
    X = tokens.features.reshape(T, L, -1)
    K = frame_budget(L, config.retention)
    cells, P = pooling_matrix(H, W, K, X.device)
    pooled = torch.matmul(P.to(widen(X).dtype), widen(X))  # (T, K, D) means, fp32 or fp64
    idx = flat_index(torch.arange(T, device=X.device)[:, None], cells[None, :], L).reshape(-1)
    kinds = torch.full_like(idx, TokenKind.CONTEXT)
    return PruneResult.from_indices(
        tokens,
        idx,
        features=pooled.reshape(T * K, -1),
        kinds=kinds,
        info={
            "method": "uniform",
            "retention": config.retention,
            "per_frame": K,
            "kept": int(idx.numel()),
            "total": T * L,
        },
    )


register("uniform", UniformConfig, run, "uniform spatial average pooling per frame")
