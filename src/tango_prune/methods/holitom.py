"""HoliTom, pre-LLM part: DP temporal segmentation, static-token merging, DPC-KNN merging per frame.

Shao et al., "HoliTom: Holistic Token Merging for Fast Video Large Language Models", arXiv 2505.21334.
Only its outer-LLM stage is implemented (the inner-LLM merging needs hooks inside the language model):

1. **Segmentation**: the dynamic programme that maximises the number of tokens removable by collapsing
   static positions (:func:`tango_prune.core.segment.holitom_segments`), on the per-token ``metric`` (or the
   features), similarity threshold ``tau_segment``.
2. **Static merging**: inside a segment of n_f > 1 frames, a position whose consecutive-frame cosine exceeds
   ``tau_static`` at every step is static; its n_f tokens collapse into their mean, placed at the first frame.
3. **Spatial pruning**: the static set and every frame's dynamic tokens keep their share of the budget, a
   ``1 - context_ratio`` part by saliency (top-k) and the rest as DPC-KNN centres (``k_neighbors``, cosine
   geometry) of the remaining tokens of that frame, each centre carrying the fp32 mean of its cluster.

Budget: the same arithmetic as Tango (module :mod:`tango_prune.core.tango`): per segment the adjusted ratio
``r' = min(1, r n_f L / (n_f L - (n_f - 1) S))``, ``max(1, ceil(S r'))`` static tokens and
``ceil((L - S) r')`` dynamic tokens per frame, so the total is ``T ceil(L r)`` on a video without static
positions and within one token per frame (plus one per segment) of it otherwise.

Defaults: ``tau_segment`` 0.8, ``tau_static`` 0.8, ``k_neighbors`` 7, ``context_ratio`` 0.4,
``max_window`` 1024. The thresholds, k and the window are the values the Tango release uses for its
HoliTom-derived pipeline (docs/algorithm.md §2.10); the context ratio is this project's choice, set equal to
Tango's so the two differ only in Tango's own contributions (diverse selection, ST-RoPE, segment-wide
context). HoliTom's own evaluation script runs ``T=0.8 HOLITOM_k=18 HOLITOM_r=0.5``; the exact roles of its
``k`` and ``r`` were not verified here, so they are not copied. Needs ``saliency``; any T and any grid.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import ClassVar

import torch

from ..config import PruneConfig
from ..core.budget import ceil_mul, ratio
from ..core.dpc import assign, dpc_knn
from ..core.merge import segment_sum, widen
from ..core.segment import frame_similarity, holitom_segments
from ..core.strope import normalize
from ..tokens import PruneResult, TokenKind, VideoTokens
from . import register
from ._common import check_cosine, check_fraction, check_int, top_per_row


#: Frames of a segment whose dynamic tokens are compressed at once (bounds the extra memory).
_CHUNK_FRAMES = 32


@dataclasses.dataclass(frozen=True)
class HoliTomConfig(PruneConfig):
    """HoliTom pre-LLM. Fields: ``retention``; ``tau_segment`` (0.8); ``tau_static`` (0.8);
    ``context_ratio`` (0.4); ``k_neighbors`` (7); ``max_window`` (1024)."""

    method: ClassVar[str] = "holitom"
    tau_segment: float = 0.8
    tau_static: float = 0.8
    context_ratio: float = 0.4
    k_neighbors: int = 7
    max_window: int = 1024

    def _validate(self) -> None:
        check_fraction("tau_static", self.tau_static)
        check_fraction("context_ratio", self.context_ratio)
        check_int("k_neighbors", self.k_neighbors, 1)
        check_int("max_window", self.max_window, 2)
        check_cosine("tau_segment", self.tau_segment)


def compress_sets(
    feats: torch.Tensor, score: torch.Tensor, keep: int, cfg: HoliTomConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep ``keep`` tokens of each of B sets: top-saliency ones plus DPC-KNN cluster means of the rest.

    ``feats`` (B, n, D), ``score`` (B, n). Returns (local indices (B, keep), fp32 features (B, keep, D),
    kinds (B, keep)).
    """
    B, n, D = feats.shape
    keep = min(keep, n)
    K_s = keep - ceil_mul(keep, cfg.context_ratio)
    K_c = keep - K_s
    order = top_per_row(score, n)
    sal = order[:, :K_s]
    rows = torch.arange(B, device=feats.device)[:, None]
    idx, out = [sal], [widen(feats[rows, sal])]
    kinds = [torch.full_like(sal, TokenKind.SALIENT)]
    if K_c > 0:
        rest = torch.sort(order[:, K_s:], dim=1).values  # (B, n - K_s) index order
        unit = normalize(feats[rows, rest])
        centres, d2 = dpc_knn(unit, K_c, cfg.k_neighbors, return_distances=True)
        centres = torch.sort(centres, dim=1).values  # (B, K_c) into rest
        groups = (rows * K_c + assign(unit, centres, d2)).reshape(-1)
        sums, counts = segment_sum(feats[rows, rest].reshape(-1, D), groups, B * K_c)
        idx.append(torch.gather(rest, 1, centres))
        out.append((sums / counts.clamp_min(1.0)[:, None]).reshape(B, K_c, D))
        kinds.append(torch.full_like(centres, TokenKind.CONTEXT))
    return torch.cat(idx, 1), torch.cat(out, 1), torch.cat(kinds, 1)


