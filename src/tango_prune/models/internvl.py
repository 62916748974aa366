"""Family of ``InternVLForConditionalGeneration`` (the transformers-native InternVL 2.5 / 3 checkpoints).

Layout: upstream InternVL has no video placeholder token. Its processor writes a video as one image run per
frame, ``"Frame1: <img>" + <IMG_CONTEXT> * image_seq_length + "</img>\\nFrame2: ..."``, and merges the frames
into ``pixel_values`` next to the image tiles, in prompt order. Every frame is one 448 px tile: InternViT
patches (32 x 32 for patch 14), pixel shuffle 2x2 -> 16 x 16 tokens per frame. A patched model is called
with the frames kept apart, ``pixel_values_videos`` (videos, frames, 3, S, S), and the image tiles, if any,
in ``pixel_values``; the prompt is unchanged. When a call has both, ``visual_order=`` (one ``"image"`` or
``"video"`` per visual in row-major prompt order, like the processor's internal order) says which
placeholder runs are frames; an image is one contiguous placeholder run, a video its next T x
image_seq_length placeholders (frame by frame).

Pruning: a video's tokens form a (T, H, W) grid, H = W = the pixel-shuffled side. The kept tokens of frame
``t`` fill the first placeholders of that frame's run and its other placeholders are removed from
``input_ids`` / ``attention_mask`` (docs/algorithm.md §3.1: positions are 1-D and compact, as for LLaVA); every text
token (frame labels, ``<img>`` / ``</img>``) is kept, a frame with no kept token keeps an empty
``<img></img>``. Images are never pruned. All features (images untouched, pruned videos) go back into the
unmodified upstream ``forward`` through ``mm_encoder_outputs["image"]`` in placeholder order.

Saliency: InternViT has a CLS token, so a patch's saliency is the attention the CLS query pays to it in the
vision layer whose output the LLM receives (``vision_feature_layer``), averaged over heads, softmax over all
the layer's keys (CLS included), recomputed in fp32 for that one layer from its own q/k projections (and
q/k norms) on the layer's captured input; the model's attention implementation is left alone. The patch map
is averaged over each 2x2 pixel-shuffle block, so one score per LLM token.

Timestamps: ``video_timestamps=`` if given, else frame ``i`` at ``i`` seconds.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..api import prune
from ..preprocess import IMAGENET_MEAN_STD, normalise
from ..tokens import VideoTokens
from .base import ModelFamily
from .common import Timer, check_placeholders_unmasked, compact_kwargs, pad_id, parse_timestamps

__all__ = ["InternVLAdapter", "internvl_cls_saliency"]


def internvl_cls_saliency(layer: Any, layer_input: torch.Tensor) -> torch.Tensor:
    """Head-averaged attention of the CLS query over the patch keys of one InternViT layer, fp32 (N, P).

    ``layer_input`` (N, 1 + P, D) is the layer's input (CLS first); the softmax runs over all 1 + P keys, as
    in the layer itself, and the CLS column is dropped afterwards.
    """
    attn = layer.attention
    x = layer.layernorm_before(layer_input)
    N, L, D = x.shape
    nh = attn.num_heads
    hd = D // nh
    q = attn.q_norm(attn.q_proj(x[:, :1])).float().reshape(N, nh, hd)
    k = attn.k_norm(attn.k_proj(x)).float().reshape(N, L, nh, hd)
    logits = torch.einsum("nhd,nlhd->nhl", q, k) * (hd**-0.5)
    return torch.softmax(logits, dim=-1).mean(dim=1)[:, 1:]


def _side(value: Any) -> int:
    """The side of a square ``image_size`` / ``patch_size`` (an int or a pair)."""
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"vision_config: only square InternViT inputs are supported, got {value}")
        return int(value[0])
    return int(value)


def _geometry(config: Any) -> tuple[int, int, int]:
    """(frame size in px, patch grid side, token grid side after the pixel shuffle) of a config."""
    vc = config.vision_config
    size, g = _side(vc.image_size), _side(vc.image_size) // _side(vc.patch_size)
    return size, g, int(g * config.downsample_ratio)


class InternVLAdapter(ModelFamily):
    """The InternVL family: CLS saliency, per-frame pruning and compact re-insertion for one model instance,
    inputs from frames, preset and the benchmark driver."""

    model_class = "InternVLForConditionalGeneration"
    variants = ("internvl",)
    default_frames = 16
    normalisation = IMAGENET_MEAN_STD

    def __init__(self, model: Any, variant: str | None = None, saliency_head: Any = None) -> None:
        variant = variant or self.variants[0]
        if variant not in self.variants:
            raise ValueError(f"variant must be one of {self.variants} for {self.model_class}, got {variant!r}")
        if saliency_head is not None:
            raise ValueError(f"saliency_head: {self.model_class} scores patches with its own CLS token; pass None")
        if model.config.downsample_ratio != 0.5:
            raise ValueError(f"downsample_ratio must be 0.5 (2x2 pixel shuffle), got {model.config.downsample_ratio}")
        self.variant = variant

    # -- vision side ---------------------------------------------------------------------------------
    def encode(
        self, model: Any, pixel_values_videos: torch.Tensor, vfl: Any, vfss: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (V, T, H, W, D) and saliency (V, T, H, W) fp32 for ``pixel_values_videos`` (V, T, 3, S, S)."""
        if vfss != "default":
            raise ValueError(
                f"vision_feature_select_strategy must be 'default' for {self.model_class} (the CLS "
                f"token is not an LLM token), got {vfss!r}"
            )
        layers = model.model.vision_tower.encoder.layer
        n = len(layers)
        last = vfl[-1] if isinstance(vfl, (list, tuple)) else vfl
        pos = int(last) % (n + 1)  # hidden_states = (embeddings, layer 0 out, ..., layer n-1 out)
        if pos == 0:
            raise ValueError("vision_feature_layer must select an encoder layer output, not the embeddings")
        layer = layers[pos - 1]
        V, T = pixel_values_videos.shape[:2]
        cap: dict[str, torch.Tensor] = {}
        hook = layer.register_forward_hook(lambda _m, args, _out: cap.__setitem__("in", args[0]))
        try:
            out = model.model.get_image_features(
                pixel_values_videos.flatten(0, 1),
                vision_feature_layer=vfl,
                vision_feature_select_strategy=vfss,
                return_dict=True,
            )
        finally:
            hook.remove()
        with torch.no_grad():
            sal = internvl_cls_saliency(layer, cap["in"])
        _, g, h = _geometry(model.config)
        # why: one LLM token is one 2x2 block of patches (pixel shuffle), so it gets its block's mean score
        sal = F.avg_pool2d(sal.reshape(V * T, 1, g, g), g // h).reshape(V, T, h, h)
        return out.pooler_output.reshape(V, T, h, h, -1), sal

    # -- the call rewrite ------------------------------------------------------------------------------
    def _order(self, kwargs: dict[str, Any], V: int) -> list[str]:
        order = kwargs.pop("visual_order", None)
        if order is None:
            if kwargs.get("pixel_values") is not None:
                raise ValueError(
                    "visual_order must be given (one 'image'/'video' per visual in prompt order) "
                    "when a call has both pixel_values and pixel_values_videos"
                )
            return ["video"] * V
        order = list(order)
        if any(o not in ("image", "video") for o in order) or order.count("video") != V:
            raise ValueError(f"visual_order must list 'image'/'video' per visual with {V} 'video', got {order!r}")
        return order

    def rewrite(self, model: Any, state: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Encode and prune the videos of one call and return the kwargs for the upstream forward/generate."""
        pv = kwargs.pop("pixel_values_videos")
        raw_ts = kwargs.pop("video_timestamps", None)
        input_ids = kwargs.get("input_ids")
        if input_ids is None:
            raise ValueError("input_ids must be given when pruning video tokens (inputs_embeds alone is unsupported)")
        if pv.dim() != 5:
            raise ValueError(f"pixel_values_videos must have shape (videos, frames, 3, H, W), got {tuple(pv.shape)}")
        cfg = model.config
        V, T = pv.shape[:2]
        order = self._order(kwargs, V)
        vfl = kwargs.get("vision_feature_layer")
        vfl = cfg.vision_feature_layer if vfl is None else vfl
        vfss = kwargs.get("vision_feature_select_strategy") or cfg.vision_feature_select_strategy
        state.mark("vision_start")
        timer = Timer(pv.device).start()
        feats, sal = state.encoding(lambda: self.encode(model, pv, vfl, vfss))
        images = None
        if kwargs.get("pixel_values") is not None:
            # why: upstream refuses pixel_values next to mm_encoder_outputs; images are encoded here by the
            # unchanged upstream method and passed on untouched.
            images = model.model.get_image_features(
                kwargs.pop("pixel_values"),
                vision_feature_layer=vfl,
                vision_feature_select_strategy=vfss,
                return_dict=True,
            ).pooler_output
            images = images.reshape(-1, images.shape[-1])
        vision_s = timer.stop()
        state.mark("vision_end")
        timer.start()
        ts = parse_timestamps(raw_ts, V, T, feats.device)
        check_placeholders_unmasked(input_ids, kwargs.get("attention_mask"), cfg.image_token_id)
        per_frame = feats.shape[2] * feats.shape[3]
        runs = _placeholder_runs(input_ids, cfg.image_token_id)
        keep = torch.ones_like(input_ids, dtype=torch.bool)
        seqs, results, img_pos, v = [], [], 0, 0
        for kind in order:
            if kind == "image":
                if not runs:
                    raise ValueError("input_ids: fewer image placeholder runs than visual_order lists")
                row, start, n = runs.pop(0)
                if images is None or img_pos + n > images.shape[0]:
                    raise ValueError("input_ids: the image placeholders do not match the tiles in pixel_values")
                seqs.append(images[img_pos : img_pos + n])
                img_pos += n
                continue
            cols = _take(runs, T * per_frame)
            res = prune(VideoTokens(features=feats[v], saliency=sal[v].float(), timestamps=ts[v]), state.config)
            counts = torch.bincount(res.positions[:, 0], minlength=T).tolist()
            row, frame_cols = cols[0], cols[1].reshape(T, per_frame)
            for t in range(T):
                keep[row, frame_cols[t, counts[t] :]] = False
            seqs.append(res.features.to(feats.dtype))
            results.append(res)
            v += 1
        if runs or (images is not None and img_pos != images.shape[0]):
            raise ValueError(
                f"input_ids: the placeholders (id {cfg.image_token_id}) do not match the given images "
                f"and videos ({V} x {T} frames x {per_frame} tokens)"
            )
        kwargs = compact_kwargs(kwargs, keep, pad=pad_id(cfg))
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        kwargs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=torch.cat(seqs)[None])}
        prune_s = timer.stop()
        state.mark("prune_end")
        state.stats.update(
            vision_s=vision_s,
            prune_s=prune_s,
            visual_tokens_before=V * T * per_frame,
            visual_tokens_after=sum(r.num_kept for r in results),
            kept_per_video=[r.num_kept for r in results],
        )
        state.last_results = results
        return kwargs

    # -- inputs from frames, presets ---------------------------------------------------------------------
    @classmethod
    def inputs_from_frames(
        cls, config: Any, tokenizer: Any, frames: Any, timestamps: Any, question: str, mean: Any, std: Any
    ) -> dict[str, Any]:
        """Frames as 1 tile each at the tower's size (1, T, 3, S, S), the chat prompt with the upstream per-frame
        runs ``FrameN: <img>`` + placeholders + ``</img>``, and the frame times."""
        from .llava_onevision import chat_prompt

        size, _, h = _geometry(config)
        pv = normalise(frames, (size, size), mean, std)[None]
        ctx = tokenizer.convert_ids_to_tokens(config.image_token_id)
        start = getattr(tokenizer, "start_image_token", None) or "<img>"
        end = getattr(tokenizer, "end_image_token", None) or "</img>"
        video = "\n".join(f"Frame{i + 1}: {start}{ctx * (h * h)}{end}" for i in range(frames.shape[0]))
        ids = tokenizer(
            chat_prompt(tokenizer, video, question), return_tensors="pt", add_special_tokens=False
        ).input_ids
        return {
            "input_ids": ids,
            "pixel_values_videos": pv,
            "video_timestamps": torch.as_tensor(timestamps, dtype=torch.float64)[None],
        }

    @classmethod
    def tango_config(cls, config: Any, variant: str | None, retention: float) -> tuple[Any, list[str]]:
        """The LLaVA-OneVision preset (1-D compact positions, no intra-LLM stage) without its sink cells."""
        from ..config import TangoConfig

        note = (
            "InternVL has no published Tango preset: the LLaVA-OneVision values are used, without its sink "
            "cells (they are cells of the 27x27 SigLIP grid)"
        )
        return TangoConfig.preset("llava-onevision", retention=retention, sinks=()), [note]

    # -- benchmark driver --------------------------------------------------------------------------------
    @classmethod
    def bench_frame_size(cls, model: Any, requested: int | None, default: int | None = None) -> int:
        """The vision tower's fixed tile size (``requested`` must match it)."""
        size = _geometry(model.config)[0]
        if requested is not None and requested != size:
            raise ValueError(
                f"frame_size must be {size} (the fixed InternViT tile size) for {cls.model_class}, got {requested}"
            )
        return size

    @classmethod
    def bench_inputs(cls, model: Any, spec: Any, size: int, device: torch.device) -> Any:
        """Video pixels at ``size`` px, prompt ids with one placeholder run per frame, info."""
        from ..bench.families import framewise_inputs

        per_frame = _geometry(model.config)[2] ** 2
        return framewise_inputs(cls, model, spec, size, device, model.config.image_token_id, per_frame)

    def bench_encode(self, model: Any, inp: Any, warmup: bool = False) -> Any:
        """The encoder pass over the whole video (``warmup``: its first frame only)."""
        from ..bench.families import framewise_encode

        return framewise_encode(self, model, inp, warmup)

    @staticmethod
    def bench_first_video_features(encoded: Any, inp: Any) -> torch.Tensor:
        """The first video's features (T, H, W, D) from :meth:`bench_encode`'s output."""
        return encoded[0][0]

    @classmethod
    def bench_upstream_encode(cls, model: Any, inp: Any) -> dict[str, Any]:
        """``get_image_features`` on every frame (InternVL takes a video as images), as the ``"image"`` output
        the upstream forward scatters into the placeholders in order."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        cfg = model.config
        feats = model.model.get_image_features(
            inp.pixels.flatten(0, 1),
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            return_dict=True,
        ).pooler_output
        return {"image": BaseModelOutputWithPooling(pooler_output=feats.reshape(-1, feats.shape[-1])[None])}


def _placeholder_runs(input_ids: torch.Tensor, token_id: int) -> list[tuple[int, int, int]]:
    """(row, start, length) of every maximal run of ``token_id`` in row-major order."""
    rows, cols = (input_ids == token_id).nonzero(as_tuple=True)
    runs: list[tuple[int, int, int]] = []
    for r, c in zip(rows.tolist(), cols.tolist()):
        if runs and runs[-1][0] == r and runs[-1][1] + runs[-1][2] == c:
            runs[-1] = (r, runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((r, c, 1))
    return runs


def _take(runs: list[tuple[int, int, int]], n: int) -> tuple[int, torch.Tensor]:
    """Pop the next ``n`` placeholders (whole runs, one row) off ``runs``: (row, their columns)."""
    cols: list[int] = []
    row = runs[0][0] if runs else -1
    while len(cols) < n and runs and runs[0][0] == row:
        r, s, k = runs.pop(0)
        cols.extend(range(s, s + k))
    if len(cols) != n:
        raise ValueError(
            f"input_ids: every video needs {n} placeholder tokens in whole runs of one row (one run per frame)"
        )
    return row, torch.tensor(cols, dtype=torch.long)
