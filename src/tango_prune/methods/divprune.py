"""DivPrune: keep the most diverse tokens, by greedy max-min selection on cosine distance.

Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models", CVPR 2025,
arXiv 2503.02175. Token pruning is cast as a Max-Min Diversity Problem over the cosine distance
``d(i, j) = 1 - cos(x_i, x_j)`` and solved greedily: the first token is the one whose nearest other token is
farthest; each next token is the one whose distance to the nearest already-chosen token is largest.

Defaults: ``scope="video"`` selects ``T * max(1, ceil(H W r))`` tokens over all frames at once (DivPrune
treats all visual tokens of the input as one set); ``scope="frame"`` selects ``max(1, ceil(H W r))``
per frame instead. Features unchanged; no saliency needed; any T and any grid.

Differences from the published code, deliberate: no dense n x n distance matrix (the first pick is computed
in row blocks, later picks keep a running minimum, so memory is O(n + block)); fp32 distances; ties are
broken by the lower index.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from ..config import PruneConfig
from ..core.dpc import DEFAULT_BLOCK_ELEMS, first_copies, sqdist_error_bound
from ..core.strope import normalize
from ..tokens import PruneResult, VideoTokens
from . import register
from ._common import flat_index, frame_budget

_SCOPES = ("video", "frame")


@dataclasses.dataclass(frozen=True)
class DivPruneConfig(PruneConfig):
    """DivPrune. Fields: ``retention`` in (0, 1]; ``scope`` ``"video"`` (default) or ``"frame"``."""

    method: ClassVar[str] = "divprune"
    scope: str = "video"

    def _validate(self) -> None:
        if self.scope not in _SCOPES:
            raise ValueError(f"scope must be one of {_SCOPES}, got {self.scope!r}")


#: Sets of at least this many rows (one set, ``scope="video"``) take the bounded path.
BOUNDED_MIN_ROWS = 4096
#: Earlier picks used as pivots to bound the distances between picks (bounded path).
PIVOTS = 32
#: Marks a later copy of a row: below every distance, above a chosen token (-inf), so copies come last.
_LATE = -1e30


def _copies(x: torch.Tensor) -> torch.Tensor | None:
    """:func:`first_copies` of the rows of ``x`` (B, n, D), zero rows excepted: a zero row has cosine
    distance 1 to everything, itself included, so it stays a distinct row."""
    canon = first_copies(x)
    if canon is None:
        return None
    B, n, D = x.shape
    step = max(1, DEFAULT_BLOCK_ELEMS // max(1, B * D))  # a block at a time: no (B, n, D) mask
    zero = torch.cat([(x[:, s : s + step] == 0).all(-1) for s in range(0, n, step)], 1)
    if bool(zero.any()):
        canon = torch.where(zero, torch.arange(n, device=x.device), canon)
    return canon


def _dot_error(D: int, device: torch.device) -> float:
    """A bound on the rounding error of a computed ``1 - <a, b>`` for unit rows, in any summation order."""
    one = torch.ones((), dtype=torch.float64)
    return float(sqdist_error_bound(one, one, D, device))


def _dense_select(x: torch.Tensor, k: int, block_elems: int, canon: torch.Tensor | None) -> torch.Tensor:
    """The greedy selection with one pass over every row per pick (small sets, many sets at once)."""
    B, n, _ = x.shape
    out = torch.empty(B, k, dtype=torch.long, device=x.device)
    arange = torch.arange(n, device=x.device)
    late = None if canon is None else canon != arange
    # First pick: the token whose nearest other token is farthest (max over i of min_{j != i} d_ij).
    nn_dist = torch.empty(B, n, device=x.device)
    step = max(1, block_elems // max(1, B * n))
    for s in range(0, n, step):
        e = min(n, s + step)
        d = 1.0 - torch.matmul(x[:, s:e], x.transpose(1, 2))  # (B, rows, n)
        rows = torch.arange(s, e, device=x.device)
        d[:, rows - s, rows] = float("inf")  # exclude self
        nn_dist[:, s:e] = d.amin(-1)
    if canon is not None and late is not None:
        copied = torch.zeros(B, n, device=x.device).scatter_add_(1, canon, torch.ones(B, n, device=x.device)) > 1
        nn_dist = torch.where(copied, 0.0, nn_dist).masked_fill(late, -float("inf"))
    out[:, 0] = nn_dist.argmax(-1)
    # Running distance of every token to the chosen set; chosen tokens sit at -inf thereafter.
    batch = torch.arange(B, device=x.device)
    mind = 1.0 - torch.einsum("bnd,bd->bn", x, x[batch, out[:, 0]])
    if late is not None:
        mind = mind.masked_fill(late, _LATE)
    mind[batch, out[:, 0]] = -float("inf")
    for i in range(1, k):
        pick = mind.argmax(-1)
        out[:, i] = pick
        mind = torch.minimum(mind, 1.0 - torch.einsum("bnd,bd->bn", x, x[batch, pick]))
        mind[batch, pick] = -float("inf")
    return out


def _pair_distances(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, block_elems: int) -> torch.Tensor:
    """``1 - <x[a[p]], x[b[p]]>`` for index pairs, gathered a block of rows at a time."""
    out = torch.empty(a.numel(), device=x.device)
    step = max(1, block_elems // max(1, x.shape[1]))
    for s in range(0, a.numel(), step):
        out[s : s + step] = 1.0 - torch.einsum("pd,pd->p", x[a[s : s + step]], x[b[s : s + step]])
    return out


def _first_pick(x: torch.Tensor, copied: torch.Tensor | None, ub: torch.Tensor, tol: float, block_elems: int) -> int:
    """Row of ``x`` (U, D) whose nearest other row is farthest (a row with a copy is at 0), lowest index on
    ties. ``ub`` bounds each row's nearest distance from above (up to ``tol``): rows are examined in
    decreasing ``ub`` and the search stops once no remaining bound can reach the best distance found."""
    U = x.shape[0]
    if copied is not None:
        ub = torch.where(copied, 0.0, ub)
    order = torch.sort(ub, descending=True, stable=True).indices
    ub_sorted = ub[order]
    best_val, best_idx = -float("inf"), U
    step = max(1, block_elems // max(1, U))
    for s in range(0, U, step):
        if float(ub_sorted[s]) + tol < best_val:
            break
        rows = order[s : s + step]
        d = 1.0 - x[rows] @ x.T
        d[torch.arange(rows.numel(), device=x.device), rows] = float("inf")  # exclude self
        nn = d.amin(-1)
        if copied is not None:
            nn = torch.where(copied[rows], 0.0, nn)
        m = float(nn.max())
        at = int(rows[nn == m].min())
        if m > best_val or (m == best_val and at < best_idx):
            best_val, best_idx = m, at
    return best_idx


def _first_rows(x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Each row's first bitwise copy in ``x`` (n, D) (zero rows excepted) and the indices of the first
    copies, increasing; both None without copies."""
    canon = _copies(x[None])
    if canon is None:
        return None, None
    return canon[0], (canon[0] == torch.arange(x.shape[0], device=x.device)).nonzero()[:, 0]


