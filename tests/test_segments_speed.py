"""Tango's static/dynamic split taken for every segment at once equals the per-segment split it replaced."""

from __future__ import annotations

import torch

from tango_prune.core.segment import frame_similarity
from tango_prune.core.tango import _static_splits


def _per_segment(X, sizes, sim, tau):
    # The split as each segment computed it before (``(sim > tau).all(0)``, then nonzero).
    out, start = [], 0
    for n in sizes:
        if n > 1:
            seg = frame_similarity(X[start : start + n]) if sim is None else sim[start : start + n - 1]
            static = (seg > tau).all(0)
            out.append((int(static.sum()), torch.nonzero(static)[:, 0], torch.nonzero(~static)[:, 0]))
        start += n
    return out


def test_batched_static_split_equals_the_per_segment_one():
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        T = int(torch.randint(1, 30, (1,), generator=g))
        L = int(torch.randint(1, 12, (1,), generator=g))
        cuts = sorted(
            set(torch.randint(1, T + 1, (int(torch.randint(0, 6, (1,), generator=g)),), generator=g).tolist())
        )
        bounds = [0] + [c for c in cuts if c < T] + [T]
        sizes = [b - a for a, b in zip(bounds, bounds[1:])]
        # Few distinct directions, so that many positions are static; NaN similarities are never static.
        X = torch.randint(0, 2, (T, L, 3), generator=g).float() + 0.01 * (trial % 2) * torch.randn(T, L, 3, generator=g)
        sim = frame_similarity(X)
        if trial % 3 == 0 and sim.numel():
            sim = sim.clone()
            sim.view(-1)[:: max(1, sim.numel() // 4)] = float("nan")
        for s in (sim, None):
            got = _static_splits(X, sizes, s, 0.9)
            want = _per_segment(X, sizes, s, 0.9)
            assert len(got) == len(want), (trial, sizes)
            for (S, sp, dp), (S0, sp0, dp0) in zip(got, want):
                assert S == S0 and torch.equal(sp, sp0) and torch.equal(dp, dp0), (trial, sizes)
