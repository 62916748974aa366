"""The Qwen2-VL family (``Qwen2VLForConditionalGeneration``): the Qwen2.5-VL family without window attention.

Everything else is shared with :mod:`.qwen2_5_vl`: the last ViT block gives the saliency (per temporal step,
the step's mean query against the 2x2-merged keys), kept tokens keep their original 3-D M-RoPE positions
(upstream ``get_rope_index``, which here advances time by one per temporal step), and inputs are
patchified the same way with CLIP normalisation. The Tango preset is the Qwen2.5-VL one: the paper publishes
none for Qwen2-VL.
"""

from __future__ import annotations

from typing import Any

import torch

from .qwen2_5_vl import Qwen25VLAdapter

__all__ = ["Qwen2VLAdapter"]


class Qwen2VLAdapter(Qwen25VLAdapter):
    """Qwen2-VL: all vision blocks attend globally, so the last block sees the merge units in raster order."""

    model_class = "Qwen2VLForConditionalGeneration"
    variants = ("qwen2-vl",)

    def raster_order(self, model: Any, grid: torch.Tensor) -> torch.Tensor:
        """The identity: no window permutation in Qwen2-VL."""
        merge = model.config.vision_config.spatial_merge_size
        return torch.arange(int((grid.prod(-1) // merge**2).sum()))

    @classmethod
    def tango_config(cls, config: Any, variant: str | None, retention: float) -> tuple[Any, list[str]]:
        """The Qwen2.5-VL preset (the paper publishes none for Qwen2-VL), with a note saying so."""
        cfg, notes = super().tango_config(config, variant, retention)
        return cfg, notes + ["Qwen2-VL uses the published Qwen2.5-VL preset"]

    @classmethod
    def inputs_from_frames(
        cls, config: Any, tokenizer: Any, frames: Any, timestamps: Any, question: str, mean: Any, std: Any
    ) -> dict[str, Any]:
        """As Qwen2.5-VL, without ``second_per_grid_ts`` (Qwen2-VL takes none; the frame times still reach
        ST-RoPE through ``video_timestamps``)."""
        inputs = super().inputs_from_frames(config, tokenizer, frames, timestamps, question, mean, std)
        inputs.pop("second_per_grid_ts")
        return inputs

    @classmethod
    def bench_inputs(cls, model: Any, spec: Any, size: int, device: torch.device) -> Any:
        """As Qwen2.5-VL, without ``second_per_grid_ts``."""
        inp = super().bench_inputs(model, spec, size, device)
        inp.common.pop("second_per_grid_ts")
        return inp
