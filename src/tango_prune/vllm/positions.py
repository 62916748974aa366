"""M-RoPE positions of the kept tokens, carried losslessly next to the embeddings.

vLLM's pruning interface has the encoder return each media item's embeddings with its positions appended as
extra channels; the model runner splits them off and rewrites the request's M-RoPE positions. Appended as
plain values they are cast to the embedding dtype, and bf16 represents integers exactly only up to 256 (257
becomes 256). Here every integer is written as :data:`DIGITS` base-256 digits (0..255, exact in bf16, fp16
and fp32), so positions up to 256**3 - 1 survive any embedding dtype.

The positions follow the upstream HF ``get_rope_index`` of Qwen2-VL / Qwen2.5-VL: temporal index
``int(step * (tokens_per_second * second_per_grid_t))`` evaluated in fp32 (the real, fractional step
duration: never truncated to whole seconds), spatial indices the merged row and column. The text after a
media item starts at the item's largest position + 1, as in vLLM's unpruned path, so it never overlaps the
video's positions (HF starts it at ``max(h, w)``, which overlaps when the video's time positions exceed it).
"""

from __future__ import annotations

import torch

__all__ = ["DIGITS", "CHANNELS", "encode_positions", "decode_positions", "qwen_media_positions"]

#: base-256 digits per integer
DIGITS = 3
#: values carried per token: t, h, w, and the offset of the text that follows the media item
VALUES = 4
#: channels appended to every media embedding row
CHANNELS = DIGITS * VALUES
_BASE = 256


def encode_positions(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, 4) non-negative integers -> (N, CHANNELS) digits in ``dtype`` (exact for any float dtype)."""
    v = values.to(torch.long)
    if v.numel() and (int(v.min()) < 0 or int(v.max()) >= _BASE**DIGITS):
        raise ValueError(f"positions must lie in [0, {_BASE**DIGITS}), got [{int(v.min())}, {int(v.max())}]")
    digits = [(v // _BASE**k) % _BASE for k in range(DIGITS)]
    return torch.cat(digits, dim=1).to(dtype)


def decode_positions(channels: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_positions`: (N, CHANNELS) -> (N, 4) long."""
    d = channels.to(torch.long).reshape(channels.shape[0], DIGITS, VALUES)
    scale = torch.tensor([_BASE**k for k in range(DIGITS)], dtype=torch.long, device=channels.device)
    return (d * scale[None, :, None]).sum(dim=1)


def qwen_media_positions(
    grid_t: int, grid_h: int, grid_w: int, tokens_per_second: float = 1, second_per_grid: float | None = None
) -> tuple[torch.Tensor, int]:
    """(t, h, w) positions (t*h*w, 3) of a media item on its LLM token grid, relative to its first token, in
    raster order, and the offset of the text after it (largest position + 1).

    ``second_per_grid`` is the video's step duration in seconds (None for an image: the step index itself);
    the interval ``tokens_per_second * second_per_grid`` and the products are taken in fp32 and truncated,
    exactly the HF expression on its fp32 ``second_per_grid_ts`` tensor."""
    steps = torch.arange(grid_t, dtype=torch.long)
    if second_per_grid is not None:
        steps = (steps * (tokens_per_second * torch.tensor(second_per_grid, dtype=torch.float32))).long()
    t, h, w = torch.meshgrid(steps, torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    pos = torch.stack([t.reshape(-1), h.reshape(-1), w.reshape(-1)], dim=1)
    return pos, int(pos.max()) + 1
