"""The Tango pruner: segments -> static/dynamic split -> diverse salient selection -> context merging.

Follows docs/algorithm.md §2 step by step, with the fixes of §6.1 (see :class:`TangoConfig`):
fp32 scores and accumulation, index tie-breaks instead of random noise, no in-place writes to inputs, a
separate static threshold, de-duplicated indices, and anchors receiving their own merged feature
(``compat="published"`` restores the published permutation).

Budget arithmetic (docs/algorithm.md §2.3-2.5), in exact integers with every ratio read as the decimal the user
wrote (:mod:`tango_prune.core.budget`; ``compat="published"`` keeps the published double expressions):

- A single-frame segment (or a static part) of n tokens keeps K = max(1, ceil(n r)) tokens:
  K_s = floor(K (1 - c)) salient and K_c = K - K_s context anchors.
- A segment of n_f > 1 frames with S static positions uses the adjusted ratio
  r' = min(r / ((n_f L - (n_f - 1) S) / (n_f L)), 1). The static part keeps max(1, ceil(S r')) tokens
  (none if S = 0); every frame keeps R = ceil((L - S) r') dynamic tokens, K_s = floor(R (1 - c)) chosen per
  frame and K_c n_f context anchors chosen over the whole segment.
- So the total is r T L up to one token per frame (ceilings) plus one per segment.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import torch

from ..config import TangoConfig
from ..tokens import PruneResult, TokenKind, VideoTokens
from .budget import ceil_mul, floor_mul, ratio
from .dpc import DEFAULT_BLOCK_ELEMS, assign, dpc_knn, stable_argsort_desc
from .merge import merge_into_anchors, widen
from .rows import take_flat_rows, take_rows
from .segment import fastvid_segments, frame_similarity, holitom_segments
from .strope import normalize, normalize_into, strope_rotate_tables

__all__ = ["tango_prune", "segment_video", "compressor_budget"]


def compressor_budget(n: int, r: float | Fraction, c: float, published: bool = False) -> tuple[int, int]:
    """(K_s, K_c) for a token set of size n at ratio r and context ratio c.

    Exact integer arithmetic (:mod:`tango_prune.core.budget`); ``published=True`` evaluates the published
    double expressions ``ceil(n * r)`` and ``int(K * (1.0 - c))`` instead.
    """
    if n <= 0:
        return 0, 0
    if published:
        K = max(1, math.ceil(n * float(r)))
        K_s = int(K * (1.0 - c))
    else:
        K = max(1, ceil_mul(n, r))
        K_s = K - ceil_mul(K, c)
    return K_s, K - K_s


def _split(R: int, c: float, published: bool) -> tuple[int, int]:
    """(K_s, K_c) of a per-frame budget R: K_s = floor(R (1 - c))."""
    K_s = int(R * (1.0 - c)) if published else R - ceil_mul(R, c)
    return K_s, R - K_s


def _adjusted_ratio(r: float, n_f: int, L: int, S: int, published: bool) -> float | Fraction:
    """r' = min(r n_f L / (n_f L - (n_f - 1) S), 1): exact, or the published double expression."""
    if published:
        return min(r / ((n_f * L - (n_f - 1) * S) / (n_f * L)), 1.0)
    return min(ratio(r) * (n_f * L) / (n_f * L - (n_f - 1) * S), Fraction(1))


@dataclass
class _Kept:
    """Kept tokens of one piece, as global flat indices with fp32 features and kinds."""

    indices: torch.Tensor
    features: torch.Tensor
    kinds: torch.Tensor


def _select_salient(
    score: torch.Tensor, target: int, cfg: TangoConfig, rot_of: Callable[[torch.Tensor], torch.Tensor], block_elems: int
) -> torch.Tensor:
    """Diversity-driven salient selection, batched over sets.

    ``score`` (B, n) fp32; ``rot_of(cand)`` maps (B, M) candidate indices to their (B, M, D') distance
    geometry, so only candidates are ever rotated. Returns a bool mask (B, n) of the chosen tokens
    (``target`` per set, fewer only when exact duplicates make two clusters pick the same token).
    """
    B, n = score.shape
    chosen = torch.zeros(B, n, dtype=torch.bool, device=score.device)
    if target <= 0:
        return chosen
    M = min(int(cfg.alpha * target) if cfg.compat == "published" else floor_mul(target, cfg.alpha), n)
    cand = stable_argsort_desc(score)[:, :M]  # (B, M) by descending score, index on ties
    if M <= target or M <= 1 or not cfg.diversity:
        return chosen.scatter_(1, cand[:, :target], True)
    cand_rot = rot_of(cand)
    centres, d2, copies = dpc_knn(
        cand_rot, target, cfg.k_neighbors, block_elems, cfg.gram_bytes, return_distances=True, return_copies=True
    )
    owner = assign(cand_rot, centres, d2, block_elems, copies)  # (B, M) cluster of each candidate
    # Candidates are in descending score order, so the first member of a cluster is its best one.
    member = owner.unsqueeze(1) == torch.arange(target, device=score.device)[None, :, None]  # (B, t, M)
    has = member.any(-1)
    first = member.float().argmax(-1)  # first True
    pick = torch.where(has, first, centres)  # empty cluster -> centre
    return chosen.scatter_(1, torch.gather(cand, 1, pick), True)


