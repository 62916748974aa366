"""The Qwen3-VL family (``Qwen3VLForConditionalGeneration``): the Qwen2.5-VL family plus DeepStack and the
timestamped frame layout.

Saliency: from the last ViT block, as for Qwen2.5-VL (docs/algorithm.md §1.4): per temporal step, the step's mean
query attends over the 2x2-averaged keys of its merged tokens, computed in fp32 from the block's own weights
and the rotary tables a pre-hook captures. The last block is the one whose output the main merger projects
into the LLM, so the saliency scores the features that are kept; the DeepStack levels come from earlier
blocks and follow that selection. Qwen3-VL has no window attention: the block sees the merge units in raster
order.

Layout: the upstream processor writes every temporal step as ``<t seconds><vision_start>`` + placeholders +
``<vision_end>``. Only video placeholders are pruned; the timestamp text and the vision start/end tokens
stay. Upstream ``get_rope_index`` positions every step as its own group (temporal index = the group's start,
time carried by the timestamp text); kept tokens keep exactly those ORIGINAL positions through explicit
``position_ids`` (the Qwen2.5-VL re-insertion).

DeepStack: the vision tower also returns, per level, merged features of intermediate blocks that the LLM adds
at the visual positions after its first layers, in placeholder order. Every level is gathered with the kept
indices of the main features (``PruneResult.indices``), so level ``l``'s row ``i`` belongs to the same kept
token as main row ``i``. A context token that Tango merges keeps its own DeepStack residuals (the merge is a
property of the main features; the levels are gathered, not merged).

Timestamps for ST-RoPE: ``video_timestamps=`` if given (``tango-prune run`` passes the processor's step times,
the mean of each temporal pair), else ``i`` seconds for step ``i``. The Tango preset is the Qwen2.5-VL one: the
paper publishes none for Qwen3-VL.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..preprocess import SIGLIP_MEAN_STD
from .qwen2_5_vl import Qwen25VLAdapter

__all__ = ["Qwen3VLAdapter", "check_step_layout"]


def check_step_layout(input_ids: torch.Tensor, grid: torch.Tensor, token_id: int, merge: int) -> None:
    """``ValueError`` unless the video placeholders form, in row-major order, one run per temporal step of
    every video (``h * w / merge**2`` tokens, text between steps): the layout upstream ``get_rope_index``
    positions step by step, and which it would otherwise fail on deep inside torch."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, seq), got {tuple(input_ids.shape)}")
    rows, cols = (input_ids == token_id).nonzero(as_tuple=True)
    flat = rows * (input_ids.shape[1] + 1) + cols  # why +1: a new row always starts a new run
    new = torch.ones_like(flat, dtype=torch.bool)
    new[1:] = flat[1:] != flat[:-1] + 1
    starts = new.nonzero()[:, 0]
    found = torch.diff(torch.cat([starts, starts.new_tensor([flat.numel()])])).tolist()
    g = grid.long()
    expected = torch.repeat_interleave(g[:, 1] * g[:, 2] // merge**2, g[:, 0]).tolist()
    if found != expected:
        raise ValueError(
            "input_ids: every temporal step of every video must be its own run of video placeholders "
            f"(id {token_id}) with text between steps, as the Qwen3-VL processor writes them "
            f"('<t seconds><vision_start>...<vision_end>'); runs expected {expected[:8]}"
            f"{'...' if len(expected) > 8 else ''}, found {found[:8]}{'...' if len(found) > 8 else ''}"
        )


class Qwen3VLAdapter(Qwen25VLAdapter):
    """Qwen3-VL: the Qwen2.5-VL rewrite with per-step placeholder groups and DeepStack levels pruned alike."""

    model_class = "Qwen3VLForConditionalGeneration"
    variants = ("qwen3-vl",)
    normalisation = SIGLIP_MEAN_STD  # the processor's IMAGENET_STANDARD mean/std: 0.5 per channel

    def raster_order(self, model: Any, grid: torch.Tensor) -> torch.Tensor:
        """The identity: no window permutation in Qwen3-VL."""
        merge = model.config.vision_config.spatial_merge_size
        return torch.arange(int((grid.prod(-1) // merge**2).sum()))

    def encode(
        self, model: Any, pv: torch.Tensor, grid: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[torch.Tensor, ...]]]:
        """Per-video merged features (n_v, D), saliency (t, h', w') fp32, and per DeepStack level the
        per-video features (n_v, D) in the same token order."""
        out, sal = self.encode_videos(model, pv, grid)
        return list(out.pooler_output), sal, [tuple(level) for level in out.deepstack_features]

    def rewrite(self, model: Any, state: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Check the per-step placeholder layout, then the Qwen2.5-VL rewrite (prune, re-insert at the
        original positions) with the DeepStack levels pruned alike."""
        ids, grid = kwargs.get("input_ids"), kwargs.get("video_grid_thw")
        if ids is not None and grid is not None:
            check_step_layout(ids, grid, model.config.video_token_id, model.config.vision_config.spatial_merge_size)
        return super().rewrite(model, state, kwargs)

    def video_columns(
        self, input_ids: torch.Tensor, token_id: int, lengths: list[int]
    ) -> list[tuple[int, torch.Tensor]]:
        """For every video, its row and placeholder columns in feature order: the next ``lengths[v]``
        placeholders in row-major order (the order upstream scatters features), split into per-step groups by
        the timestamp text; ``ValueError`` when a video's placeholders straddle rows."""
        rows, cols = (input_ids == token_id).nonzero(as_tuple=True)
        if rows.numel() != sum(lengths):
            raise ValueError(
                f"input_ids must contain {sum(lengths)} video placeholder tokens (id {token_id}) for "
                f"the given videos, found {rows.numel()}"
            )
        out, pos = [], 0
        for n in lengths:
            r = rows[pos : pos + n]
            if bool((r != r[0]).any()):
                raise ValueError("input_ids: every video's placeholder tokens must lie in one row")
            out.append((int(r[0]), cols[pos : pos + n]))
            pos += n
        return out

    def video_output(self, encoded: Any, results: list[Any], features: tuple[torch.Tensor, ...]) -> Any:
        """Kept main features plus every DeepStack level gathered at the same kept indices."""
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        levels = [tuple(level[v][r.indices.to(level[v].device)] for v, r in enumerate(results)) for level in encoded[2]]
        # why: upstream's own get_video_features fills these fields with per-video tuples (its forward splits and
        # concatenates them); the dataclass annotations say Tensor / list[Tensor]
        return BaseModelOutputWithDeepstackFeatures(
            pooler_output=features,  # type: ignore[arg-type]
            deepstack_features=levels,  # type: ignore[arg-type]
        )

    # -- inputs from frames, preset ----------------------------------------------------------------------
    @classmethod
    def inputs_from_frames(
        cls, config: Any, tokenizer: Any, frames: Any, timestamps: Any, question: str, mean: Any, std: Any
    ) -> dict[str, Any]:
        """Frames patchified as for Qwen2.5-VL; the prompt in the processor's layout, each temporal step as
        ``<t seconds>`` + vision start / placeholders / end, ``t`` the mean time of the step's frames (as
        upstream); those step times also go to ST-RoPE as ``video_timestamps``."""
        from .llava_onevision import chat_prompt

        pv, (gt, gh, gw), ts = cls.video_patches(config, frames, timestamps, mean, std)
        vc = config.vision_config
        per_step = gh * gw // vc.spatial_merge_size**2
        step_ts = ts.reshape(gt, vc.temporal_patch_size).mean(axis=1)
        start, pad, end = (
            tokenizer.convert_ids_to_tokens(i)
            for i in (config.vision_start_token_id, config.video_token_id, config.vision_end_token_id)
        )
        video = "".join(f"<{t:.1f} seconds>{start}{pad * per_step}{end}" for t in step_ts)
        ids = tokenizer(
            chat_prompt(tokenizer, video, question), return_tensors="pt", add_special_tokens=False
        ).input_ids
        return {
            "input_ids": ids,
            "pixel_values_videos": pv,
            "video_grid_thw": torch.tensor([[gt, gh, gw]]),
            "video_timestamps": torch.from_numpy(step_ts)[None],
        }

    @classmethod
    def tango_config(cls, config: Any, variant: str | None, retention: float) -> tuple[Any, list[str]]:
        """The Qwen2.5-VL preset (the paper publishes none for Qwen3-VL), with a note saying so."""
        cfg, notes = super().tango_config(config, variant, retention)
        return cfg, notes + ["Qwen3-VL uses the published Qwen2.5-VL preset"]

    # -- benchmark driver --------------------------------------------------------------------------------
    @classmethod
    def bench_inputs(cls, model: Any, spec: Any, size: int, device: torch.device) -> Any:
        """As Qwen2.5-VL, with every temporal step its own vision start / placeholders / end group (no
        timestamp text: the benchmark has no tokenizer) and without ``second_per_grid_ts``."""
        from ..bench.families import bench_prompt

        inp = super().bench_inputs(model, spec, size, device)
        cfg = model.config
        t, per_step = inp.info["temporal_steps"], inp.info["tokens_per_step"]
        ids = bench_prompt(
            spec, t * ([cfg.vision_start_token_id] + [cfg.video_token_id] * per_step + [cfg.vision_end_token_id])
        ).to(device)
        common = {k: v for k, v in inp.common.items() if k != "second_per_grid_ts"}
        common["mm_token_type_ids"] = (2 * (ids == cfg.video_token_id)).to(torch.int)
        info = dict(inp.info, prompt_tokens=int(ids.shape[1] - inp.info["video_tokens"]))
        return dataclasses.replace(inp, input_ids=ids, common=common, info=info)
