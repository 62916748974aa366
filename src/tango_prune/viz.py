"""Pictures of what a pruning method kept: one tile per frame, kept cells marked by kind."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw

from .tokens import PruneResult, TokenKind

__all__ = ["KIND_COLOURS", "render_kept", "save_kept_png"]

#: RGB outline colour per :class:`TokenKind` code (salient, context anchor, static).
KIND_COLOURS = {TokenKind.SALIENT: (40, 230, 60), TokenKind.CONTEXT: (255, 150, 20), TokenKind.STATIC: (60, 140, 255)}


def render_kept(
    frames: np.ndarray, result: PruneResult, cols: int = 8, max_frames: int = 32, tile: int = 160
) -> Image.Image:
    """A contact sheet of the first ``max_frames`` frames with the kept tokens marked.

    Dropped cells are dimmed; kept cells get an outline in :data:`KIND_COLOURS` (unknown kind: white).
    Frames may have any size; they are resized to ``tile`` pixels on their longer side.
    """
    frames = np.asarray(frames)
    T, gh, gw = result.grid
    if frames.ndim != 4 or frames.shape[0] != T:
        raise ValueError(f"frames must have shape (T={T}, H, W, 3), got {frames.shape}")
    n = min(T, max_frames)
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    h, w = frames.shape[1:3]
    scale = tile / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    sheet = Image.new("RGB", (cols * (tw + 4) + 4, rows * (th + 18) + 4), (20, 20, 20))
    mask = result.mask().cpu().numpy()
    pos = result.positions.cpu().numpy()
    kinds = result.kinds.cpu().numpy() if result.kinds is not None else np.full(len(pos), -1)
    ch, cw = th / gh, tw / gw
    for t in range(n):
        img = Image.fromarray(frames[t].astype(np.uint8)).resize((tw, th), Image.Resampling.BILINEAR)
        arr = np.asarray(img).astype(np.float32)
        cell_mask = np.kron(mask[t], np.ones((int(np.ceil(ch)), int(np.ceil(cw))), dtype=bool))[:th, :tw]
        pad = np.zeros((th, tw), dtype=bool)
        pad[: cell_mask.shape[0], : cell_mask.shape[1]] = cell_mask
        arr[~pad] *= 0.35
        img = Image.fromarray(arr.astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for (tt, r, c), k in zip(pos, kinds):
            if tt != t:
                continue
            colour = KIND_COLOURS.get(int(k), (255, 255, 255))
            draw.rectangle([c * cw, r * ch, (c + 1) * cw - 1, (r + 1) * ch - 1], outline=colour, width=2)
        x0, y0 = 4 + (t % cols) * (tw + 4), 4 + (t // cols) * (th + 18)
        sheet.paste(img, (x0, y0 + 14))
        ImageDraw.Draw(sheet).text((x0, y0), f"t={t} kept={int(mask[t].sum())}", fill=(230, 230, 230))
    return sheet


def save_kept_png(path: str | os.PathLike, frames: np.ndarray, result: PruneResult, **kwargs) -> str:
    """Render with :func:`render_kept` and write a PNG to ``path``; returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    render_kept(frames, result, **kwargs).save(path)
    return path
