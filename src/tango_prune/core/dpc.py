"""DPC-KNN clustering (density peaks with a k-nearest-neighbour density) on one exact distance matrix.

For points x_1..x_n (docs/algorithm.md §2.6):

- density  rho_i   = exp(-mean of d_ij^2 over the k nearest neighbours j of i),
- distance delta_i = min d_ij over the points j denser than i; for the densest point, the largest
  pairwise distance of the set,
- score    gamma_i = rho_i * delta_i; the centres are the ``num`` points of highest gamma.

How the distances are computed:

- Every d2[i, j] comes from one fixed GEMM: the row strip of ``TILE`` rows holding min(i, j), against
  the columns from that strip on (the upper triangle). It is mirrored, so d2 is exactly symmetric with
  an exactly zero diagonal, and about half the pairs are computed.
- When the (B, n, n) fp32 matrix fits in ``gram_bytes`` it is built once and serves the density, the
  delta and (:func:`assign`) the nearest-centre assignment. Otherwise the same strips are recomputed,
  once for the density (running k smallest per row) and once for the delta (running minimum): memory
  O(TILE n + n k), twice the flops, and the same bits, since every entry comes from the same GEMM call.
- Exact duplicates (bitwise-equal rows) are canonicalised: such sets are computed on their unique rows
  (a column standing for all copies of its point), so copies share one density, are at distance exactly
  0 from each other, and a later copy has delta 0. This does not depend on where the copies sit.

Differences from the published code, all deliberate: no random tie-break noise on rho ("j is denser than
i" means rho_j > rho_i, or rho_j == rho_i and j < i; gamma ties go to the smaller index), fp32 throughout.

What is and is not machine-independent: exact ties (duplicates, symmetric pairs) are exact by
construction. Distinct points whose density or gamma differ by less than fp32 rounding (about 1e-7
relative) are ranked by the computed values, which another BLAS kernel may round differently;
:func:`nearest` and :func:`assign` have no such caveat (near-ties are re-decided in fixed-order fp64).
"""

from __future__ import annotations

from types import EllipsisType

import torch

from .rows import take_rows

__all__ = [
    "dpc_knn",
    "assign",
    "nearest",
    "pairwise_sqdist",
    "stable_argsort_desc",
    "sqdist_error_bound",
    "fixed_order_sqdist",
    "first_copies",
    "sq_norms",
    "DEFAULT_BLOCK_ELEMS",
    "DEFAULT_GRAM_BYTES",
    "TILE",
]

#: Entries of a distance strip in the blocked path (fp32): 2**23 entries = 32 MiB.
DEFAULT_BLOCK_ELEMS = 1 << 23
#: Largest (B, n, n) fp32 distance matrix built at once: 256 MiB (n = 8192 for one set).
DEFAULT_GRAM_BYTES = 1 << 28
#: Elements of a set hashed at a time by :func:`first_copies`.
HASH_BLOCK_ELEMS = 1 << 18
#: Height of the fixed row strips every distance comes from.
TILE = 512
#: Sets of at least this many points skip whole-matrix passes: delta is read off the neighbour lists and
#: copies are pre-filtered by each row's nearest other row, at one host wait each. Smaller sets take the
#: whole-matrix passes, cheaper there than a wait. Both give the same bits.
SHORTCUT_MIN_POINTS = 2048


def pairwise_sqdist(
    a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor | None = None, b_sq: torch.Tensor | None = None
) -> torch.Tensor:
    """Squared Euclidean distances between (..., m, D) and (..., n, D) fp32 sets, clamped at 0."""
    if a_sq is None:
        a_sq = (a * a).sum(-1)
    if b_sq is None:
        b_sq = (b * b).sum(-1)
    d2 = torch.matmul(a, b.transpose(-1, -2)).mul_(-2.0)
    d2.add_(a_sq.unsqueeze(-1) + b_sq.unsqueeze(-2))
    return d2.clamp_min_(0.0)


