"""Rebuild the testbed accuracy table in priority order, resumably, in parallel processes.

    python benchmarks/testbed_table.py --out OUT [--limit N] [--stages 1,2,3,4,5]
        [--final-json docs/testbed_eval.json --final-markdown docs/testbed_eval.md --plot docs/testbed_eval.png]

Stages (each a few ``tango-prune eval --resume`` runs in parallel, 1 thread each), most needed first:

1. the cells the instrument checks read: Tango at r = 1.0 and 0.1, the evidence oracle, random and uniform
   at r = 0.1;
2. the other registered methods at r = 1.0 and 0.1, and the oracle, random and uniform at r = 1.0;
3. Tango's ablations and the LLaVA-Video layout row at r = 1.0 and 0.1;
4. every method and the oracle at r = 0.25, 0.2, 0.15, 0.05;
5. the ablations at r = 0.25, 0.2, 0.15, 0.05.

Every run writes its partial report atomically after each finished cell; rerunning the script continues where
it stopped. After each stage the reports written so far are merged into the final files (a partial table says
so and shows ``-`` for cells not scored yet).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ALL = (1.0, 0.25, 0.2, 0.15, 0.1, 0.05)
FIRST = "1,0.1"
REST = "0.25,0.2,0.15,0.05"


def _runs(stage: int, methods: list[str]) -> list[tuple[str, list[str]]]:
    """The parallel runs of one stage: (report name, extra ``tango-prune eval`` arguments)."""
    checks = ["tango", "random", "uniform"]  # what the instrument checks read, with the oracle
    others = [m for m in methods if m not in checks]
    if stage == 1:
        return [
            ("s1a", ["--methods", "tango", "--retentions", FIRST]),
            ("s1b", ["--methods", "random,uniform", "--oracle", "--retentions", "0.1"]),
        ]
    if stage == 2:
        return [
            ("s2a", ["--methods", ",".join(others[0::2]), "--retentions", FIRST]),
            ("s2b", ["--methods", ",".join(others[1::2]), "--retentions", FIRST]),
            ("s2c", ["--methods", "random,uniform", "--oracle", "--retentions", "1"]),
        ]
    if stage == 3:
        return [("s3", ["--methods", "", "--ablations", "--retentions", FIRST])]
    if stage == 4:
        return [
            ("s4a", ["--methods", ",".join(["tango"] + others[0::2]), "--oracle", "--retentions", REST]),
            ("s4b", ["--methods", ",".join(["random", "uniform"] + others[1::2]), "--retentions", REST]),
        ]
    if stage == 5:
        return [("s5", ["--methods", "", "--ablations", "--retentions", REST])]
    raise ValueError(f"stage must be 1..5, got {stage}")


def _merge(out: Path, args: argparse.Namespace) -> None:
    """Merge every report in ``out`` into the final files, rows in reading order: Tango, the baselines, the
    oracle, then the ablations."""
    import json

    from tango_prune.testbed.evaluate import TANGO_ABLATIONS, markdown_table, merge_reports, save_report
    from tango_prune.testbed.oracle import ORACLE

    reports = [json.loads(p.read_text()) for p in sorted(out.glob("s*.json"))]
    if not reports:
        return
    rep = merge_reports(reports)
    rank = {"tango": 0, ORACLE: 2, **{r.name: 3 + i for i, r in enumerate(TANGO_ABLATIONS)}}
    rep["methods"] = sorted(rep["methods"], key=lambda m: (rank.get(m, 1), m))
    save_report(rep, args.final_json, args.final_markdown or str(Path(args.final_json).with_suffix(".md")))
    if args.plot:
        from tango_prune.testbed.plot import plot_report

        plot_report(rep, args.plot)
    print(markdown_table(rep), flush=True)


def main() -> int:
    """Run the requested stages and merge every report written so far."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="directory of the per-run reports")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--stages", default="1,2,3,4,5")
    ap.add_argument("--final-json", default=None)
    ap.add_argument("--final-markdown", default=None)
    ap.add_argument("--plot", default=None)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    import tango_prune as tp

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "tango_prune.cli", "eval", "--threads", "1", "--no-progress", "--resume"]
    if args.limit is not None:
        cli += ["--limit", str(args.limit)]
    if args.model is not None:
        cli += ["--model", args.model]
    for stage in (int(s) for s in args.stages.split(",")):
        jobs = []
        for name, extra in _runs(stage, tp.methods()):
            cmd = cli + extra + ["--json", str(out / f"{name}.json"), "--markdown", str(out / f"{name}.md")]
            log = open(out / f"{name}.log", "a")
            jobs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        codes = [j.wait() for j in jobs]
        if args.final_json:
            _merge(out, args)
        if any(codes):
            print(f"stage {stage}: a run failed (exit codes {codes}); see {out}/*.log", file=sys.stderr)
            return 1
        print(f"stage {stage} done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
