"""Sweep the unpruned model and methods x retentions over lmms-eval tasks; resumable; one table, JSON and plot.

Every run (``none``, or one method at one retention) calls ``lmms_eval.evaluator.simple_evaluate`` with a
``tango_*`` model id and is saved, atomically (temporary file + ``os.replace``), as ``runs/<key>.json`` in
the output directory, before the next run starts. A rerun with the same settings skips runs already saved as
successful, so an interrupted sweep resumes where it stopped; failed runs are retried. A run fails when
lmms-eval raises, returns nothing (it does both for a bad model, task or ``model_args`` while its command
line still exits 0) or returns no score for a requested task; :func:`sweep` reports failures and the
command exits non-zero.

Under ``accelerate launch`` every process runs every evaluation (lmms-eval shards the documents) and only
the main process writes files.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
import traceback
from pathlib import Path

from ..validate import check_int
from typing import Any, Callable, Sequence

from ..commands._checks import atomic_write_json, atomic_write_text
from .lmms_eval import NONE

__all__ = ["Run", "plan", "sweep", "lmms_evaluate", "process_state", "task_score", "markdown_table", "save_plot"]


@dataclasses.dataclass(frozen=True)
class Run:
    """One evaluation of a sweep: ``method`` (``none`` for the unpruned model) at ``retention``."""

    method: str
    retention: float

    @property
    def key(self) -> str:
        """File-name-safe identifier, e.g. ``none`` or ``tango@0.1``."""
        return NONE if self.method == NONE else f"{self.method}@{self.retention:g}"


def plan(methods: Sequence[str], retentions: Sequence[float]) -> list[Run]:
    """``none`` first, then every method at every retention (in the given orders, duplicates dropped)."""
    import tango_prune as tp

    known = tp.methods()
    for m in methods:
        if m not in known:
            raise ValueError(f"methods must be registered names {known}, got {m!r}")
    for r in retentions:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:
            raise ValueError(f"retentions must be numbers in (0, 1], got {r!r}")
    runs = [Run(NONE, 1.0)] + [Run(m, float(r)) for m in methods for r in retentions]
    return list(dict.fromkeys(runs))


def task_score(results: dict, task: str) -> tuple[str, float] | None:
    """``(metric, value)`` of ``task`` in lmms-eval's results (its first metric that is not a stderr), or
    ``None`` when the results hold no score for it."""
    for section in ("results", "groups"):
        entry = (results.get(section) or {}).get(task)
        if not isinstance(entry, dict):
            continue
        for name, value in entry.items():
            metric = name.split(",")[0]
            if metric == "alias" or metric.endswith("_stderr") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                return name, float(value)
    return None


def lmms_evaluate(*, model: str, model_args: str, tasks: list[str], limit: int | None, include_path: str | None) -> Any:
    """One ``lmms_eval.evaluator.simple_evaluate`` call (batch size 1, no sample logs); its results dict."""
    from lmms_eval.evaluator import simple_evaluate

    manager = _task_manager(include_path, model)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:  # lmms-eval itself fails with a bare KeyError
        raise ValueError(
            f"unknown lmms-eval task(s) {unknown}"
            + ("" if include_path else " (tasks of your own need --include-path)")
        )
    return simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=tasks,
        batch_size=1,
        limit=limit,
        log_samples=False,
        task_manager=manager,
        verbosity="WARNING",
    )


@functools.lru_cache(maxsize=4)
def _task_manager(include_path: str | None, model: str) -> Any:
    # why: indexing lmms-eval's task YAMLs takes ~10 s; every run of a sweep shares one index
    from lmms_eval.tasks import TaskManager

    return TaskManager("WARNING", include_path=include_path, model_name=model)


def process_state() -> tuple[bool, Callable[[], None]]:
    """(is the main process, barrier) under ``accelerate launch``; a single process without accelerate."""
    try:
        from accelerate import PartialState
        from accelerate.utils import parse_flag_from_env
    except ImportError:
        return True, lambda: None
    # why: the first PartialState fixes the backend for the process; `accelerate launch --cpu` asks for gloo
    # through this variable, which Accelerator() reads but a bare PartialState() does not
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    return state.is_main_process, state.wait_for_everyone


def _evaluate_run(run: Run, settings: dict, evaluate: Callable[..., Any], is_main: bool = True) -> dict:
    """One run through lmms-eval; never raises for an evaluation failure (it is recorded). Only the main
    process of a distributed run gets results back; the others record a run that did not raise as ok."""
    args = f"pretrained={settings['pretrained']},method={run.method}"
    if run.method != NONE:
        args += f",retention={run.retention!r}"
    if settings["model_args"]:
        args += "," + settings["model_args"]
    record: dict[str, Any] = {
        "key": run.key,
        "method": run.method,
        "retention": run.retention,
        "model_args": args,
        "settings": settings,
        "scores": {},
        "tango": {},
    }
    t0 = time.time()
    try:
        results = evaluate(
            model=settings["model"],
            model_args=args,
            tasks=list(settings["tasks"]),
            limit=settings["limit"],
            include_path=settings["include_path"],
        )
    except Exception as exc:  # lmms-eval, the model or a task failed: record it and go on with the sweep
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        results = None
    else:
        if results is None and not is_main:
            record.update(status="ok", note="results are gathered on the main process")
        elif not isinstance(results, dict):
            record.update(status="failed", error="lmms-eval returned no results")
    record["seconds"] = round(time.time() - t0, 1)
    if results is None or "status" in record:
        record.setdefault("status", "failed")
        return record
    missing = []
    for task in settings["tasks"]:
        score = task_score(results, task)
        if score is None:
            missing.append(task)
            continue
        n = (results.get("n-samples") or {}).get(task, {})
        record["scores"][task] = {
            "metric": score[0],
            "value": score[1],
            "n": n.get("effective") if isinstance(n, dict) else None,
        }
    record["tango"] = {
        k[len("avg_tango_") :]: v for k, v in (results.get("throughput") or {}).items() if k.startswith("avg_tango_")
    }
    if missing:
        record.update(status="failed", error=f"lmms-eval returned no score for task(s) {missing}")
    else:
        record["status"] = "ok"
    return record


def sweep(
    out_dir: str | Path,
    *,
    model: str,
    pretrained: str,
    tasks: Sequence[str],
    methods: Sequence[str],
    retentions: Sequence[float],
    model_args: str = "",
    include_path: str | None = None,
    limit: int | None = None,
    evaluate: Callable[..., Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run (or resume) the sweep into ``out_dir``; returns the summary also written as ``sweep.json``.

    ``model`` is a ``tango_*`` model id, ``model_args`` extra plugin arguments (``frames=32,dtype=bfloat16``)
    added to every run. ``evaluate`` (keyword arguments ``model``, ``model_args``, ``tasks``, ``limit``,
    ``include_path``; returns lmms-eval's results dict) defaults to :func:`lmms_evaluate`. The summary has
    ``runs`` (one record per run, ``status`` ``ok`` or ``failed``), ``failed`` (their keys) and the settings.
    """
    from .lmms_eval import MODEL_IDS

    if model not in MODEL_IDS:
        raise ValueError(f"model must be one of {sorted(MODEL_IDS)}, got {model!r}")
    tasks = [t for t in tasks if t]
    if not tasks:
        raise ValueError("tasks must name at least one lmms-eval task")
    check_int("limit", limit, 1, optional=True)
    for key in ("pretrained", "method", "retention"):
        if f"{key}=" in f",{model_args}".replace(" ", ""):
            raise ValueError(f"model_args must not set {key} (the sweep sets it), got {model_args!r}")
    runs = plan(methods, retentions)
    evaluate = evaluate or lmms_evaluate
    is_main, barrier = process_state()
    settings = {
        "model": model,
        "pretrained": pretrained,
        "tasks": list(tasks),
        "model_args": model_args,
        "include_path": include_path,
        "limit": limit,
    }
    out = Path(out_dir)
    run_dir = out / "runs"
    run_dir.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict] = {}
    for run in runs:
        path = run_dir / f"{run.key}.json"
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if old.get("status") == "ok" and old.get("settings") == settings:
            done[run.key] = old
    barrier()  # every process decides what to skip before the main one writes anything
    records = []
    for i, run in enumerate(runs, 1):
        if run.key in done:
            log(f"[{i}/{len(runs)}] {run.key}: done earlier, skipped")
            records.append(done[run.key])
            continue
        log(f"[{i}/{len(runs)}] {run.key}: evaluating {','.join(tasks)}")
        rec = _evaluate_run(run, settings, evaluate, is_main)
        if is_main:
            atomic_write_json(str(run_dir / f"{run.key}.json"), rec)
        log(
            f"[{i}/{len(runs)}] {run.key}: {rec['status']}"
            + (f" ({rec['error']})" if rec["status"] != "ok" else f" in {rec['seconds']}s")
        )
        records.append(rec)
    summary = {
        "settings": settings,
        "runs": [{k: v for k, v in r.items() if k != "traceback"} for r in records],
        "failed": [r["key"] for r in records if r["status"] != "ok"],
    }
    if is_main:
        atomic_write_json(str(out / "sweep.json"), summary)
        atomic_write_text(str(out / "sweep.md"), markdown_table(summary))
        save_plot(summary, out / "sweep.png")
    return summary


