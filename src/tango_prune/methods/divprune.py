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
from ..core.dpc import DEFAULT_BLOCK_ELEMS
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


def max_min_select(x: torch.Tensor, k: int, block_elems: int = DEFAULT_BLOCK_ELEMS) -> torch.Tensor:
    """Greedy max-min diversity selection of ``k`` of the rows of each set in ``x``.

    ``x`` (B, n, D) unit-norm fp32. Returns LongTensor (B, k) in selection order. Cosine distance is
    ``1 - <x_i, x_j>``; argmax ties go to the lower index.
    """
    B, n, _ = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    out = torch.empty(B, k, dtype=torch.long, device=x.device)
    if n == 1:
        return out.zero_()
    # First pick: the token whose nearest other token is farthest (max over i of min_{j != i} d_ij).
    nn_dist = torch.empty(B, n, device=x.device)
    step = max(1, block_elems // max(1, B * n))
    for s in range(0, n, step):
        e = min(n, s + step)
        d = 1.0 - torch.matmul(x[:, s:e], x.transpose(1, 2))  # (B, rows, n)
        rows = torch.arange(s, e, device=x.device)
        d[:, rows - s, rows] = float("inf")  # exclude self
        nn_dist[:, s:e] = d.amin(-1)
    out[:, 0] = nn_dist.argmax(-1)
    # Running distance of every token to the chosen set; chosen tokens sit at distance <= 0 thereafter.
    batch = torch.arange(B, device=x.device)
    mind = 1.0 - torch.einsum("bnd,bd->bn", x, x[batch, out[:, 0]])
    mind[batch, out[:, 0]] = -float("inf")
    for i in range(1, k):
        pick = mind.argmax(-1)
        out[:, i] = pick
        mind = torch.minimum(mind, 1.0 - torch.einsum("bnd,bd->bn", x, x[batch, pick]))
        mind[batch, pick] = -float("inf")
    return out


def run(tokens: VideoTokens, config: DivPruneConfig) -> PruneResult:
    """Select a maximally diverse subset of the tokens."""
    T, H, W = tokens.grid
    L = H * W
    k = frame_budget(L, config.retention)
    x = normalize(tokens.features.reshape(T, L, -1))
    if config.scope == "video":
        idx = max_min_select(x.reshape(1, T * L, -1), T * k)[0]
    else:
        pos = max_min_select(x, k)
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
