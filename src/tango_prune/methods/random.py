"""Random pruning: keep a seeded uniformly random subset of every frame's tokens.

The lower-bound baseline of the token-pruning literature (e.g. the random-drop rows of VisionZip, Yang et
al., CVPR 2025, arXiv 2412.04467, and of FastVID, Shen et al., arXiv 2503.11187).

Defaults: per frame ``max(1, ceil(H W r))`` tokens drawn without replacement by a CPU
``torch.Generator`` seeded with ``seed`` (0), so the choice is identical on every run and device; features
unchanged. Needs no saliency. Works for any T and any grid.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from ..config import PruneConfig
from ..tokens import PruneResult, VideoTokens
from . import register
from ._common import check_int, flat_index, frame_budget


@dataclasses.dataclass(frozen=True)
class RandomConfig(PruneConfig):
    """Random per-frame subset. Fields: ``retention`` in (0, 1]; ``seed`` (int >= 0, default 0)."""

    method: ClassVar[str] = "random"
    seed: int = 0

    def _validate(self) -> None:
        check_int("seed", self.seed, 0)


def run(tokens: VideoTokens, config: RandomConfig) -> PruneResult:
    """Keep ``frame_budget`` random tokens of every frame (seeded, deterministic)."""
    T, H, W = tokens.grid
    L = H * W
    k = frame_budget(L, config.retention)
    # A local generator on the CPU: no global RNG state is read or advanced, and the draw does not depend
    # on the device the features live on.
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    keys = torch.rand(T, L, generator=gen)
    pos = torch.argsort(keys, dim=1, stable=True)[:, :k].to(tokens.features.device)
    idx = flat_index(torch.arange(T, device=pos.device)[:, None], pos, L).reshape(-1)
    return PruneResult.from_indices(
        tokens,
        idx,
        info={
            "method": "random",
            "retention": config.retention,
            "seed": config.seed,
            "per_frame": k,
            "kept": int(idx.numel()),
            "total": T * L,
        },
    )


register("random", RandomConfig, run, "seeded random subset per frame")
