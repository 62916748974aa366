"""The plugin's configuration: the ``tango_prune`` entry of the model config, parsed and checked once.

vLLM fixes a prompt's placeholder count in the frontend, before any vision encoder runs, so the frontend
parses this entry when it builds the multimodal processor: a bad entry stops ``LLM(...)`` / ``vllm serve``
at start-up with the message below, before a worker exists.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..api import make_config
from ..config import PruneConfig
from ..methods._common import frame_budget
from .runner import check_no_evs

__all__ = [
    "ARCHITECTURES",
    "CONFIG_KEY",
    "VllmPruneConfig",
    "FrontendConfigMixin",
    "parse_config",
    "video_budget_for_grid",
]

#: the key of the plugin's entry in the HF model config (``hf_overrides={"tango_prune": {...}}``)
CONFIG_KEY = "tango_prune"

#: plugin architecture name -> (``"module:Class"`` of the pruning model class, upstream vLLM architecture)
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "TangoQwen2_5_VLForConditionalGeneration": (
        "tango_prune.vllm.qwen2_5_vl:TangoQwen2_5_VLForConditionalGeneration",
        "Qwen2_5_VLForConditionalGeneration",
    ),
    "TangoQwen3VLForConditionalGeneration": (
        "tango_prune.vllm.qwen3_vl:TangoQwen3VLForConditionalGeneration",
        "Qwen3VLForConditionalGeneration",
    ),
    "TangoLlavaOnevisionForConditionalGeneration": (
        "tango_prune.vllm.llava_onevision:TangoLlavaOnevisionForConditionalGeneration",
        "LlavaOnevisionForConditionalGeneration",
    ),
}


@dataclasses.dataclass(frozen=True)
class VllmPruneConfig:
    """A parsed ``tango_prune`` entry: the method config every video of the engine is pruned with."""

    method: PruneConfig

    @property
    def retention(self) -> float:
        """The method's retention ratio, which fixes every video's placeholder count."""
        return float(self.method.retention)


def parse_config(hf_config: Any) -> VllmPruneConfig:
    """Parse the ``tango_prune`` entry of an HF model config (a dict: ``method`` plus that method's config
    fields, e.g. ``{"method": "tango", "retention": 0.1}``); ``ValueError`` naming the entry otherwise."""
    raw = getattr(hf_config, CONFIG_KEY, None)
    if raw is None:
        raise ValueError(
            f"{CONFIG_KEY}: the model config has no {CONFIG_KEY!r} entry; pass e.g. hf_overrides="
            f'{{"{CONFIG_KEY}": {{"method": "tango", "retention": 0.1}}, "architectures": [...]}}'
        )
    if not isinstance(raw, dict):
        raise ValueError(f"{CONFIG_KEY} must be a dict such as {{'method': 'tango', 'retention': 0.1}}, got {raw!r}")
    fields = dict(raw)
    name = fields.pop("method", "tango")
    if "retention" not in fields:
        raise ValueError(f"{CONFIG_KEY}.retention is required (the kept fraction of video tokens, in (0, 1])")
    try:
        cfg = make_config(name, **fields)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{CONFIG_KEY}: {e}") from None
    return VllmPruneConfig(cfg)


class FrontendConfigMixin:
    """Mixed in before a vLLM multimodal processor class: parses the ``tango_prune`` entry (``self.tango``) and
    refuses vLLM's own video pruning when vLLM builds the processor in the frontend, so that a bad entry fails
    at engine start."""

    tango: VllmPruneConfig

    def __init__(self, info: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(info, *args, **kwargs)  # type: ignore[call-arg]
        check_no_evs(info.ctx.get_mm_config())
        self.tango = parse_config(info.get_hf_config())


def video_budget_for_grid(t: int, h: int, w: int, retention: float) -> int:
    """Placeholder count of a video of ``t`` steps of ``h x w`` LLM tokens: ``t * max(1, ceil(h w r))``, the
    budget every method of the library spends (:func:`tango_prune.methods._common.video_budget`)."""
    return t * frame_budget(h * w, retention)
