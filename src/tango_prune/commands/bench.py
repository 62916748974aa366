"""``tango-prune bench``: TTFT split (vision / pruning / prefill), decode speed and peak memory per method."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from ._checks import (
    atomic_write_json,
    atomic_write_text,
    check_out_dir,
    nonnegative_int,
    positive_int,
    read_json_report,
    resolve_device,
)

NAME = "bench"
HELP = (
    "Measure TTFT (vision / pruning / prefill), decode tokens/s and peak memory of a Video LLM for several "
    "pruning methods and retentions; writes JSON and a markdown table."
)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _override(text: str) -> tuple[str, str, object]:
    """Parse ``method.field=value``; the value is read as JSON when it parses (numbers, true/false, null)."""
    try:
        key, raw = text.split("=", 1)
        method, field = key.split(".", 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected method.field=value, got {text!r}") from None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return method.strip(), field.strip(), value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tango-prune bench``."""
    parser.add_argument(
        "--model",
        default="llava-ov-0.5b",
        help="preset (llava-ov-0.5b, llava-ov-7b, qwen2.5-vl-3b, qwen2.5-vl-7b, tiny-llava-ov, "
        "tiny-qwen2.5-vl) or a save_pretrained directory (default: llava-ov-0.5b)",
    )
    parser.add_argument("--methods", type=_names, default=("tango",), help="comma-separated method names")
    parser.add_argument("--retentions", type=_floats, default=(0.1,), help="comma-separated retentions in (0, 1]")
    parser.add_argument("--video", default=None, help="video file (default: a synthetic clip)")
    parser.add_argument("--frames", type=positive_int, default=32, help="frames sampled from the video (default 32)")
    parser.add_argument(
        "--frame-size",
        type=positive_int,
        default=None,
        help="frame size in pixels (Qwen2.5-VL: a multiple of 28; default: the preset's, 448 for "
        "Qwen2.5-VL, 384 for LLaVA-OneVision, which accepts no other)",
    )
    parser.add_argument(
        "--warmup", type=nonnegative_int, default=1, help="discarded runs per configuration (default 1)"
    )
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed runs per configuration (default 3)")
    parser.add_argument("--new-tokens", type=positive_int, default=8, help="generated tokens per run (default 8)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        type=_override,
        action="append",
        default=[],
        metavar="METHOD.FIELD=VALUE",
        help="override a method's config field (repeatable)",
    )
    parser.add_argument(
        "--engine",
        default="transformers",
        choices=("transformers", "vllm"),
        help="transformers (default): TTFT split per method; vllm: serving throughput of a vLLM engine with the "
        "tango_prune plugin vs unpruned (needs vllm and --model a checkpoint directory; see docs/vllm.md)",
    )
    parser.add_argument(
        "--requests", type=positive_int, default=4, help="vllm engine: requests per timed batch (default 4)"
    )
    parser.add_argument("--out", default="bench_out", help="output directory for bench.json and bench.md")
    parser.add_argument(
        "--render",
        metavar="BENCH_JSON",
        default=None,
        help="do not measure: re-render the markdown of an existing bench.json into --out",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--restart",
        action="store_true",
        help="discard the partial results of an interrupted run in --out instead of resuming it",
    )


