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
    t.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate of the vision stage")
    t.add_argument("--lm-lr", type=float, default=defaults.lm_lr, help="peak learning rate of the language stage")
    t.add_argument(
        "--easy-steps",
        type=int,
        default=defaults.easy_steps,
        help="curriculum: first language steps with look-up questions only",
    )
    t.add_argument(
        "--aux-weight",
        type=float,
        default=defaults.aux_weight,
        help="weight of the per-visual-token auxiliary loss inside the LLM (0 = off)",
    )
    t.add_argument(
        "--attn-weight",
        type=float,
        default=defaults.attn_weight,
        help="weight of the evidence-attention loss of the last LLM layer (0 = off)",
    )
    t.add_argument(
        "--sep-weight",
        type=float,
        default=defaults.sep_weight,
        help="weight of the token-separation loss on the projector output: tokens of cells covered by "
        "different things are pushed towards non-positive cosine (0 = off)",
    )
    t.add_argument(
        "--answer-weight",
        action="append",
        default=[],
        metavar="QTYPE=W",
        help="the answer loss of this question type weighs W (others 1), e.g. direction=3 (repeatable)",
    )
    t.add_argument(
        "--isolate-questions",
        action="store_true",
        help="each packed question attends to the video and its own words only, at the positions it has when "
        "asked alone (default: plain causal packing, where later questions see earlier answers)",
    )
    t.add_argument(
        "--layouts",
        choices=["background", "distribution"],
        default=defaults.layouts,
        help="token layouts after the easy steps: background-only dropping (the shipped recipe) or "
        "the distribution of frame counts and token drops of issue 10",
    )
    t.add_argument(
        "--drop-prob",
        type=float,
        default=defaults.drop_prob,
        help="background layouts: chance that a sample keeps only part of its background tokens",
    )
    t.add_argument(
        "--full-layout-prob",
        type=float,
        default=defaults.full_layout_prob,
        help="distribution layouts: chance that a sample shows every visual token",
    )
    t.add_argument(
        "--frame-prob",
        type=float,
        default=defaults.frame_prob,
        help="otherwise, chance that only a random subset of --min-frames..16 frames is shown",
    )
    t.add_argument("--min-frames", type=int, default=defaults.min_frames)
    t.add_argument(
        "--any-drop-prob",
        type=float,
        default=defaults.any_drop_prob,
        help="otherwise, chance that random token dropping hits object tokens too",
    )
    t.add_argument(
        "--tube-prob",
        type=float,
        default=defaults.tube_prob,
        help="distribution layouts: chance of temporal tube drops (random cells shown only in the first frame "
        "of random spans) instead of independent token drops",
    )
    t.add_argument(
        "--two-rate-prob",
        type=float,
        default=defaults.two_rate_prob,
        help="distribution layouts: chance that object and background tokens are dropped at two independent "
        "random rates (some layouts are then a few tokens, mostly objects)",
    )
    t.add_argument(
        "--low-rate-prob",
        type=float,
        default=defaults.low_rate_prob,
        help="distribution layouts: chance that an independent-drop layout keeps U(0.03, 0.2) of the tokens "
        "instead of U(0.05, 1)",
    )
    t.add_argument(
        "--still-prob",
        type=float,
        default=defaults.still_prob,
        help="share of cached training clips filmed with a still camera and no sensor noise (unchanged cells "
        "are pixel-identical from frame to frame)",
    )
    t.add_argument(
        "--dup-prob",
        type=float,
        default=defaults.dup_prob,
        help="distribution layouts: chance that a still clip is shown without its duplicate tokens (those "
        "pixel-identical to the same cell in the previous frame)",
    )
    t.add_argument(
        "--vision-from",
        default=None,
        help="take the frozen vision tower of a saved testbed model (skips the vision stage)",
    )
    t.add_argument(
        "--lm-from",
        default=None,
        help="start the language stage from a saved testbed model with the same vision tower (fine-tuning)",
    )
    t.add_argument("--text-hidden", type=int, default=defaults.text_hidden)
    t.add_argument(
        "--text-layers",
        type=int,
        default=defaults.text_layers,
        help="LLM layers; with --lm-from, more than the saved model's grows it (new identity layers on top)",
    )
    t.add_argument(
        "--aux-layer",
        type=int,
        default=None,
        help="LLM layer whose output the per-token auxiliary loss reads (default: text layers // 2); "
        "keep a grown model's at the saved model's layer",
    )
    t.add_argument("--text-heads", type=int, default=defaults.text_heads)
    t.add_argument(
        "--save-stage", action="store_true", help="also write the frozen vision tower and feature cache to OUT/stage.pt"
    )
    t.add_argument(
        "--stage-from",
        default=None,
        help="reuse a stage.pt written by --save-stage (skips the vision and cache stages)",
    )
    t.add_argument("--threads", type=int, default=defaults.threads)
    t.add_argument("--eval-every", type=int, default=defaults.eval_every)
    t.add_argument("--eval-size", type=int, default=defaults.eval_size)
    t.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="end the language stage after N steps, with the learning-rate schedule of --lm-steps "
        "(the same weights as that run's checkpoint at step N)",
    )
    t.add_argument("--log", default=None, help="also append progress lines to this file")


