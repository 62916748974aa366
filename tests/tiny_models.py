"""Tiny random-weight upstream models for the adapter tests, saved and loaded back through the real path."""

from __future__ import annotations

import torch

VIDEO_ID = 121
IMAGE_ID = 120


def siglip_vision(head: bool = False) -> dict:
    """The tiny SigLIP tower every LLaVA test model uses: 28 px / patch 4 (7x7 patches, pooled to 4x4 tokens)."""
    return dict(
        model_type="siglip_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=28,
        patch_size=4,
        vision_use_head=head,
    )


def _qwen_vit(out_hidden_size: int) -> dict:
    """What the tiny Qwen ViTs share: 32 dims, 4 heads, patch 4, 2 frames per step, merge 2."""
    return dict(
        hidden_size=32,
        intermediate_size=64,
        num_heads=4,
        out_hidden_size=out_hidden_size,
        patch_size=4,
        temporal_patch_size=2,
        spatial_merge_size=2,
        in_channels=3,
    )


def qwen25_vision(out_hidden_size: int = 32) -> dict:
    """The tiny Qwen2.5-VL ViT every Qwen2.5-VL test model uses: 32 dims, patch 4, merge 2, 16 px windows;
    ``out_hidden_size`` is the LLM width."""
    return dict(_qwen_vit(out_hidden_size), depth=2, window_size=16, fullatt_block_indexes=[1], tokens_per_second=2)


def qwen3_vision(out_hidden_size: int = 32) -> dict:
    """The tiny Qwen3-VL ViT every Qwen3-VL test model uses: 32 dims, patch 4, merge 2, 3 blocks with DeepStack
    levels after blocks 0 and 1; ``out_hidden_size`` is the LLM width."""
    return dict(_qwen_vit(out_hidden_size), depth=3, num_position_embeddings=16, deepstack_visual_indexes=[0, 1])


def _save_load(model, cls, tmp_path, attn):
    model.save_pretrained(tmp_path)
    return cls.from_pretrained(tmp_path, attn_implementation=attn).eval()


def tiny_llava(tmp_path, *, head: bool = False, attn: str = "sdpa", layers: int = 2, name: str | None = None):
    """LlavaOnevisionForConditionalGeneration: SigLIP 28 px / patch 4 (7x7 -> 4x4 tokens), Qwen2 LLM of 32 dims (vocabulary 1024: the benchmark prompt draws ids below 1000)."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    cfg = LlavaOnevisionConfig(
        vision_config=siglip_vision(head),
        text_config=dict(
            model_type="qwen2",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=128,
            max_position_embeddings=1024,
            pad_token_id=0,
        ),
        image_token_index=IMAGE_ID,
        video_token_index=VIDEO_ID,
        vision_feature_layer=-1,
        image_grid_pinpoints=[[28, 28]],
    )
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(cfg)
    # why: random init of the projector is tiny; larger weights make the logits depend visibly on the video
    with torch.no_grad():
        for p in model.model.multi_modal_projector.parameters():
            p.mul_(4.0)
    path = tmp_path / (name or f"llava_{'head' if head else 'nohead'}_{layers}")
    return _save_load(model, LlavaOnevisionForConditionalGeneration, path, attn)


def llava_video_ids(T: int, prefix=(1, 2, 3), suffix=(4, 5), tokens_per_frame: int = 16) -> list[int]:
    """A prompt with one video placeholder span in the upstream OV layout (frames x 16 + 1 newline)."""
    return list(prefix) + [VIDEO_ID] * (T * tokens_per_frame + 1) + list(suffix)


def left_pad(rows: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into (input_ids, attention_mask)."""
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), pad, dtype=torch.long)
    am = torch.zeros((len(rows), L), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, L - len(r) :] = torch.tensor(r)
        am[i, L - len(r) :] = 1
    return ids, am


Q_IMAGE, Q_VIDEO, Q_START, Q_END = 150, 151, 152, 153


def tiny_qwen(tmp_path, *, attn: str = "sdpa"):
    """Qwen2_5_VLForConditionalGeneration: ViT 32 dims / patch 4 / merge 2 / window 16 px, LLM of 32 dims."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    cfg = Qwen2_5_VLConfig(
        vision_config=qwen25_vision(),
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=160,
            max_position_embeddings=4096,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 1e4},
        ),
        image_token_id=Q_IMAGE,
        video_token_id=Q_VIDEO,
        vision_start_token_id=Q_START,
        vision_end_token_id=Q_END,
    )
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    path = tmp_path / f"qwen_{attn}"
    return _save_load(model, Qwen2_5_VLForConditionalGeneration, path, attn)


def tiny_qwen2(tmp_path, *, attn: str = "sdpa"):
    """Qwen2VLForConditionalGeneration: ViT 32 dims / patch 4 / merge 2 (no windows), LLM of 32 dims; the same
    token ids and geometry as :func:`tiny_qwen`."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    cfg = Qwen2VLConfig(
        vision_config=dict(
            depth=2,
            embed_dim=32,
            hidden_size=32,
            mlp_ratio=2,
            num_heads=4,
            patch_size=4,
            temporal_patch_size=2,
            spatial_merge_size=2,
            in_channels=3,
        ),
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=160,
            max_position_embeddings=4096,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 1e4},
        ),
        image_token_id=Q_IMAGE,
        video_token_id=Q_VIDEO,
        vision_start_token_id=Q_START,
        vision_end_token_id=Q_END,
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(cfg)
    return _save_load(model, Qwen2VLForConditionalGeneration, tmp_path / f"qwen2vl_{attn}", attn)