def stable_argsort_desc(score: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Indices ordering ``score`` descending along ``dim``; equal scores keep ascending index order."""
    return torch.sort(score, dim=dim, descending=True, stable=True).indices


def _rows_per_block(batch: int, cols: int, block_elems: int) -> int:
    return max(1, block_elems // max(1, batch * cols))


def _hash_weights(D: int, device: torch.device) -> torch.Tensor:
    # Fixed odd multipliers (Knuth's multiplicative constant), no RNG: the same on every machine.
    return (torch.arange(D, dtype=torch.int64, device=device) * 2654435761 + 40503) % (1 << 31) | 1


#: The integer dtype of the same width as each float dtype: a row's bits, for hashing and comparing.
_SAME_WIDTH_INT = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}


def first_copies(x: torch.Tensor) -> torch.Tensor | None:
    """For (B, n, D) floating-point sets (any float dtype, compared in that dtype), the index of the first
    bitwise-equal row of each row, or ``None`` when no set has a duplicate. -0.0 and 0.0 count as equal.
    Integer hashing (exact, order-free) finds the candidates; equality is then checked on the bits."""
    B, n, D = x.shape
    weights = _hash_weights(D, x.device)
    as_int = _SAME_WIDTH_INT.get(x.dtype)
    if as_int is None:
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")

    def bits(rows: torch.Tensor) -> torch.Tensor:
        return (rows + 0.0).view(as_int)  # + 0.0: -0.0 and 0.0 get the same bits

    # Rows are hashed a block at a time: neither a bit copy nor the int64 products of the whole set. The
    # blocks are small (2 MiB of int64) because on the CPU fresh large temporaries cost more in page
    # faults than the hashing; integer sums are exact, so the block size never changes a hash.
    step = _rows_per_block(B, D, HASH_BLOCK_ELEMS)
    h = torch.cat([(bits(x[:, s : s + step]).to(torch.int64) * weights).sum(-1) for s in range(0, n, step)], 1)
    head = _first_equal(h)  # the first row of equal hash
    if head is None:
        return None
    pos = torch.arange(n, device=x.device).expand(B, n)
    # A hash collision stays distinct; only rows with an equal-hash predecessor need their bits compared.
    equal = head == pos
    b, i = torch.nonzero(~equal, as_tuple=True)
    step = max(1, DEFAULT_BLOCK_ELEMS // max(1, D))
    for s in range(0, b.numel(), step):
        bb, ii = b[s : s + step], i[s : s + step]
        equal[bb, ii] = (bits(x[bb, ii]) == bits(x[bb, head[bb, ii]])).all(-1)
    canon = torch.where(equal, head, pos)
    return None if bool((canon == pos).all()) else canon


def _copies_from_distances(x: torch.Tensor, d2: torch.Tensor, sq: torch.Tensor) -> torch.Tensor | None:
    """:func:`first_copies` read off a full distance matrix: bitwise-equal rows are at computed distance
    at most the rounding bound, so only those few pairs are compared bit for bit.

    From :data:`SHORTCUT_MIN_POINTS` points on, a row can have a copy only if its nearest other row lies
    within the bound: one read-only pass over ``d2`` (its diagonal set aside meanwhile) finds those rows,
    and only they are compared further. The (n, n) comparison mask of every row cost six times as much at
    n = 11,776.
    """
    B, n, D = x.shape
    tol = 2.0 * sqdist_error_bound(sq, sq.amax(-1, keepdim=True), D, x.device)
    if n < SHORTCUT_MIN_POINTS:
        cb = torch.arange(B, device=x.device)[:, None].expand(B, n).reshape(-1)
        ci = torch.arange(n, device=x.device).repeat(B)
    else:
        cb, ci = torch.nonzero(_nearest_other(d2) <= tol, as_tuple=True)
        if cb.numel() == 0:
            return None
    cols = torch.arange(n, device=x.device)
    step = max(1, DEFAULT_BLOCK_ELEMS // max(1, 8 * n))
    found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    pairs = 0
    for s in range(0, cb.numel(), step):
        rb, ri = cb[s : s + step], ci[s : s + step]
        close = (d2[rb, ri] <= tol[rb, ri, None]) & (cols[None, :] > ri[:, None])  # pairs i < j, row i's bound
        p, j = torch.nonzero(close, as_tuple=True)
        found.append((rb[p], ri[p], j))
        pairs += p.numel()
        if pairs > B * n:  # a crowd of near-duplicates: hashing every row is cheaper
            return first_copies(x)
    b, i, j = (torch.cat(t) for t in zip(*found))
    if b.numel() == 0:
        return None
    bits = (x + 0.0).view(torch.int32)
    eq = (bits[b, i] == bits[b, j]).all(-1)
    if not bool(eq.any()):
        return None
    canon = torch.arange(n, device=x.device).repeat(B, 1)
    # Equality is transitive, so the smallest equal index of a row is its first copy.
    canon.view(-1).scatter_reduce_(0, (b * n + j)[eq], i[eq], "amin")
    return canon


def _nearest_other(d2: torch.Tensor) -> torch.Tensor:
    """Per row of a (B, n, n) distance matrix, the smallest entry off the diagonal (inf when n = 1).

    The diagonal is set to inf for one ``amin`` pass and then restored bit for bit, so ``d2`` is left as
    it was; a matrix that cannot be written in place (an expanded view) is masked chunk by chunk instead.
    """
    B, n, _ = d2.shape
    diag = d2.diagonal(dim1=-2, dim2=-1)
    if d2.is_contiguous():
        kept = diag.clone()
        diag.fill_(float("inf"))
        try:
            return d2.amin(-1)
        finally:
            diag.copy_(kept)
    step = max(1, DEFAULT_BLOCK_ELEMS // max(1, B * n))
    cols = torch.arange(n, device=d2.device)
    out = []
    for s in range(0, n, step):
        rows = cols[s : s + step]
        out.append(torch.where(cols[None, :] == rows[:, None], float("inf"), d2[:, s : s + step]).amin(-1))
    return torch.cat(out, 1)


def sq_norms(x: torch.Tensor) -> torch.Tensor:
    """``(x * x).sum(-1)`` of fp32 rows (..., D), the same bits, without the (..., D) temporary.

    Rows are squared a chunk at a time into one small buffer: on the CPU a fresh multi-megabyte
    temporary costs more in page faults than the arithmetic. Each row is still reduced on its own, so
    the chunking does not change the bits; rows wider than 16,384 are left to one reduction (torch may
    split a single wide row across threads).
    """
    D = x.shape[-1]
    rows = x.numel() // max(1, D)
    step = max(16, (1 << 18) // max(1, D))
    if rows <= step or D > (1 << 14) or not x.is_contiguous():
        return (x * x).sum(-1)
    flat = x.reshape(rows, D)
    out = torch.empty(rows, dtype=x.dtype, device=x.device)
    buf = torch.empty(step, D, dtype=x.dtype, device=x.device)
    for s in range(0, rows, step):
        e = min(rows, s + step)
        torch.sum(torch.mul(flat[s:e], flat[s:e], out=buf[: e - s]), -1, out=out[s:e])
    return out.reshape(x.shape[:-1])


def _upper_strips(x: torch.Tensor, sq: torch.Tensor):
    """Yield ``(i0, i1, d2)``: rows [i0, i1) of the distance matrix against columns [i0, n), for row strips
    of ``TILE`` rows. These GEMM calls are the only source of distances, on every path, so an entry has
    the same bits wherever it is used; the diagonal block is mirrored and its diagonal set to 0."""
    B, n, _ = x.shape
    for i0 in range(0, n, TILE):
        i1 = min(n, i0 + TILE)
        d2 = pairwise_sqdist(x[:, i0:i1], x[:, i0:], sq[:, i0:i1], sq[:, i0:])
        t = i1 - i0
        upper = torch.ones(t, t, dtype=torch.bool, device=x.device).triu_()
        d2[:, :, :t] = torch.where(upper, d2[:, :, :t], d2[:, :, :t].transpose(-1, -2))
        d2[:, :, :t].diagonal(dim1=-2, dim2=-1).zero_()
        yield i0, i1, d2


def _matrix(x: torch.Tensor, sq: torch.Tensor) -> torch.Tensor:
    """The whole (B, n, n) distance matrix from :func:`_upper_strips`, mirrored: exactly symmetric."""
    B, n, _ = x.shape
    d2 = torch.empty(B, n, n, device=x.device)
    for i0, i1, strip in _upper_strips(x, sq):
        d2[:, i0:i1, i0:] = strip
        d2[:, i0:, i0:i1] = strip.transpose(-1, -2)
    return d2


def _knn_rho(d2: torch.Tensor, kk: int) -> torch.Tensor:
    """Density from rows of sorted-ascending candidate distances: the first (self) is dropped."""
    knn = d2[..., 1:kk]
    # For n <= k there may be fewer neighbours; a single point has density 1.
    return torch.exp(-knn.mean(-1)) if knn.shape[-1] else torch.ones(d2.shape[:-1], device=d2.device)


def _nearest_k(d2: torch.Tensor, kk: int):
    """The (at most) ``kk`` smallest entries of each row, ascending, with their columns (``topk`` result)."""
    return torch.topk(d2, min(kk, d2.shape[-1]), dim=-1, largest=False, sorted=True)


def _smallest(d2: torch.Tensor, kk: int) -> torch.Tensor:
    return _nearest_k(d2, kk).values


def _denser_min(d2: torch.Tensor, rank_rows: torch.Tensor, rank_cols: torch.Tensor) -> torch.Tensor:
    """Per row, the smallest distance to a column earlier in the density order (inf if none)."""
    denser = rank_cols[:, None, :] < rank_rows[:, :, None]
    return torch.where(denser, d2, float("inf")).amin(-1)


def _rank(rho: torch.Tensor) -> torch.Tensor:
    B, n = rho.shape
    rank = torch.empty(B, n, dtype=torch.long, device=rho.device)
    return rank.scatter_(1, stable_argsort_desc(rho), torch.arange(n, device=rho.device).expand(B, n))


def _dense_scores(full: torch.Tensor, kk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rho, delta^2, largest d2) from a whole distance matrix, in row chunks to bound temporaries."""
    B, n, _ = full.shape
    chunk = max(1, (1 << 22) // max(1, B * n))
    near = [_nearest_k(full[:, s : s + chunk], kk) for s in range(0, n, chunk)]
    vals = torch.cat([t.values for t in near], 1)
    rho = _knn_rho(vals, kk)
    rank = _rank(rho)
    if n < SHORTCUT_MIN_POINTS:
        delta2 = torch.cat(
            [_denser_min(full[:, s : s + chunk], rank[:, s : s + chunk], rank) for s in range(0, n, chunk)], 1
        )
    else:
        delta2 = _delta_from_neighbours(full, vals, torch.cat([t.indices for t in near], 1), rank)
    return rho, delta2, full.amax(dim=(1, 2))


def _listed_delta(vals: torch.Tensor, nbrs: torch.Tensor, rank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """delta^2 read off each row's nearest neighbours, and the rows that this does not settle.

    ``vals``/``nbrs`` (B, n, kk): each row's smallest distances (ascending) and their columns (-1: none).
    Every column outside a row's list is at least as far as the farthest entry of the list, so when one
    of the listed points is denser, the nearest denser point is among them, exactly. The rows with no
    denser point in their list (local density peaks, a small share; not the densest point, whose delta
    stays inf) are returned as a mask: only they need their whole row.
    """
    B = rank.shape[0]
    listed = torch.gather(rank, 1, nbrs.clamp_min(0).reshape(B, -1)).reshape(nbrs.shape)
    denser = (nbrs >= 0) & (listed < rank.unsqueeze(-1))
    return torch.where(denser, vals, float("inf")).amin(-1), ~denser.any(-1) & (rank > 0)


def _delta_from_neighbours(
    full: torch.Tensor, vals: torch.Tensor, nbrs: torch.Tensor, rank: torch.Tensor
) -> torch.Tensor:
    """delta^2 from the neighbour lists (:func:`_listed_delta`); the peaks scan their rows of ``full``."""
    n = full.shape[-1]
    delta2, peak = _listed_delta(vals, nbrs, rank)
    pb, pi = torch.nonzero(peak, as_tuple=True)
    step = max(1, (1 << 22) // max(1, n))
    for s in range(0, pb.numel(), step):
        b, i = pb[s : s + step], pi[s : s + step]
        delta2[b, i] = _denser_min(full[b, i].unsqueeze(1), rank[b, i].unsqueeze(1), rank[b])[:, 0]
    return delta2


def _strip_delta_at_peaks(
    x: torch.Tensor, sq: torch.Tensor, vals: torch.Tensor, nbrs: torch.Tensor, rank: torch.Tensor
) -> torch.Tensor:
    """delta^2 from the neighbour lists (:func:`_listed_delta`); the peaks' rows are read off the strips,
    recomputed (the same GEMM calls, so the same bits) only as far as the last peak needs them."""
    delta2, peak = _listed_delta(vals, nbrs, rank)
    pb, pi = torch.nonzero(peak, as_tuple=True)
    if pb.numel() == 0:
        return delta2
    last = int(pi.max())
    for i0, i1, d2 in _upper_strips(x, sq):
        if i0 > last:
            break
        here = (pi >= i0) & (pi < i1)  # peaks whose row lies in this strip: columns i0.. of their row
        b, r = pb[here], pi[here]
        if b.numel():
            got = _denser_min(d2[b, r - i0].unsqueeze(1), rank[b, r].unsqueeze(1), rank[b, i0:])[:, 0]
            delta2[b, r] = torch.minimum(delta2[b, r], got)
        below = pi >= i1  # peaks further down: columns i0..i1 of their row, transposed from this strip
        b, r = pb[below], pi[below]
        if b.numel():
            got = _denser_min(d2[b, :, r - i0].unsqueeze(1), rank[b, r].unsqueeze(1), rank[b, i0:i1])[:, 0]
            delta2[b, r] = torch.minimum(delta2[b, r], got)
    return delta2


def _strip_scores(
    x: torch.Tensor, kk: int, mult: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rho, delta^2, largest d2) without the whole matrix: two passes over :func:`_upper_strips`, each entry
    (i < j) serving row i and, transposed, row j. ``mult`` (B, n) counts copies of each (unique) point:
    a column then stands for that many equal distances.

    From :data:`SHORTCUT_MIN_POINTS` points on, the first pass also keeps which columns the k nearest
    distances belong to, and the second pass scans only the rows whose delta those do not settle (see
    :func:`_delta_from_neighbours`); the GEMMs are recomputed either way, as they are the source of the bits.
    """
    B, n, _ = x.shape
    sq = sq_norms(x)
    best = torch.full((B, n, kk), float("inf"), device=x.device)
    track = n >= SHORTCUT_MIN_POINTS
    best_j = torch.full((B, n, kk), -1, dtype=torch.long, device=x.device) if track else None
    col_ids = torch.arange(n, device=x.device)
    max_d2 = torch.zeros(B, device=x.device)

    def fold(rows: slice, cand: torch.Tensor, cols: slice) -> None:
        ids = col_ids[cols].expand(cand.shape) if best_j is not None else None
        if mult is not None:  # B == 1 here
            reps = mult[0, cols].clamp(max=kk)
            cand = cand.repeat_interleave(reps, dim=-1)
            ids = None if ids is None else ids.repeat_interleave(reps, dim=-1)
        if best_j is None or ids is None:
            merged = torch.cat([best[:, rows], _smallest(cand, kk)], -1)
            best[:, rows] = _smallest(merged, kk)
            return
        near = _nearest_k(cand, kk)
        merged = torch.cat([best[:, rows], near.values], -1)
        merged_ids = torch.cat([best_j[:, rows], torch.gather(ids, -1, near.indices)], -1)
        top = _nearest_k(merged, kk)
        best[:, rows] = top.values
        best_j[:, rows] = torch.gather(merged_ids, -1, top.indices)

    for i0, i1, d2 in _upper_strips(x, sq):
        max_d2 = torch.maximum(max_d2, d2.amax(dim=(1, 2)))
        fold(slice(i0, i1), d2, slice(i0, n))
        if i1 < n:
            fold(slice(i1, n), d2[:, :, i1 - i0 :].transpose(-1, -2), slice(i0, i1))
    rho = _knn_rho(best, kk)
    rank = _rank(rho)
    if best_j is not None:
        return rho, _strip_delta_at_peaks(x, sq, best, best_j, rank), max_d2
    delta2 = torch.full((B, n), float("inf"), device=x.device)
    for i0, i1, d2 in _upper_strips(x, sq):
        delta2[:, i0:i1] = torch.minimum(delta2[:, i0:i1], _denser_min(d2, rank[:, i0:i1], rank[:, i0:]))
        if i1 < n:
            below = _denser_min(d2[:, :, i1 - i0 :].transpose(-1, -2), rank[:, i1:], rank[:, i0:i1])
            delta2[:, i1:] = torch.minimum(delta2[:, i1:], below)
    return rho, delta2, max_d2


def _scores(
    x: torch.Tensor, kk: int, dense: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(rho, delta^2, largest d2, whole matrix or None, :func:`first_copies` of ``x``) for B sets, exact
    duplicates canonicalised.

    Sets with duplicates are computed on their unique rows (first copies, in index order): copies get the
    first copy's row and column, distance 0 to each other, and, being later in the density order than
    the first copy at distance 0, delta 0.
    """
    B, n, _ = x.shape
    sq = sq_norms(x)
    full = _matrix(x, sq) if dense else None
    canon = _copies_from_distances(x, full, sq) if full is not None else first_copies(x)
    if canon is None:
        if full is not None:
            return *_dense_scores(full, kk), full, None
        return *_strip_scores(x, kk, None), None, None
    outs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
    for b in range(B):
        first = torch.nonzero(canon[b] == torch.arange(n, device=x.device)).squeeze(1)
        inv = torch.searchsorted(first, canon[b])  # point -> its unique row
        u = x[b : b + 1, first]
        if dense:
            fu = _matrix(u, sq[b : b + 1, first])
            fb = fu[:, inv][:, :, inv]
            outs.append((*_dense_scores(fb, kk), fb))
        else:
            mult = torch.bincount(inv, minlength=first.numel())[None]
            rho, delta2, mx = _strip_scores(u, kk, mult)
            is_first = canon[b] == torch.arange(n, device=x.device)
            delta2 = torch.where(is_first, delta2[:, inv], torch.zeros_like(delta2[:, inv]))
            outs.append((rho[:, inv], delta2, mx, None))
    rho, delta2, mx = (
        torch.cat([o[0] for o in outs]),
        torch.cat([o[1] for o in outs]),
        torch.cat([o[2] for o in outs]),
    )
    mats = [o[3] for o in outs if o[3] is not None]
    return rho, delta2, mx, (torch.cat(mats) if dense else None), canon


def dpc_knn(
    x: torch.Tensor,
    num: int,
    k: int,
    block_elems: int = DEFAULT_BLOCK_ELEMS,
    gram_bytes: int = DEFAULT_GRAM_BYTES,
    return_distances: bool = False,
    return_copies: bool = False,
):
    """Select ``num`` DPC-KNN centres of each set in ``x``.

    ``x`` is (B, n, D) or (n, D) (any float dtype; computed in fp32). Returns LongTensor (B, num) or
    (num,) of indices into each set, ordered by descending gamma (ties: smaller index first). With
    ``return_distances`` also returns the (B, n, n) / (n, n) squared distances when they fit in
    ``gram_bytes`` (else ``None``), for :func:`assign`. With ``return_copies`` also returns
    :func:`first_copies` of ``x`` ((B, n) / (n,), or ``None`` when no row has a copy), which the
    clustering finds anyway; :func:`assign` takes it as ``copies``. The extras come in that order after
    the centres. ``block_elems`` is kept for API compatibility: the strips have a fixed height (``TILE``
    rows) so that both paths compute the same entries.
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
    rho, delta2, max_d2, full, canon = _scores(x, min(k + 1, n), 4 * B * n * n <= gram_bytes)
    # The densest point of a set has no denser point: its delta is the largest pairwise distance.
    delta2 = torch.where(torch.isinf(delta2), max_d2[:, None], delta2)
    centres = stable_argsort_desc(rho * delta2.sqrt())[:, :num]
    if squeeze:
        centres = centres[0]
        full = None if full is None else full[0]
        canon = None if canon is None else canon[0]
    if not (return_distances or return_copies):
        return centres
    return (centres,) + ((full,) if return_distances else ()) + ((canon,) if return_copies else ())


def assign(
    x: torch.Tensor,
    idx: torch.Tensor,
    distances: torch.Tensor | None = None,
    block_elems: int = DEFAULT_BLOCK_ELEMS,
    copies: torch.Tensor | None | EllipsisType = ...,
) -> torch.Tensor:
    """Nearest of the points ``x[..., idx, :]`` for every point of ``x``: (B, n) / (n,) positions into ``idx``.

    Same answer as ``nearest(x, x[idx])`` (ties: first in ``idx`` order), but reads the distances from
    the matrix returned by :func:`dpc_knn` when one is given, instead of computing new ones; near-ties
    are re-decided in fixed-order fp64 either way, so the two are equal by construction. ``copies``, with
    ``distances``, is :func:`first_copies` of ``x`` when the caller has it (``dpc_knn(...,
    return_copies=True)``; ``None``: no copies), which saves finding them again; ``...``: not known.
    """
    squeeze = x.dim() == 2
    if squeeze:
        x, idx = x.unsqueeze(0), idx.unsqueeze(0)
        distances = None if distances is None else distances.unsqueeze(0)
        copies = copies.unsqueeze(0) if isinstance(copies, torch.Tensor) else copies
    x = x.float()
    B, n, D = x.shape
    centres = take_rows(x, idx)
    if distances is None:
        out = nearest(x, centres, block_elems)
    else:
        x_sq = sq_norms(x)
        d2 = torch.gather(distances, 2, idx[:, None, :].expand(B, n, idx.shape[1]))
        # The copies are read off the matrix too (the same answer as hashing every row, for less work).
        row_canon = _copies_from_distances(x, distances, x_sq) if copies is ... else copies
        centre_canon = None if row_canon is None else _first_equal(torch.gather(row_canon, 1, idx))
        out = _resolve_near_ties(d2, x, centres, x_sq, torch.gather(x_sq, 1, idx), copies=(row_canon, centre_canon))
    return out[0] if squeeze else out


def sqdist_error_bound(a_sq: torch.Tensor, b_sq_max: torch.Tensor, dim: int, device: torch.device) -> torch.Tensor:
    """An upper bound on the rounding error of :func:`pairwise_sqdist` for rows of squared norm ``a_sq``
    against columns of squared norm at most ``b_sq_max``, in ``dim`` dimensions.

    Any fp32 summation order (BLAS kernel, blocking, thread count, FMA or not) computes a dot product of
    D terms within ``gamma_D * sum |a_k b_k|`` of the exact value, ``gamma_D = D u / (1 - D u)``; the norms
    likewise, and the final additions add a few ``u``. So two machines never disagree by more than twice
    this bound. Under TF32 matmuls (CUDA, ``float32_matmul_precision != "highest"``) ``u`` is 2**-11.
    """
    u = 2.0**-24
    if device.type == "cuda" and torch.get_float32_matmul_precision() != "highest":
        u = 2.0**-11
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
        d = a[s : s + step].double() - b[s : s + step].double()
        d = d * d
        if width != D:
            d = torch.nn.functional.pad(d, (0, width - D))
        while d.shape[-1] > 1:
            h = d.shape[-1] // 2
            d = d[:, :h] + d[:, h:]
        out[s : s + step] = d[:, 0]
    return out


def _first_equal(key: torch.Tensor) -> torch.Tensor | None:
    """For integer keys (B, m), the position of the first equal key of each entry; ``None`` if all differ."""
    B, m = key.shape
    order = torch.sort(key, dim=1, stable=True).indices
    ks = torch.gather(key, 1, order)
    same = torch.zeros(B, m, dtype=torch.bool, device=key.device)
    same[:, 1:] = ks[:, 1:] == ks[:, :-1]
    if not bool(same.any()):
        return None
    pos = torch.arange(m, device=key.device).expand(B, m)
    head = torch.gather(order, 1, torch.where(same, torch.zeros_like(pos), pos).cummax(1).values)
    return torch.empty_like(head).scatter_(1, order, head)


def _resolve_near_ties(
    d2: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    a_sq: torch.Tensor,
    b_sq: torch.Tensor,
    copies: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Argmin over the last dim of ``d2`` (B, r, m), made independent of how ``d2`` was rounded.

    Every column within twice the rounding bound of the row minimum may be the exact minimum on some
    machine; for rows with more than one such column, those few distances are recomputed with
    :func:`fixed_order_sqdist` and the smallest wins, the first column on ties. Bitwise-identical centres
    are resolved to the first copy up front (the later copies never take part). ``copies``, when the
    caller knows them, is (:func:`first_copies` of ``a``, of ``b``), saving the hashing.
    """
    B, r, m = d2.shape
    arg = d2.argmin(-1)
    best = d2.gather(-1, arg.unsqueeze(-1))
    tol = 2.0 * sqdist_error_bound(a_sq, b_sq.amax(-1, keepdim=True), a.shape[-1], d2.device)
    near = d2 <= best + tol.unsqueeze(-1) * 1.0001
    canon = first_copies(b) if copies is None else copies[1]
    if canon is not None:
        arg = torch.gather(canon, 1, arg)
        near &= (canon == torch.arange(m, device=d2.device))[:, None, :]
    multi = near.sum(-1) > 1
    # A point identical to an earlier point takes its decision (static backgrounds repeat across frames).
    # Known copies are applied without asking whether any near tie exists (a host wait): with no near
    # tie a copy's computed argmin is its first copy's anyway, the rounding bound being a true bound.
    if copies is not None:
        row_canon = copies[0]
    else:
        row_canon = first_copies(a) if bool(multi.any()) else None
    if row_canon is not None:
        multi &= row_canon == torch.arange(r, device=d2.device)
    if not bool(multi.any()):
        return arg if row_canon is None else torch.gather(arg, 1, row_canon)
    bb, rr, cc = torch.nonzero(near & multi.unsqueeze(-1), as_tuple=True)  # row-major order
    # Gather the pairs' rows chunk by chunk: there may be many more pairs than points.
    step = max(1, DEFAULT_BLOCK_ELEMS // max(1, a.shape[-1]))
    v = torch.cat(
        [
            fixed_order_sqdist(a[bb[s : s + step], rr[s : s + step]], b[bb[s : s + step], cc[s : s + step]])
            for s in range(0, bb.numel(), step)
        ]
    )
    key = bb * r + rr
    rows = torch.unique(key)
    gmin = torch.full((B * r,), float("inf"), dtype=torch.float64, device=d2.device)
    gmin.scatter_reduce_(0, key, v, "amin")
    hit = v == gmin[key]
    first = torch.full_like(gmin, m, dtype=torch.long)
    first.scatter_reduce_(0, key[hit], cc[hit], "amin")
    flat = arg.reshape(-1).clone()
    flat[rows] = first[rows]
    arg = flat.reshape(arg.shape)
    return arg if row_canon is None else torch.gather(arg, 1, row_canon)


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
    c_sq = sq_norms(centres)
    out = torch.empty(B, n, dtype=torch.long, device=x.device)
    step = _rows_per_block(B, m, block_elems)
    for s in range(0, n, step):
        e = min(n, s + step)
        xb = x[:, s:e]
        xb_sq = (xb * xb).sum(-1)
        d2 = pairwise_sqdist(xb, centres, xb_sq, c_sq)
        out[:, s:e] = _resolve_near_ties(d2, xb, centres, xb_sq, c_sq)
    return out[0] if squeeze else out
