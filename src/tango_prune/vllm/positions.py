"""M-RoPE positions of the kept tokens, carried losslessly next to the embeddings.

vLLM's pruning interface has the encoder return each media item's embeddings with its positions appended as
extra channels; the model runner hands them to the model's ``recompute_mrope_positions``, which writes them
into the request's M-RoPE positions (:func:`place_media_positions`). Appended as
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

__all__ = [
    "DIGITS",
    "CHANNELS",
    "encode_positions",
    "decode_positions",
    "qwen_media_positions",
    "place_media_positions",
]

#: base-256 digits per integer
DIGITS = 3
#: values carried per token: t, h, w
VALUES = 3
#: channels appended to every media embedding row
CHANNELS = DIGITS * VALUES
_BASE = 256


def encode_positions(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, 3) non-negative integers -> (N, CHANNELS) digits in ``dtype`` (exact for any float dtype)."""
    v = values.to(torch.long)
    if v.numel() and (int(v.min()) < 0 or int(v.max()) >= _BASE**DIGITS):
        raise ValueError(f"positions must lie in [0, {_BASE**DIGITS}), got [{int(v.min())}, {int(v.max())}]")
    digits = [(v // _BASE**k) % _BASE for k in range(DIGITS)]
    return torch.cat(digits, dim=1).to(dtype)


def decode_positions(channels: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_positions`: (N, CHANNELS) -> (N, 3) long."""
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


def place_media_positions(
    input_ids: torch.Tensor,
    media_positions: list[torch.Tensor],
    positions: torch.Tensor,
    num_computed_tokens: int,
    media_token_ids: tuple[int, ...],
) -> torch.Tensor:
    """The prompt's M-RoPE positions (3, N) with the media tokens of this step replaced by their own.

    ``media_positions`` are (n, 3) positions relative to their item's first token, for the media tokens
    that follow the first ``num_computed_tokens`` prompt tokens, in order (a chunk may hold part of an item).
    Every other position is final already (the model's ``get_mrope_input_positions`` offsets text by each
    item's full extent), so each media token is placed at the position of the token before its run + 1 +
    its own relative position; nothing else moves. Returns a new tensor.
    """
    out = positions.clone()
    if not media_positions:
        return out
    ids = torch.as_tensor(input_ids, dtype=torch.long, device=positions.device)
    media = torch.zeros_like(ids, dtype=torch.bool)
    for token in media_token_ids:
        media |= ids == token
    idx = torch.arange(ids.numel(), device=ids.device)
    first = media.clone()
    first[1:] &= ~media[:-1]
    run_start = torch.cummax(torch.where(first, idx, torch.zeros_like(idx)), dim=0).values
    cols = idx[media & (idx >= num_computed_tokens)]
    rel = torch.cat([p.to(positions.device, torch.long) for p in media_positions])
    if rel.shape[0] > cols.numel():
        raise ValueError(f"media_positions: {rel.shape[0]} positions for {cols.numel()} remaining media tokens")
    cols = cols[: rel.shape[0]]
    base = out[0, run_start[cols] - 1] + 1  # the token before a run is text: its three rows are equal
    out[:, cols] = (rel + base[:, None]).T.to(out.dtype)
    return out