def run(args: argparse.Namespace) -> int:
    """Run the requested action; returns the exit code."""
    from ..testbed.train import TrainConfig, train

    try:
        weights = []
        for item in args.answer_weight:
            qtype, sep, value = item.partition("=")
            try:
                w = float(value) if sep else None
            except ValueError:
                w = None
            if w is None:
                raise ValueError(f"--answer-weight must be QTYPE=W with a number W, got {item!r}")
            weights.append((qtype, w))
        cfg = TrainConfig(
            out_dir=str(args.out),
            seed=args.seed,
            vision_steps=args.vision_steps,
            cache_clips=args.cache_clips,
            lm_steps=args.lm_steps,
            lm_batch=args.lm_batch,
            lr=args.lr,
            lm_lr=args.lm_lr,
            easy_steps=args.easy_steps,
            aux_weight=args.aux_weight,
            attn_weight=args.attn_weight,
            sep_weight=args.sep_weight,
            answer_weights=tuple(weights),
            isolate_questions=args.isolate_questions,
            layouts=args.layouts,
            drop_prob=args.drop_prob,
            full_layout_prob=args.full_layout_prob,
            frame_prob=args.frame_prob,
            min_frames=args.min_frames,
            any_drop_prob=args.any_drop_prob,
            tube_prob=args.tube_prob,
            two_rate_prob=args.two_rate_prob,
            low_rate_prob=args.low_rate_prob,
            still_prob=args.still_prob,
            dup_prob=args.dup_prob,
            vision_from=args.vision_from,
            lm_from=args.lm_from,
            text_hidden=args.text_hidden,
            text_layers=args.text_layers,
            aux_layer=args.aux_layer,
            text_heads=args.text_heads,
            save_stage=args.save_stage,
            stage_from=args.stage_from,
            threads=args.threads,
            eval_every=args.eval_every,
            eval_size=args.eval_size,
            stop_after=args.stop_after,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if cfg.vision_from is not None and not (Path(cfg.vision_from) / "config.json").is_file():
        print(f"error: --vision-from must be a saved testbed model directory, got {cfg.vision_from!r}", file=sys.stderr)
        return 2
    if cfg.lm_from is not None and not (Path(cfg.lm_from) / "config.json").is_file():
        print(f"error: --lm-from must be a saved testbed model directory, got {cfg.lm_from!r}", file=sys.stderr)
        return 2
    if cfg.stage_from is not None and not Path(cfg.stage_from).is_file():
        print(f"error: --stage-from must be an existing stage.pt file, got {cfg.stage_from!r}", file=sys.stderr)
        return 2
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