PARTIAL = "bench.partial.json"


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and write ``bench.json`` and ``bench.md`` into ``--out``.

    Every finished row is written at once (atomically) to ``--out/bench.partial.json``; a later run with the
    same settings and ``--out`` resumes from it (rows already measured are kept, and the report says so).
    """
    from ..bench import BenchSpec, run_bench

    if args.render:
        report = read_json_report(args.render, "--render", ("spec", "model", "video", "environment", "rows"))
        check_out_dir(args.out, "--out")
        try:
            _write_markdown(report, args.out)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(
                f"--render: {args.render!r} is not a complete bench report ({type(exc).__name__}: {exc})"
            ) from None
        return 0
    if args.engine == "vllm":
        return _run_vllm(args)
    overrides: dict[str, dict[str, object]] = {}
    for method, field, value in args.overrides:
        overrides.setdefault(method, {})[field] = value
    resolve_device(args.device, "--device")
    spec = BenchSpec(
        model=args.model,
        methods=args.methods,
        retentions=args.retentions,
        video=args.video,
        frames=args.frames,
        frame_size=args.frame_size,
        warmup=args.warmup,
        repeats=args.repeats,
        new_tokens=args.new_tokens,
        dtype=args.dtype,
        device=args.device,
        threads=args.threads,
        overrides=overrides,
    )
    check_out_dir(args.out, "--out")
    partial_path = os.path.join(args.out, PARTIAL)
    key = json.loads(json.dumps(dataclasses.asdict(spec)))  # tuples -> lists, as read back from disk
    done: list[dict] = []
    if os.path.exists(partial_path) and not args.restart:
        old = read_json_report(partial_path, "--out", ("spec", "rows"))
        if old["spec"] != key:
            raise ValueError(
                f"--out: {partial_path!r} holds an interrupted run with other settings; use another "
                "--out, or --restart to discard it"
            )
        done = list(old["rows"])
        print(f"resuming: {len(done)} row(s) already measured in {partial_path}", file=sys.stderr)
    partial: list[dict] = list(done)

    def on_row(row: dict) -> None:
        # why: a long CPU run that is stopped early still leaves every finished row on disk, never half a file.
        partial.append(row)
        atomic_write_json(partial_path, {"spec": key, "rows": partial})

    report = run_bench(
        spec,
        progress=not args.no_progress,
        log=lambda s: print(s, file=sys.stderr, flush=True),
        on_row=on_row,
        done_rows=done,
    )
    report["command"] = "tango-prune bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else None
    atomic_write_json(os.path.join(args.out, "bench.json"), report)
    _write_markdown(report, args.out)
    os.remove(partial_path)
    return 0


def _run_vllm(args: argparse.Namespace) -> int:
    """``--engine vllm``: write ``bench.json`` and ``bench.md`` of :func:`tango_prune.bench.vllm_engine.run_vllm_bench`."""
    from ..bench.vllm_engine import VllmBenchSpec, run_vllm_bench, vllm_markdown

    if args.render or args.overrides:
        raise ValueError(
            "--engine vllm: --render and --set are not supported (set method fields in docs/vllm.md's hf_overrides)"
        )
    spec = VllmBenchSpec(
        model=args.model,
        methods=args.methods,
        retentions=args.retentions,
        requests=args.requests,
        frames=args.frames,
        frame_size=args.frame_size or 448,
        new_tokens=args.new_tokens,
        warmup=args.warmup,
        repeats=args.repeats,
        dtype=args.dtype,
    )
    check_out_dir(args.out, "--out")
    report = run_vllm_bench(spec, log=lambda s: print(s, file=sys.stderr, flush=True))
    report["command"] = "tango-prune bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else None
    atomic_write_json(os.path.join(args.out, "bench.json"), report)
    text = vllm_markdown(report) + (f"\nCommand: `{report['command']}`\n" if report.get("command") else "")
    atomic_write_text(os.path.join(args.out, "bench.md"), text)
    print(text)
    return 0


def _write_markdown(report: dict, out: str) -> None:
    """Write ``bench.md`` (full table, then the method x retention summary) into ``out`` and print it."""
    from ..bench import markdown_summary, markdown_table

    text = markdown_table(report) + "\n" + markdown_summary(report)
    if report.get("resumed_rows"):
        text += (
            f"\nResumed run: {report['resumed_rows']} row(s) were measured by an earlier, interrupted process; "
            "compare ratios within one process where it matters.\n"
        )
    if report.get("command"):
        text += f"\nCommand: `{report['command']}`\n"
    atomic_write_text(os.path.join(out, "bench.md"), text)
    print(text)
