"""Qwen3-VL in vLLM with any tango_prune method: ``TangoQwen3VLForConditionalGeneration``.

Qwen3-VL writes every temporal step of a video as ``<t seconds><vision_start>`` + placeholders +
``<vision_end>``, each step its own M-RoPE group. The methods keep a data-dependent number of tokens per step
(Tango keeps most of a static segment's tokens in its first step), while vLLM fixes the prompt before the
encoder runs. So, as vLLM's own EVS does, the prompt gets the video's whole budget
(:func:`~tango_prune.vllm.config.video_budget_for_grid`) in the first step and none in the others, and the
model returns one embedding row for every token of the video's range, text rows included, in the real
layout: every step's timestamp text and vision start/end, with that step's kept tokens between them. The
language model therefore sees exactly the sequence of the transformers adapter (same tokens, same order).

- Saliency: the last ViT block, as for Qwen2.5-VL (:mod:`.saliency`; no window permutation in Qwen3-VL).
  Timestamps for ST-RoPE: the processor's step times (the ones written in the prompt).
- DeepStack: the vision tower returns the main features and every DeepStack level side by side on the channel
  axis; the levels are gathered at the kept indices (zeros on the text rows, as upstream adds them only at
  visual positions), so every level's row belongs to the same kept token as the main row. A token Tango
  merges keeps its own levels (the merge is a property of the main features).
- Positions: every row keeps its ORIGINAL position (HF ``get_rope_index`` of the unpruned prompt: each step
  at time index 0, text after a step ``max(h, w)`` later), carried losslessly with the row's index in the
  range (:func:`~tango_prune.vllm.positions.place_range_positions`), so chunked prefill can split a range.
  The text after the video keeps its original positions too (:meth:`get_mrope_input_positions`).
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.model_executor.models.qwen3_vl import (
    Qwen3VLDummyInputsBuilder,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMultiModalProcessor,
    Qwen3VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement

from ..api import prune
from ..tokens import VideoTokens
from .config import FrontendConfigMixin, parse_config, video_budget_for_grid
from .positions import (
    DIGITS,
    RANGE_VALUES,
    decode_positions,
    encode_positions,
    frame_group_positions,
    place_range_positions,
    prompt_positions,
    qwen_media_positions,
)
from .qwen_common import QwenPruningMixin
from .runner import check_no_evs, enable_runner_pruning
from .selection import fit_to_budget

__all__ = ["TangoQwen3VLForConditionalGeneration", "TangoQwen3VLMultiModalProcessor", "video_layout"]

#: pruning records kept on the model for inspection (``tango_history``), newest last
HISTORY = 64
#: channels appended to every media row (:data:`~tango_prune.vllm.positions.RANGE_VALUES` values)
CHANNELS = DIGITS * RANGE_VALUES


def video_layout(tokenizer: Any, config: Any, timestamps: Any, tokens_per_step: list[int]) -> Any:
    """The token layout of one video (upstream ``get_video_repl``: per step ``<t seconds><vision_start>``,
    ``tokens_per_step[i]`` placeholders, ``<vision_end>``), every token an embedding row."""
    return Qwen3VLMultiModalProcessor.get_video_repl(
        tokens_per_frame=tokens_per_step,
        timestamps=timestamps,
        tokenizer=tokenizer,
        vision_start_token_id=config.vision_start_token_id,
        vision_end_token_id=config.vision_end_token_id,
        video_token_id=config.video_token_id,
    )


def unpruned_layout(ids: list[int], config: Any, per_step: int) -> list[int]:
    """A video range's token ids with every step holding all its ``per_step`` placeholders (the range as the
    prompt has it holds the budget in the first step)."""
    out: list[int] = []
    for tok in ids:
        if tok == config.video_token_id:
            continue
        out.append(tok)
        if tok == config.vision_start_token_id:
            out.extend([config.video_token_id] * per_step)
    return out


class TangoQwen3VLMultiModalProcessor(FrontendConfigMixin, Qwen3VLMultiModalProcessor):
    """The upstream processor with each video's range laid out for the plugin: the budget's placeholders in
    the first step, none in the others, every token of the range an embedding row. Parses the ``tango_prune``
    entry when vLLM builds it in the frontend, so a bad entry fails at engine start."""

    def _get_prompt_updates(self, mm_items: Any, hf_processor_mm_kwargs: Any, out_mm_kwargs: Any) -> Any:
        updates = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        cfg = self.info.get_hf_config()
        tokenizer = self.info.get_tokenizer()
        merge = cfg.vision_config.spatial_merge_size
        retention = self.tango.retention

        def video(item_idx: int) -> Any:
            item = out_mm_kwargs["video"][item_idx]
            t, h, w = (int(x) for x in item["video_grid_thw"].data)
            budget = video_budget_for_grid(t, h // merge, w // merge, retention)
            return video_layout(tokenizer, cfg, item["timestamps"].data, [budget] + [0] * (t - 1))

        target = next(u.target for u in updates if u.modality == "video")
        return [u for u in updates if u.modality != "video"] + [
            PromptReplacement(modality="video", target=target, replacement=video)
        ]


@MULTIMODAL_REGISTRY.register_processor(
    TangoQwen3VLMultiModalProcessor,
    info=Qwen3VLProcessingInfo,
    dummy_inputs=Qwen3VLDummyInputsBuilder,
)
class TangoQwen3VLForConditionalGeneration(QwenPruningMixin, Qwen3VLForConditionalGeneration):
    """vLLM's Qwen3-VL with the videos pruned by the configured tango_prune method."""

    def __init__(self, *, vllm_config: Any, prefix: str = "model") -> None:
        tango = parse_config(vllm_config.model_config.hf_config)
        check_no_evs(vllm_config.model_config.multimodal_config)
        # why: before the layers exist: the decoder layers size their rope cache for pruned prompts
        # (``mrope_positions_factor``) when they are built, and vLLM's runners take the pruning path from it
        enable_runner_pruning(vllm_config, tango.retention)
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.tango = tango
        self.is_multimodal_pruning_enabled = True
        #: per pruned video: {"result", "positions": (L, 3) of the range's rows, "layout": ids, "grid"}
        self.tango_history: list[dict[str, Any]] = []

    # -- positions --------------------------------------------------------------------------------------
    def get_mrope_input_positions(self, input_tokens: list[int], mm_features: list[Any]) -> tuple[torch.Tensor, int]:
        """Prompt positions with every media range offset by its unpruned extent, so the text positions are
        final; the rows of a video's range are provisional until :meth:`recompute_mrope_positions`."""
        merge = self.config.vision_config.spatial_merge_size
        runs = []
        for feature in sorted(mm_features, key=lambda f: f.mm_position.offset):
            offset, length = feature.mm_position.offset, feature.mm_position.length
            key = "image_grid_thw" if feature.modality == "image" else "video_grid_thw"
            t, h, w = (int(x) for x in feature.data[key].data.tolist())
            hs, ws = h // merge, w // merge
            if feature.modality == "image":
                pos, extent = qwen_media_positions(t, hs, ws)
            else:
                ids = unpruned_layout(list(input_tokens[offset : offset + length]), self.config, hs * ws)
                rel, extent = frame_group_positions(ids, self.config.video_token_id, hs, ws)
                pos = rel.T
            runs.append((offset, pos[:length], extent))
        return prompt_positions(len(input_tokens), runs)

    def recompute_mrope_positions(
        self, input_ids: Any, multimodal_embeddings: Any, mrope_positions: torch.Tensor, num_computed_tokens: int
    ) -> tuple[list[torch.Tensor], torch.Tensor, int]:
        """Split the appended channels off and write every row's position into the request's positions
        (whole ranges or chunked-prefill pieces; the text around them is final already)."""
        cleaned = [mm[:, :-CHANNELS] for mm in multimodal_embeddings]
        pieces = [decode_positions(mm[:, -CHANNELS:]) for mm in multimodal_embeddings]
        positions = place_range_positions(input_ids, pieces, mrope_positions, num_computed_tokens)
        return cleaned, positions, int(positions.max()) + 1 - positions.shape[1]

    def _with_rows(self, rows: torch.Tensor, rel: torch.Tensor, lead: int, anchor: int) -> torch.Tensor:
        """``rows`` with each row's relative position, its index in the range, ``lead`` and ``anchor``
        appended (:func:`~tango_prune.vllm.positions.place_range_positions`)."""
        n = rows.shape[0]
        extra = torch.tensor([lead, anchor], dtype=torch.long).expand(n, 2)
        values = torch.cat([rel.to(torch.long).cpu(), torch.arange(n)[:, None], extra], dim=1)
        return torch.cat([rows, encode_positions(values, rows.dtype).to(rows.device)], dim=1)

    def _image_rows(self, embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """An image's embeddings, each row with its position, its index, no lead and the image token id."""
        return self._with_rows(embeds, positions, 0, self.config.image_token_id)

    # -- encoding and pruning ---------------------------------------------------------------------------
    def _deepstack_rows(self, levels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The DeepStack levels (n, levels * D) of the kept tokens: the rows at the kept indices."""
        return levels[indices.to(levels.device)]

    def _prune_videos(self, video_input: Any) -> tuple[torch.Tensor, ...]:
        self._check_frames(video_input)
        stamps = video_input.get("timestamps")
        if stamps is None:
            raise ValueError("tango_prune: Qwen3-VL video inputs carry no timestamps; send frames with metadata")
        grids = video_input["video_grid_thw"].tolist()
        feats, sal = self._encode_videos(video_input["pixel_values_videos"], grids)
        cfg, merge, dim = self.config, self.visual.spatial_merge_size, self.visual_dim
        embed = self.get_language_model().embed_input_ids
        out = []
        for v, (t, h, w) in enumerate(grids):
            hs, ws = h // merge, w // merge
            ts = [float(x) for x in stamps[v]]
            main, levels = feats[v][:, :dim], feats[v][:, dim:]
            tokens = VideoTokens(
                features=main.reshape(t, hs, ws, -1),
                saliency=sal[v],
                timestamps=torch.tensor(ts, dtype=torch.float64, device=main.device),
            )
            budget = video_budget_for_grid(t, hs, ws, self.tango.retention)
            res = fit_to_budget(tokens, prune(tokens, self.tango.method), budget)
            kept = res.indices.cpu()
            per_step = torch.bincount(kept // (hs * ws), minlength=t).tolist()
            ids = list(video_layout(self._tokenizer, cfg, ts, per_step).full)
            lead = list(video_layout(self._tokenizer, cfg, ts, [budget] + [0] * (t - 1)).full).index(cfg.video_token_id)
            full_ids = torch.tensor(unpruned_layout(ids, cfg, hs * ws))
            full_pos, _ = frame_group_positions(full_ids.tolist(), cfg.video_token_id, hs, ws)
            keep = full_ids != cfg.video_token_id
            keep[(~keep).nonzero()[:, 0][kept]] = True
            ids_t = torch.tensor(ids, device=main.device)
            is_video = ids_t == cfg.video_token_id
            rows = embed(ids_t).to(main.dtype)
            rows[is_video] = res.features.to(rows.dtype)
            deep = levels.new_zeros(len(ids), levels.shape[1])
            deep[is_video] = self._deepstack_rows(levels, res.indices)
            rel = full_pos[:, keep].T
            out.append(self._with_rows(torch.cat([rows, deep], dim=1), rel, lead, cfg.video_token_id))
            self.tango_history = self.tango_history[-(HISTORY - 1) :] + [
                {"result": res, "positions": rel, "layout": ids, "grid": (t, hs, ws), "timestamps": ts}
            ]
        return tuple(out)
