"""VisionZip*: dominant tokens by attention plus contextual tokens merged by similarity, per frame.

VisionZip (Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models", CVPR
2025, arXiv 2412.04467) keeps the dominant tokens that receive the most attention and merges the remaining
ones into a few contextual tokens. For video it is applied, as in FastVID's VisionZip* variant (Shen et al.,
arXiv 2503.11187), after the model's 2D pooling, independently on every frame of the LLM token grid.

Defaults (VisionZip's 54 dominant + 10 contextual of 64): per frame ``K = max(1, ceil(H W r))`` tokens,
``K_c = floor(K * context_ratio)`` contextual (``context_ratio`` = 10/64) and ``K_d = K - K_c`` dominant.

- Dominant: the ``K_d`` highest-saliency tokens of the frame (ties: lower index).
- Contextual: of the n remaining tokens (in index order), targets are taken at a uniform step
  ``max(1, n // K_c)`` (the first ``K_c`` of them); every other remaining token joins its most similar target
  (cosine on the per-token ``metric`` if given, else on the features; ties: first target) and each target
  becomes the fp32 mean of itself and its members.

Needs ``VideoTokens.saliency``. Any T and any grid.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from ..config import PruneConfig
from ..core.budget import floor_mul
from ..core.dpc import nearest
from ..core.merge import segment_sum, widen
from ..core.rows import take_flat_rows
from ..core.strope import normalize
from ..tokens import PruneResult, TokenKind, VideoTokens
from . import register
from ._common import check_fraction, flat_index, frame_budget, top_per_row


#: Frames whose contextual merging is done at once (bounds the extra memory at any video length).
_CHUNK_FRAMES = 32


@dataclasses.dataclass(frozen=True)
class VisionZipConfig(PruneConfig):
    """VisionZip* per frame. Fields: ``retention`` in (0, 1]; ``context_ratio`` in [0, 1) (10/64)."""

    method: ClassVar[str] = "visionzip"
    context_ratio: float = 10 / 64

    def _validate(self) -> None:
        check_fraction("context_ratio", self.context_ratio, high_open=True)


def per_token_metric(tokens: VideoTokens) -> torch.Tensor:
    """(T, L, Dm) similarity features: ``tokens.metric`` when given per token, else the features."""
    T, H, W = tokens.grid
    m = tokens.metric if tokens.metric is not None and tokens.metric.dim() == 4 else tokens.features
    return m.reshape(T, H * W, -1)


def run(tokens: VideoTokens, config: VisionZipConfig) -> PruneResult:
    """Dominant + contextual tokens per frame."""
    T, H, W = tokens.grid
    L = H * W
    X = tokens.features.reshape(T, L, -1)
    s = tokens.require_saliency("visionzip").reshape(T, L)
    K = frame_budget(L, config.retention)
    K_c = min(floor_mul(K, config.context_ratio), L - K)  # contextual targets need members outside the dominant set
    K_c = max(K_c, 0)
    K_d = K - K_c
    dev = X.device
    frames = torch.arange(T, device=dev)[:, None]
    order = top_per_row(s, L)  # (T, L) by descending saliency
    dom = order[:, :K_d]
    pieces_idx = [flat_index(frames, dom, L).reshape(-1)]
    pieces_feat = [widen(take_flat_rows(X, frames.expand_as(dom), dom).reshape(T * K_d, X.shape[-1]))]
    pieces_kind = [torch.full((T * K_d,), TokenKind.SALIENT, dtype=torch.long, device=dev)]
    if K_c > 0:
        rest = torch.sort(order[:, K_d:], dim=1).values  # (T, n) remaining, index order
        n = rest.shape[1]
        step = max(1, n // K_c)
        tgt_local = torch.arange(0, n, step, device=dev)[:K_c]
        is_tgt = torch.zeros(n, dtype=torch.bool, device=dev)
        is_tgt[tgt_local] = True
        mem_local = torch.nonzero(~is_tgt).squeeze(1)
        metric = per_token_metric(tokens)
        # Frame chunks: the normalised metric and the gathered members of only a few frames at a time.
        for a in range(0, T, _CHUNK_FRAMES):
            fr = frames[a : a + _CHUNK_FRAMES]
            t = fr.shape[0]
            m = normalize(metric[a : a + t])
            tgt, mem = rest[a : a + t, tgt_local], rest[a : a + t, mem_local]  # (t, K_c), (t, n - K_c)
            local = fr - a
            assign = (
                nearest(take_flat_rows(m, local.expand_as(mem), mem), take_flat_rows(m, local.expand_as(tgt), tgt))
                if mem_local.numel()
                else mem.new_zeros(t, 0)
            )
            # Every target is a member of its own cluster; sums are per (frame, target) group.
            groups = torch.cat(
                [
                    flat_index(local.expand(t, K_c), torch.arange(K_c, device=dev)[None, :], K_c),
                    flat_index(local, assign, K_c),
                ],
                dim=1,
            ).reshape(-1)
            # targets then members of each frame, in the order of ``groups``: one gather, no second copy
            members = torch.cat([tgt, mem], dim=1)
            vals = take_flat_rows(X, fr.expand_as(members), members).reshape(groups.numel(), -1)
            sums, counts = segment_sum(vals, groups, t * K_c)
            pieces_idx.append(flat_index(fr, tgt, L).reshape(-1))
            pieces_feat.append(sums / counts[:, None])
            pieces_kind.append(torch.full((t * K_c,), TokenKind.CONTEXT, dtype=torch.long, device=dev))
    idx = torch.cat(pieces_idx)
    feats = torch.cat(pieces_feat).to(X.dtype)
    return PruneResult.from_indices(
        tokens,
        idx,
        features=feats,
        kinds=torch.cat(pieces_kind),
        info={
            "method": "visionzip",
            "retention": config.retention,
            "per_frame": K,
            "dominant_per_frame": K_d,
            "contextual_per_frame": K_c,
            "kept": int(idx.numel()),
            "total": T * L,
        },
    )


register("visionzip", VisionZipConfig, run, "VisionZip* per frame: attention-dominant + merged contextual tokens")