def tiny_qwen3(tmp_path, *, attn: str = "sdpa", real_ids: bool = False):
    """Qwen3VLForConditionalGeneration: ViT 32 dims / patch 4 / merge 2, 3 blocks with DeepStack levels after
    blocks 0 and 1, LLM of 32 dims and 3 layers (the DeepStack features land after layers 0 and 1); the same
    token ids and geometry as :func:`tiny_qwen` (``real_ids``: the checkpoints' vocabulary size and special
    ids instead, for the benchmark's prompts)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    ids = (
        {}
        if real_ids
        else dict(
            image_token_id=Q_IMAGE, video_token_id=Q_VIDEO, vision_start_token_id=Q_START, vision_end_token_id=Q_END
        )
    )

    cfg = Qwen3VLConfig(
        vision_config=qwen3_vision(),
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            vocab_size=151936 if real_ids else 160,
            max_position_embeddings=4096,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 1e4},
        ),
        **ids,
    )
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(cfg)
    # why: random DeepStack mergers are tiny next to the main features; larger ones make a misaligned level
    # change the logits visibly
    with torch.no_grad():
        for p in model.model.visual.deepstack_merger_list.parameters():
            p.mul_(4.0)
    return _save_load(
        model, Qwen3VLForConditionalGeneration, tmp_path / f"qwen3vl_{attn}{'_real' if real_ids else ''}", attn
    )


QWEN_BUILDERS = {"qwen2.5-vl": tiny_qwen, "qwen2-vl": tiny_qwen2, "qwen3-vl": tiny_qwen3}


def qwen_family_ids(model, grids, **kw) -> list[int]:
    """:func:`qwen3_ids` for a Qwen3-VL model (timestamped per-step groups), else :func:`qwen_ids`."""
    return (qwen3_ids if type(model).__name__ == "Qwen3VLForConditionalGeneration" else qwen_ids)(grids, **kw)


def qwen3_ids(grids, prefix=(1, 3), suffix=(4, 5), images=(), stamp=(8, 9)) -> list[int]:
    """Prompt tokens in the Qwen3-VL layout: every temporal step of a video is its own group, a timestamp
    (``stamp`` text tokens, the processor's ``<t seconds>``) then vision start / placeholders / end."""
    ids = list(prefix)
    for t, h, w in images:
        ids += [Q_START] + [Q_IMAGE] * (t * h * w // 4) + [Q_END, 6]
    for t, h, w in grids:
        for _ in range(t):
            ids += list(stamp) + [Q_START] + [Q_VIDEO] * (h * w // 4) + [Q_END]
        ids += [7]
    return ids + list(suffix)


def qwen_video(t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """pixel_values_videos rows for one video of grid (t, h, w) patches (3 channels x 2 frames x 4 x 4)."""
    return torch.randn(t * h * w, 3 * 2 * 4 * 4, generator=torch.Generator().manual_seed(seed))


def qwen_ids(grids, prefix=(1, 3), suffix=(4, 5), images=()) -> list[int]:
    """Prompt tokens: prefix, each image then each video wrapped in vision start/end, suffix."""
    ids = list(prefix)
    for t, h, w in images:
        ids += [Q_START] + [Q_IMAGE] * (t * h * w // 4) + [Q_END, 6]
    for t, h, w in grids:
        ids += [Q_START] + [Q_VIDEO] * (t * h * w // 4) + [Q_END, 7]
    return ids + list(suffix)


def qwen_types(ids: torch.Tensor) -> torch.Tensor:
    """mm_token_type_ids as the processor builds them: 0 text, 1 image, 2 video."""
    return (ids == Q_IMAGE).int() + 2 * (ids == Q_VIDEO).int()


IV_CONTEXT, IV_START, IV_END = 122, 123, 124


def tiny_internvl(tmp_path, *, attn: str = "sdpa"):
    """InternVLForConditionalGeneration: InternViT 32 px / patch 4 (8x8 patches -> 4x4 tokens after the pixel
    shuffle), Qwen2 LLM of 32 dims (vocabulary 1024: the benchmark prompt draws ids below 1000)."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    cfg = InternVLConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=[32, 32],
            patch_size=[4, 4],
        ),
        text_config=dict(
            model_type="qwen2",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=1024,
            max_position_embeddings=2048,
            pad_token_id=0,
        ),
        image_token_id=IV_CONTEXT,
        image_seq_length=16,
        downsample_ratio=0.5,
    )
    torch.manual_seed(0)
    model = InternVLForConditionalGeneration(cfg)
    # why: zero-initialised CLS / position embeddings and tiny projector weights would make the saliency flat and
    # the logits nearly independent of the video
    with torch.no_grad():
        emb = model.model.vision_tower.embeddings
        emb.cls_token.normal_()
        emb.position_embeddings.normal_(std=0.1)
        for p in model.model.multi_modal_projector.parameters():
            p.mul_(4.0)
    return _save_load(model, InternVLForConditionalGeneration, tmp_path / f"internvl_{attn}", attn)


def internvl_video_ids(T: int, prefix=(1, 2, 3), suffix=(4, 5), tokens_per_frame: int = 16) -> list[int]:
    """A prompt with one video in the upstream layout: per frame a label token, <img>, placeholders, </img>."""
    ids = list(prefix)
    for t in range(T):
        ids += [10 + t, IV_START] + [IV_CONTEXT] * tokens_per_frame + [IV_END]
    return ids + list(suffix)
