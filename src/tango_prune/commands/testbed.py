"""``tango-prune testbed train``: train the testbed Video LLM from scratch (see :mod:`tango_prune.testbed.train`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

NAME = "testbed"
HELP = "Train the small procedural-video-QA LLaVA-OneVision model that ships with tango-prune."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tango-prune testbed``."""
    sub = parser.add_subparsers(dest="action", required=True)
    t = sub.add_parser("train", help="train from scratch and save_pretrained into --out")
    from ..testbed.train import TrainConfig

    defaults = TrainConfig(out_dir="")
    t.add_argument("--out", required=True, help="output directory (weights, tokenizer, training.json)")
    t.add_argument("--seed", type=int, default=defaults.seed)
    t.add_argument("--vision-steps", type=int, default=defaults.vision_steps)
    t.add_argument("--cache-clips", type=int, default=defaults.cache_clips)
    t.add_argument("--lm-steps", type=int, default=defaults.lm_steps)
    t.add_argument("--lm-batch", type=int, default=defaults.lm_batch, help="clips per language step")
    t.add_argument("--lr", type=float, default=defaults.lr)
    t.add_argument("--threads", type=int, default=defaults.threads)
    t.add_argument("--eval-every", type=int, default=defaults.eval_every)
    t.add_argument("--eval-size", type=int, default=defaults.eval_size)
    t.add_argument("--log", default=None, help="also append progress lines to this file")


def run(args: argparse.Namespace) -> int:
    """Run the requested action; returns the exit code."""
    from ..testbed.train import TrainConfig, train

    cfg = TrainConfig(out_dir=str(args.out), seed=args.seed, vision_steps=args.vision_steps,
                      cache_clips=args.cache_clips, lm_steps=args.lm_steps, lm_batch=args.lm_batch, lr=args.lr, threads=args.threads, eval_every=args.eval_every, eval_size=args.eval_size)
    log_path = Path(args.log) if args.log else None

    def log(line: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {line}"
        print(line, flush=True)
        if log_path is not None:
            with log_path.open("a") as fh:
                fh.write(line + "\n")

    log("tango-prune testbed train " + " ".join(sys.argv[3:] if len(sys.argv) > 3 else []))
    record = train(cfg, log=log)
    log(f"done in {record['wall_seconds']}s")
    return 0