def _merge_context(
    feats: torch.Tensor, rot: torch.Tensor, budget: int, cfg: TangoConfig, block_elems: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spend ``budget`` context anchors on each of B pools of n tokens.

    ``feats`` (B, n, D), ``rot`` (B, n, D'). Returns (local indices (B, m), their fp32 features
    (B, m, D)). A pool that fits in the budget is kept as is; otherwise DPC-KNN picks the anchors on
    ``rot`` and every pool token is merged into its nearest anchor.
    """
    B, n, D = feats.shape
    dev = feats.device
    if budget <= 0 or n == 0:
        return torch.zeros(B, 0, dtype=torch.long, device=dev), feats.new_zeros((B, 0, D), dtype=torch.float32)
    if n <= budget:
        return torch.arange(n, device=dev).expand(B, n), widen(feats)
    by_score, d2, copies = dpc_knn(
        rot, budget, cfg.k_neighbors, block_elems, cfg.gram_bytes, return_distances=True, return_copies=True
    )
    asc = torch.sort(by_score, dim=1).values  # by_score: descending gamma
    merged = merge_into_anchors(feats, rot, asc, cfg.beta, block_elems, d2, copies)  # row i for asc[:, i]
    if cfg.compat == "published":
        # The published code writes row i (ascending order) to the i-th anchor in gamma order.
        order = torch.argsort(by_score, dim=1)
        return torch.gather(by_score, 1, order), take_rows(merged, order)
    return asc, merged


def _compress(
    feats: torch.Tensor, rot: torch.Tensor, score: torch.Tensor, r: float | Fraction, cfg: TangoConfig, block_elems: int
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``tango_compressor`` (docs/algorithm.md §2.4) for B token sets of n tokens each, batched.

    ``feats`` (B, n, D), ``rot`` (B, n, D') distance geometry, ``score`` (B, n) fp32. Returns, per set,
    (local indices, fp32 features, kinds), unsorted.
    """
    B, n, D = feats.shape
    K_s, K_c = compressor_budget(n, r, cfg.effective_context_ratio, cfg.compat == "published")
    chosen = _select_salient(score, K_s, cfg, lambda cand: take_rows(rot, cand), block_elems)
    n_sal = chosen.sum(1)
    if B > 1 and bool((n_sal != n_sal[0]).any()):
        # Exact duplicates made some set choose fewer tokens: pools differ in size, so go one by one.
        return [_compress(feats[b : b + 1], rot[b : b + 1], score[b : b + 1], r, cfg, block_elems)[0] for b in range(B)]
    k = int(n_sal[0]) if B else 0
    order = torch.argsort((~chosen).to(torch.int8), dim=1, stable=True)  # chosen first, then the pool
    sal, pool = order[:, :k], order[:, k:]
    ctx_local, ctx_feats = _merge_context(
        take_rows(feats, pool), take_rows(rot, pool), min(K_c, n - k), cfg, block_elems
    )
    ctx = torch.gather(pool, 1, ctx_local)
    sal_feats = widen(take_rows(feats, sal))
    out = []
    for b in range(B):
        idx = torch.cat([sal[b], ctx[b]])
        f = torch.cat([sal_feats[b], ctx_feats[b]])
        kinds = torch.cat([torch.full_like(sal[b], TokenKind.SALIENT), torch.full_like(ctx[b], TokenKind.CONTEXT)])
        out.append((idx, f, kinds))
    return out


def _context_windows(pool_per_frame: list[int], cap: int) -> list[tuple[int, int]]:
    """Split frames into consecutive windows whose pooled context tokens stay <= cap (>= 1 frame each)."""
    windows, start, acc = [], 0, 0
    for f, p in enumerate(pool_per_frame):
        if acc and acc + p > cap:
            windows.append((start, f))
            start, acc = f, 0
        acc += p
    windows.append((start, len(pool_per_frame)))
    return windows


class _Geometry:
    """Distance geometry of a segment's tokens, computed only for the tokens that are asked for.

    A token (frame f, position p) maps to its L2-normalised feature, rotated by ST-RoPE at (time of f,
    row p // W, column p % W) unless ST-RoPE is ablated. Rotating lazily keeps memory proportional to
    the candidates and the context window instead of the whole segment.
    """

    def __init__(self, X: torch.Tensor, ts: torch.Tensor, W: int, cfg: TangoConfig):
        # Geometry only steers the selection: no gradient flows through it.
        self.X, self.ts, self.W, self.cfg = X.detach(), ts.to(X.device, torch.float64), W, cfg

    def __call__(self, frames: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        shape = frames.shape
        frames, pos = frames.reshape(-1), pos.reshape(-1)
        rows = take_flat_rows(self.X, frames, pos)
        # A fresh fp32 gather is normalised in place; other dtypes (fp64 beyond the fp32 range) first scale.
        unit = normalize_into(rows, rows) if rows.dtype == torch.float32 else normalize(rows)
        return self._rotate(unit, frames, pos).reshape(*shape, rows.shape[-1])

    def of_rows(self, rows: torch.Tensor, frames: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The geometry of ``rows`` (n, D), the features of tokens (``frames``, ``pos``) already gathered."""
        return self._rotate(normalize(rows.detach()), frames, pos)

    def _rotate(self, x: torch.Tensor, frames: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if not self.cfg.strope:
            return x
        # The segment's frame times and the grid's rows and columns are the position tables: no host wait.
        H = self.X.shape[1] // self.W
        grid = torch.arange(max(H, self.W), device=x.device)
        tables = (
            (self.ts, frames),
            (grid[:H], torch.div(pos, self.W, rounding_mode="floor")),
            (grid[: self.W], pos % self.W),
        )
        return strope_rotate_tables(x, tables, self.cfg.base_time, self.cfg.base_space)


def _singletons(
    X: torch.Tensor,
    s: torch.Tensor,
    ts: torch.Tensor,
    W: int,
    offset: int,
    cfg: TangoConfig,
    block_elems: int,
    stats: dict,
    chunk: int = 64,
) -> list[_Kept]:
    """Consecutive single-frame segments X (n, L, D): each frame is compressed on its own (docs/algorithm.md
    §2.3), batched over frames in chunks so that the work is a few large tensor operations."""
    n, L, _ = X.shape
    geo = _Geometry(X, ts, W, cfg)
    allpos = torch.arange(L, device=X.device)
    pieces = []
    for a in range(0, n, chunk):
        e = min(n, a + chunk)
        fr = torch.arange(a, e, device=X.device)
        grid_f, grid_p = fr[:, None].expand(-1, L), allpos.expand(e - a, L)
        rot = geo.of_rows(X[a:e].reshape((e - a) * L, -1), grid_f.reshape(-1), grid_p.reshape(-1))
        for f, (idx, out, kinds) in zip(
            range(a, e), _compress(X[a:e], rot.reshape(e - a, L, -1), s[a:e], cfg.retention, cfg, block_elems)
        ):
            pieces.append(_Kept(idx + offset + f * L, out, kinds))
    stats["static"].extend([0] * n)
    return pieces


def _segment(
    X: torch.Tensor,
    s: torch.Tensor,
    ts: torch.Tensor,
    W: int,
    offset: int,
    cfg: TangoConfig,
    block_elems: int,
    stats: dict,
    split: tuple[int, torch.Tensor, torch.Tensor],
) -> list[_Kept]:
    """``tango_token_merger`` for one segment X (n_f, L, D), n_f >= 2, whose first frame has flat index
    ``offset`` (single-frame segments go through :func:`_singletons`).

    ``split`` is the segment's static split from :func:`_static_splits`: the number S of static
    positions, the static positions and the dynamic ones (both increasing).
    """
    n_f, L, _ = X.shape
    geo = _Geometry(X, ts, W, cfg)
    dev = X.device
    r = cfg.retention
    c = cfg.effective_context_ratio
    S, sp, dp = split
    stats["static"].append(S)
    published = cfg.compat == "published"
    r_adj = _adjusted_ratio(r, n_f, L, S, published)
    pieces = []
    if S > 0:
        # Mean over the whole grid, then the static rows: no (n_f, S, D) copy (the same per-element sums).
        s_feat = widen(X).mean(0)[sp]
        # Distances of a static token use its first frame, where the token is placed.
        ((idx, out, _),) = _compress(
            s_feat[None], geo(torch.zeros_like(sp), sp)[None], s[:, sp].mean(0)[None], r_adj, cfg, block_elems
        )
        pieces.append(_Kept(sp[idx] + offset, out, torch.full_like(idx, TokenKind.STATIC)))

    Ld = L - S
    if Ld == 0:
        return pieces
    R = math.ceil(Ld * r_adj) if published else ceil_mul(Ld, r_adj)
    K_s, K_c = _split(R, c, published)
    frames = torch.arange(n_f, device=dev)
    chosen = _select_salient(
        s[:, dp], min(K_s, Ld), cfg, lambda cand: geo(frames[:, None].expand_as(cand), dp[cand]), block_elems
    )
    fr, j = torch.nonzero(chosen, as_tuple=True)
    pieces.append(
        _Kept(offset + fr * L + dp[j], widen(take_flat_rows(X, fr, dp[j])), torch.full_like(j, TokenKind.SALIENT))
    )

    if K_c > 0:
        free = ~chosen
        windows = _context_windows(free.sum(1).tolist(), cfg.max_cluster_tokens)
        stats["windows"] += len(windows) - 1
        for a, b in windows:
            fr, j = torch.nonzero(free[a:b], as_tuple=True)  # frame-major pool
            fr = fr + a
            rows = take_flat_rows(X, fr, dp[j])
            local, feats = _merge_context(
                rows[None], geo.of_rows(rows, fr, dp[j])[None], K_c * (b - a), cfg, block_elems
            )
            local, feats = local[0], feats[0]
            pieces.append(
                _Kept(offset + fr[local] * L + dp[j[local]], feats, torch.full_like(local, TokenKind.CONTEXT))
            )
    return pieces


def _static_splits(
    X: torch.Tensor, sizes: list[int], sim: torch.Tensor | None, tau: float
) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """The static split of every segment of two frames or more, in order, with three host waits in all.

    A position is static in a segment when the un-rotated cosine of consecutive frames exceeds ``tau``
    at every step of the segment. ``sim`` (T-1, L) is that cosine for the whole video when segmentation
    computed it (its rows of a segment are the segment's); otherwise each segment's is computed on its
    own frames, as the per-segment code did. The counts, static and dynamic positions of all segments
    come from one ``tolist`` and two ``nonzero`` calls on a (segments, L) mask.
    """
    multi = [(a - n, n) for a, n in zip(itertools.accumulate(sizes), sizes) if n > 1]  # (first frame, frames)
    if not multi:
        return []
    if sim is not None:
        rows = [sim[a : a + n - 1] for a, n in multi]
    else:
        rows = [frame_similarity(X[a : a + n]) for a, n in multi]
    # Steps where a position is not similar (NaN included, as in ``(sim > tau).all``), counted per segment.
    miss = torch.cumsum(torch.cat([~(r > tau) for r in rows]).to(torch.int64), 0)
    miss = torch.cat([torch.zeros_like(miss[:1]), miss])
    steps = torch.tensor([n - 1 for _, n in multi], device=miss.device)
    ends = steps.cumsum(0)
    static = miss[ends] == miss[ends - steps]  # (G, L): no miss within the segment's steps
    counts = static.sum(1).tolist()
    L = static.shape[1]
    sp = torch.split(torch.nonzero(static, as_tuple=True)[1], counts)
    dp = torch.split(torch.nonzero(~static, as_tuple=True)[1], [L - S for S in counts])
    return list(zip(counts, sp, dp))


def segment_video(tokens: VideoTokens, cfg: TangoConfig) -> tuple[list[int], torch.Tensor | None]:
    """Segment sizes (frames, summing to T) for ``tokens`` under ``cfg.segmentation``.

    Also returns the per-token similarity of consecutive frames of the *features* (T-1, L) when it was
    computed on the way (HoliTom on the default metric), so the static test can reuse it; else ``None``.
    """
    T, H, W = tokens.grid
    if cfg.segmentation == "none" or T == 1:
        return [T], None
    metric = tokens.metric if tokens.metric is not None else tokens.features
    if cfg.segmentation == "holitom":
        if metric.dim() != 4:
            raise ValueError(
                "metric must be per token, shape (T, H, W, Dm), for segmentation='holitom'; "
                f"got shape {tuple(metric.shape)}"
            )
        sim = frame_similarity(metric.reshape(T, H * W, -1))
        sizes = holitom_segments(sim, cfg.tau_segment, cfg.holitom_max_window)
        return sizes, (sim if tokens.metric is None else None)
    # fastvid: one global vector per frame; per-token metrics are averaged over the frame.
    per_frame = widen(metric).mean(dim=(1, 2)) if metric.dim() == 4 else metric
    return fastvid_segments(frame_similarity(per_frame), cfg.tau_segment, cfg.fastvid_cuts), None


def tango_prune(tokens: VideoTokens, cfg: TangoConfig, block_elems: int = DEFAULT_BLOCK_ELEMS) -> PruneResult:
    """Run Tango on ``tokens``; see the module docstring for the budget."""
    T, H, W = tokens.grid
    L = H * W
    X = tokens.features.reshape(T, L, -1)
    s = widen(tokens.require_saliency("tango")).reshape(T, L)
    for r_, c_ in cfg.sinks:
        if r_ >= H or c_ >= W:
            raise ValueError(f"sinks must lie inside the {H}x{W} token grid, got (row, col) = {(r_, c_)}")
    if cfg.sinks:
        s = s.clone()  # never write into the caller's saliency
        rows = torch.tensor([rc[0] for rc in cfg.sinks], device=s.device)
        cols = torch.tensor([rc[1] for rc in cfg.sinks], device=s.device)
        s[:, rows * W + cols] = 0.0
    sizes, sim = segment_video(tokens, cfg)
    times = tokens.timestamps
    assert times is not None  # VideoTokens fills in 0, 1, ..., T-1 when none are given
    stats: dict = {"static": [], "windows": 0}
    splits = iter(_static_splits(X, sizes, sim, cfg.tau_static))
    pieces = []
    start = 0
    i = 0
    while i < len(sizes):
        n_f = sizes[i]
        if n_f == 1:  # a run of single-frame segments is compressed frame by frame, batched
            j = i
            while j < len(sizes) and sizes[j] == 1:
                j += 1
            n_f, i = j - i, j
            sl = slice(start, start + n_f)
            pieces.extend(_singletons(X[sl], s[sl], times[sl], W, start * L, cfg, block_elems, stats))
        else:
            sl = slice(start, start + n_f)
            pieces.extend(_segment(X[sl], s[sl], times[sl], W, start * L, cfg, block_elems, stats, next(splits)))
            i += 1
        start += n_f
    idx, feats, kinds = _assemble(pieces, X.dtype, X.shape[-1], X.device)
    info = {
        "method": "tango",
        "retention": cfg.retention,
        "segments": sizes,
        "static_positions": stats["static"],
        "context_windows_split": stats["windows"],
        "kept": int(idx.numel()),
        "total": T * L,
        "by_kind": {name: int((kinds == code).sum()) for code, name in enumerate(TokenKind.NAMES)},
    }
    return PruneResult.from_indices(tokens, idx, feats, kinds, info)


def _assemble(
    pieces: list[_Kept], dtype: torch.dtype, D: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kept tokens of all pieces: increasing unique flat indices, their (K, D) features in ``dtype``
    and their kinds.

    Exact duplicate features can make two clusters choose the same token: it is kept once, with its first
    occurrence's feature. Without duplicates every piece's rows are copied straight to their sorted slots,
    one (K, D) allocation instead of a concatenation and a re-ordered copy of it.
    """
    if not pieces:
        z = torch.zeros(0, dtype=torch.long, device=device)
        return z, torch.zeros(0, D, dtype=dtype, device=device), z
    indices = torch.cat([p.indices for p in pieces])
    idx, first = _unique_first(indices)
    kinds = torch.cat([p.kinds for p in pieces])[first]
    K = idx.numel()
    if K != indices.numel():
        return idx, torch.cat([p.features for p in pieces])[first].to(dtype), kinds
    slot = torch.empty_like(first).scatter_(0, first, torch.arange(K, device=device))
    out = torch.empty(K, D, dtype=dtype, device=device)
    start = 0
    for p in pieces:
        n = p.indices.numel()
        out.index_copy_(0, slot[start : start + n], p.features.to(dtype))
        start += n
    return idx, out, kinds


def _unique_first(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique values and, for each, the position of its first occurrence in ``indices``."""
    order = torch.argsort(indices, stable=True)
    srt = indices[order]
    keep = torch.ones_like(srt, dtype=torch.bool)
    keep[1:] = srt[1:] != srt[:-1]
    return srt[keep], order[keep]