def _relative(summary: dict) -> dict[str, dict[str, float]]:
    """Score / score of ``none`` per run key and task (runs or tasks without both scores are left out)."""
    base = next((r for r in summary["runs"] if r["method"] == NONE and r["status"] == "ok"), None)
    out: dict[str, dict[str, float]] = {}
    for r in summary["runs"]:
        for task, s in r["scores"].items():
            b = (base or {}).get("scores", {}).get(task)
            if b is not None and b["value"]:
                out.setdefault(r["key"], {})[task] = s["value"] / b["value"]
    return out


def markdown_table(summary: dict) -> str:
    """One row per run, one column per task (score and % of ``none``), the mean %, the visual tokens kept."""
    tasks = summary["settings"]["tasks"]
    rel = _relative(summary)
    lines = [
        "| run | " + " | ".join(tasks) + " | mean % of none | visual tokens | prune ms |",
        "|" + "---|" * (len(tasks) + 4),
    ]
    for r in summary["runs"]:
        if r["status"] != "ok":
            lines.append(f"| {r['key']} | " + " | ".join("failed" for _ in tasks) + " | | | |")
            continue
        cells = []
        for t in tasks:
            v = r["scores"][t]["value"]
            p = rel.get(r["key"], {}).get(t)
            cells.append(f"{v:.4g}" + (f" ({100 * p:.1f}%)" if p is not None else ""))
        ps = [rel[r["key"]][t] for t in tasks if t in rel.get(r["key"], {})]
        mean = f"{100 * sum(ps) / len(ps):.1f}%" if len(ps) == len(tasks) else ""
        tg = r.get("tango") or {}
        toks = (
            f"{tg['visual_tokens_before']:.0f} -> {tg['visual_tokens_after']:.0f}"
            if "visual_tokens_after" in tg
            else ""
        )
        ms = f"{tg['prune_ms']:.1f}" if "prune_ms" in tg else ""
        lines.append(f"| {r['key']} | " + " | ".join(cells) + f" | {mean} | {toks} | {ms} |")
    s = summary["settings"]
    lines += [
        "",
        f"Model {s['model']} ({s['pretrained']}), lmms-eval tasks {', '.join(tasks)}"
        + (f", first {s['limit']} documents per task" if s["limit"] else "")
        + ". Each cell: the task's "
        "metric (as lmms-eval reports it) and its percentage of the unpruned (`none`) run of the same "
        "wrapper; visual tokens: mean per video before -> after pruning.",
    ]
    if summary["failed"]:
        lines.append(f"Failed runs: {', '.join(summary['failed'])} (see runs/<run>.json).")
    return "\n".join(lines) + "\n"


_PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]


def save_plot(summary: dict, path: str | Path) -> Path:
    """A PNG (drawn with PIL) of % of ``none`` vs retention, one panel per task, one line per method."""
    from PIL import Image, ImageDraw

    tasks = summary["settings"]["tasks"]
    rel = _relative(summary)
    runs = [r for r in summary["runs"] if r["method"] != NONE and r["key"] in rel]
    methods = list(dict.fromkeys(r["method"] for r in runs))
    rets = sorted({r["retention"] for r in runs}) or [1.0]
    vals = [v for d in rel.values() for v in d.values()] or [1.0]
    lo, hi = min(0.5, min(vals)), max(1.05, max(vals))
    pw, ph, m = 320, 240, 46
    img = Image.new("RGB", (len(tasks) * (pw + m) + m + 150, ph + 2 * m), "white")
    d = ImageDraw.Draw(img)
    for k, task in enumerate(tasks):
        x0, y0 = m + k * (pw + m), m

        def xy(r: float, v: float) -> tuple[float, float]:
            fx = 0.5 if len(rets) == 1 else rets.index(r) / (len(rets) - 1)
            return x0 + 10 + fx * (pw - 20), y0 + ph - (v - lo) / (hi - lo) * ph

        d.rectangle([x0, y0, x0 + pw, y0 + ph], outline="black")
        d.text((x0, y0 - 16), task, fill="black")
        for v in (lo, 1.0, hi):
            y = xy(rets[0], v)[1]
            d.line([x0 - 4, y, x0, y], fill="black")
            d.text((x0 - 40, y - 6), f"{100 * v:.0f}%", fill="black")
        y1 = xy(rets[0], 1.0)[1]
        d.line([x0, y1, x0 + pw, y1], fill=(180, 180, 180))
        for r in rets:
            x = xy(r, lo)[0]
            d.text((x - 10, y0 + ph + 4), f"{r:g}", fill="black")
        for j, meth in enumerate(methods):
            pts = [
                xy(r["retention"], rel[r["key"]][task]) for r in runs if r["method"] == meth and task in rel[r["key"]]
            ]
            pts.sort()
            colour = _PALETTE[j % len(_PALETTE)]
            if len(pts) > 1:
                d.line(pts, fill=colour, width=2)
            for x, y in pts:
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    lx = m + len(tasks) * (pw + m)
    d.text((lx, m - 16), "% of none vs retention", fill="black")
    for j, meth in enumerate(methods):
        colour = _PALETTE[j % len(_PALETTE)]
        d.rectangle([lx, m + 16 * j + 3, lx + 10, m + 16 * j + 13], fill=colour)
        d.text((lx + 16, m + 16 * j), meth, fill="black")
    path = Path(path)
    img.save(path)
    return path
