"""DPC-KNN clustering (density peaks with a k-nearest-neighbour density), blocked so memory stays bounded.

For points x_1..x_n (tango-spec 2.6):

- density  rho_i   = exp(-mean of d_ij^2 over the k nearest neighbours j of i),
- distance delta_i = min d_ij over the points j denser than i; for the densest point, the largest
  pairwise distance of the set,
- score    gamma_i = rho_i * delta_i; the centres are the ``num`` points of highest gamma.

Differences from the published code, all deliberate:

- No dense n x n matrix. Distances are computed in row blocks of at most ``block_elems`` entries; the
  delta pass visits the points in density order, so each block only meets the points denser than it
  (half the work of a full pass). Peak extra memory is O(block_elems + n * D).
- No random tie-break noise on rho. "j is denser than i" means rho_j > rho_i, or rho_j == rho_i and
  j < i; gamma ties are broken by the smaller index. The same input always gives the same centres.
- Everything is fp32.

The blocked computation returns exactly what a single block (the dense computation) returns; the tests
check this.
"""

from __future__ import annotations

import math

import torch

__all__ = ["dpc_knn", "nearest", "pairwise_sqdist", "stable_argsort_desc", "sqdist_error_bound", "fixed_order_sqdist",
           "DEFAULT_BLOCK_ELEMS"]

#: Entries of a distance block (fp32): 2**23 entries = 32 MiB.
DEFAULT_BLOCK_ELEMS = 1 << 23


