"""``tango-prune bench``: TTFT split (vision / pruning / prefill), decode speed and peak memory per method."""

from __future__ import annotations

import argparse
import json
import os
import sys

NAME = "bench"
HELP = ("Measure TTFT (vision / pruning / prefill), decode tokens/s and peak memory of a Video LLM for several "
        "pruning methods and retentions; writes JSON and a markdown table.")


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tango-prune bench``."""
    parser.add_argument("--model", default="llava-ov-0.5b",
                        help="preset (llava-ov-0.5b, llava-ov-7b, qwen2.5-vl-3b, qwen2.5-vl-7b, tiny-llava-ov) "
                             "or a save_pretrained directory (default: llava-ov-0.5b)")
    parser.add_argument("--methods", type=_names, default=("tango",), help="comma-separated method names")
    parser.add_argument("--retentions", type=_floats, default=(0.1,), help="comma-separated retentions in (0, 1]")
    parser.add_argument("--video", default=None, help="video file (default: a synthetic clip)")
    parser.add_argument("--frames", type=int, default=32, help="frames sampled from the video (default 32)")
    parser.add_argument("--warmup", type=int, default=1, help="discarded runs per configuration (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (default 3)")
    parser.add_argument("--new-tokens", type=int, default=8, help="generated tokens per run (default 8)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", default="bench_out", help="output directory for bench.json and bench.md")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and write ``bench.json`` and ``bench.md`` into ``--out``."""
    from ..bench import BenchSpec, markdown_table, run_bench

    spec = BenchSpec(model=args.model, methods=args.methods, retentions=args.retentions, video=args.video,
                     frames=args.frames, warmup=args.warmup, repeats=args.repeats, new_tokens=args.new_tokens,
                     dtype=args.dtype, device=args.device, threads=args.threads)
    os.makedirs(args.out, exist_ok=True)
    partial: list[dict] = []

    def on_row(row: dict) -> None:
        # why: a long CPU run that is stopped early still leaves every finished row on disk.
        partial.append(row)
        with open(os.path.join(args.out, "bench.partial.json"), "w", encoding="utf-8") as fh:
            json.dump(partial, fh, indent=2)

    report = run_bench(spec, progress=not args.no_progress,
                       log=lambda s: print(s, file=sys.stderr, flush=True), on_row=on_row)
    report["command"] = "tango-prune bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else None
    os.remove(os.path.join(args.out, "bench.partial.json"))
    with open(os.path.join(args.out, "bench.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
    table = markdown_table(report)
    with open(os.path.join(args.out, "bench.md"), "w", encoding="utf-8") as fh:
        fh.write(table)
    print(table)
    return 0