def _segment(
    X: torch.Tensor, s: torch.Tensor, offset: int, cfg: HoliTomConfig, stats: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One segment X (n_f, L, D) starting at flat index ``offset``: (flat indices, features, kinds)."""
    n_f, L, D = X.shape
    r = cfg.retention
    if n_f > 1:
        static = (frame_similarity(X) > cfg.tau_static).all(0)
    else:
        static = torch.zeros(L, dtype=torch.bool, device=X.device)
    S = int(static.sum())
    stats.append(S)
    r_adj = min(ratio(r) * (n_f * L) / (n_f * L - (n_f - 1) * S), Fraction(1))
    idx, feats, kinds = [], [], []
    if S > 0:
        sp = torch.nonzero(static).squeeze(1)
        # Mean over the whole grid, then the static rows: no (n_f, S, D) copy (the same per-element sums).
        i, f, _ = compress_sets(
            widen(X).mean(0)[sp][None], widen(s[:, sp]).mean(0)[None], max(1, ceil_mul(S, r_adj)), cfg
        )
        idx.append(sp[i[0]] + offset)
        feats.append(f[0])
        kinds.append(torch.full_like(i[0], TokenKind.STATIC))
    dp = torch.nonzero(~static).squeeze(1)
    if dp.numel():
        R = ceil_mul(dp.numel(), r_adj)
        # Frames are compressed independently: a few at a time keeps the gathered copies small.
        for a in range(0, n_f, _CHUNK_FRAMES):
            i, f, k = compress_sets(X[a : a + _CHUNK_FRAMES, dp], s[a : a + _CHUNK_FRAMES, dp], R, cfg)
            frames = torch.arange(a, a + i.shape[0], device=X.device)[:, None]
            idx.append((offset + frames * L + dp[i]).reshape(-1))
            feats.append(f.reshape(-1, D))
            kinds.append(k.reshape(-1))
    return torch.cat(idx), torch.cat(feats), torch.cat(kinds)


def run(tokens: VideoTokens, config: HoliTomConfig) -> PruneResult:
    """Segment, merge static tokens, prune and merge per frame."""
    T, H, W = tokens.grid
    L = H * W
    X = tokens.features.reshape(T, L, -1)
    s = tokens.require_saliency("holitom").reshape(T, L)
    metric = tokens.metric if tokens.metric is not None else tokens.features
    if T == 1:
        sizes = [1]
    elif metric.dim() != 4:
        raise ValueError(
            f"metric must be per token, shape (T, H, W, Dm), for method 'holitom'; got shape {tuple(metric.shape)}"
        )
    else:
        sizes = holitom_segments(frame_similarity(metric.reshape(T, L, -1)), config.tau_segment, config.max_window)
    stats: list[int] = []
    parts = []
    start = 0
    for n_f in sizes:
        parts.append(_segment(X[start : start + n_f], s[start : start + n_f], start * L, config, stats))
        start += n_f
    idx = torch.cat([p[0] for p in parts])
    kinds = torch.cat([p[2] for p in parts])
    return PruneResult.from_indices(
        tokens,
        idx,
        features=torch.cat([p[1] for p in parts]).to(X.dtype),
        kinds=kinds,
        info={
            "method": "holitom",
            "retention": config.retention,
            "segments": sizes,
            "static_positions": stats,
            "kept": int(idx.numel()),
            "total": T * L,
            "by_kind": {name: int((kinds == code).sum()) for code, name in enumerate(TokenKind.NAMES)},
        },
    )


register("holitom", HoliTomConfig, run, "HoliTom pre-LLM: DP segments, static merging, DPC-KNN merging")
