"""Temporal segmentation of a video into runs of similar frames (docs/algorithm.md §2.2).

- :func:`holitom_segments`: dynamic programme maximising the number of tokens that collapsing static
  positions would remove. The published version builds an (N, N, L) tensor and runs a Python double loop
  with a device sync per step; this one runs on the host in NumPy in O(N * (W + L)) memory (W the
  maximum window), with the same values and the same tie-breaking.
- :func:`fastvid_segments`: cuts at the ``c - 1`` lowest similarities and wherever similarity < tau.
- :func:`frame_similarity`: cosine similarity of consecutive frames, computed in small frame chunks so no
  normalised copy of the whole video is held.
"""

from __future__ import annotations

import numpy as np
import torch

from .strope import normalize_into

__all__ = ["frame_similarity", "holitom_segments", "fastvid_segments", "CHUNK_ELEMS"]

#: Elements of ``metric`` normalised at a time by :func:`frame_similarity` (2 MiB of fp32).
CHUNK_ELEMS = 1 << 19


def frame_similarity(metric: torch.Tensor, chunk_frames: int | None = None) -> torch.Tensor:
    """Cosine similarity (fp32) between frames n and n+1 of ``metric``.

    ``metric`` is (T, L, D) per token -> (T-1, L), or (T, D) per frame -> (T-1,). Each frame is
    L2-normalised (as :func:`~tango_prune.core.strope.normalize`) and multiplied elementwise with the
    next one, and the products are summed per row. Frames go ``chunk_frames`` at a time through three
    buffers allocated once per call: on the CPU fresh multi-megabyte temporaries are fresh mappings whose
    page faults cost more than the arithmetic, so the CPU default is as many frames as fit in
    :data:`CHUNK_ELEMS` elements (at least one). Elsewhere the caching allocator has no such cost and each
    chunk costs a host wait, so the default is 64 frames. The chunking never changes the bits of the
    result, which carries no gradient.
    """
    metric = metric.detach()
    T = metric.shape[0]
    if chunk_frames is None:
        chunk_frames = max(1, CHUNK_ELEMS // max(1, metric[:1].numel())) if metric.device.type == "cpu" else 64
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    out = torch.empty((max(0, T - 1),) + tuple(metric.shape[1:-1]), dtype=torch.float32, device=metric.device)
    if T < 2:
        return out
    c = min(chunk_frames, T)
    # Two chunk buffers in turn: the previous chunk's last frame stays where it was normalised while the
    # next chunk goes into the other buffer (copying it over cost a third of the writes at one frame a chunk).
    units = [torch.empty((c,) + tuple(metric.shape[1:]), dtype=torch.float32, device=metric.device) for _ in range(2)]
    prod = torch.empty_like(units[0])
    prev = None
    for i, s in enumerate(range(0, T, c)):
        k = min(c, T - s)
        cur = units[i % 2][:k]
        normalize_into(metric[s : s + k], cur)
        # pairs (s - 1, s), ..., (s + k - 2, s + k - 1); the first chunk has no frame s - 1
        a = 0 if prev is None else 1
        if prev is not None:
            torch.mul(prev, cur[0], out=prod[0])
        if k > 1:
            torch.mul(cur[:-1], cur[1:], out=prod[a : a + k - 1])
        m = a + k - 1
        if m > 0:
            torch.sum(prod[:m], dim=-1, out=out[s - a : s - a + m])
        prev = cur[k - 1]
    return out


def holitom_segments(frame_sim: torch.Tensor | np.ndarray, tau: float, max_window: int = 1024) -> list[int]:
    """Segment sizes from the HoliTom dynamic programme.

    ``frame_sim`` (N-1, L): similarity of each token position between consecutive frames. A window of
    frames [a, b] is worth ``static(a, b) * (b - a)`` where ``static`` counts the positions whose
    similarity exceeds ``tau`` at every step inside the window. The DP picks the partition (windows of at
    most ``max_window`` frames) of maximal total worth; on ties the earliest option in the order
    (singleton, then windows of increasing size) wins, as in the published code.
    """
    sim = frame_sim.detach().float().cpu().numpy() if isinstance(frame_sim, torch.Tensor) else np.asarray(frame_sim)
    if sim.ndim != 2:
        raise ValueError(f"frame_sim must have shape (N-1, L), got {sim.shape}")
    N = sim.shape[0] + 1
    Wmax = max(1, min(N, max_window))
    above = sim > tau  # (N-1, L)
    L = above.shape[1]
    # run[a, l]: number of consecutive steps a, a+1, ... with similarity > tau at position l.
    run = np.zeros((N, L), dtype=np.int64)
    for step in range(N - 2, -1, -1):
        run[step] = np.where(above[step], run[step + 1] + 1, 0)
    # static[a, w] = #{l : run[a, l] >= w}: positions static over the window [a, a + w].
    hist = np.zeros((N, Wmax + 1), dtype=np.int64)
    rows = np.repeat(np.arange(N), L)
    np.add.at(hist, (rows, np.minimum(run, Wmax).reshape(-1)), 1)
    static = hist[:, ::-1].cumsum(axis=1)[:, ::-1]  # suffix sums over w
    dp = np.zeros(N + 1, dtype=np.int64)  # dp[i + 1] = best value of frames 0..i
    start = np.zeros(N, dtype=np.int64)
    for i in range(N):
        wmax = min(i + 1, Wmax)
        best, best_start = dp[i], i  # frame i alone
        if wmax >= 2:
            w = np.arange(2, wmax + 1)  # window [i-w+1, i]
            a = i - w + 1
            vals = dp[a] + static[a, w - 1] * (w - 1)
            j = int(np.argmax(vals))  # first maximum = smallest window
            if vals[j] > best:
                best, best_start = vals[j], int(a[j])
        dp[i + 1] = best
        start[i] = best_start
    sizes = []
    i = N - 1
    while i >= 0:
        sizes.append(i - int(start[i]) + 1)
        i = int(start[i]) - 1
    return sizes[::-1]


def fastvid_segments(frame_sim: torch.Tensor | np.ndarray, tau: float, num_cuts: int = 8) -> list[int]:
    """Segment sizes from FastVID-style cuts.

    ``frame_sim`` (N-1,): similarity of consecutive frames. A cut after frame n is made for the
    ``num_cuts - 1`` smallest similarities (ties: earlier frame first) and wherever similarity < ``tau``.
    """
    sim = frame_sim.detach().float().cpu().numpy() if isinstance(frame_sim, torch.Tensor) else np.asarray(frame_sim)
    if sim.ndim != 1:
        raise ValueError(f"frame_sim must have shape (N-1,), got {sim.shape}")
    N = sim.shape[0] + 1
    lowest = np.argsort(sim, kind="stable")[: min(num_cuts - 1, N - 1)]
    cuts = np.union1d(lowest, np.nonzero(sim < tau)[0]).astype(np.int64)
    bounds = np.concatenate([[-1], cuts, [N - 1]])
    bounds = np.unique(bounds)
    return np.diff(bounds).astype(int).tolist()
