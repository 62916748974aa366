"""``tango-prune lmms-eval``: accuracy of the unpruned model and of methods x retentions on lmms-eval tasks.

Runs through lmms-eval's Python API with the plugin's ``tango_*`` model ids (needs the ``[lmms-eval]``
extra), writes ``sweep.md`` (score and % of ``none`` per task), ``sweep.json``, ``sweep.png`` and one
``runs/<run>.json`` per run into ``--out``; rerunning resumes; exits 1 when any run failed. ``--testbed N``
writes an offline task of N held-out testbed questions (and a copy of the testbed model) into
``--out/testbed_task`` and sweeps on it, which needs neither a GPU nor a download.
"""

from __future__ import annotations

import argparse
import sys

NAME = "lmms-eval"
HELP = "sweep none + methods x retentions over lmms-eval tasks (table, JSON, plot; resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tango-prune lmms-eval``."""
    parser.add_argument(
        "--model",
        default="tango_llava_onevision",
        help="plugin model id: tango_llava_onevision (also LLaVA-Video) or tango_qwen2_5_vl",
    )
    parser.add_argument("--pretrained", default=None, help="checkpoint directory or hub id")
    parser.add_argument(
        "--tasks",
        default=None,
        help="comma-separated lmms-eval tasks, e.g. videomme,mvbench,longvideobench_val_v,mlvu_dev",
    )
    parser.add_argument("--methods", default=None, help="comma-separated methods (default: every registered one)")
    parser.add_argument("--retentions", default="0.1", help="comma-separated retention ratios (default 0.1)")
    parser.add_argument(
        "--model-args", default="", help="extra plugin model_args for every run, e.g. frames=32,dtype=bfloat16"
    )
    parser.add_argument("--include-path", default=None, help="directory of extra task YAMLs (lmms-eval --include_path)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N documents per task")
    parser.add_argument("--out", default="lmms_eval_sweep", help="output directory (default lmms_eval_sweep)")
    parser.add_argument(
        "--testbed",
        type=int,
        default=None,
        metavar="N",
        help="sweep the shipped testbed model on an offline task of its first N held-out questions",
    )


def _list(text: str | None, name: str) -> list[str]:
    out = [x.strip() for x in (text or "").split(",") if x.strip()]
    if not out:
        raise ValueError(f"{name} must list at least one value, got {text!r}")
    return out


def run(args: argparse.Namespace) -> int:
    """Run or resume the sweep; 0 when every run succeeded, 1 otherwise (``ValueError`` for bad input)."""
    import importlib.util
    from pathlib import Path

    import tango_prune as tp

    if importlib.util.find_spec("lmms_eval") is None:
        raise ValueError("lmms-eval is not installed: pip install 'tango-prune[lmms-eval]'")
    from ..integrations.lmms_eval_sweep import markdown_table, process_state, sweep

    try:
        retentions = [float(x) for x in _list(args.retentions, "--retentions")]
    except ValueError as exc:
        raise ValueError(f"--retentions must be comma-separated numbers: {exc}") from None
    methods = tp.methods() if args.methods is None else _list(args.methods, "--methods")
    model, pretrained, tasks, include = args.model, args.pretrained, args.tasks, args.include_path
    from ._checks import check_out_dir

    is_main, barrier = process_state()
    if is_main:
        check_out_dir(args.out)
    if args.testbed is not None:
        from ..integrations.lmms_eval_testbed import testbed_task_paths, write_testbed_task

        if pretrained or tasks or include or model != "tango_llava_onevision":
            raise ValueError("--testbed sets the model, --pretrained, --tasks and --include-path itself")
        if is_main:  # under accelerate launch one process writes the task, the others wait for it
            write_testbed_task(Path(args.out) / "testbed_task", args.testbed)
        barrier()
        made = testbed_task_paths(Path(args.out) / "testbed_task")
        pretrained, tasks, include = made["pretrained"], made["task"], made["include_path"]
    if not pretrained:
        raise ValueError("--pretrained is required (or --testbed N)")
    summary = sweep(
        args.out,
        model=model,
        pretrained=pretrained,
        tasks=_list(tasks, "--tasks"),
        methods=methods,
        retentions=retentions,
        model_args=args.model_args,
        include_path=include,
        limit=args.limit,
        log=lambda s: print(s, file=sys.stderr),
    )
    if is_main:
        print(markdown_table(summary), end="")
        print(f"wrote {Path(args.out) / 'sweep.md'}, sweep.json and sweep.png")
    if summary["failed"]:
        print(
            f"tango-prune lmms-eval: {len(summary['failed'])} run(s) failed: {', '.join(summary['failed'])}",
            file=sys.stderr,
        )
        return 1
    return 0
