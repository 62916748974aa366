"""LLaVA-OneVision in vLLM with any tango_prune method: ``TangoLlavaOnevisionForConditionalGeneration``.

LLaVA positions are 1-D and compact, so nothing travels with the embeddings: the processor gives every video
exactly ``budget + 1`` placeholders (the kept tokens, then the one ``image_newline`` of the OneVision layout)
and the model fills them with the kept features in grid order, then the newline, as the transformers adapter
does. Saliency: the mean attention each patch receives in the last SigLIP layer the LLM uses (the adapter's
fallback for checkpoints without SigLIP's pooling head; vLLM loads no head), computed from that layer's own
q/k projection, resampled to the pooled grid like the features. Frame times are 0, 1, ..., T-1 seconds, the
adapter's default. Only the OneVision layout (bilinear pooling, vLLM's own) is served: vLLM has no
LLaVA-Video layout.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from vllm.model_executor.models.llava_onevision import (
    LlavaOnevisionDummyInputsBuilder,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionMultiModalProcessor,
    LlavaOnevisionProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.parse import VideoProcessorItems
from vllm.multimodal.processing import PromptReplacement

from ..api import prune
from ..tokens import VideoTokens
from .config import FrontendConfigMixin, parse_config, video_budget_for_grid
from .runner import check_no_evs
from .saliency import all_reduce_heads
from .selection import fit_to_budget

__all__ = ["TangoLlavaOnevisionForConditionalGeneration", "TangoLlavaOnevisionMultiModalProcessor"]

HISTORY = 64


def _pooled(info_or_config: Any) -> tuple[int, int]:
    """(patch grid side, pooled side) of the OneVision layout: ``ceil(g / 2)`` per side."""
    vc = info_or_config.vision_config
    g = vc.image_size // vc.patch_size
    return g, -(-g // 2)


class TangoLlavaOnevisionMultiModalProcessor(FrontendConfigMixin, LlavaOnevisionMultiModalProcessor):
    """The upstream processor with each video's placeholder count set to the budget plus its newline."""

    def _get_prompt_updates(self, mm_items: Any, hf_processor_mm_kwargs: Any, out_mm_kwargs: Any) -> Any:
        updates = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        cfg = self.info.get_hf_config()
        video_id = cfg.video_token_index
        _, side = _pooled(cfg)
        retention = self.tango.retention

        def video(item_idx: int) -> list[int]:
            frames = mm_items.get_items("video", VideoProcessorItems).get_num_frames(item_idx)
            return [video_id] * (video_budget_for_grid(frames, side, side, retention) + 1)

        return [u for u in updates if u.modality != "video"] + [
            PromptReplacement(modality="video", target=[video_id], replacement=video)
        ]


def received_attention(attn: Any, x: torch.Tensor) -> torch.Tensor:
    """Mean attention each patch receives, fp32 (N, P), from a SigLIP attention module's normalised input
    (N, P, D); frame by frame, so one (heads, P, P) matrix exists at a time."""
    N, P, _ = x.shape
    nh, hd = attn.num_heads_per_partition, attn.head_dim
    tp = getattr(attn, "tp_size", 1)
    out = torch.empty(N, P, dtype=torch.float32, device=x.device)
    for n in range(N):
        qkv, _ = attn.qkv_proj(x[n])
        q, k, _ = qkv.float().chunk(3, dim=-1)
        q = q.reshape(P, nh, hd).transpose(0, 1)
        k = k.reshape(P, nh, hd).transpose(0, 1)
        a = torch.softmax(q @ k.transpose(1, 2) * (hd**-0.5), dim=-1)  # (nh, P, P)
        out[n] = a.mean(dim=(0, 1)) if tp == 1 else a.mean(dim=1).sum(dim=0)
    return out if tp == 1 else all_reduce_heads(out, nh * tp)


@MULTIMODAL_REGISTRY.register_processor(
    TangoLlavaOnevisionMultiModalProcessor,
    info=LlavaOnevisionProcessingInfo,
    dummy_inputs=LlavaOnevisionDummyInputsBuilder,
)
class TangoLlavaOnevisionForConditionalGeneration(LlavaOnevisionForConditionalGeneration):
    """vLLM's LLaVA-OneVision with the videos pruned by the configured tango_prune method."""

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        tango = parse_config(vllm_config.model_config.hf_config)
        check_no_evs(vllm_config.model_config.multimodal_config)
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.tango = tango
        #: per pruned video: {"result": PruneResult, "grid": (T, H, W)}
        self.tango_history: list[dict[str, Any]] = []

    def _encode_frames(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features (N, s, s, D) and saliency (N, s, s) fp32 of N frames."""
        attn = self.vision_tower.vision_model.encoder.layers[-1].self_attn
        cap: dict[str, torch.Tensor] = {}

        def hook(_m: Any, args: tuple, kwargs: dict) -> None:
            cap["x"] = args[0] if args else kwargs["hidden_states"]

        handle = attn.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            feats = self._video_pixels_to_features(self.vision_tower, pixels)
        finally:
            handle.remove()
        g, s = _pooled(self.config)
        with torch.no_grad():
            sal = received_attention(attn, cap["x"])
            if self.config.vision_feature_select_strategy == "default":
                sal = sal[:, 1:]
            sal = F.interpolate(sal.reshape(-1, 1, g, g), size=[s, s], mode="bilinear")
        return feats.reshape(feats.shape[0], s, s, -1), sal.reshape(-1, s, s)

    def _process_video_pixels(self, inputs: Any) -> list[torch.Tensor]:
        pixels = inputs["pixel_values_videos"]
        videos = list(pixels) if isinstance(pixels, (list, tuple)) else list(pixels.unbind(0))
        out = []
        nl = self.image_newline
        for frames in videos:
            feats, sal = self._encode_frames(frames)
            T, s = feats.shape[0], feats.shape[1]
            ts = torch.arange(T, dtype=torch.float64, device=feats.device)
            tokens = VideoTokens(features=feats, saliency=sal, timestamps=ts)
            res = prune(tokens, self.tango.method)
            res = fit_to_budget(tokens, res, video_budget_for_grid(T, s, s, self.tango.retention))
            out.append(torch.cat([res.features, nl[None].to(res.features.dtype)], dim=0))
            self.tango_history = self.tango_history[-(HISTORY - 1) :] + [{"result": res, "grid": (T, s, s)}]
        return out
