"""Kept-token picture: the clip's frames with the token grid, dropped tokens dimmed and kept ones marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["KIND_COLORS", "render_kept"]

#: outline colour per ``TokenKind`` code: salient (kept as is), context (merged anchor), static
KIND_COLORS = {0: (255, 64, 64), 1: (64, 160, 255), 2: (255, 210, 0)}


def render_kept(
    frames: np.ndarray,
    grid: tuple[int, int],
    indices: torch.Tensor,
    kinds: torch.Tensor | None,
    path: str | Path,
    scale: int = 4,
    per_row: int = 8,
    title: str | None = None,
) -> Path:
    """Draw ``frames`` (T, H, W, 3) uint8 as a sheet, ``per_row`` frames a row, each upscaled ``scale`` times,
    with the (h, w) token ``grid`` over it: tokens not in ``indices`` (flat indices into (T, h, w)) are
    dimmed, kept ones outlined in :data:`KIND_COLORS` of their ``kinds`` (all salient if ``None``), and a
    legend. Returns the PNG path."""
    from PIL import Image, ImageDraw

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    T, H, W, _ = frames.shape
    gh, gw = grid
    if gh < 1 or gw < 1:
        raise ValueError(f"grid must be two positive ints, got {grid!r}")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    idx = torch.as_tensor(indices).long().flatten().tolist()
    if any(i < 0 or i >= T * gh * gw for i in idx):
        raise ValueError(f"indices must lie in [0, {T * gh * gw}) for {T} frames of {gh}x{gw} tokens")
    kd = [0] * len(idx) if kinds is None else torch.as_tensor(kinds).long().flatten().tolist()
    if len(kd) != len(idx):
        raise ValueError(f"kinds must have one entry per index ({len(idx)}), got {len(kd)}")
    kept = {i: k for i, k in zip(idx, kd)}
    fw, fh = W * scale, H * scale
    pad, top = 4, 22 if title else 0
    rows = -(-T // per_row)
    legend_h = 18
    sheet = Image.new("RGB", (per_row * (fw + pad) + pad, top + rows * (fh + pad) + pad + legend_h), (20, 20, 20))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 4), title, fill=(230, 230, 230))
    ch, cw = fh / gh, fw / gw
    for t in range(T):
        img = Image.fromarray(frames[t]).resize((fw, fh), Image.Resampling.NEAREST)
        arr = np.asarray(img).astype(np.float32)
        for y in range(gh):
            for x in range(gw):
                if t * gh * gw + y * gw + x not in kept:
                    ys, xs = slice(round(y * ch), round((y + 1) * ch)), slice(round(x * cw), round((x + 1) * cw))
                    arr[ys, xs] *= 0.3
        img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
        ox, oy = pad + (t % per_row) * (fw + pad), top + pad + (t // per_row) * (fh + pad)
        sheet.paste(img, (ox, oy))
        for y in range(gh):
            for x in range(gw):
                k = kept.get(t * gh * gw + y * gw + x)
                if k is not None:
                    box = (ox + x * cw + 1, oy + y * ch + 1, ox + (x + 1) * cw - 2, oy + (y + 1) * ch - 2)
                    draw.rectangle(box, outline=KIND_COLORS.get(k, (255, 255, 255)), width=2)
        draw.text((ox + 2, oy + 1), f"t{t}", fill=(255, 255, 255))
    ly = top + rows * (fh + pad) + pad
    lx = pad
    for k, name in enumerate(("salient", "context anchor (merged)", "static (merged)")):
        draw.rectangle((lx, ly + 3, lx + 10, ly + 13), outline=KIND_COLORS[k], width=2)
        draw.text((lx + 14, ly + 2), name, fill=(230, 230, 230))
        lx += 14 + 8 * len(name) + 12
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
