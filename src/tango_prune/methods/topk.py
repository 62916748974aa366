"""Attention top-k: keep, in every frame, the tokens that receive the most attention.

The plain saliency baseline used by FastV-style pruners (Chen et al., "An Image is Worth 1/2 Tokens After
Layer 2", ECCV 2024, arXiv 2403.06764) and as the "w/o diversity" ablation of Tango (arXiv 2604.09547),
here applied per frame before the LLM.

Defaults: per frame ``max(1, ceil(H W r))`` tokens of highest saliency, ties broken by the lower index;
features unchanged. Needs ``VideoTokens.saliency``. Works for any T and any (non-square) grid.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from ..config import PruneConfig
from ..tokens import PruneResult, TokenKind, VideoTokens
from . import register
from ._common import flat_index, frame_budget, top_per_row


@dataclasses.dataclass(frozen=True)
class TopKConfig(PruneConfig):
    """Attention top-k per frame. Only field: ``retention`` in (0, 1]."""

    method: ClassVar[str] = "topk"


def run(tokens: VideoTokens, config: TopKConfig) -> PruneResult:
    """Keep the ``frame_budget`` highest-saliency tokens of every frame."""
    T, H, W = tokens.grid
    L = H * W
    s = tokens.require_saliency("topk").reshape(T, L)
    k = frame_budget(L, config.retention)
    pos = top_per_row(s, k)  # (T, k)
    idx = flat_index(torch.arange(T, device=pos.device)[:, None], pos, L).reshape(-1)
    kinds = torch.full_like(idx, TokenKind.SALIENT)
    return PruneResult.from_indices(
        tokens,
        idx,
        kinds=kinds,
        info={
            "method": "topk",
            "retention": config.retention,
            "per_frame": k,
            "kept": int(idx.numel()),
            "total": T * L,
        },
    )


register("topk", TopKConfig, run, "attention top-k per frame")
