"""``tango-prune eval --benchmark testbed``: accuracy of every pruning method at every retention."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "eval"
HELP = "Accuracy vs retention of the pruning methods on a benchmark (testbed: the shipped procedural-video-QA model)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tango-prune eval``."""
    from ..testbed.evaluate import RETENTIONS

    parser.add_argument("--benchmark", choices=["testbed"], default="testbed",
                        help="which benchmark (only the CPU testbed for now)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated method names (default: every registered method)")
    parser.add_argument("--retentions", default=",".join(f"{r:g}" for r in RETENTIONS),
                        help="comma-separated retention ratios in (0, 1]")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N test questions")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--model", default=None, help="model directory (default: the shipped testbed weights)")
    parser.add_argument("--json", default="eval_testbed.json", help="where to write the JSON report")
    parser.add_argument("--markdown", default="eval_testbed.md", help="where to write the markdown table")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="instead of evaluating, merge reports of runs over disjoint methods into --json/--markdown")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="config override for every evaluated method, e.g. --set tau_static=1.0 (repeatable)")


def _overrides(items: list[str]) -> dict:
    import json

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set must look like FIELD=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _floats(text: str, name: str) -> list[float]:
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated numbers, got {text!r}") from None
    if not out:
        raise ValueError(f"{name} must list at least one value, got {text!r}")
    return out


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the markdown table, write JSON + markdown; returns the exit code."""
    import torch

    import tango_prune as tp
    from ..testbed.evaluate import evaluate, markdown_table, save_report
    from ..testbed.model import load

    if args.merge:
        import json

        from ..testbed.evaluate import markdown_table, merge_reports, save_report

        try:
            reports = [json.loads(open(f).read()) for f in args.merge]
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"--merge files must be readable eval JSON reports: {exc}") from None
        report = merge_reports(reports)
        save_report(report, args.json, args.markdown)
        print(markdown_table(report), end="")
        return 0
    retentions = _floats(args.retentions, "--retentions")
    methods = tp.methods() if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    if methods and not hasattr(tp, "apply"):
        raise ValueError("--methods needs the model adapter (tango_prune.apply), which this install lacks")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    overrides = _overrides(args.set)
    for m in methods:   # fail before loading anything if a method lacks an overridden field
        tp.make_config(m, **overrides)
    model, proc = load(args.model)
    report = evaluate(model, proc, methods, retentions, limit=args.limit, batch_size=args.batch_size,
                      show_progress=not args.no_progress, overrides=overrides)
    if args.model is not None:
        report["model"] = str(Path(args.model))
    save_report(report, args.json, args.markdown)
    print(markdown_table(report), end="")
    print(f"wrote {args.json} and {args.markdown} ({report['seconds']}s)")
    return 0
