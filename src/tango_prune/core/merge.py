"""Nearest-anchor assignment and weighted cluster merging (tango-spec 2.7), accumulated in fp32."""

from __future__ import annotations

import torch

from .dpc import DEFAULT_BLOCK_ELEMS, nearest

__all__ = ["segment_sum", "merge_into_anchors"]


def segment_sum(values: torch.Tensor, segment: torch.Tensor, num_segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic fp32 per-segment sums and counts.

    ``values`` (n, D), ``segment`` (n,) in [0, num_segments). Returns (sums (num_segments, D) fp32,
    counts (num_segments,) fp32). Values are sorted by segment and reduced without atomics, so the
    result is bit-identical on every run and device (CUDA ``index_add_`` is not).
    """
    counts = torch.bincount(segment, minlength=num_segments)
    order = torch.argsort(segment, stable=True)
    sums = torch.segment_reduce(values.float()[order], "sum", lengths=counts, axis=0, unsafe=True)
    # segment_reduce gives 0 for empty segments with "sum", as wanted.
    return sums, counts.float()


def merge_into_anchors(src: torch.Tensor, src_rot: torch.Tensor, anchors: torch.Tensor, beta: float,
                       block_elems: int = DEFAULT_BLOCK_ELEMS) -> torch.Tensor:
    """Merge every source token into its nearest anchor.

    - ``src`` (n, D): un-rotated features (any float dtype); ``src_rot`` (n, D') the geometry used for
      distances (ST-RoPE'd unit vectors); ``anchors`` (m,) indices into ``src`` (the anchors are sources
      too, so each lands in its own cluster).
    - Each source goes to the nearest anchor by Euclidean distance on ``src_rot`` (first anchor in the
      given order on ties).
    - Anchor a becomes ``w a + (1 - w) mean_a`` with ``mean_a`` the mean of its cluster (anchor included)
      and ``w = max(1 / count_a, beta)``: singletons are unchanged, larger clusters get ``beta a + ...``.

    Returns (m, D) fp32, row i for ``anchors[i]``.
    """
    assign = nearest(src_rot, src_rot[anchors], block_elems)
    sums, counts = segment_sum(src, assign, anchors.numel())
    safe = counts.clamp_min(1.0)
    mean = sums / safe[:, None]
    w = torch.clamp(1.0 / safe, min=beta)[:, None]
    return w * src[anchors].float() + (1.0 - w) * mean
