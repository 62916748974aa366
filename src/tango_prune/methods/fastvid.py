"""FastVID: dynamic temporal segmentation + density-based spatio-temporal pruning.

Shen et al., "FastVID: Dynamic Density Pruning for Fast Video Large Language Models", arXiv 2503.11187.

1. **DySeg**: cosine similarity of consecutive frames' global features (the per-frame ``metric`` if given as
   (T, Dm), else the mean of the per-token metric or features); cut at the ``c - 1`` lowest similarities and
   wherever similarity < ``tau`` (:func:`tango_prune.core.segment.fastvid_segments`).
2. **STPrune**, per frame a budget ``K = max(1, ceil(H W r))``:
   - ATS: the ``K_s = floor(d K)`` highest-saliency tokens of every frame (ties: lower index);
   - DTM: in every segment, anchor frames every ``p`` frames; the segment's ``n_f (K - K_s)`` contextual
     tokens are shared among them (remainder to the earlier anchors) and chosen in each anchor frame as the
     top DPC-KNN scores (``k`` neighbours, distances scaled by 1/sqrt(D)) of its non-salient tokens. All
     non-salient tokens of the segment are then merged into their most similar contextual token (cosine),
     which becomes ``w a + (1 - w) mean`` with ``w = max(1 / count, alpha)``.

Defaults (the paper's): c = 8, tau = 0.9, d = 0.4, p = 4, alpha = 0.6, k = 4. Needs ``saliency``; any
T and any grid.

Deliberate differences from the published code: the density uses the k *nearest* neighbours (the published
``topk`` takes the farthest), ties are broken by index instead of random noise, the merged features are
the original (un-normalised) ones, the per-frame budget is ``ceil`` (so every method shares one budget)
and no contextual token is lost to the floor division over anchor frames. When the anchor frames cannot
hold the segment's contextual budget (high retention), the anchor step shrinks until they can.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch

from ..config import PruneConfig
from ..core.budget import floor_mul
from ..core.dpc import dpc_knn
from ..core.merge import merge_into_anchors, widen
from ..core.rows import take_flat_rows
from ..core.segment import fastvid_segments, frame_similarity
from ..core.strope import normalize
from ..tokens import PruneResult, TokenKind, VideoTokens
from . import register
from ._common import allocate, check_cosine, check_fraction, check_int, flat_index, frame_budget, top_per_row


@dataclasses.dataclass(frozen=True)
class FastVIDConfig(PruneConfig):
    """FastVID. Fields: ``retention``; ``num_segments`` c (8); ``tau`` (0.9); ``salient_ratio`` d (0.4);
    ``anchor_step`` p (4); ``alpha`` (0.6); ``k_neighbors`` (4)."""

    method: ClassVar[str] = "fastvid"
    num_segments: int = 8
    tau: float = 0.9
    salient_ratio: float = 0.4
    anchor_step: int = 4
    alpha: float = 0.6
    k_neighbors: int = 4

    def _validate(self) -> None:
        check_int("num_segments", self.num_segments, 1)
        check_int("anchor_step", self.anchor_step, 1)
        check_int("k_neighbors", self.k_neighbors, 1)
        check_fraction("salient_ratio", self.salient_ratio)
        check_fraction("alpha", self.alpha)
        check_cosine("tau", self.tau)


def frame_global_features(tokens: VideoTokens) -> torch.Tensor:
    """(T, D) per-frame global features for segmentation: metric (T, Dm) as is, else a per-frame mean."""
    m = tokens.metric if tokens.metric is not None else tokens.features
    return m if m.dim() == 2 else widen(m).mean(dim=(1, 2))


def _segment_context(
    X: torch.Tensor, free: torch.Tensor, start: int, n_f: int, K_c: int, L: int, cfg: FastVIDConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """DTM on frames [start, start + n_f): (flat indices, fp32 features) of the contextual tokens."""
    D = X.shape[-1]
    pool_size = int(free[start].sum())  # every frame has the same number of free tokens
    total = n_f * K_c
    step = cfg.anchor_step
    while step > 1 and math.ceil(n_f / step) * pool_size < total:
        step -= 1
    anchors = list(range(0, n_f, step))
    shares = allocate(total, [1.0] * len(anchors), pool_size)
    fr, j = torch.nonzero(free[start : start + n_f], as_tuple=True)  # frame-major pool, positions ascending
    pos = j.reshape(n_f, pool_size)
    pool_pos = pos.reshape(-1)
    pool_fr = fr + start
    feats = take_flat_rows(X, pool_fr, pool_pos)
    unit = normalize(feats)
    centres = []
    for a, share in zip(anchors, shares):
        if share == 0:
            continue
        x = X[start + a].index_select(0, pos[a]).float() / math.sqrt(D)
        local = dpc_knn(x, share, cfg.k_neighbors)  # top gamma of this anchor frame
        centres.append(a * pool_size + local)
    centre = torch.cat(centres)
    merged = merge_into_anchors(feats, unit, centre, cfg.alpha)
    return flat_index(pool_fr[centre], pool_pos[centre], L), merged


def run(tokens: VideoTokens, config: FastVIDConfig) -> PruneResult:
    """DySeg + STPrune."""
    T, H, W = tokens.grid
    L = H * W
    X = tokens.features.reshape(T, L, -1)
    s = tokens.require_saliency("fastvid").reshape(T, L)
    K = frame_budget(L, config.retention)
    K_s = floor_mul(K, config.salient_ratio)
    K_c = K - K_s
    dev = X.device
    sizes = (
        [T]
        if T == 1
        else fastvid_segments(frame_similarity(frame_global_features(tokens)), config.tau, config.num_segments)
    )
    frames = torch.arange(T, device=dev)[:, None]
    sal = top_per_row(s, K_s)
    idx = [flat_index(frames, sal, L).reshape(-1)]
    feats = [widen(take_flat_rows(X, frames.expand_as(sal), sal).reshape(T * K_s, X.shape[-1]))]
    kinds = [torch.full((T * K_s,), TokenKind.SALIENT, dtype=torch.long, device=dev)]
    if K_c > 0:
        free = torch.ones(T, L, dtype=torch.bool, device=dev)
        free.scatter_(1, sal, False)
        start = 0
        for n_f in sizes:
            i, f = _segment_context(X, free, start, n_f, K_c, L, config)
            idx.append(i)
            feats.append(f)
            kinds.append(torch.full_like(i, TokenKind.CONTEXT))
            start += n_f
    idx_t = torch.cat(idx)
    return PruneResult.from_indices(
        tokens,
        idx_t,
        features=torch.cat(feats).to(X.dtype),
        kinds=torch.cat(kinds),
        info={
            "method": "fastvid",
            "retention": config.retention,
            "segments": sizes,
            "per_frame": K,
            "salient_per_frame": K_s,
            "kept": int(idx_t.numel()),
            "total": T * L,
        },
    )


register("fastvid", FastVIDConfig, run, "FastVID: DySeg + attention/density spatio-temporal pruning")
