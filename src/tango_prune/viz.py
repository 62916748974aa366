"""Pictures of what a pruning method kept: one tile per frame, kept cells marked by kind (the one renderer of\nkept tokens: ``tango-prune demo`` and the testbed demo / ``tango-prune show`` both use it)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw

from .tokens import PruneResult, TokenKind
from .validate import check_int

__all__ = ["KIND_COLOURS", "render_kept", "save_kept_png"]

#: RGB outline colour per :class:`TokenKind` code (salient, context anchor, static).
KIND_COLOURS = {TokenKind.SALIENT: (40, 230, 60), TokenKind.CONTEXT: (255, 150, 20), TokenKind.STATIC: (60, 140, 255)}


def render_kept(
    frames: np.ndarray,
    result: PruneResult,
    cols: int = 8,
    max_frames: int = 32,
    tile: int = 160,
    title: str | None = None,
) -> Image.Image:
    """A contact sheet of the first ``max_frames`` frames with the kept tokens marked, and a legend.

    Dropped cells are dimmed; kept cells get an outline in :data:`KIND_COLOURS` (unknown kind: white).
    Frames may have any size; they are resized to ``tile`` pixels on their longer side (nearest-neighbour
    when enlarged, so small frames stay sharp; bilinear when reduced). ``title`` is written above the sheet.
    """
    frames = np.asarray(frames)
    T, gh, gw = result.grid
    if frames.ndim != 4 or frames.shape[0] != T or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T={T}, H, W, 3), got {frames.shape}")
    for name, v in (("cols", cols), ("max_frames", max_frames), ("tile", tile)):
        check_int(name, v, 1)
    n = min(T, max_frames)
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    h, w = frames.shape[1:3]
    scale = tile / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR
    top, legend_h = (22 if title else 0), 18
    sheet = Image.new("RGB", (cols * (tw + 4) + 4, top + rows * (th + 18) + 4 + legend_h), (20, 20, 20))
    sheet_draw = ImageDraw.Draw(sheet)
    if title:
        sheet_draw.text((4, 4), title, fill=(230, 230, 230))
    mask = result.mask().cpu().numpy()
    pos = result.positions.cpu().numpy()
    kinds = result.kinds.cpu().numpy() if result.kinds is not None else np.full(len(pos), TokenKind.SALIENT)
    ch, cw = th / gh, tw / gw
    # cell (r, c) covers rows [round(r ch), round((r + 1) ch)) and the same for columns: no gaps, no overlap
    row_of = np.minimum((np.arange(th) / ch).astype(int), gh - 1)
    col_of = np.minimum((np.arange(tw) / cw).astype(int), gw - 1)
    for t in range(n):
        img = Image.fromarray(frames[t].astype(np.uint8)).resize((tw, th), resample)
        arr = np.asarray(img).astype(np.float32)
        arr[~mask[t][row_of[:, None], col_of[None, :]]] *= 0.35
        img = Image.fromarray(arr.astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for (tt, r, c), k in zip(pos, kinds):
            if tt != t:
                continue
            colour = KIND_COLOURS.get(int(k), (255, 255, 255))
            draw.rectangle([c * cw, r * ch, (c + 1) * cw - 1, (r + 1) * ch - 1], outline=colour, width=2)
        x0, y0 = 4 + (t % cols) * (tw + 4), top + 4 + (t // cols) * (th + 18)
        sheet.paste(img, (x0, y0 + 14))
        sheet_draw.text((x0, y0), f"t={t} kept={int(mask[t].sum())}", fill=(230, 230, 230))
    lx, ly = 4, top + rows * (th + 18) + 4
    for k, name in (
        (TokenKind.SALIENT, "salient"),
        (TokenKind.CONTEXT, "context anchor (merged)"),
        (TokenKind.STATIC, "static (merged)"),
    ):
        sheet_draw.rectangle((lx, ly + 3, lx + 10, ly + 13), outline=KIND_COLOURS[k], width=2)
        sheet_draw.text((lx + 14, ly + 2), name, fill=(230, 230, 230))
        lx += 14 + 8 * len(name) + 12
    return sheet


def save_kept_png(path: str | os.PathLike, frames: np.ndarray, result: PruneResult, **kwargs) -> str:
    """Render with :func:`render_kept` and write a PNG to ``path``; returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    render_kept(frames, result, **kwargs).save(path)
    return path
