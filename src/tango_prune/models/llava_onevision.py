"""Adapter for ``LlavaOnevisionForConditionalGeneration`` (LLaVA-OneVision and LLaVA-Video checkpoints).

Hook: the upstream ``get_video_features`` is called unchanged to encode the video; two temporary forward
hooks (removed before the call returns) on the SigLIP encoder layer whose output the LLM receives capture
that layer's input and output for the saliency, and, for the LLaVA-Video layout, one on the projector
captures the un-pooled projected features. The pruned visual sequences go back into the unmodified upstream
``forward`` through its documented ``mm_encoder_outputs`` argument, together with ``input_ids`` /
``attention_mask`` from which the dropped placeholders were removed (docs/algorithm.md §3.1: LLaVA positions are
compact).

Two layouts (``variant``):

- ``"llava-onevision"``: features exactly as upstream (bilinear 27 -> 14 pooling); kept tokens then one
  ``image_newline``.
- ``"llava-video"``: the LLaVA-Video recipe (2x2 average pooling 27 -> 13, last row/column dropped); after
  pruning, a row's newline is kept iff the row kept a token. Upstream HF has no LLaVA-Video layout, so in
  this variant even retention 1.0 differs from the unpatched model (by design).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from ..api import prune
from ..preprocess import SIGLIP_MEAN_STD, normalise, pooled_size
from ..tokens import PruneResult, VideoTokens
from .base import ModelFamily
from .common import Timer, check_placeholders_unmasked, compact_kwargs, find_video_spans, pad_id, parse_timestamps
from .fastv import FastV, FastVConfig, FastVPlan

__all__ = ["LlavaOnevisionAdapter", "siglip_head_saliency", "siglip_received_attention"]

VARIANTS = ("llava-onevision", "llava-video")


def siglip_head_saliency(vision_tower: Any, hidden: torch.Tensor) -> torch.Tensor:
    """Head-averaged attention of SigLIP's attention-pooling probe over the patch tokens, fp32 (N, P).

    ``vision_tower`` is any module with SigLIP's ``post_layernorm`` and ``head`` (the tower itself, or a
    :class:`~tango_prune.models.siglip_head.SaliencyHead` loaded from the original checkpoint). ``hidden``
    (N, P, Dv) are the patch features the LLM receives; as in the published code they are post-layernormed
    before the probe attends to them.
    """
    head = vision_tower.head
    mha = head.attention
    x = vision_tower.post_layernorm(hidden).float()
    D = x.shape[-1]
    nh = mha.num_heads
    hd = D // nh
    w = mha.in_proj_weight.float()
    b = mha.in_proj_bias.float() if mha.in_proj_bias is not None else torch.zeros(3 * D, device=w.device)
    q = F.linear(head.probe.float().reshape(1, D), w[:D], b[:D]).reshape(nh, hd)
    k = F.linear(x, w[D : 2 * D], b[D : 2 * D]).reshape(x.shape[0], x.shape[1], nh, hd)
    logits = torch.einsum("hd,nphd->nhp", q, k) / math.sqrt(hd)
    return torch.softmax(logits, dim=-1).mean(dim=1)


def siglip_received_attention(layer: Any, layer_input: torch.Tensor) -> torch.Tensor:
    """Fallback saliency: mean attention each patch receives in one SigLIP encoder layer, fp32 (N, P).

    Computed frame by frame from the layer's own q/k projections, so at most one (heads, P, P) matrix
    exists at a time and the model's attention implementation is left alone.
    """
    attn = layer.self_attn
    x = layer.layer_norm1(layer_input)
    N, P, D = x.shape
    nh = attn.num_heads
    hd = D // nh
    out = torch.empty(N, P, dtype=torch.float32, device=x.device)
    for n in range(N):
        q = attn.q_proj(x[n]).float().reshape(P, nh, hd).transpose(0, 1)
        k = attn.k_proj(x[n]).float().reshape(P, nh, hd).transpose(0, 1)
        a = torch.softmax(q @ k.transpose(1, 2) * (hd**-0.5), dim=-1)  # (nh, P, P)
        out[n] = a.mean(dim=(0, 1))
    return out


class LlavaOnevisionAdapter(ModelFamily):
    """The LLaVA-OneVision family (also LLaVA-Video checkpoints in HF format): saliency, pruning and
    re-insertion for one model instance (no per-call state of its own), inputs from frames, presets and the
    benchmark driver."""

    model_class = "LlavaOnevisionForConditionalGeneration"
    variants = VARIANTS
    default_frames = 32
    normalisation = SIGLIP_MEAN_STD
    stage_types = (FastVConfig,)

    def __init__(self, model: Any, variant: str | None = None, saliency_head: Any = None) -> None:
        if variant is None:
            variant = self.detect_variant(model)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS} for {self.model_class}, got {variant!r}")
        self.variant = variant
        vt = model.model.vision_tower
        #: the module whose post_layernorm + attention-pooling head score the patches (None: fallback)
        self.head_module: Any = vt if getattr(vt, "use_head", False) and hasattr(vt, "head") else None
        if saliency_head is not None:
            from .siglip_head import load_saliency_head

            ref = next(vt.parameters())
            self.head_module = load_saliency_head(
                saliency_head, model.config.vision_config.hidden_size, device=ref.device, dtype=ref.dtype
            )
        self.has_head = self.head_module is not None
        if not self.has_head:
            warnings.warn(
                "tango-prune: this LLaVA checkpoint has no SigLIP attention-pooling head; saliency falls "
                "back to the mean attention each patch receives in the last used vision layer (pass "
                "saliency_head='google/siglip-so400m-patch14-384' for the paper's setting)",
                stacklevel=4,
            )

    @classmethod
    def detect_variant(cls, model: Any) -> str:
        """``"llava-video"`` when the checkpoint name (of a model or a config) names LLaVA-Video, as the
        published code decides, else ``"llava-onevision"``."""
        config = getattr(model, "config", model)
        # Only the last path component: a parent directory's name says nothing about the checkpoint.
        name = str(getattr(config, "_name_or_path", "") or "").rstrip("/\\").lower()
        name = name.replace("\\", "/").rsplit("/", 1)[-1]
        return "llava-video" if "llava-video" in name or "llava_video" in name else "llava-onevision"

    # -- vision side ---------------------------------------------------------------------------------
    def _layer_index(self, model: Any, vfl: Any) -> int:
        n = len(model.model.vision_tower.encoder.layers)
        last = vfl[-1] if isinstance(vfl, (list, tuple)) else vfl
        pos = int(last) % (n + 1)  # hidden_states = (embeddings, layer 0 out, ..., layer n-1 out)
        if pos == 0:
            raise ValueError("vision_feature_layer must select an encoder layer output, not the embeddings")
        return pos - 1

    def encode(
        self, model: Any, pixel_values_videos: torch.Tensor, vfl: Any, vfss: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (V, T, H, W, D) on the LLM grid and saliency (V, T, H, W) fp32 for ``pixel_values_videos``."""
        base = model.model
        vt = base.vision_tower
        V, T = pixel_values_videos.shape[:2]
        layer = vt.encoder.layers[self._layer_index(model, vfl)]
        cap: dict[str, torch.Tensor] = {}

        def layer_hook(_m, args, output):  # why: the layer the LLM receives, before any projection
            cap["in"] = args[0]
            cap["out"] = output[0] if isinstance(output, tuple) else output

        hooks = [layer.register_forward_hook(layer_hook)]
        if self.variant == "llava-video":
            hooks.append(
                base.multi_modal_projector.register_forward_hook(lambda _m, _a, out: cap.__setitem__("proj", out))
            )
        try:
            out = base.get_video_features(
                pixel_values_videos, vision_feature_layer=vfl, vision_feature_select_strategy=vfss, return_dict=True
            )
            with torch.no_grad():
                hidden = cap["out"][:, 1:] if vfss == "default" else cap["out"]
                if self.head_module is not None:
                    sal = siglip_head_saliency(self.head_module, hidden)
                else:
                    sal = siglip_received_attention(layer, cap["in"])
                    sal = sal[:, 1:] if vfss == "default" else sal
        finally:
            for h in hooks:
                h.remove()
        g = model.config.vision_config.image_size // model.config.vision_config.patch_size
        sal = sal.reshape(V * T, 1, g, g)
        if self.variant == "llava-onevision":
            # Upstream apply_pooling: bilinear resampling to ceil(g/2); the saliency map is resampled alike.
            feats = out.pooler_output[:, :-1]
            hs = pooled_size(model.config.vision_config.image_size, model.config.vision_config.patch_size)
            sal = F.interpolate(sal, size=[hs, hs], mode="bilinear")
            feats = feats.reshape(V, T, hs, hs, -1)
        else:
            # LLaVA-Video: 2x2 average pooling (floor: the last odd row/column is dropped), scores alike.
            proj = cap["proj"]
            D = proj.shape[-1]
            x = proj.reshape(V * T, g, g, D).permute(0, 3, 1, 2)
            x = F.avg_pool2d(x, 2)
            hs = x.shape[-1]
            feats = x.permute(0, 2, 3, 1).reshape(V, T, hs, hs, D)
            sal = F.avg_pool2d(sal, 2)
        return feats, sal.reshape(V, T, hs, hs)

    # -- re-insertion ----------------------------------------------------------------------------------
    def visual_sequence(self, model: Any, result: PruneResult) -> torch.Tensor:
        """The embeddings that replace one video's placeholders: kept tokens plus newline(s)."""
        nl = model.model.image_newline.to(result.features.device, result.features.dtype)
        if self.variant == "llava-onevision":
            return torch.cat([result.features, nl[None]], dim=0)
        T, H, W = result.grid
        pos = result.positions
        tok_key = pos[:, 0] * H * (W + 1) + pos[:, 1] * (W + 1) + pos[:, 2]
        rows = torch.unique(pos[:, 0] * H + pos[:, 1])  # active rows (t*H + h), sorted
        nl_key = torch.div(rows, H, rounding_mode="floor") * H * (W + 1) + (rows % H) * (W + 1) + W
        keys = torch.cat([tok_key, nl_key])
        seq = torch.cat([result.features, nl[None].expand(rows.numel(), -1)], dim=0)
        return seq[torch.argsort(keys)]

    def upstream_tokens_per_video(self, model: Any, T: int) -> int:
        """Placeholders the upstream processor puts in ``input_ids`` per video (OV layout + one newline)."""
        return T * pooled_size(model.config.vision_config.image_size, model.config.vision_config.patch_size) ** 2 + 1

    # -- the call rewrite ------------------------------------------------------------------------------
    def rewrite(self, model: Any, state: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Encode and prune the videos of one call and return the kwargs for the upstream forward/generate."""
        pv = kwargs.pop("pixel_values_videos")
        kwargs.pop("image_sizes_videos", None)
        raw_ts = kwargs.pop("video_timestamps", None)
        input_ids = kwargs.get("input_ids")
        if input_ids is None:
            raise ValueError("input_ids must be given when pruning video tokens (inputs_embeds alone is unsupported)")
        if pv.dim() != 5:
            raise ValueError(f"pixel_values_videos must have shape (videos, frames, 3, H, W), got {tuple(pv.shape)}")
        cfg = model.config
        vfl = kwargs.get("vision_feature_layer")
        vfl = cfg.vision_feature_layer if vfl is None else vfl
        vfss = kwargs.get("vision_feature_select_strategy") or cfg.vision_feature_select_strategy
        V, T = pv.shape[:2]
        state.mark("vision_start")
        timer = Timer(pv.device).start()
        mm = dict(kwargs.get("mm_encoder_outputs") or {})
        # why: features follow the caller's grad mode (training through a pruned model keeps gradients to the
        # vision tower and projector); only the saliency is computed without a graph.
        feats, sal = state.encoding(lambda: self.encode(model, pv, vfl, vfss))
        if kwargs.get("pixel_values") is not None:
            # why: upstream refuses pixel inputs next to mm_encoder_outputs, so images are encoded here,
            # by the unchanged upstream method, and passed the same way (untouched).
            mm["image"] = model.model.get_image_features(
                kwargs.pop("pixel_values"),
                kwargs.get("image_sizes"),
                vision_feature_layer=vfl,
                vision_feature_select_strategy=vfss,
                vision_aspect_ratio=kwargs.get("vision_aspect_ratio"),
                batch_num_images=kwargs.get("batch_num_images"),
                return_dict=True,
            )
        vision_s = timer.stop()
        state.mark("vision_end")
        timer.start()
        ts = parse_timestamps(raw_ts, V, T, feats.device)
        span_len = self.upstream_tokens_per_video(model, T)
        spans = find_video_spans(input_ids, cfg.video_token_id, [span_len] * V)
        check_placeholders_unmasked(input_ids, kwargs.get("attention_mask"), cfg.video_token_id)
        keep = torch.ones_like(input_ids, dtype=torch.bool)
        seqs, results = [], []
        for v in range(V):
            tokens = VideoTokens(features=feats[v], saliency=sal[v].float(), timestamps=ts[v])
            res = prune(tokens, state.config)
            seq = self.visual_sequence(model, res)
            if seq.shape[0] > span_len:
                raise ValueError(f"video {v}: {seq.shape[0]} visual tokens do not fit its {span_len} placeholders")
            sp = spans[v]
            keep[sp.row, sp.start + seq.shape[0] : sp.start + sp.length] = False
            seqs.append(seq)
            results.append(res)
        kwargs = compact_kwargs(kwargs, keep, pad=pad_id(cfg))
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        mm["video"] = BaseModelOutputWithPooling(pooler_output=torch.cat(seqs, dim=0)[None])
        kwargs["mm_encoder_outputs"] = mm
        prune_s = timer.stop()
        state.mark("prune_end")
        state.stats.update(
            vision_s=vision_s,
            prune_s=prune_s,
            visual_tokens_before=V * span_len,
            visual_tokens_after=sum(int(s.shape[0]) for s in seqs),
            kept_per_video=[r.num_kept for r in results],
        )
        state.last_results = results
        fastv = next((st for st in state.stages if isinstance(st, FastV)), None)
        if fastv is not None:
            fastv.plan = FastVPlan(
                video=mm["video"],
                spans=_new_spans(kwargs["input_ids"], cfg.video_token_id, [s.shape[0] for s in seqs]),
                prompt_len=kwargs["input_ids"].shape[1],
                prompt_mask=kwargs.get("attention_mask"),
            )
        return kwargs

    def install(self, model: Any, state: Any) -> None:
        """Install the intra-LLM FastV stage when ``apply`` was given one (``stages=[FastVConfig(...)]``)."""
        super().install(model, state)
        fastv = [sc for sc in state.stage_configs if isinstance(sc, FastVConfig)]
        if len(fastv) > 1:
            raise ValueError("stages: at most one FastV stage")
        if fastv:
            state.stages.append(FastV(model, state, fastv[0].layer, fastv[0].keep))

    # -- inputs from frames, presets ---------------------------------------------------------------------
    @classmethod
    def inputs_from_frames(
        cls, config: Any, tokenizer: Any, frames: Any, timestamps: Any, question: str, mean: Any, std: Any
    ) -> dict[str, Any]:
        """Pixels (1, T, 3, S, S) at the tower's size, the chat prompt with T * tokens-per-frame + 1 video
        placeholders, and the frame times."""
        size = config.vision_config.image_size
        pv = normalise(frames, (size, size), mean, std)[None]
        n = frames.shape[0] * pooled_size(size, config.vision_config.patch_size) ** 2 + 1
        tok = tokenizer.convert_ids_to_tokens(config.video_token_id)
        text = chat_prompt(tokenizer, tok, question).replace(tok, tok * n, 1)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
        return {
            "input_ids": ids,
            "pixel_values_videos": pv,
            "video_timestamps": torch.as_tensor(timestamps, dtype=torch.float64)[None],
        }

    @classmethod
    def tango_config(cls, config: Any, variant: str | None, retention: float) -> tuple[Any, list[str]]:
        """The published preset of the variant for this checkpoint: the pre-LLM retention of LLaVA-Video uses
        the language model's own layer count; the sink cells are for the 27x27 SigLIP grid and the FastV layer
        (18) needs a deeper LLM, so other geometries drop them (with a note) instead of failing."""
        from ..config import TangoConfig

        variant = variant or cls.detect_variant(config)
        overrides: dict[str, Any] = {}
        notes = []
        if config.vision_config.image_size // config.vision_config.patch_size != 27:
            overrides["sinks"] = ()
            notes.append("non-standard vision grid: the preset's sink cells are not used")
        layers = config.text_config.num_hidden_layers
        fastv = next(iter(cls.stage_configs(config, variant)), None)
        if variant == "llava-video" and fastv is None:
            notes.append(f"{layers}-layer language model: the intra-LLM FastV stage (layer 18) is off")
        cfg = TangoConfig.preset(variant, retention=retention, llm_layers=layers, fastv=fastv, **overrides)
        return cfg, notes

    @classmethod
    def stage_configs(cls, config: Any, variant: str | None) -> tuple[Any, ...]:
        """LLaVA-Video's published FastV stage (layer 18, keep 0.5) when the language model is deeper than 18
        layers; otherwise (and for OneVision) none."""
        variant = variant or cls.detect_variant(config)
        if variant != "llava-video" or config.text_config.num_hidden_layers <= 18:
            return ()
        return (FastVConfig(),)

    # -- benchmark driver --------------------------------------------------------------------------------
    @classmethod
    def bench_frame_size(cls, model: Any, requested: int | None, default: int | None = None) -> int:
        """The vision tower's fixed ``image_size`` (``requested`` must match it)."""
        size = model.config.vision_config.image_size
        if requested is not None and requested != size:
            raise ValueError(
                f"frame_size must be {size} (the fixed SigLIP input size) for {cls.model_class}, got {requested}"
            )
        return size

    @classmethod
    def bench_inputs(cls, model: Any, spec: Any, size: int, device: torch.device) -> Any:
        """Video pixels at ``size`` px, prompt ids with T * tokens-per-frame + 1 video placeholders, info."""
        from ..bench.families import framewise_inputs

        per_frame = pooled_size(size, model.config.vision_config.patch_size) ** 2
        # upstream OV layout: one newline per video
        return framewise_inputs(cls, model, spec, size, device, model.config.video_token_id, per_frame, extra=1)

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
        """``get_video_features`` with the checkpoint's vision layer and selection strategy."""
        from ..bench.families import encoder_output

        cfg = model.config
        out = model.model.get_video_features(
            inp.pixels,
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            return_dict=True,
        )
        return {"video": encoder_output(out)}


def chat_prompt(tokenizer: Any, visual: str, question: str) -> str:
    """The user turn ``visual`` + newline + ``question`` through the tokenizer's chat template (a plain
    ``USER: ... ASSISTANT:`` prompt when it has none)."""
    messages = [{"role": "user", "content": f"{visual}\n{question}"}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"USER: {visual}\n{question}\nASSISTANT:"


def _new_spans(input_ids: torch.Tensor, token_id: int, lengths: list[int]) -> list[tuple[int, int, int]]:
    """(row, start, length) of each video's visual sequence after compaction (used by the FastV stage)."""
    return [(s.row, s.start, s.length) for s in find_video_spans(input_ids, token_id, lengths)]
