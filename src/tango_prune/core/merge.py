"""Nearest-anchor assignment and weighted cluster merging (docs/algorithm.md §2.7), accumulated in fp32."""

from __future__ import annotations

from types import EllipsisType

import torch

from .dpc import DEFAULT_BLOCK_ELEMS, assign
from .rows import take_rows

__all__ = ["segment_sum", "merge_into_anchors", "widen"]


def widen(x: torch.Tensor) -> torch.Tensor:
    """``x`` in its accumulation dtype: fp32 for half types and fp32, fp64 stays fp64.

    fp64 inputs are never narrowed: values beyond the fp32 range (or below its smallest subnormal) would
    become inf (or 0) and give non-finite merged features or lose a saliency ranking.
    """
    return x.to(torch.promote_types(x.dtype, torch.float32))


def segment_sum(values: torch.Tensor, segment: torch.Tensor, num_segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic per-segment sums and counts in the accumulation dtype (:func:`widen`).

    ``values`` (n, D), ``segment`` (n,) in [0, num_segments). Returns (sums (num_segments, D) fp32,
    counts (num_segments,) fp32); an empty segment sums to 0. On the CPU each segment's rows are added
    one at a time in input order, starting from 0; elsewhere the rows are sorted stably by segment and
    reduced with ``segment_reduce``. Neither uses atomics, so the result is bit-identical from run to run
    on a device, and on the CPU at any thread count.
    """
    counts = torch.bincount(segment, minlength=num_segments)
    wide = widen(values)
    if wide.device.type == "cpu":
        # why index_add_ only here: on the CPU it adds row i into its segment for i = 0, 1, ... in order
        # (the elementwise add may be split across threads, which does not change bits): the same sums as
        # the sorted reduction below, 6x faster at 3000 x 3584 because it sorts and copies no rows. CUDA's
        # index_add_ uses atomics, whose order is not fixed.
        sums = torch.zeros((num_segments,) + tuple(wide.shape[1:]), dtype=wide.dtype, device=wide.device)
        sums.index_add_(0, segment, wide)
    else:
        order = torch.argsort(segment, stable=True)
        # segment_reduce gives 0 for empty segments with "sum", as wanted.
        sums = torch.segment_reduce(wide.index_select(0, order), "sum", lengths=counts, axis=0, unsafe=True)
    return sums, counts.to(sums.dtype)


def merge_into_anchors(
    src: torch.Tensor,
    src_rot: torch.Tensor,
    anchors: torch.Tensor,
    beta: float,
    block_elems: int = DEFAULT_BLOCK_ELEMS,
    distances: torch.Tensor | None = None,
    copies: torch.Tensor | None | EllipsisType = ...,
) -> torch.Tensor:
    """Merge every source token into its nearest anchor, for one set or a batch of equal-size sets.

    - ``src`` (n, D) or (B, n, D): un-rotated features (any float dtype); ``src_rot`` (n, D') / (B, n, D')
      the geometry used for distances (ST-RoPE'd unit vectors); ``anchors`` (m,) / (B, m) indices into
      each set (the anchors are sources too, so each lands in its own cluster).
    - Each source goes to the nearest anchor by Euclidean distance on ``src_rot`` (first anchor in the
      given order on ties).
    - Anchor a becomes ``w a + (1 - w) mean_a`` with ``mean_a`` the mean of its cluster (anchor included)
      and ``w = max(1 / count_a, beta)``: singletons are unchanged, larger clusters get ``beta a + ...``.

    - ``distances``, if given, is the (n, n) / (B, n, n) squared-distance matrix of ``src_rot`` returned by
      :func:`tango_prune.core.dpc.dpc_knn`; the assignment then reads it instead of computing new ones
      (same result, see :func:`tango_prune.core.dpc.assign`); ``copies``, the exact copies among the sources
      returned with it (``return_copies=True``), saves finding them again.

    Returns (m, D) / (B, m, D) in the accumulation dtype (:func:`widen`), row i for ``anchors[..., i]``.
    """
    single = src.dim() == 2
    if single:
        src, src_rot, anchors = src[None], src_rot[None], anchors[None]
        distances = None if distances is None else distances[None]
        copies = copies[None] if isinstance(copies, torch.Tensor) else copies
    B, n, D = src.shape
    m = anchors.shape[1]
    owner = assign(src_rot, anchors, distances, block_elems, copies)  # (B, n)
    # One segment per (set, anchor): a single deterministic reduction serves the whole batch.
    seg = (owner + m * torch.arange(B, device=owner.device)[:, None]).reshape(-1)
    sums, counts = segment_sum(src.reshape(B * n, D), seg, B * m)
    safe = counts.clamp_min(1.0).reshape(B, m, 1)
    mean = sums.reshape(B, m, D) / safe
    w = torch.clamp(1.0 / safe, min=beta)
    out = w * widen(take_rows(src, anchors)) + (1.0 - w) * mean
    return out[0] if single else out
