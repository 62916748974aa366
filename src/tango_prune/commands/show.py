"""``tango-prune show``: the shipped testbed model on any video, with and without pruning, plus a PNG of the
kept tokens (see :mod:`tango_prune.testbed.demo`)."""

from __future__ import annotations

import argparse

from ..checkpoints import checkpoint_errors
from ._checks import check_out_file, load_hf_config

NAME = "show"
HELP = (
    "Answer a question about a video with the shipped testbed model, with and without pruning; print "
    "answers, token counts and the time split, and draw the kept tokens as PNG."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tango-prune show``."""
    parser.add_argument("--video", required=True, help="video file (decoded with PyAV, 16 frames sampled)")
    parser.add_argument("--question", required=True, help='e.g. "which shape appears only near the end ?"')
    parser.add_argument("--options", default=None, help='space-separated answer options, e.g. "circle square"')
    parser.add_argument("--method", default="tango", help="registered pruning method (default tango)")
    parser.add_argument("--retention", type=float, default=0.1, help="fraction of visual tokens kept")
    parser.add_argument("--out", default="kept_tokens.png", help="where to write the kept-token picture")
    parser.add_argument("--model", default=None, help="model directory (default: the shipped testbed weights)")


def run(args: argparse.Namespace) -> int:
    """Decode, answer twice, print the comparison and write the PNG; returns the exit code."""
    import tango_prune as tp
    from ..testbed import data as D
    from ..testbed.demo import compare, format_report
    from ..testbed.model import load

    if args.method not in tp.methods():
        raise ValueError(f"--method must be one of {tp.methods()}, got {args.method!r}")
    if not 0.0 < args.retention <= 1.0:
        raise ValueError(f"--retention must be in (0, 1], got {args.retention}")
    check_out_file(args.out, "--out", (".png",))
    if args.model is not None:
        load_hf_config(args.model, "--model")
        with checkpoint_errors("--model", args.model, "the testbed model"):  # truncated weights, no processor
            model, proc = load(args.model)
    else:
        model, proc = load(None)
    frames, ts = D.read_video(args.video, D.NUM_FRAMES, proc.image_size)
    options = args.options.split() if args.options else None
    rep = compare(model, proc, frames, args.question, options, ts.tolist(), args.method, args.retention, args.out)
    print(format_report(rep, args.question))
    return 0
