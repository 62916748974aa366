"""Tango: diversity-driven attention selection + ST-RoPE similarity merging (arXiv 2604.09547).

Defaults are the published run values: context_ratio 0.4, alpha 1.5, beta 0.6, k 7, HoliTom
segmentation, tau_static 0.8, ST-RoPE bases 1e4 (seconds) / 1e3 (grid cells). See
:class:`tango_prune.TangoConfig` for every field and :mod:`tango_prune.core.tango` for the algorithm.
"""

from __future__ import annotations

from ..config import TangoConfig
from ..core.tango import tango_prune
from ..tokens import PruneResult, VideoTokens
from . import register


def run(tokens: VideoTokens, config: TangoConfig) -> PruneResult:
    """Prune ``tokens`` with Tango."""
    return tango_prune(tokens, config)


register("tango", TangoConfig, run, "diverse salient selection + ST-RoPE context merging")
