"""Helpers shared by the baseline methods: the common budget, field checks and per-frame selection.

The budget rule every method follows: a frame of L = H * W tokens is worth ``max(1, ceil(L * r))``
kept tokens, the count Tango keeps per frame on a video without static positions, and a video of T frames
keeps ``T`` times that (methods that spend the budget globally get exactly that total). So for the same
retention every method keeps the same number of visual tokens, and Tango is within one token per frame
(plus one per segment) of it.
"""

from __future__ import annotations

import math

import torch

from ..validate import check_cosine, check_int, check_unit_interval
from ..core.budget import ceil_mul
from ..core.dpc import stable_argsort_desc
from ..core.merge import widen
from ..tokens import VideoTokens

__all__ = [
    "frame_budget",
    "video_budget",
    "check_int",
    "check_fraction",
    "top_per_row",
    "flat_index",
    "allocate",
    "spread",
    "check_cosine",
]


def frame_budget(L: int, retention: float) -> int:
    """Kept tokens for one frame of ``L`` tokens: ``max(1, ceil(L * retention))`` (Tango's expression),
    computed exactly with ``retention`` read as the decimal it was written as (0.07 -> 7/100)."""
    return max(1, ceil_mul(L, retention))


def video_budget(tokens: VideoTokens, retention: float) -> int:
    """Kept tokens for the whole video: ``T * frame_budget(H * W, retention)``."""
    T, H, W = tokens.grid
    return T * frame_budget(H * W, retention)


def check_fraction(name: str, value: object, *, low_open: bool = False, high_open: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number in [0, 1] (ends open as requested)."""
    check_unit_interval(name, value, low_open=low_open, high_open=high_open)  # type: ignore[arg-type]


def top_per_row(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, k) of the ``k`` highest scores of each row of (B, n), descending, ties by index."""
    return stable_argsort_desc(widen(score))[:, :k]


def flat_index(frames: torch.Tensor, pos: torch.Tensor, L: int) -> torch.Tensor:
    """Flat grid index ``frame * L + pos`` (broadcasting)."""
    return frames * L + pos


def allocate(total: int, weights: list[float], cap: int) -> list[int]:
    """Split ``total`` into integers proportional to ``weights``, each at most ``cap``.

    Water-filling: parts that would exceed ``cap`` are clamped and the rest re-shared; the leftover of the
    rounding goes to the largest fractional parts (ties: lower index). Requires ``total <= cap * len``.
    """
    n = len(weights)
    if total > cap * n:
        raise ValueError(f"total must be <= cap * parts = {cap * n}, got {total}")
    out = [0.0] * n
    free = [i for i in range(n) if weights[i] > 0] or list(range(n))
    rest = float(total)
    while free:
        wsum = sum(weights[i] for i in free) or float(len(free))
        share = {i: rest * (weights[i] if weights[i] > 0 else 1.0) / wsum for i in free}
        over = [i for i in free if share[i] >= cap]
        if not over:
            for i in free:
                out[i] = share[i]
            break
        for i in over:
            out[i] = float(cap)
            rest -= cap
        free = [i for i in free if i not in over]
    ints = [min(cap, int(math.floor(v + 1e-9))) for v in out]
    left = total - sum(ints)
    order = sorted(range(n), key=lambda i: (-(out[i] - ints[i]), i))
    for i in order:
        if left <= 0:
            break
        if ints[i] < cap:
            ints[i] += 1
            left -= 1
    return ints


def spread(n: int, k: int, device: torch.device | None = None) -> torch.Tensor:
    """``k`` distinct indices evenly spread over ``range(n)`` (``k <= n``), first and last included."""
    if k <= 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    if k == 1:
        return torch.zeros(1, dtype=torch.long, device=device)
    # A step of (n-1)/(k-1) >= 1 makes the rounded positions distinct.
    return torch.round(torch.linspace(0, n - 1, k, dtype=torch.float64, device=device)).long()
