"""Tiny random-weight upstream models for the adapter tests, saved and loaded back through the real path."""

from __future__ import annotations

import torch

VIDEO_ID = 121
IMAGE_ID = 120


def _save_load(model, cls, tmp_path, attn):
    model.save_pretrained(tmp_path)
    return cls.from_pretrained(tmp_path, attn_implementation=attn).eval()


def tiny_llava(tmp_path, *, head: bool = False, attn: str = "sdpa", layers: int = 2, name: str | None = None):
    """LlavaOnevisionForConditionalGeneration: SigLIP 28 px / patch 4 (7x7 -> 4x4 tokens), Qwen2 LLM of 32 dims."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    cfg = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, image_size=28, patch_size=4, vision_use_head=head),
        text_config=dict(model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=128, max_position_embeddings=1024,
                         pad_token_id=0),
        image_token_index=IMAGE_ID, video_token_index=VIDEO_ID, vision_feature_layer=-1,
        image_grid_pinpoints=[[28, 28]])
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
        ids[i, L - len(r):] = torch.tensor(r)
        am[i, L - len(r):] = 1
    return ids, am