def pairwise_sqdist(a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor | None = None,
                    b_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances between (..., m, D) and (..., n, D) fp32 sets, clamped at 0."""
    if a_sq is None:
        a_sq = (a * a).sum(-1)
    if b_sq is None:
        b_sq = (b * b).sum(-1)
    # (|a|^2 + |b|^2) is added as one commutative sum so that d2[i, j] == d2[j, i] bit for bit: exact
    # density ties (e.g. mutual nearest neighbours) then stay ties and are broken by index.
    d2 = torch.matmul(a, b.transpose(-1, -2)).mul_(-2.0)
    d2.add_(a_sq.unsqueeze(-1) + b_sq.unsqueeze(-2))
    return d2.clamp_min_(0.0)


def stable_argsort_desc(score: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Indices ordering ``score`` descending along ``dim``; equal scores keep ascending index order."""
    return torch.sort(score, dim=dim, descending=True, stable=True).indices


def _rows_per_block(batch: int, cols: int, block_elems: int) -> int:
    return max(1, block_elems // max(1, batch * cols))


def dpc_knn(x: torch.Tensor, num: int, k: int, block_elems: int = DEFAULT_BLOCK_ELEMS) -> torch.Tensor:
    """Select ``num`` DPC-KNN centres of each set in ``x``.

    ``x`` is (B, n, D) or (n, D) (any float dtype; computed in fp32). Returns LongTensor (B, num) or
    (num,) of indices into each set, ordered by descending gamma (ties: smaller index first).
    """
    squeeze = x.dim() == 2
    if squeeze:
        x = x.unsqueeze(0)
    if x.dim() != 3:
        raise ValueError(f"x must have shape (n, D) or (B, n, D), got {tuple(x.shape)}")
    B, n, _ = x.shape
    if not 1 <= num <= n:
        raise ValueError(f"num must be in [1, n={n}], got {num}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    x = x.float()
    if n == 1:
        out = torch.zeros(B, 1, dtype=torch.long, device=x.device)
        return out[0] if squeeze else out
    sq = (x * x).sum(-1)
    kk = min(k + 1, n)

    # Pass 1: kNN density and the largest pairwise distance.
    rho = torch.empty(B, n, device=x.device)
    max_d2 = torch.zeros(B, device=x.device)
    step = _rows_per_block(B, n, block_elems)
    for s in range(0, n, step):
        e = min(n, s + step)
        d2 = pairwise_sqdist(x[:, s:e], x, sq[:, s:e], sq)
        max_d2 = torch.maximum(max_d2, d2.amax(dim=(1, 2)))
        knn = torch.topk(d2, kk, dim=-1, largest=False, sorted=True).values[..., 1:]
        # Published code drops the first (self) column; for n <= k there may be fewer neighbours.
        rho[:, s:e] = torch.exp(-knn.mean(-1)) if knn.shape[-1] else 1.0

    # Pass 2: distance to the nearest denser point, visiting points in density order.
    order = stable_argsort_desc(rho)                       # rank -> point
    xs = torch.gather(x, 1, order.unsqueeze(-1).expand_as(x))
    sqs = torch.gather(sq, 1, order)
    delta2_sorted = torch.empty(B, n, device=x.device)
    delta2_sorted[:, 0] = max_d2
    ranks = torch.arange(n, device=x.device)
    s = 1
    while s < n:
        # A block of rows [s, e) meets columns [0, e): pick e so that (e - s) * e stays within the budget.
        cap = block_elems // B
        step = max(1, int((-s + math.sqrt(s * s + 4.0 * cap)) / 2))
        e = min(n, s + step)
        d2 = pairwise_sqdist(xs[:, s:e], xs[:, :e], sqs[:, s:e], sqs[:, :e])
        denser = ranks[None, :e] < ranks[s:e, None]        # (rows, cols): column strictly earlier in order
        d2 = d2.masked_fill_(~denser, float("inf"))
        delta2_sorted[:, s:e] = d2.amin(-1)
        s = e
    delta = torch.empty_like(delta2_sorted).scatter_(1, order, delta2_sorted.sqrt())

    gamma = rho * delta
    centres = stable_argsort_desc(gamma)[:, :num]
    return centres[0] if squeeze else centres


def sqdist_error_bound(a_sq: torch.Tensor, b_sq_max: torch.Tensor, dim: int, device: torch.device) -> torch.Tensor:
    """An upper bound on the rounding error of :func:`pairwise_sqdist` for rows of squared norm ``a_sq``
    against columns of squared norm at most ``b_sq_max``, in ``dim`` dimensions.

    Any fp32 summation order (BLAS kernel, blocking, thread count, FMA or not) computes a dot product of
    D terms within ``gamma_D * sum |a_k b_k|`` of the exact value, ``gamma_D = D u / (1 - D u)``; the norms
    likewise, and the final additions add a few ``u``. So two machines never disagree by more than twice
    this bound. Under TF32 matmuls (CUDA, ``float32_matmul_precision != "highest"``) ``u`` is 2**-11.
    """
    u = 2.0 ** -24
    if device.type == "cuda" and torch.get_float32_matmul_precision() != "highest":
        u = 2.0 ** -11
    gamma = dim * u / max(1e-30, 1.0 - dim * u)
    return (2.0 * gamma + 4.0 * u) * (a_sq + b_sq_max)


def fixed_order_sqdist(a: torch.Tensor, b: torch.Tensor, chunk_elems: int = DEFAULT_BLOCK_ELEMS) -> torch.Tensor:
    """Squared distances between paired rows ``a[i]``, ``b[i]`` (P, D) in fp64, in a fixed summation order.

    The differences are squared in fp64 and summed by a balanced tree of elementwise additions (pairs of
    halves), never by a library reduction, so the result is the same bits on every machine and device.
    """
    P, D = a.shape
    out = torch.empty(P, dtype=torch.float64, device=a.device)
    width = 1 << max(0, (D - 1).bit_length())
    step = max(1, chunk_elems // max(1, width))
    for s in range(0, P, step):
        d = a[s:s + step].double() - b[s:s + step].double()
        d = d * d
        if width != D:
            d = torch.nn.functional.pad(d, (0, width - D))
        while d.shape[-1] > 1:
            h = d.shape[-1] // 2
            d = d[:, :h] + d[:, h:]
        out[s:s + step] = d[:, 0]
    return out


def _resolve_near_ties(d2: torch.Tensor, a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor,
                       b_sq: torch.Tensor) -> torch.Tensor:
    """Argmin over the last dim of ``d2`` (B, r, m), made independent of how ``d2`` was rounded.

    Every column within twice the rounding bound of the row minimum may be the exact minimum on some
    machine; for rows with more than one such column, those few distances are recomputed with
    :func:`fixed_order_sqdist` and the smallest wins, the first column on ties. Identical centres are
    therefore always resolved to the first one.
    """
    arg = d2.argmin(-1)
    best = d2.gather(-1, arg.unsqueeze(-1))
    tol = 2.0 * sqdist_error_bound(a_sq, b_sq.amax(-1, keepdim=True), a.shape[-1], d2.device)
    near = d2 <= best + tol.unsqueeze(-1) * 1.0001
    multi = near.sum(-1) > 1
    if not bool(multi.any()):
        return arg
    bb, rr, cc = torch.nonzero(near & multi.unsqueeze(-1), as_tuple=True)        # row-major order
    v = fixed_order_sqdist(a[bb, rr].float(), b[bb, cc].float())
    key = bb * d2.shape[1] + rr
    rows = torch.unique(key)
    gmin = torch.full((d2.shape[0] * d2.shape[1],), float("inf"), dtype=torch.float64, device=d2.device)
    gmin.scatter_reduce_(0, key, v, "amin")
    hit = v == gmin[key]
    first = torch.full_like(gmin, d2.shape[-1], dtype=torch.long)
    first.scatter_reduce_(0, key[hit], cc[hit], "amin")
    flat = arg.reshape(-1).clone()
    flat[rows] = first[rows]
    return flat.reshape(arg.shape)


def nearest(x: torch.Tensor, centres: torch.Tensor, block_elems: int = DEFAULT_BLOCK_ELEMS) -> torch.Tensor:
    """Index of the nearest centre (Euclidean) for each point; ties go to the first centre.

    ``x`` is (B, n, D) or (n, D), ``centres`` (B, m, D) or (m, D). Distances are computed in fp32 row
    blocks; a point whose two best centres are closer than the fp32 rounding bound is decided on
    fixed-order fp64 distances (:func:`_resolve_near_ties`), so the answer is the same on every machine,
    for every block size and thread count.
    """
    squeeze = x.dim() == 2
    if squeeze:
        x, centres = x.unsqueeze(0), centres.unsqueeze(0)
    x, centres = x.float(), centres.float()
    B, n, _ = x.shape
    m = centres.shape[1]
    if m == 0:
        raise ValueError("centres must contain at least one point")
    c_sq = (centres * centres).sum(-1)
    out = torch.empty(B, n, dtype=torch.long, device=x.device)
    step = _rows_per_block(B, m, block_elems)
    for s in range(0, n, step):
        e = min(n, s + step)
        xb = x[:, s:e]
        xb_sq = (xb * xb).sum(-1)
        d2 = pairwise_sqdist(xb, centres, xb_sq, c_sq)
        out[:, s:e] = _resolve_near_ties(d2, xb, centres, xb_sq, c_sq)
    return out[0] if squeeze else out
