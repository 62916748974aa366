"""Qwen2.5-VL in vLLM with any tango_prune method: ``TangoQwen2_5_VLForConditionalGeneration``.

- The processor gives every video exactly :func:`~tango_prune.vllm.config.video_budget_for_grid`
  placeholders (fixed before the encoder runs); images keep all theirs.
- The model encodes the videos with vLLM's own vision tower, takes the saliency of its last block
  (:mod:`.saliency`), prunes each video with the configured method on the LLM token grid (the same
  :func:`tango_prune.prune` call as the transformers adapter, with the same timestamps: step ``i`` at
  ``i * second_per_grid_t`` seconds), fits the result to the budget (:mod:`.selection`) and appends the kept
  tokens' M-RoPE positions losslessly (:mod:`.positions`); vLLM's model runner then rewrites the request's
  positions through :meth:`recompute_mrope_positions`.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement

from ..api import prune
from ..tokens import VideoTokens
from .config import FrontendConfigMixin, parse_config, video_budget_for_grid
from .positions import (
    CHANNELS,
    decode_positions,
    encode_positions,
    place_media_positions,
    prompt_positions,
    qwen_media_positions,
)
from .qwen_common import QwenPruningMixin
from .runner import check_no_evs, enable_runner_pruning
from .selection import fit_to_budget

__all__ = ["TangoQwen2_5_VLForConditionalGeneration", "TangoQwen2_5_VLMultiModalProcessor"]

#: pruning records kept on the model for inspection (``tango_history``), newest last
HISTORY = 64


class TangoQwen2_5_VLMultiModalProcessor(FrontendConfigMixin, Qwen2_5_VLMultiModalProcessor):
    """The upstream processor with each video's placeholder count set to the plugin's budget. Parses the
    ``tango_prune`` entry when vLLM builds it in the frontend, so a bad entry fails at engine start."""

    def _get_prompt_updates(self, mm_items: Any, hf_processor_mm_kwargs: Any, out_mm_kwargs: Any) -> Any:
        updates = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        hf_processor = self.info.get_hf_processor(**hf_processor_mm_kwargs)
        video_id = self.info.get_tokenizer().get_vocab()[hf_processor.video_token]
        merge = self.info.get_hf_config().vision_config.spatial_merge_size
        retention = self.tango.retention

        def video(item_idx: int) -> list[int]:
            t, h, w = (int(x) for x in out_mm_kwargs["video"][item_idx]["video_grid_thw"].data)
            return [video_id] * video_budget_for_grid(t, h // merge, w // merge, retention)

        return [u for u in updates if u.modality != "video"] + [
            PromptReplacement(modality="video", target=[video_id], replacement=video)
        ]


@MULTIMODAL_REGISTRY.register_processor(
    TangoQwen2_5_VLMultiModalProcessor,
    info=Qwen2_5_VLProcessingInfo,
    dummy_inputs=Qwen2_5_VLDummyInputsBuilder,
)
class TangoQwen2_5_VLForConditionalGeneration(QwenPruningMixin, Qwen2_5_VLForConditionalGeneration):
    """vLLM's Qwen2.5-VL with the videos pruned by the configured tango_prune method."""

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        tango = parse_config(vllm_config.model_config.hf_config)
        check_no_evs(vllm_config.model_config.multimodal_config)
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.tango = tango
        # why: routes vLLM's runners through their pruning path (sequential video encoding, M-RoPE recompute)
        enable_runner_pruning(vllm_config, tango.retention)
        self.is_multimodal_pruning_enabled = True
        #: per pruned video: {"result": PruneResult, "positions": (K, 3) relative M-RoPE, "next": int}
        self.tango_history: list[dict[str, Any]] = []

    # -- positions --------------------------------------------------------------------------------------
    def _media_grid(self, feature: Any) -> tuple[int, int, int, float | None]:
        """(t, h, w) on the LLM token grid and the step duration (None for an image) of one media item."""
        merge = self.config.vision_config.spatial_merge_size
        data = feature.data
        if feature.modality == "image":
            t, h, w = (int(x) for x in data["image_grid_thw"].data.tolist())
            return t, h // merge, w // merge, None
        t, h, w = (int(x) for x in data["video_grid_thw"].data.tolist())
        seconds = data.get("second_per_grid_ts")
        spg = 1.0 if seconds is None else float(seconds.data)
        return t, h // merge, w // merge, spg

    def get_mrope_input_positions(self, input_tokens: list[int], mm_features: list[Any]) -> tuple[torch.Tensor, int]:
        """Prompt positions with each media item's text offset from its full grid (as unpruned), so text
        positions are final; a pruned video's own positions are provisional until
        :meth:`recompute_mrope_positions` writes the kept tokens' ones."""
        tps = getattr(self.config.vision_config, "tokens_per_second", 1.0)
        runs = []
        for feature in sorted(mm_features, key=lambda f: f.mm_position.offset):
            t, h, w, spg = self._media_grid(feature)
            pos, extent = qwen_media_positions(t, h, w, tps, spg)
            runs.append((feature.mm_position.offset, pos[: feature.mm_position.length], extent))
        return prompt_positions(len(input_tokens), runs)

    def recompute_mrope_positions(
        self, input_ids: Any, multimodal_embeddings: Any, mrope_positions: torch.Tensor, num_computed_tokens: int
    ) -> tuple[list[torch.Tensor], torch.Tensor, int]:
        """Split the appended position channels off and write them into the request's positions (whole items
        or chunked-prefill pieces; the text positions are final already)."""
        cleaned = [mm[:, :-CHANNELS] for mm in multimodal_embeddings]
        rel = [decode_positions(mm[:, -CHANNELS:]) for mm in multimodal_embeddings]
        media = (self.config.image_token_id, self.config.video_token_id)
        positions = place_media_positions(input_ids, rel, mrope_positions, num_computed_tokens, media)
        return cleaned, positions, int(positions.max()) + 1 - positions.shape[1]

    def _append_positions(self, emb: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return torch.cat([emb, encode_positions(pos, emb.dtype).to(emb.device)], dim=1)

    # -- encoding and pruning ---------------------------------------------------------------------------
    def _raster_reverse(self, grids: list[list[int]]) -> torch.Tensor:
        """The tower's window permutation, undone: merge units back to raster order."""
        return self.visual.prepare_encoder_metadata(grids)["reverse_indices"]

    def _image_rows(self, embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """An image's embeddings with its M-RoPE positions appended."""
        return self._append_positions(embeds, positions)

    def _prune_videos(self, video_input: Any) -> tuple[torch.Tensor, ...]:
        self._check_frames(video_input)
        grids = video_input["video_grid_thw"].tolist()
        feats, sal = self._encode_videos(video_input["pixel_values_videos"], grids)
        spg = video_input.get("second_per_grid_ts")
        tps = getattr(self.config.vision_config, "tokens_per_second", 1.0)
        merge = self.visual.spatial_merge_size
        out = []
        for v, (t, h, w) in enumerate(grids):
            hs, ws = h // merge, w // merge
            step = 1.0 if spg is None else float(spg[v])
            ts = torch.arange(t, dtype=torch.float64, device=feats[v].device) * step
            tokens = VideoTokens(features=feats[v].reshape(t, hs, ws, -1), saliency=sal[v], timestamps=ts)
            res = prune(tokens, self.tango.method)
            res = fit_to_budget(tokens, res, video_budget_for_grid(t, hs, ws, self.tango.retention))
            full, nxt = qwen_media_positions(t, hs, ws, tps, step)
            kept = full[res.indices.cpu()]
            out.append(self._append_positions(res.features, kept))
            self.tango_history = self.tango_history[-(HISTORY - 1) :] + [
                {"result": res, "positions": kept, "next": nxt, "grid": (t, hs, ws)}
            ]
        return tuple(out)
