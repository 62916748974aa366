"""What the plugin's Qwen model classes share: encoding videos with the saliency of the last ViT block, and
the multimodal embeddings vLLM's runner asks for (images unpruned, videos pruned, position channels
appended to every item)."""

from __future__ import annotations

from typing import Any

import torch

from .positions import qwen_media_positions
from .saliency import capture_attention_input, vit_saliency

__all__ = ["QwenPruningMixin"]


class QwenPruningMixin:
    """Mixed in before vLLM's Qwen2.5-VL or Qwen3-VL model class (``self.visual`` is its vision tower); the
    family supplies :meth:`_prune_videos`, :meth:`_image_rows` and, for a windowed tower, :meth:`_raster_reverse`."""

    # why: provided by the vLLM model class this is mixed into
    visual: Any
    _parse_and_validate_multimodal_inputs: Any
    _process_image_input: Any

    def _raster_reverse(self, grids: list[list[int]]) -> torch.Tensor | None:
        """Maps the merge units of the tower's layout back to raster order; None where it keeps raster order."""
        return None

    def _image_rows(self, embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One image's embeddings (n, D) with their positions (n, 3) appended as the family's channels."""
        raise NotImplementedError

    def _prune_videos(self, video_input: Any) -> tuple[torch.Tensor, ...]:
        """Every video of ``video_input`` pruned, one tensor of rows (channels appended) per video."""
        raise NotImplementedError

    def _encode_videos(self, pixel_values: torch.Tensor, grids: list[list[int]]) -> tuple[tuple, list[torch.Tensor]]:
        """Per-video tower output (raster order) and saliency (t, h', w') fp32."""
        visual = self.visual
        # why: in data-parallel encoder mode every rank holds the whole tower; encoding every video here keeps
        # the saliency next to its features (the sharded helper would return other ranks' features only)
        with capture_attention_input(visual.blocks[-1].attn) as cap:
            embeds = visual(pixel_values, grid_thw=grids)
        reverse = self._raster_reverse(grids)
        with torch.no_grad():
            sal = vit_saliency(
                visual.blocks[-1].attn,
                cap,
                grids,
                visual.spatial_merge_size,
                None if reverse is None else reverse.to(cap["x"].device),
            )
        sizes = [t * h * w // visual.spatial_merge_size**2 for t, h, w in grids]
        return embeds.split(sizes), sal

    @staticmethod
    def _check_frames(video_input: Any) -> None:
        """``ValueError`` for precomputed video embeddings: they carry no saliency."""
        if video_input["type"] == "video_embeds":
            raise ValueError("tango_prune: precomputed video_embeds carry no saliency; send the video frames")

    def embed_multimodal(self, **kwargs: object) -> Any:
        """Images unpruned and videos pruned, every item with its position channels appended."""
        inputs = self._parse_and_validate_multimodal_inputs(**kwargs)
        out: tuple[torch.Tensor, ...] = ()
        merge = self.visual.spatial_merge_size
        for modality, item in inputs.items():
            if modality == "image":
                embeds = self._process_image_input(item)
                for emb, (t, h, w) in zip(embeds, item["image_grid_thw"].tolist()):
                    pos, _ = qwen_media_positions(t, h // merge, w // merge)
                    out += (self._image_rows(emb, pos),)
            elif modality == "video":
                out += self._prune_videos(item)
        return out
