import numpy as np
import pytest
import torch

import tango_prune as tp
from tango_prune.viz import KIND_COLOURS, render_kept, save_kept_png


def _result(T=2, H=3, W=4):
    g = torch.Generator().manual_seed(0)
    tok = tp.VideoTokens(torch.randn(T, H, W, 8, generator=g), torch.rand(T, H, W, generator=g))
    return tp.prune(tok, "tango", retention=0.3, segmentation="none")


def test_kept_cells_are_outlined_by_kind_and_dropped_cells_dimmed(tmp_path):
    res = _result()
    T, H, W = res.grid
    frames = np.full((T, 12, 16, 3), 200, dtype=np.uint8)  # 4 px per cell; tile 64 -> 16 px per cell
    sheet = np.asarray(render_kept(frames, res, cols=2, tile=64, title="t"))
    top, x0 = 22, 4
    kept = {(int(t), int(r), int(c)): int(k) for (t, r, c), k in zip(res.positions, res.kinds)}
    for r in range(H):
        for c in range(W):
            y, x = top + 4 + 14 + r * 16, x0 + c * 16  # frame 0's tile
            inner = sheet[y + 8, x + 8]
            if (0, r, c) in kept:
                assert tuple(sheet[y, x + 8]) == KIND_COLOURS[kept[(0, r, c)]]  # top edge of the outline
                assert tuple(inner) == (200, 200, 200)
            else:
                assert tuple(inner) == (70, 70, 70)  # 200 * 0.35
    path = save_kept_png(tmp_path / "sub" / "k.png", frames, res)
    assert path.endswith("k.png")


def test_bad_frames_and_sizes_are_refused():
    res = _result()
    with pytest.raises(ValueError, match="frames"):
        render_kept(np.zeros((3, 8, 8, 3), np.uint8), res)
    with pytest.raises(ValueError, match="tile"):
        render_kept(np.zeros((2, 8, 8, 3), np.uint8), res, tile=0)
