"""Named random-weight architecture presets for the efficiency benchmark.

Timing does not depend on weight values, so the benchmark builds the real upstream ``transformers`` model
classes from configs that copy the architecture fields of the published checkpoints' ``config.json``
(``llava-hf/llava-onevision-qwen2-{0.5b,7b}-ov-hf``, ``Qwen/Qwen2.5-VL-{3B,7B}-Instruct``) and fills the
weights with small random values. ``tiny-llava-ov`` and ``tiny-qwen2.5-vl`` are few-megabyte models of the same
classes for tests.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

__all__ = ["Preset", "PRESETS", "build", "preset_names"]

_SIGLIP_SO400M = dict(
    model_type="siglip_vision_model",
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=26,
    num_attention_heads=16,
    image_size=384,
    patch_size=14,
    vision_use_head=False,
    layer_norm_eps=1e-6,
)


@dataclasses.dataclass(frozen=True)
class Preset:
    """One architecture: the upstream class name, a config factory and the default frame size / count."""

    name: str
    model_class: str
    make_config: Callable[[], Any]
    image_size: int
    description: str


def _llava_ov(text: dict[str, Any], vision: dict[str, Any] | None = None) -> Callable[[], Any]:
    def make() -> Any:
        from transformers import LlavaOnevisionConfig

        return LlavaOnevisionConfig(
            vision_config=dict(vision or _SIGLIP_SO400M),
            text_config=dict(model_type="qwen2", **text),
            image_token_index=151646,
            video_token_index=151647,
            vision_feature_layer=-1,
            vision_feature_select_strategy="full",
            projector_hidden_act="gelu",
            image_grid_pinpoints=[[384, 384]],
            tie_word_embeddings=text.get("tie_word_embeddings", False),
        )

    return make


def _qwen25_vl(text: dict[str, Any], out_hidden: int, vision: dict[str, Any] | None = None) -> Callable[[], Any]:
    def make() -> Any:
        from transformers import Qwen2_5_VLConfig

        v = vision or dict(
            depth=32,
            hidden_size=1280,
            intermediate_size=3420,
            num_heads=16,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[7, 15, 23, 31],
            hidden_act="silu",
            in_chans=3,
        )
        # tokens_per_second: 2 in the published checkpoints (the config class defaults to 4).
        vision_cfg = dict(v, out_hidden_size=out_hidden, tokens_per_second=2)
        return Qwen2_5_VLConfig(
            text_config=dict(model_type="qwen2_5_vl_text", **text),
            vision_config=vision_cfg,
            image_token_id=151655,
            video_token_id=151656,
            vision_start_token_id=151652,
            vision_end_token_id=151653,
        )

    return make


_QWEN2_05B = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=152000,
    max_position_embeddings=32768,
    rope_theta=1e6,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
_QWEN2_7B = dict(
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    vocab_size=152128,
    max_position_embeddings=32768,
    rope_theta=1e6,
    rms_norm_eps=1e-6,
)

PRESETS: dict[str, Preset] = {
    "llava-ov-0.5b": Preset(
        "llava-ov-0.5b",
        "LlavaOnevisionForConditionalGeneration",
        _llava_ov(_QWEN2_05B),
        384,
        "LLaVA-OneVision-0.5B: SigLIP-so400m/14 at 384 px + Qwen2-0.5B",
    ),
    "llava-ov-7b": Preset(
        "llava-ov-7b",
        "LlavaOnevisionForConditionalGeneration",
        _llava_ov(_QWEN2_7B),
        384,
        "LLaVA-OneVision-7B: SigLIP-so400m/14 at 384 px + Qwen2-7B",
    ),
    "qwen2.5-vl-3b": Preset(
        "qwen2.5-vl-3b",
        "Qwen2_5_VLForConditionalGeneration",
        _qwen25_vl(
            dict(
                hidden_size=2048,
                intermediate_size=11008,
                num_hidden_layers=36,
                num_attention_heads=16,
                num_key_value_heads=2,
                vocab_size=151936,
                max_position_embeddings=128000,
                rope_theta=1e6,
                tie_word_embeddings=True,
                rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
            ),
            2048,
        ),
        448,
        "Qwen2.5-VL-3B-Instruct",
    ),
    "qwen2.5-vl-7b": Preset(
        "qwen2.5-vl-7b",
        "Qwen2_5_VLForConditionalGeneration",
        _qwen25_vl(
            dict(
                hidden_size=3584,
                intermediate_size=18944,
                num_hidden_layers=28,
                num_attention_heads=28,
                num_key_value_heads=4,
                vocab_size=152064,
                max_position_embeddings=128000,
                rope_theta=1e6,
                rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
            ),
            3584,
        ),
        448,
        "Qwen2.5-VL-7B-Instruct",
    ),
    "tiny-llava-ov": Preset(
        "tiny-llava-ov",
        "LlavaOnevisionForConditionalGeneration",
        _llava_ov(
            dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                vocab_size=151680,
                max_position_embeddings=4096,
            ),
            dict(
                model_type="siglip_vision_model",
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=56,
                patch_size=8,
            ),
        ),
        56,
        "a tiny LLaVA-OneVision for tests (7x7 patches -> 4x4 tokens per frame)",
    ),
    "tiny-qwen2.5-vl": Preset(
        "tiny-qwen2.5-vl",
        "Qwen2_5_VLForConditionalGeneration",
        _qwen25_vl(
            dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                vocab_size=151680,
                max_position_embeddings=4096,
                rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]},
            ),
            32,
            dict(
                depth=2,
                hidden_size=32,
                intermediate_size=64,
                num_heads=4,
                patch_size=4,
                spatial_merge_size=2,
                temporal_patch_size=2,
                window_size=16,
                fullatt_block_indexes=[1],
                in_chans=3,
            ),
        ),
        32,
        "a tiny Qwen2.5-VL for tests (8x8 patches -> 4x4 tokens per 2-frame step)",
    ),
}


def preset_names() -> list[str]:
    """Sorted preset names."""
    return sorted(PRESETS)


def build(name: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[Any, Preset]:
    """Instantiate preset ``name`` with random weights (seeded) in ``dtype``; returns (model in eval mode, preset).

    Weights are drawn N(0, 0.02) by a local generator (norm weights stay 1), so activations stay finite and
    no denormal slow path is hit; values are otherwise irrelevant to timing.
    """
    if name not in PRESETS:
        raise ValueError(f"model preset must be one of {preset_names()}, got {name!r}")
    import transformers

    preset = PRESETS[name]
    config = preset.make_config()
    cls = getattr(transformers, preset.model_class)
    from transformers.initialization import no_init_weights

    # Skip the library's (slow, global-RNG) initialisation; buffers (rotary frequencies, position ids) are
    # still computed by the constructors, and the weights are filled below from a local generator.
    with no_init_weights():
        model = cls(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() == 1:
                # Norm scales 1, every bias 0: the usual starting point, and activations stay O(1).
                p.fill_(1.0) if pname.endswith("weight") else p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return model.to(dtype).eval(), preset
