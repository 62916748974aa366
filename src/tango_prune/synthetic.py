"""Deterministic synthetic videos and model-free visual tokens for demos, tests and benchmarks.

:func:`render_shapes_video` draws coloured shapes moving over a textured static background.
:func:`tokens_from_frames` turns frames into :class:`VideoTokens` without any model: each grid cell's
colour statistics go through a fixed random two-layer projection (a stand-in for a vision encoder and
projector), and the saliency is a per-frame softmax of how much a cell stands out from the frame's
background colour (a stand-in for attention). Static background cells give identical features in every
frame, so temporal segmentation and static collapse behave as on real video.
"""

from __future__ import annotations

import numpy as np
import torch

from .tokens import VideoTokens

__all__ = ["render_shapes_video", "tokens_from_frames", "synthetic_tokens"]

_PALETTE = np.array(
    [
        [230, 40, 40],
        [40, 200, 60],
        [50, 90, 230],
        [240, 200, 30],
        [200, 60, 220],
        [30, 210, 220],
        [250, 140, 20],
        [240, 240, 240],
    ],
    dtype=np.float32,
)


def render_shapes_video(
    num_frames: int = 16, size: int = 224, num_shapes: int = 4, seed: int = 0, cut_every: int = 0
) -> np.ndarray:
    """Render a (T, size, size, 3) uint8 video of moving discs and squares.

    Shapes move on straight lines, bouncing off the borders; the background is a fixed smooth texture.
    With ``cut_every > 0`` the background and shapes change every ``cut_every`` frames (scene cuts), which
    gives temporal segmentation something to find.
    """
    if num_frames < 1 or size < 8 or num_shapes < 0:
        raise ValueError(f"need num_frames >= 1, size >= 8, num_shapes >= 0; got {num_frames}, {size}, {num_shapes}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)

    def new_scene():
        base = rng.uniform(40, 160, size=3).astype(np.float32)
        fx, fy = rng.uniform(1, 4, size=2) * 2 * np.pi / size
        tex = 25 * np.sin(fx * xx)[..., None] * np.cos(fy * yy)[..., None]
        bg = np.clip(base + tex * rng.uniform(0.5, 1.0, size=3), 0, 255)
        shapes = []
        for _ in range(num_shapes):
            shapes.append(
                dict(
                    pos=rng.uniform(0.15, 0.85, size=2) * size,
                    vel=rng.uniform(-0.04, 0.04, size=2) * size,
                    rad=rng.uniform(0.06, 0.12) * size,
                    col=_PALETTE[rng.integers(len(_PALETTE))],
                    square=bool(rng.integers(2)),
                )
            )
        return bg, shapes

    bg, shapes = new_scene()
    for t in range(num_frames):
        if cut_every and t and t % cut_every == 0:
            bg, shapes = new_scene()
        img = bg.copy()
        for sh in shapes:
            cy, cx = sh["pos"]
            if sh["square"]:
                m = (np.abs(yy - cy) < sh["rad"]) & (np.abs(xx - cx) < sh["rad"])
            else:
                m = (yy - cy) ** 2 + (xx - cx) ** 2 < sh["rad"] ** 2
            img[m] = sh["col"]
            sh["pos"] = sh["pos"] + sh["vel"]
            for k in range(2):  # bounce
                if not sh["rad"] <= sh["pos"][k] <= size - sh["rad"]:
                    sh["vel"][k] = -sh["vel"][k]
        frames[t] = img.astype(np.uint8)
    return frames


def tokens_from_frames(
    frames: np.ndarray,
    grid: int | tuple[int, int] = 14,
    dim: int = 64,
    fps: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> VideoTokens:
    """Model-free :class:`VideoTokens` of a (T, H, W, 3) uint8 video on a ``grid`` of cells.

    Features: per-cell mean and standard deviation of RGB (6 values), centred -> fixed random MLP -> ``dim``
    channels. Saliency: per-frame softmax of the cell's colour distance from the frame's median colour.
    Timestamps: frame index / ``fps``.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    T, H, W, _ = frames.shape
    if gh < 1 or gw < 1 or H < gh or W < gw:
        raise ValueError(f"grid must be positive and no larger than the frame, got {grid} for {H}x{W} frames")
    ch, cw = H // gh, W // gw
    f = frames[:, : ch * gh, : cw * gw].astype(np.float32) / 255.0
    cells = f.reshape(T, gh, ch, gw, cw, 3).transpose(0, 1, 3, 2, 4, 5).reshape(T, gh, gw, ch * cw, 3)
    desc = np.concatenate([cells.mean(3), cells.std(3)], axis=-1)  # (T, gh, gw, 6)
    rng = np.random.default_rng(seed)
    hidden = min(4 * dim, 512)
    w1 = torch.from_numpy((rng.standard_normal((6, hidden)) * 3.0).astype(np.float32))
    w2 = torch.from_numpy((rng.standard_normal((hidden, dim)) / np.sqrt(hidden)).astype(np.float32))
    # Centred descriptors and an odd non-linearity: unrelated colours get near-orthogonal features.
    centred = torch.from_numpy((desc - np.array([0.5, 0.5, 0.5, 0.1, 0.1, 0.1])).astype(np.float32))
    feats = torch.empty(T, gh, gw, dim, dtype=dtype)
    for s in range(0, T, 64):  # chunks keep the hidden activations small for long videos
        feats[s : s + 64] = (torch.tanh(centred[s : s + 64] @ w1) @ w2).to(dtype)
    mean_col = desc[..., :3]
    bgcol = np.median(mean_col.reshape(T, -1, 3), axis=1)[:, None, None, :]
    logits = 12.0 * np.linalg.norm(mean_col - bgcol, axis=-1)
    logits -= logits.max(axis=(1, 2), keepdims=True)
    sal = np.exp(logits)
    sal /= sal.sum(axis=(1, 2), keepdims=True)
    return VideoTokens(
        features=feats,
        saliency=torch.from_numpy(sal.astype(np.float32)),
        timestamps=torch.arange(T, dtype=torch.float64) / fps,
    )


def synthetic_tokens(
    num_frames: int = 32,
    grid: int | tuple[int, int] = 14,
    dim: int = 64,
    seed: int = 0,
    cut_every: int = 0,
    dtype: torch.dtype = torch.float32,
) -> VideoTokens:
    """Render a shapes video (8 px per grid cell) and return its tokens: the one-call synthetic input."""
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    size = 8 * max(gh, gw)
    frames = render_shapes_video(num_frames, size=size, seed=seed, cut_every=cut_every)
    return tokens_from_frames(frames, grid=(gh, gw), dim=dim, seed=seed, dtype=dtype)
