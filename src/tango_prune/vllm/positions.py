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
    "prompt_positions",
    "frame_group_positions",
    "RANGE_VALUES",
    "place_range_positions",
]

#: base-256 digits per integer
DIGITS = 3
#: values carried per token: t, h, w
VALUES = 3
#: channels appended to every media embedding row
CHANNELS = DIGITS * VALUES
_BASE = 256


def encode_positions(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, V) non-negative integers -> (N, DIGITS * V) digits in ``dtype`` (exact for any float dtype); V is 3
    (t, h, w: :data:`CHANNELS` channels) unless a caller carries more values per token."""
    v = values.to(torch.long)
    if v.numel() and (int(v.min()) < 0 or int(v.max()) >= _BASE**DIGITS):
        raise ValueError(f"positions must lie in [0, {_BASE**DIGITS}), got [{int(v.min())}, {int(v.max())}]")
    digits = [(v // _BASE**k) % _BASE for k in range(DIGITS)]
    return torch.cat(digits, dim=1).to(dtype)


def decode_positions(channels: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_positions`: (N, DIGITS * V) -> (N, V) long."""
    d = channels.to(torch.long).reshape(channels.shape[0], DIGITS, channels.shape[1] // DIGITS)
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


def prompt_positions(num_tokens: int, runs: list[tuple[int, torch.Tensor, int]]) -> tuple[torch.Tensor, int]:
    """M-RoPE positions (3, num_tokens) of a prompt whose media runs are ``(offset, rel, extent)``, in prompt
    order: text advances by one per token; run ``rel`` (n, 3) sits at the position after the text before it,
    and the text after it starts ``extent`` later. Returns the positions and vLLM's ``mrope_position_delta``
    (largest position + 1 - num_tokens)."""
    parts, st, nxt = [], 0, 0
    for offset, rel, extent in runs:
        parts.append(torch.arange(offset - st).expand(3, -1) + nxt)
        nxt += offset - st
        parts.append(rel.T.to(torch.long) + nxt)
        nxt += extent
        st = offset + rel.shape[0]
    parts.append(torch.arange(num_tokens - st).expand(3, -1) + nxt)
    positions = torch.cat(parts, dim=1)
    return positions, int(positions.max()) + 1 - num_tokens if positions.numel() else 0


def frame_group_positions(ids: list[int], media_id: int, grid_h: int, grid_w: int) -> tuple[torch.Tensor, int]:
    """Positions (3, L) of a Qwen3-VL media range (timestamp text and ``<vision_start>``/``<vision_end>``
    around every frame's run of ``media_id`` tokens, all ``grid_h x grid_w``), relative to its first token, and
    its extent (largest position + 1): every frame is its own group at time index 0, as in HF
    ``get_rope_index``, and the text after a frame starts ``max(grid_h, grid_w)`` after the frame's start."""
    frame, extent = qwen_media_positions(1, grid_h, grid_w)
    is_media = torch.tensor(ids, dtype=torch.long) == media_id
    starts = (is_media & ~torch.cat([torch.zeros(1, dtype=torch.bool), is_media[:-1]])).nonzero()[:, 0]
    pos, _ = prompt_positions(len(ids), [(int(s), frame, extent) for s in starts])
    return pos, int(pos.max()) + 1 if pos.numel() else 0


#: values carried per row of a range (:func:`place_range_positions`): t, h, w, row in the range, lead, anchor id
RANGE_VALUES = 6


def place_range_positions(
    input_ids: torch.Tensor, pieces: list[torch.Tensor], positions: torch.Tensor, num_computed_tokens: int
) -> torch.Tensor:
    """The prompt's M-RoPE positions (3, N) with every row of this step's media pieces written at its own.

    For media whose embeddings cover their whole placeholder range (text rows included, laid out by the
    model rather than by the prompt's token ids), each piece is (n, :data:`RANGE_VALUES`) long per row:
    the position relative to the range's first token, the row's index in the range, the range's ``lead``
    (rows before the first ``anchor`` token in the prompt) and the ``anchor`` token id. Pieces come in prompt
    order; the first may continue a range a previous chunk began (it starts at ``num_computed_tokens``), any
    other starts its range, found as the first ``anchor`` token from there on minus ``lead``. Each row is
    placed at the position of the token before its range + 1 + its relative position. Returns a new tensor.
    """
    out = positions.clone()
    ids = torch.as_tensor(input_ids, dtype=torch.long, device=positions.device)
    cursor = num_computed_tokens
    for piece in pieces:
        if piece.shape[0] == 0:
            continue
        piece = piece.to(positions.device, torch.long)
        row0, lead, anchor = (int(x) for x in piece[0, 3:6])
        if row0 > 0:
            if cursor != num_computed_tokens:
                raise ValueError("place_range_positions: only the first piece of a step can continue a range")
            first = cursor
        else:
            hits = (ids[cursor:] == anchor).nonzero()
            if hits.numel() == 0:
                raise ValueError(f"place_range_positions: no token {anchor} after position {cursor}")
            first = cursor + int(hits[0, 0]) - lead
        start, end = first - row0, first + piece.shape[0]
        if first < cursor or end > ids.numel():
            raise ValueError(f"place_range_positions: a piece of {piece.shape[0]} rows does not fit at {first}")
        base = out[0, start - 1] + 1 if start > 0 else 0
        out[:, first:end] = (piece[:, :3] + base).T.to(out.dtype)
        cursor = end
    return out
