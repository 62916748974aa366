"""Adapter for ``Qwen2_5_VLForConditionalGeneration``.

Hook: the upstream ``get_video_features`` encodes the videos unchanged; one temporary forward pre-hook on
the last vision block (removed before the call returns) captures that block's input and rotary tables for
the saliency, which is then computed for that one block only, in fp32, from the block's own weights: the
model's attention implementation is never switched to eager. The unmodified upstream ``forward`` receives
the pruned features through ``mm_encoder_outputs`` plus ``input_ids`` / masks without the dropped
placeholders and explicit ``position_ids`` in which every kept token has its ORIGINAL 3-D M-RoPE position
(docs/algorithm.md §3.2). ``generate`` extends explicit position ids by last + 1, exactly as it does for the
unpruned model, so decoding positions continue as without pruning.

Saliency (docs/algorithm.md §1.4): per temporal step, the mean query of the step's patches attends over the
2x2-averaged keys of its merged tokens; softmax over the step's merged tokens, averaged over heads.
Timestamps: ``video_timestamps=`` if given, else ``i * second_per_grid_ts`` (the start of each temporal
pair), else ``i`` seconds.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..api import prune
from ..preprocess import CLIP_MEAN_STD, normalise, qwen_patches
from ..tokens import VideoTokens
from .base import ModelFamily
from .common import Timer, check_placeholders_unmasked, compact_kwargs, find_video_spans, pad_id, parse_timestamps

__all__ = ["Qwen25VLAdapter", "qwen_frame_saliency"]


def qwen_frame_saliency(
    block: Any,
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    grid_thw: torch.Tensor,
    reverse: torch.Tensor,
    merge: int,
) -> list[torch.Tensor]:
    """Per-video saliency (t, h/merge, w/merge) fp32 from the last vision block's input.

    ``hidden`` (seq, C), ``cos``/``sin`` (seq, hd) are in the window-permuted layout the block sees;
    ``reverse`` maps merge units back to raster order (``argsort(window_index)``).
    """
    # The rotary helper of the block's own modelling module (Qwen2-VL and Qwen2.5-VL each have one).
    apply_rotary_pos_emb_vision = sys.modules[type(block.attn).__module__].apply_rotary_pos_emb_vision
    attn = block.attn
    unit = merge * merge
    seq, C = hidden.shape
    nh = attn.num_heads
    hd = C // nh
    # Back to raster order of merge units; each unit's `unit` rows are one 2x2 block of patches.
    h_r = hidden.reshape(seq // unit, unit, C)[reverse]
    cos_r = cos.reshape(seq // unit, unit, -1)[reverse]
    sin_r = sin.reshape(seq // unit, unit, -1)[reverse]
    w = attn.qkv.weight.float()
    b = None if attn.qkv.bias is None else attn.qkv.bias.float()
    out, pos = [], 0
    for t, h, w_ in grid_thw.tolist():
        u = (h // merge) * (w_ // merge)
        sal = torch.empty(t, u, dtype=torch.float32, device=hidden.device)
        for step in range(t):  # one temporal step at a time: memory stays at one frame's q/k
            sl = slice(pos + step * u, pos + (step + 1) * u)
            x = block.norm1(h_r[sl].reshape(u * unit, C)).float()
            q, k, _ = F.linear(x, w, b).reshape(u * unit, 3, nh, hd).unbind(1)
            q, k = apply_rotary_pos_emb_vision(
                q, k, cos_r[sl].reshape(u * unit, -1).float(), sin_r[sl].reshape(u * unit, -1).float()
            )
            q_mean = q.mean(dim=0)  # (nh, hd): the step's mean query
            k_unit = k.reshape(u, unit, nh, hd).mean(dim=1)  # (u, nh, hd): key of each merged token
            logits = torch.einsum("hd,uhd->hu", q_mean, k_unit) / math.sqrt(hd)
            sal[step] = torch.softmax(logits, dim=-1).mean(dim=0)
        out.append(sal.reshape(t, h // merge, w_ // merge))
        pos += t * u
    return out


class Qwen25VLAdapter(ModelFamily):
    """The Qwen2.5-VL family: saliency, pruning and position-preserving re-insertion for one model instance,
    inputs from frames, preset and the benchmark driver."""

    model_class = "Qwen2_5_VLForConditionalGeneration"
    variants = ("qwen2.5-vl",)
    default_frames = 16
    normalisation = CLIP_MEAN_STD

    def __init__(self, model: Any, variant: str | None = None, saliency_head: Any = None) -> None:
        if variant not in (None, *self.variants):
            raise ValueError(f"variant must be None or one of {self.variants} for {self.model_class}, got {variant!r}")
        if saliency_head is not None:
            raise ValueError(
                f"saliency_head applies to SigLIP (LLaVA) vision towers, not {self.model_class}; its "
                "saliency comes from its own last ViT block"
            )

    def raster_order(self, model: Any, grid: torch.Tensor) -> torch.Tensor:
        """For every merge unit in raster order, its index in the layout the last vision block sees (the
        window-attention permutation of Qwen2.5-VL)."""
        from transformers.vision_utils import get_vision_window_index

        vc = model.config.vision_config
        window_index, _ = get_vision_window_index(
            grid, spatial_merge_size=vc.spatial_merge_size, window_size=vc.window_size, patch_size=vc.patch_size
        )
        return torch.argsort(window_index)

    def encode(self, model: Any, pv: torch.Tensor, grid: torch.Tensor) -> tuple[Any, ...]:
        """Per-video merged features (n_v, D) in raster order and saliency (t, h', w') fp32 (subclasses may
        return more, e.g. Qwen3-VL's DeepStack levels)."""
        out, sal = self.encode_videos(model, pv, grid)
        return list(out.pooler_output), sal

    def encode_videos(self, model: Any, pv: torch.Tensor, grid: torch.Tensor) -> tuple[Any, list[torch.Tensor]]:
        """The upstream ``get_video_features`` output and the per-video saliency (t, h', w') fp32."""
        base = model.model
        visual = base.visual
        cap: dict[str, Any] = {}

        def pre_hook(_m, args, kwargs):  # why: q/k of the last block without touching its attention kernel
            cap["h"] = args[0] if args else kwargs["hidden_states"]
            cap["pe"] = kwargs.get("position_embeddings")
            return None

        handle = visual.blocks[-1].register_forward_pre_hook(pre_hook, with_kwargs=True)
        try:
            out = base.get_video_features(pv, grid, return_dict=True)
        finally:
            handle.remove()
        vc = model.config.vision_config
        reverse = self.raster_order(model, grid).to(cap["h"].device)
        cos, sin = cap["pe"]
        with torch.no_grad():
            sal = qwen_frame_saliency(visual.blocks[-1], cap["h"], cos, sin, grid, reverse, vc.spatial_merge_size)
        return out, sal

    def rewrite(self, model: Any, state: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Encode and prune the videos of one call and return the kwargs for the upstream forward/generate."""
        base = model.model
        cfg = model.config
        pv = kwargs.pop("pixel_values_videos")
        raw_ts = kwargs.pop("video_timestamps", None)
        input_ids = kwargs.get("input_ids")
        grid = kwargs.get("video_grid_thw")
        if input_ids is None:
            raise ValueError("input_ids must be given when pruning video tokens (inputs_embeds alone is unsupported)")
        if grid is None:
            raise ValueError("video_grid_thw must be given with pixel_values_videos")
        if kwargs.get("mm_token_type_ids") is None:
            # why: get_rope_index needs the modality of every token; derive it from the placeholders.
            tt = torch.zeros_like(input_ids, dtype=torch.int)
            tt[input_ids == cfg.image_token_id] = 1
            tt[input_ids == cfg.video_token_id] = 2
            kwargs["mm_token_type_ids"] = tt
        V = grid.shape[0]
        merge = cfg.vision_config.spatial_merge_size
        state.mark("vision_start")
        timer = Timer(pv.device).start()
        mm = dict(kwargs.get("mm_encoder_outputs") or {})
        # why: features follow the caller's grad mode (gradients reach the vision tower when training); the
        # saliency is computed without a graph.
        encoded = state.encoding(lambda: self.encode(model, pv, grid))
        feats, sal = encoded[0], encoded[1]
        if kwargs.get("pixel_values") is not None:
            # why: upstream refuses pixel inputs next to mm_encoder_outputs; images pass through untouched.
            mm["image"] = base.get_image_features(
                kwargs.pop("pixel_values"), kwargs.get("image_grid_thw"), return_dict=True
            )
        vision_s = timer.stop()
        state.mark("vision_end")
        timer.start()
        position_ids = kwargs.get("position_ids")
        if position_ids is None:
            position_ids, _ = base.get_rope_index(
                input_ids,
                kwargs["mm_token_type_ids"],
                image_grid_thw=kwargs.get("image_grid_thw"),
                video_grid_thw=grid,
                second_per_grid_ts=kwargs.get("second_per_grid_ts"),
                attention_mask=kwargs.get("attention_mask"),
            )
        elif position_ids.dim() == 3 and position_ids.shape[0] == 4:
            position_ids = position_ids[1:]
        elif position_ids.dim() != 3 or position_ids.shape[0] != 3:
            raise ValueError(f"position_ids must have shape (3, B, L) or (4, B, L), got {tuple(position_ids.shape)}")
        lengths = [int(f.shape[0]) for f in feats]
        columns = self.video_columns(input_ids, cfg.video_token_id, lengths)
        check_placeholders_unmasked(input_ids, kwargs.get("attention_mask"), cfg.video_token_id)
        spg = kwargs.get("second_per_grid_ts")
        keep = torch.ones_like(input_ids, dtype=torch.bool)
        seqs, results = [], []
        for v in range(V):
            t, h, w = (int(x) for x in grid[v].tolist())
            hs, ws = h // merge, w // merge
            ts = parse_timestamps(None if raw_ts is None else [raw_ts[v]], 1, t, feats[v].device)[0]
            if ts is None:
                step = float(spg[v]) if spg is not None else 1.0
                ts = torch.arange(t, dtype=torch.float64, device=feats[v].device) * step
            tokens = VideoTokens(features=feats[v].reshape(t, hs, ws, -1), saliency=sal[v], timestamps=ts)
            res = prune(tokens, state.config)
            row, cols = columns[v]
            kept = torch.zeros(lengths[v], dtype=torch.bool, device=keep.device)
            kept[res.indices.to(keep.device)] = True
            keep[row, cols.to(keep.device)] = kept
            seqs.append(res.features)
            results.append(res)
        kwargs["position_ids"] = position_ids
        kwargs = compact_kwargs(kwargs, keep, pad=pad_id(cfg), extra={"mm_token_type_ids": 0})
        am = kwargs.get("attention_mask")
        pos3 = kwargs["position_ids"]
        valid = am.bool() if am is not None else torch.ones(pos3.shape[1:], dtype=torch.bool, device=pos3.device)
        # Row 0 = text positions, used upstream only to build the mask (packed-sequence detection): compact.
        text = (valid.long().cumsum(-1) - 1).masked_fill(~valid, 0).to(pos3.device)
        kwargs["position_ids"] = torch.cat([text[None], pos3], dim=0)
        # For callers that decode by hand with forward(): continue after the largest original position.
        n_valid = valid.sum(-1)
        max_pos = pos3.masked_fill(~valid[None].to(pos3.device), -1).amax(dim=(0, 2))
        base.rope_deltas = (max_pos + 1 - n_valid.to(max_pos.device))[:, None]
        mm["video"] = self.video_output(encoded, results, tuple(seqs))
        kwargs["mm_encoder_outputs"] = mm
        prune_s = timer.stop()
        state.mark("prune_end")
        state.stats.update(
            vision_s=vision_s,
            prune_s=prune_s,
            visual_tokens_before=sum(lengths),
            visual_tokens_after=sum(r.num_kept for r in results),
            kept_per_video=[r.num_kept for r in results],
        )
        state.last_results = results
        return kwargs

    def video_columns(
        self, input_ids: torch.Tensor, token_id: int, lengths: list[int]
    ) -> list[tuple[int, torch.Tensor]]:
        """For every video, its batch row and the columns of its placeholders in feature order (one
        contiguous run per video in this family)."""
        return [
            (sp.row, torch.arange(sp.start, sp.start + sp.length, device=input_ids.device))
            for sp in find_video_spans(input_ids, token_id, lengths)
        ]

    def video_output(self, encoded: Any, results: list[Any], features: tuple[torch.Tensor, ...]) -> Any:
        """The ``mm_encoder_outputs["video"]`` entry carrying the kept features of every video."""
        return _output(features)

    # -- inputs from frames, preset ----------------------------------------------------------------------
    @classmethod
    def inputs_from_frames(
        cls, config: Any, tokenizer: Any, frames: Any, timestamps: Any, question: str, mean: Any, std: Any
    ) -> dict[str, Any]:
        """Frames resized to about 256 merged tokens per temporal step (aspect kept, multiples of patch x
        merge), patchified like the upstream processor; the prompt with vision start / placeholders / end;
        the grid, the step duration and the start time of every step."""
        from .llava_onevision import chat_prompt

        pv, (gt, gh, gw), ts = cls.video_patches(config, frames, timestamps, mean, std)
        m, tps = config.vision_config.spatial_merge_size, config.vision_config.temporal_patch_size
        n = gt * gh * gw // (m * m)
        start, pad, end = (
            tokenizer.convert_ids_to_tokens(i)
            for i in (config.vision_start_token_id, config.video_token_id, config.vision_end_token_id)
        )
        text = chat_prompt(tokenizer, start + pad + end, question).replace(pad, pad * n, 1)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
        step_ts = torch.from_numpy(ts[::tps].copy())
        spg = float(step_ts[1] - step_ts[0]) if gt > 1 else 1.0
        return {
            "input_ids": ids,
            "pixel_values_videos": pv,
            "video_grid_thw": torch.tensor([[gt, gh, gw]]),
            "second_per_grid_ts": torch.tensor([spg]),
            "video_timestamps": step_ts[None],
        }

    @staticmethod
    def video_patches(
        config: Any, frames: Any, timestamps: Any, mean: Any, std: Any
    ) -> tuple[torch.Tensor, list[int], np.ndarray]:
        """Patch rows of frames resized to about 256 merged tokens per temporal step, their grid, and the
        frame times padded like the frames (the last one repeats up to a whole temporal patch)."""
        vc = config.vision_config
        ps, tps, m = vc.patch_size, vc.temporal_patch_size, vc.spatial_merge_size
        unit = ps * m
        T, H, W = frames.shape[:3]
        scale = math.sqrt(256 * unit * unit / (H * W))
        h = max(unit, round(H * scale / unit) * unit)
        w = max(unit, round(W * scale / unit) * unit)
        ts = np.asarray(timestamps, dtype=np.float64)
        if T % tps:
            ts = np.concatenate([ts, np.repeat(ts[-1:], tps - T % tps)])  # the last frame repeats, as upstream
        pv, grid = qwen_patches(normalise(frames, (h, w), mean, std)[None], ps, m, tps)
        return pv, grid, ts

    @classmethod
    def tango_config(cls, config: Any, variant: str | None, retention: float) -> tuple[Any, list[str]]:
        """The published Qwen2.5-VL preset."""
        from ..config import TangoConfig

        return TangoConfig.preset("qwen2.5-vl", retention=retention), []

    # -- benchmark driver --------------------------------------------------------------------------------
    @classmethod
    def bench_frame_size(cls, model: Any, requested: int | None, default: int | None = None) -> int:
        """``requested`` (a positive multiple of patch x merge), else ``default`` (the preset's size), else 16
        merge units (448 px for patch 14)."""
        vc = model.config.vision_config
        unit = vc.patch_size * vc.spatial_merge_size
        size = requested if requested is not None else (default or 16 * unit)
        if isinstance(size, bool) or not isinstance(size, int) or size < unit or size % unit:
            raise ValueError(
                f"frame_size must be a positive multiple of {unit} (patch x merge) for {cls.model_class}, got {size!r}"
            )
        return size

    @classmethod
    def bench_inputs(cls, model: Any, spec: Any, size: int, device: torch.device) -> Any:
        """Patch rows at ``size`` px, prompt ids with vision start / video placeholders / vision end, grid and
        step timing; the pruned runs get the start time of every step as ``video_timestamps``."""
        from ..bench.families import BenchInputs, bench_frames, bench_prompt

        cfg = model.config
        vc = cfg.vision_config
        frames, ts, source = bench_frames(spec, size)
        rows, grid = qwen_patches(
            normalise(frames, (size, size), *cls.normalisation)[None],
            vc.patch_size,
            vc.spatial_merge_size,
            vc.temporal_patch_size,
        )
        tps = vc.temporal_patch_size
        interval = float(np.mean(np.diff(ts))) if len(ts) > 1 else 1.0
        step_ts = [float(ts[min(i * tps, len(ts) - 1)]) for i in range(grid[0])]
        per_step = grid[1] * grid[2] // vc.spatial_merge_size**2
        n_video = grid[0] * per_step
        ids = bench_prompt(
            spec, [cfg.vision_start_token_id] + [cfg.video_token_id] * n_video + [cfg.vision_end_token_id]
        ).to(device)
        common = dict(
            video_grid_thw=torch.tensor([grid], device=device),
            second_per_grid_ts=torch.tensor([tps * interval], device=device),
            mm_token_type_ids=(2 * (ids == cfg.video_token_id)).to(torch.int),
        )
        info = {
            "source": source,
            "frames": spec.frames,
            "frame_size": size,
            "temporal_steps": grid[0],
            "tokens_per_step": per_step,
            "video_tokens": n_video,
            "prompt_tokens": int(ids.shape[1] - n_video),
            "timestamps": ts.tolist(),
        }
        return BenchInputs(rows.to(device), ids, common, [step_ts], info)

    def bench_encode(self, model: Any, inp: Any, warmup: bool = False) -> Any:
        """The encoder pass (``warmup``: the first temporal step only)."""
        grid = inp.common["video_grid_thw"]
        if warmup:
            t, h, w = grid[0].tolist()
            return self.encode(model, inp.pixels[: h * w], torch.tensor([[1, h, w]], device=inp.pixels.device))
        return self.encode(model, inp.pixels, grid)

    @classmethod
    def bench_upstream_encode(cls, model: Any, inp: Any) -> dict[str, Any]:
        """``get_video_features`` on the patch rows and their grid (Qwen2-VL, Qwen2.5-VL, Qwen3-VL)."""
        from ..bench.families import encoder_output

        out = model.model.get_video_features(inp.pixels, inp.common["video_grid_thw"], return_dict=True)
        return {"video": encoder_output(out)}

    @staticmethod
    def bench_first_video_features(encoded: Any, inp: Any) -> torch.Tensor:
        """The first video's features (T, H, W, D): temporal steps x merged rows x merged columns."""
        feats, sal = encoded[0], encoded[1]
        t, h, w = sal[0].shape
        return feats[0].reshape(t, h, w, -1)


def _output(pooler: Any) -> Any:
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    return BaseModelOutputWithPooling(pooler_output=pooler)
