"""``tango-prune eval --benchmark testbed``: accuracy of every pruning method at every retention."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "eval"
HELP = "Accuracy vs retention of the pruning methods on a benchmark (testbed: the shipped procedural-video-QA model)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tango-prune eval``."""
    from ..testbed.evaluate import RETENTIONS

    parser.add_argument(
        "--benchmark", choices=["testbed"], default="testbed", help="which benchmark (only the CPU testbed for now)"
    )
    parser.add_argument(
        "--methods", default=None, help="comma-separated method names (default: every registered method)"
    )
    parser.add_argument(
        "--retentions",
        default=",".join(f"{r:g}" for r in RETENTIONS),
        help="comma-separated retention ratios in (0, 1]",
    )
    parser.add_argument("--limit", type=int, default=None, help="score only the first N test questions")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--model", default=None, help="model directory (default: the shipped testbed weights)")
    parser.add_argument("--json", default="eval_testbed.json", help="where to write the JSON report")
    parser.add_argument("--markdown", default="eval_testbed.md", help="where to write the markdown table")
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="instead of evaluating, merge reports of runs over disjoint methods into --json/--markdown",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="add the evidence-oracle reference row (testbed only; not a pruning method)",
    )
    parser.add_argument(
        "--ablations",
        action="store_true",
        help="add Tango's ablation rows (no diversity / ST-RoPE / context merging / static collapse, "
        "segmentation none / fastvid)",
    )
    parser.add_argument(
        "--plot", default=None, metavar="PNG", help="also draw accuracy against retention for every row into this PNG"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run whose partial report is at --json (finished cells are kept)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="config override for every evaluated method, e.g. --set tau_static=1.0 (repeatable)",
    )


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


def _writable(path: str, flag: str) -> None:
    """Fail before any work if ``path`` cannot be written (a directory, or a parent that is not writable)."""
    import os

    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{flag} must be a file path, got the directory {path!r}")
    parent = p.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{flag} is not writable: cannot create {str(parent)!r} ({exc.strerror})") from None
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ValueError(f"{flag} is not writable: {path!r}")


def _read_report(path: str, flag: str) -> dict:
    import json

    from ..testbed.evaluate import check_report

    try:
        report = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"{flag} {path!r} cannot be read ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{flag} {path!r} is not valid JSON ({exc})") from None
    check_report(report, f"{flag} {path!r}")
    return report


def _plot(report: dict, path: str | None) -> None:
    if path is not None:
        from ..testbed.plot import plot_report

        plot_report(report, path)


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the markdown table, write JSON + markdown (after every finished cell, atomically, so
    ``--resume`` can continue an interrupted run); returns the exit code."""
    import torch

    import tango_prune as tp
    from ..testbed.evaluate import TANGO_ABLATIONS, evaluate, markdown_table, merge_reports, oracle_row, save_report
    from ..testbed.model import load

    for flag, path in (("--json", args.json), ("--markdown", args.markdown), ("--plot", args.plot)):
        if path is not None:
            _writable(path, flag)
    if args.merge:
        report = merge_reports([_read_report(f, "--merge") for f in args.merge])
        save_report(report, args.json, args.markdown)
        _plot(report, args.plot)
        print(markdown_table(report), end="")
        return 0
    retentions = _floats(args.retentions, "--retentions")
    methods = tp.methods() if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    if (methods or args.oracle or args.ablations) and not hasattr(tp, "apply"):
        raise ValueError("--methods needs the model adapter (tango_prune.apply), which this install lacks")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    overrides = _overrides(args.set)
    if "retention" in overrides:
        raise ValueError(
            f"--set retention={overrides['retention']} conflicts with --retentions; "
            "give retentions with --retentions only"
        )
    known = tp.methods()
    for m in methods:  # fail before loading anything if a method is unknown or lacks an overridden field
        if m not in known:
            raise ValueError(f"--methods must be registered names {known}, got {m!r}")
        tp.make_config(m, **overrides)
    extra = ([oracle_row()] if args.oracle else []) + (list(TANGO_ABLATIONS) if args.ablations else [])
    previous = None
    if args.resume and Path(args.json).is_file():
        previous = _read_report(args.json, "--json")
    model, proc = load(args.model)
    report = evaluate(
        model,
        proc,
        methods,
        retentions,
        limit=args.limit,
        batch_size=args.batch_size,
        show_progress=not args.no_progress,
        overrides=overrides,
        extra_rows=extra,
        previous=previous,
        checkpoint=lambda rep: save_report(rep, args.json, args.markdown),
        model_name=None if args.model is None else str(Path(args.model)),
    )
    _plot(report, args.plot)
    print(markdown_table(report), end="")
    print(f"wrote {args.json} and {args.markdown} ({report['seconds']}s)")
    return 0
