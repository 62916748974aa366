"""DyCoke, pre-LLM stage: temporal token merging (TTM) against a reference frame.

Tao et al., "DyCoke: Dynamic Compression of Tokens for Fast Video Large Language Models", CVPR 2025,
arXiv 2411.15024. Its first stage drops, in every frame, the tokens most similar (cosine, same grid
position) to a reference frame, since the reference already carries them. Frames are handled in windows
of four: frame 4i is the anchor and is kept; frame 4i+1 is compared with 4i, frame 4i+2 with 4i, frame
4i+3 with 4i+2. (Only this stage is implemented; DyCoke's second stage prunes the KV cache during decoding.)

Defaults: ``merge_ratio`` 0.7 (DyCoke's default: a non-anchor frame keeps 30% of its tokens, an anchor frame
100%). Budget: the video keeps exactly ``T * max(1, ceil(H W r))`` tokens. The budget is shared among the
frames in DyCoke's proportions (anchor weight 1, non-anchor weight ``1 - merge_ratio``, at most H W per
frame); a non-anchor frame keeps its tokens least similar to its reference (ties: lower index). When the
budget is too small for whole anchor frames (r below about 0.48 at the default ratio), an anchor frame keeps
its highest-saliency tokens, or evenly spaced tokens if no saliency is given: an adaptation so DyCoke can
run at the common budgets, stated in ``info["anchor_pruned"]``.

Fixes of the published code: the last window of four is compressed too (the published loop skips it), and
an odd last frame is kept instead of dropped. Features unchanged; any T and any grid.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from ..config import PruneConfig
from ..core.dpc import stable_argsort_desc
from ..core.merge import widen
from ..core.strope import normalize_into
from ..tokens import PruneResult, VideoTokens
from . import register
from ._common import allocate, check_fraction, frame_budget, spread


@dataclasses.dataclass(frozen=True)
class DyCokeConfig(PruneConfig):
    """DyCoke TTM. Fields: ``retention`` in (0, 1]; ``merge_ratio`` in [0, 1) (0.7)."""

    method: ClassVar[str] = "dycoke"
    merge_ratio: float = 0.7

    def _validate(self) -> None:
        check_fraction("merge_ratio", self.merge_ratio, high_open=True)


def reference_frame(f: int) -> int | None:
    """The frame DyCoke compares frame ``f`` with, or ``None`` for an anchor (f % 4 == 0)."""
    return {0: None, 1: f - 1, 2: f - 2, 3: f - 1}[f % 4]


def run(tokens: VideoTokens, config: DyCokeConfig) -> PruneResult:
    """Temporal token merging at the common budget."""
    T, H, W = tokens.grid
    L = H * W
    X = tokens.features.reshape(T, L, -1)
    budget = T * frame_budget(L, config.retention)
    refs = [reference_frame(f) for f in range(T)]
    weights = [1.0 if r is None else 1.0 - config.merge_ratio for r in refs]
    per_frame = allocate(budget, weights, L)
    dev = X.device
    pieces = []
    anchor_pruned = False
    # why buffers: a frame's normalised copies and their product are multi-megabyte, and on the CPU fresh
    # temporaries of that size cost page faults per frame (and heap growth); these are allocated once.
    # A frame and its reference lie in the same window of four, so slot f % 4 holds frame f normalised,
    # and a reference shared by two frames (4i for 4i+1 and 4i+2, 4i+2 for 4i+3) is normalised once.
    unit = torch.empty((4, L, X.shape[-1]), dtype=torch.float32, device=dev)
    held = [-1] * 4  # the frame each slot holds
    prod = torch.empty_like(unit[0])
    sim = torch.empty(L, dtype=torch.float32, device=dev)

    def unit_of(g: int) -> torch.Tensor:
        if held[g % 4] != g:
            normalize_into(X[g].detach(), unit[g % 4])
            held[g % 4] = g
        return unit[g % 4]

    for f, (ref, k) in enumerate(zip(refs, per_frame)):
        if k == 0:
            continue
        if ref is None:
            if k >= L:
                pos = torch.arange(L, device=dev)
            else:
                anchor_pruned = True
                if tokens.saliency is not None:
                    pos = stable_argsort_desc(widen(tokens.saliency[f].reshape(L)))[:k]
                else:
                    pos = spread(L, k, dev)
        else:
            # (L,) same-position cosine: the bits of (normalize(X[f]) * normalize(X[ref])).sum(-1)
            torch.sum(torch.mul(unit_of(f), unit_of(ref), out=prod), -1, out=sim)
            pos = torch.sort(sim, stable=True).indices[:k]  # least similar first
        pieces.append(pos + f * L)
    idx = torch.cat(pieces)
    return PruneResult.from_indices(
        tokens,
        idx,
        info={
            "method": "dycoke",
            "retention": config.retention,
            "per_frame": per_frame,
            "anchor_pruned": anchor_pruned,
            "kept": int(idx.numel()),
            "total": T * L,
        },
    )


register("dycoke", DyCokeConfig, run, "DyCoke temporal token merging (pre-LLM stage)")