def _distinct(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The distinct rows of ``x`` (n, D) as a new tensor (``x`` itself when there is no copy), each row's
    first copy (n,) and the indices of the first copies (both None without copies)."""
    canon, first_rows = _first_rows(x)
    if canon is None or first_rows is None:
        return x, None, None
    return x.index_select(0, first_rows), canon, first_rows


def _normalize_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """:func:`normalize` of ``x[rows]``, a block of rows at a time (no raw copy of the rows). No block has a
    single row: torch may split the reduction of a lone row between threads, never that of several."""
    out = torch.empty(rows.numel(), x.shape[1], device=x.device)
    step = max(2, DEFAULT_BLOCK_ELEMS // max(1, x.shape[1]))
    s = 0
    while s < rows.numel():
        e = rows.numel() if rows.numel() - s < 2 * step else s + step
        out[s:e] = normalize(x.index_select(0, rows[s:e]))
        s = e
    return out


def _distinct_normalized(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """:func:`_distinct` of ``normalize(x)`` for raw rows ``x`` (n, D), without a normalised copy of ``x``.

    Bitwise copies are found on the raw rows first (in their own dtype): copies stay copies once
    normalised (a function of the row alone), so only the first copies are normalised. Rows that differ
    but become equal once normalised (``x`` and ``2 x``, or rounding) are then found among those, so
    the result, copies included, is that of ``_distinct(normalize(x))``.
    """
    canon_raw, rows_raw = _first_rows(x)
    if canon_raw is None or rows_raw is None:
        return _distinct(normalize(x))
    xu, canon, rows = _distinct(_normalize_rows(x, rows_raw))
    if canon is None or rows is None:
        return xu, canon_raw, rows_raw
    # Positions are among the raw first copies: map each row to its raw first copy, then to that copy's
    # first normalised copy. Both are the smallest index of their class, so the composite is too.
    at = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    at[rows_raw] = torch.arange(rows_raw.numel(), device=x.device)
    return xu, rows_raw[canon[at[canon_raw]]], rows_raw[rows]


def _bounded_select(
    xu: torch.Tensor,
    canon: torch.Tensor | None,
    first_rows: torch.Tensor | None,
    n: int,
    k: int,
    block_elems: int,
    stride: int | None,
) -> torch.Tensor:
    """The greedy selection on one set of ``n`` rows given by :func:`_distinct`, updating only the rows a
    new pick can move.

    The distance on unit vectors, ``e = sqrt(2 d)``, is a metric, so for a row x whose nearest chosen
    token is c (``d(x, c) = m(x)``), a new pick s with ``e(c, s) >= 2 e(x, c)`` is at least as far from x
    as c is (triangle inequality) and cannot lower ``m(x)``. Only the other rows are recomputed; the
    bound carries a margin of twice the square root of the fp32 rounding bound, so a row it skips cannot
    change on any machine either (docs: skipping is exact, the picks are those of the dense path).
    """
    U, D = xu.shape
    dev = xu.device
    kk = min(k, U)
    copied = None
    inv = torch.arange(n, device=dev)
    if canon is not None and first_rows is not None:
        copied = torch.bincount(canon, minlength=n)[first_rows] > 1
        inv = torch.full((n,), -1, dtype=torch.long, device=dev)
        inv[first_rows] = torch.arange(U, device=dev)
        inv = inv[canon]  # position in xu of each row's first copy
    tol = _dot_error(D, dev)
    # Upper bounds on each row's nearest distance, from its neighbours in the flattened video.
    ub = torch.full((U,), float("inf"), device=dev)
    for off in sorted({1, stride or 1}):
        if off >= n:
            continue
        a, b = inv[:-off], inv[off:]
        keep = a != b
        a, b = a[keep], b[keep]
        d = _pair_distances(xu, a, b, block_elems)
        ub.scatter_reduce_(0, a, d, "amin")
        ub.scatter_reduce_(0, b, d, "amin")
    out = torch.empty(kk, dtype=torch.long, device=dev)
    out[0] = _first_pick(xu, copied, ub, 2.0 * tol, block_elems) if U > 1 else 0
    mind = 1.0 - xu @ xu[out[0]]
    mind[out[0]] = -float("inf")
    owner = torch.zeros(U, dtype=torch.long, device=dev)  # which pick m(x) was measured against
    picked = torch.empty(kk, D, device=dev)
    picked[0] = xu[out[0]]
    eta = 2.0 * tol**0.5

    def reach(m: torch.Tensor) -> torch.Tensor:
        # 2 e(x, c) plus the margin, from above; -inf (chosen) gives the margin alone, never needed.
        return 2.0 * (2.0 * (m + tol).clamp_min(0.0)).sqrt() * (1.0 + 1e-5) + eta

    radius = reach(mind)
    # e(c, s) for the many earlier picks c is itself bounded from below through the first picks (spread
    # out by construction) as pivots: e(c, s) >= |e(c, p) - e(s, p)|, each computed e within sqrt(2 tol).
    R = min(PIVOTS, kk)
    piv = torch.empty(kk, R, device=dev)
    slack = 2.0 * (2.0 * tol) ** 0.5 * (1.0 + 1e-5)
    for i in range(1, kk):
        s = int(mind.argmax())
        out[i] = s
        picked[i] = xu[s]
        mind[s] = -float("inf")
        if i <= R:
            lower = (2.0 * (1.0 - picked[:i] @ xu[s] - tol).clamp_min(0.0)).sqrt()
            if i == R:
                piv[: R + 1] = (2.0 * (1.0 - picked[: R + 1] @ picked[:R].T).clamp_min(0.0)).sqrt()
        else:
            piv[i] = (2.0 * (1.0 - picked[:R] @ xu[s]).clamp_min(0.0)).sqrt()
            lower = (piv[:i] - piv[i]).abs().amax(-1) - slack
            # Only the picks that own a row the pivot bound cannot rule out get the exact lower bound.
            live = mind > -float("inf")
            reach_of = torch.full((i,), -float("inf"), device=dev)
            reach_of.scatter_reduce_(0, owner[live], radius[live], "amax")
            exact = (lower < reach_of).nonzero()[:, 0]
            if exact.numel():
                lower[exact] = (2.0 * (1.0 - picked.index_select(0, exact) @ xu[s] - tol).clamp_min(0.0)).sqrt()
        cand = ((lower[owner] < radius) & (mind > -float("inf"))).nonzero()[:, 0]
        if cand.numel() == 0:
            continue
        d = 1.0 - xu.index_select(0, cand) @ xu[s]
        better = d < mind[cand]
        cand, d = cand[better], d[better]
        mind[cand] = d
        owner[cand] = i
        radius[cand] = reach(d)
    picks = out if first_rows is None else first_rows[out]
    if k > U and canon is not None:
        # Every distinct row is chosen; the later copies (at distance 0) follow in index order.
        later = (canon != torch.arange(n, device=dev)).nonzero()[:, 0]
        picks = torch.cat([picks, later[: k - U]])
    return picks


def max_min_select(
    x: torch.Tensor, k: int, block_elems: int = DEFAULT_BLOCK_ELEMS, stride: int | None = None, path: str = "auto"
) -> torch.Tensor:
    """Greedy max-min diversity selection of ``k`` of the rows of each set in ``x``.

    ``x`` (B, n, D) unit-norm fp32. Returns LongTensor (B, k) in selection order. Cosine distance is
    ``1 - <x_i, x_j>``; argmax ties go to the lower index. Bitwise-equal rows (other than zero rows) are
    one token: the first copy stands for them, the later copies are at distance 0 from it and come after
    every distinct row, in index order, so copies never depend on how the BLAS rounded them.

    ``path``: ``"dense"`` recomputes every row's distance at each pick; ``"bounded"`` (one set only)
    recomputes only the rows the triangle inequality cannot rule out, with the same picks; ``"auto"``
    takes the bounded path for one set of at least :data:`BOUNDED_MIN_ROWS` rows. ``stride`` (the tokens
    per frame) tells the bounded path which rows are neighbours in time, for its first pick.
    """
    B, n, _ = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    if path not in ("auto", "dense", "bounded"):
        raise ValueError(f"path must be 'auto', 'dense' or 'bounded', got {path!r}")
    if path == "bounded" and B != 1:
        raise ValueError(f"path='bounded' takes one set, got {B}")
    if n == 1:
        return torch.zeros(B, k, dtype=torch.long, device=x.device)
    if path == "bounded" or (path == "auto" and B == 1 and n >= BOUNDED_MIN_ROWS):
        return _bounded_select(*_distinct(x[0]), n, k, block_elems, stride)[None]
    return _dense_select(x, k, block_elems, _copies(x))


def run(tokens: VideoTokens, config: DivPruneConfig) -> PruneResult:
    """Select a maximally diverse subset of the tokens."""
    T, H, W = tokens.grid
    L = H * W
    k = frame_budget(L, config.retention)
    if config.scope == "video" and T * L >= BOUNDED_MIN_ROWS:
        # With copies, only the distinct rows are ever normalised (the peak at 512 x 196 x 3584 frames).
        xu, canon, first_rows = _distinct_normalized(tokens.features.reshape(T * L, -1))
        idx = _bounded_select(xu, canon, first_rows, T * L, T * k, DEFAULT_BLOCK_ELEMS, L)
    elif config.scope == "video":
        idx = max_min_select(normalize(tokens.features.reshape(1, T * L, -1)), T * k, stride=L)[0]
    else:
        pos = max_min_select(normalize(tokens.features.reshape(T, L, -1)), k)
        idx = flat_index(torch.arange(T, device=pos.device)[:, None], pos, L).reshape(-1)
    return PruneResult.from_indices(
        tokens,
        idx,
        info={
            "method": "divprune",
            "retention": config.retention,
            "scope": config.scope,
            "kept": int(idx.numel()),
            "total": T * L,
        },
    )


register("divprune", DivPruneConfig, run, "greedy max-min diversity on cosine distance")
