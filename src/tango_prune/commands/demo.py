"""``tango-prune demo``: the main job on embedded defaults (no downloads).

Part 1, model-free: tokens of a generated shapes video are pruned at 10% and the kept tokens drawn.
Part 2, with the shipped testbed Video LLM (an upstream ``LlavaOnevisionForConditionalGeneration``): accuracy
with all tokens and with the method at the retention on the first ``--subset`` held-out questions (with token
counts and timings), then a generated mp4 decoded with PyAV and answered both ways.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from ..api import make_config
from ..synthetic import render_shapes_video, tokens_from_frames
from ..tokens import TokenKind
from ..viz import save_kept_png

NAME = "demo"
HELP = "Prune the tokens of a generated shapes video and write a PNG of the kept tokens."


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``demo``."""
    p.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    p.add_argument("--method", default="tango", help="pruning method (default: tango)")
    p.add_argument("--retention", type=float, default=0.1, help="fraction of tokens kept (default: 0.1)")
    p.add_argument("--frames", type=int, default=16, help="number of frames (default: 16)")
    p.add_argument("--grid", type=int, default=14, help="token grid side (default: 14, as LLaVA-OneVision)")
    p.add_argument("--dim", type=int, default=256, help="feature dimension (default: 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-model", action="store_true", help="skip part 2 (the shipped testbed model)")
    p.add_argument(
        "--subset",
        type=int,
        default=100,
        help="part 2 scores the first N held-out questions with and without pruning (default: 100)",
    )


def run(args: argparse.Namespace) -> int:
    """Generate, prune, print the budget summary, write ``kept_tokens.png`` and ``summary.json``."""
    from .. import prune  # late import keeps CLI start-up light
    from ..testbed.data import TEST_SIZE

    if isinstance(args.subset, bool) or not 1 <= args.subset <= TEST_SIZE:
        raise ValueError(f"--subset must be in [1, {TEST_SIZE}], got {args.subset}")

    frames = render_shapes_video(
        args.frames, size=16 * args.grid, num_shapes=4, seed=args.seed, cut_every=max(2, args.frames // 2)
    )
    tokens = tokens_from_frames(frames, grid=args.grid, dim=args.dim, fps=2.0, seed=args.seed)
    cfg = make_config(args.method, retention=args.retention)
    t0 = time.perf_counter()
    result = prune(tokens, cfg)
    dt = time.perf_counter() - t0
    T, H, W = result.grid
    print(f"video: {T} frames x {H}x{W} tokens x D={args.dim} = {T * H * W} visual tokens")
    print(f"method: {cfg.method}  retention: {cfg.retention}")
    for key in ("segments", "static_positions"):
        if key in result.info:
            print(f"{key}: {result.info[key]}")
    kinds = result.kinds if result.kinds is not None else torch.empty(0, dtype=torch.long)
    by_kind = {name: int((kinds == code).sum()) for code, name in enumerate(TokenKind.NAMES)}
    print(f"kept: {result.num_kept} / {T * H * W} ({100 * result.kept_ratio:.1f}%)  by kind: {by_kind}")
    print(f"per frame: {result.per_frame_counts().tolist()}")
    print(f"pruning time: {1000 * dt:.1f} ms")
    os.makedirs(args.out, exist_ok=True)
    png = save_kept_png(os.path.join(args.out, "kept_tokens.png"), frames, result)
    with open(os.path.join(args.out, "summary.json"), "w", encoding="utf-8") as fh:
        json.dump(
            {
                "config": cfg.to_dict(),
                "kept": result.num_kept,
                "total": T * H * W,
                "by_kind": by_kind,
                "info": result.info,
                "prune_ms": 1000 * dt,
            },
            fh,
            indent=2,
            default=str,
        )
    print(f"wrote {png}")
    if not args.no_model:
        from ..testbed.demo import run_demo  # needs transformers and PyAV

        print("\n-- the shipped testbed Video LLM on a generated mp4 --")
        run_demo(
            os.path.join(args.out, "testbed"), method=cfg.method, retention=cfg.retention, subset=range(args.subset)
        )
    return 0
