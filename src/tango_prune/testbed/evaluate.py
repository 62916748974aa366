"""Accuracy of every pruning method at every retention on the testbed's held-out split.

Each question is answered by greedy decoding of one token (argmax of the logits at the last prompt position)
through the model's standard ``forward``; pruning is enabled on the model with the model adapter
(:func:`tango_prune.apply` / :func:`tango_prune.remove`), never implemented here. The full-token row is the
unmodified model. Batches are left-padded so the last position is the prompt's end whatever the adapter
does to the visual sequence (RoPE is relative, so a constant shift of positions does not change answers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from . import data as D

__all__ = [
    "RETENTIONS",
    "FULL",
    "Row",
    "TANGO_ABLATIONS",
    "oracle_row",
    "answer_batch",
    "accuracy",
    "evaluate",
    "check_report",
    "merge_reports",
    "instrument_checks",
    "checks_markdown",
    "markdown_table",
    "save_report",
    "check_cells",
]

RETENTIONS = (1.0, 0.25, 0.2, 0.15, 0.1, 0.05)
FULL = "full (no pruning)"


def _collate(proc, samples: Sequence[D.Sample]) -> dict:
    inputs = [proc(s.clip.frames, s.question.text, s.question.options) for s in samples]
    L = max(int(i["input_ids"].shape[1]) for i in inputs)
    ids = torch.full((len(inputs), L), proc.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(inputs), L, dtype=torch.long)
    for b, inp in enumerate(inputs):
        n = int(inp["input_ids"].shape[1])
        ids[b, L - n :] = inp["input_ids"][0]
        mask[b, L - n :] = 1
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values_videos": torch.cat([i["pixel_values_videos"] for i in inputs]),
    }


@torch.no_grad()
def answer_batch(model, proc, samples: Sequence[D.Sample]) -> list[str]:
    """Greedy one-word answers of ``model`` to ``samples`` (one forward pass). A model patched by
    :func:`tango_prune.apply` also gets the frames' real times (``t / FPS`` seconds), as a decoded mp4
    would give them, for ST-RoPE."""
    from tango_prune.models import is_applied

    inputs = _collate(proc, samples)
    if is_applied(model):
        T = inputs["pixel_values_videos"].shape[1]
        inputs["video_timestamps"] = [[t / D.FPS for t in range(T)] for _ in samples]
    logits = model(**inputs).logits[:, -1]
    return proc.tokenizer.convert_ids_to_tokens(logits.argmax(-1).tolist())


def _answers(model, proc, samples: Sequence[D.Sample], key: tuple, encodings: dict | None) -> list[str]:
    """:func:`answer_batch`, the encoder output served from / recorded into ``encodings`` under ``key``."""
    from tango_prune.models import is_applied, last_encoding, reuse_encoding

    if encodings is None or not is_applied(model):
        return answer_batch(model, proc, samples)
    reuse_encoding(model, encodings.get(key))
    try:
        answers = answer_batch(model, proc, samples)
    finally:
        reuse_encoding(model, None)
    encodings.setdefault(key, last_encoding(model))
    return answers


@functools.lru_cache(maxsize=D.TEST_SIZE)
def _test_sample(index: int) -> D.Sample:
    # every method x retention scores the same questions: render each clip once per process
    return D.make_sample(D.TEST, index)


def accuracy(
    model,
    proc,
    indices: Iterable[int],
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
    encodings: dict | None = None,
) -> dict:
    """Score ``model`` on test items ``indices``: ``{"correct", "total", "accuracy", "by_qtype"}``.

    ``encodings`` (a dict kept by the caller across calls on the same model and token layout) serves a
    model patched by :func:`tango_prune.apply` the vision encoder's output of a batch it has scored before
    (keyed by the batch's test items, in order) instead of running the encoder again: the same inputs reach
    the pruner, so the same answers, at a third of the time on the testbed, where the encoder dominates.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    indices = list(indices)
    correct = 0
    by: dict[str, tuple[int, int]] = {}
    for s in range(0, len(indices), batch_size):
        batch = indices[s : s + batch_size]
        samples = [_test_sample(i) for i in batch]
        for x, a in zip(samples, _answers(model, proc, samples, tuple(batch), encodings)):
            ok = int(a == x.question.answer)
            correct += ok
            c, n = by.get(x.question.qtype, (0, 0))
            by[x.question.qtype] = (c + ok, n + 1)
        if progress is not None:
            progress(len(samples))
    n = len(indices)
    return {
        "correct": correct,
        "total": n,
        "accuracy": correct / n if n else 0.0,
        "by_qtype": {k: {"correct": c, "total": t} for k, (c, t) in sorted(by.items())},
    }


@contextlib.contextmanager
def _pruned(model, config, variant: str | None = None, fastv: dict | None = None):
    import tango_prune as tp

    if not hasattr(tp, "apply"):
        raise ValueError(
            "pruning needs the model adapter (tango_prune.apply), which this install lacks; "
            "evaluate with retentions=(1.0,) only"
        )
    tp.apply(model, config, variant=variant, stages=[tp.FastVConfig(**fastv)] if fastv else [])
    try:
        yield model
    finally:
        tp.remove(model)


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the table: ``method`` (a registered name, or :data:`~.oracle.ORACLE`) with config
    ``overrides``, for LLaVA a token-layout ``variant`` (``None``: the model's own) and an intra-LLM ``fastv``
    stage (:class:`~tango_prune.FastVConfig` fields), and ``retention_scale``: the pre-LLM retention is
    ``min(1, r * retention_scale)`` (an intra-LLM stage removes the rest)."""

    name: str
    method: str
    overrides: dict = dataclasses.field(default_factory=dict)
    variant: str | None = None
    retention_scale: float = 1.0
    fastv: dict | None = None

    def spec(self) -> dict:
        """The JSON form recorded in reports."""
        return {
            "method": self.method,
            "overrides": dict(self.overrides),
            "variant": self.variant,
            "retention_scale": self.retention_scale,
            "fastv": dict(self.fastv) if self.fastv else None,
        }

    def retention(self, r: float) -> float:
        """The pre-LLM retention this row uses for table column ``r``."""
        return min(1.0, float(r) * self.retention_scale)


#: Tango's ablations (each switches one published component off; every other field stays the default)
TANGO_ABLATIONS = (
    Row("tango (no diversity selection)", "tango", {"diversity": False}),
    Row("tango (no ST-RoPE)", "tango", {"strope": False}),
    Row("tango (no context merging)", "tango", {"merge_context": False}),
    Row("tango (no static collapse)", "tango", {"tau_static": 1.0}),
    Row("tango (segmentation none)", "tango", {"segmentation": "none"}),
    Row("tango (segmentation fastvid)", "tango", {"segmentation": "fastvid"}),
    # LLaVA-Video: 2x2 average pooling, per-row newlines, and the intra-LLM FastV stage. The published run
    # prunes at layer 18 of 28 (keeps 0.5), so 23/28 of the layer-averaged tokens; on the 4-layer testbed
    # layer 3 keeps (3 + 0.5) / 4, and the pre-LLM retention is scaled by 8/7 so the average is r.
    Row(
        "tango (llava-video layout + FastV)",
        "tango",
        variant="llava-video",
        retention_scale=8 / 7,
        fastv={"layer": 3, "keep": 0.5},
    ),
)


def oracle_row() -> Row:
    """The evidence-oracle reference row (see :mod:`tango_prune.testbed.oracle`)."""
    from .oracle import ORACLE

    return Row(ORACLE, ORACLE)


def _oracle_config(sample: D.Sample, retention: float, cell: int):
    from .oracle import OracleConfig, cell_objects, evidence_cells

    T = sample.clip.frames.shape[0]
    cells = cell_objects(sample.clip.shape_ids, cell)
    ev = evidence_cells(sample.question, sample.clip.objects, cells, T)
    return OracleConfig(retention=retention, evidence=tuple(int(i) for i in np.nonzero(ev)[0]))


def _score_row(
    model, proc, row: Row, retention: float, indices: list[int], batch_size: int, progress, encodings: dict
) -> dict:
    """Accuracy of one row at one retention (the adapter is applied and removed around it).

    ``encodings`` maps a token layout (``row.variant``) to the encoder outputs of the batches scored so far
    (see :func:`accuracy`): the encoder runs once per batch and layout, whatever the method."""
    import tango_prune as tp
    from .oracle import ORACLE, registered

    retention = row.retention(retention)
    served = encodings.setdefault(row.variant, {})
    if row.method != ORACLE:
        with _pruned(model, tp.make_config(row.method, retention=retention, **row.overrides), row.variant, row.fastv):
            return accuracy(model, proc, indices, batch_size, progress, served)
    # the oracle's choice depends on each question, so it is applied one question at a time
    parts = []
    with registered():
        for i in indices:
            cfg = _oracle_config(_test_sample(i), retention, 2 * proc.patch_size)
            with _pruned(model, cfg, row.variant):
                parts.append(accuracy(model, proc, [i], 1, progress, served))
    return _sum_results(parts)


def _sum_results(parts: list[dict]) -> dict:
    correct, total = 0, 0
    by: dict[str, tuple[int, int]] = {}
    for p in parts:
        correct += p["correct"]
        total += p["total"]
        for k, v in p["by_qtype"].items():
            c, n = by.get(k, (0, 0))
            by[k] = (c + v["correct"], n + v["total"])
    return {
        "correct": correct,
        "total": total,
        "accuracy": correct / total if total else 0.0,
        "by_qtype": {k: {"correct": c, "total": t} for k, (c, t) in sorted(by.items())},
    }


def _settings(report: dict) -> tuple:
    return (
        report.get("n"),
        [float(r) for r in report.get("retentions", [])],
        report.get("overrides", {}),
        report.get("model"),
    )


def evaluate(
    model,
    proc,
    methods: Sequence[str],
    retentions: Sequence[float] = RETENTIONS,
    limit: int | None = None,
    batch_size: int = 16,
    show_progress: bool = True,
    overrides: dict | None = None,
    extra_rows: Sequence[Row] = (),
    previous: dict | None = None,
    checkpoint: Callable[[dict], None] | None = None,
    model_name: str | None = None,
) -> dict:
    """Accuracy of the unpruned model and of each row at each retention on the first ``limit`` test items.

    Rows are ``methods`` (registered names, each with ``overrides``, config fields set for every method,
    e.g. ``{"tau_static": 1.0}``) followed by ``extra_rows`` (:class:`Row`: the oracle, ablations, layouts).
    ``previous`` is a partial report of the same settings (``n``, retentions, overrides, ``model_name``):
    its finished cells are kept, not re-scored. ``checkpoint`` receives the report after every finished cell
    (with ``complete`` False until the end), so an interrupted run can be resumed from it.

    Returns a JSON-ready dict: ``n``, ``full`` (the unpruned result), ``rows`` (each row's method, overrides
    and variant), ``results[row][str(retention)]`` (each with ``relative`` = accuracy / full accuracy),
    ``checks`` (:func:`instrument_checks`), ``complete`` and ``seconds``.
    """
    import tango_prune as tp

    known = tp.methods()
    for m in methods:
        if m not in known:
            raise ValueError(f"methods must be registered names {known}, got {m!r}")
    for r in retentions:
        if isinstance(r, bool) or not (isinstance(r, (int, float)) and 0.0 < r <= 1.0):
            raise ValueError(f"retentions must be floats in (0, 1], got {r!r}")
    rows = [Row(m, m, dict(overrides or {})) for m in methods] + list(extra_rows)
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"rows must have distinct names, got {names}")
    indices = list(D.heldout_indices(limit))
    report: dict[str, Any] = {
        "benchmark": "testbed",
        "n": len(indices),
        "overrides": dict(overrides or {}),
        "retentions": [float(r) for r in retentions],
        "methods": names,
        "rows": {r.name: r.spec() for r in rows},
        "full": None,
        "results": {},
        "checks": [],
        "complete": False,
        "seconds": 0.0,
        "torch_threads": torch.get_num_threads(),
    }
    if model_name is not None:
        report["model"] = model_name
    done: dict = {}
    if previous is not None:
        check_report(previous, "previous")
        if _settings(previous) != _settings(report):
            raise ValueError(
                "previous report must have the same n, retentions, overrides and model to be resumed, "
                f"got {_settings(previous)} vs {_settings(report)}"
            )
        report["full"] = previous["full"]
        report["seconds"] = float(previous.get("seconds", 0.0))
        for name, cells in previous.get("results", {}).items():
            spec = previous.get("rows", {}).get(name)
            if name in report["rows"] and spec in (None, report["rows"][name]):
                done[name] = dict(cells)
    todo = [(row, float(r)) for row in rows for r in retentions if str(float(r)) not in done.get(row.name, {})]
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(
            total=len(indices) * (len(todo) + (report["full"] is None)),
            desc="testbed eval",
            unit="q",
            file=sys.stderr,
            dynamic_ncols=True,
        )
    progress = bar.update if bar is not None else None
    t0 = time.time() - report["seconds"]

    def emit() -> None:
        report["results"] = {
            row.name: {
                str(float(r)): done[row.name][str(float(r))]
                for r in retentions
                if str(float(r)) in done.get(row.name, {})
            }
            for row in rows
        }
        report["results"] = {k: v for k, v in report["results"].items() if v}
        report["seconds"] = round(time.time() - t0, 1)
        report["checks"] = instrument_checks(report)
        if checkpoint is not None:
            checkpoint(report)

    model.eval()
    try:
        if report["full"] is None:
            if bar is not None:
                bar.set_postfix_str(FULL)
            report["full"] = accuracy(model, proc, indices, batch_size, progress)
            emit()
        full_acc = report["full"]["accuracy"]
        encodings: dict = {}
        for row, r in todo:
            if bar is not None:
                bar.set_postfix_str(f"{row.name} r={r:g}")
            res = _score_row(model, proc, row, r, indices, batch_size, progress, encodings)
            res["relative"] = res["accuracy"] / full_acc if full_acc else 0.0
            done.setdefault(row.name, {})[str(r)] = res
            emit()
    finally:
        if bar is not None:
            bar.close()
    report["complete"] = True
    emit()
    return report


def check_report(report, where: str) -> None:
    """``ValueError`` naming ``where`` unless ``report`` has the shape :func:`evaluate` writes."""
    if not isinstance(report, dict):
        raise ValueError(f"{where} must hold a JSON object (an eval report), got {type(report).__name__}")
    missing = [k for k in ("n", "retentions", "full", "methods", "results") if k not in report]
    if missing:
        raise ValueError(f"{where} is not an eval report: missing {', '.join(missing)}")
    full = report["full"]
    if not (isinstance(full, dict) and isinstance(full.get("correct"), int) and isinstance(full.get("total"), int)):
        raise ValueError(f"{where} is not an eval report: 'full' lacks integer correct/total")
    if not isinstance(report["methods"], list) or not isinstance(report["results"], dict):
        raise ValueError(f"{where} is not an eval report: 'methods' must be a list and 'results' an object")
    if not isinstance(report["retentions"], list):
        raise ValueError(f"{where} is not an eval report: 'retentions' must be a list")
    for m, cells in report["results"].items():
        if not isinstance(cells, dict) or not all(
            isinstance(c, dict) and {"correct", "total", "accuracy"} <= set(c) for c in cells.values()
        ):
            raise ValueError(f"{where} is not an eval report: results[{m!r}] must map retentions to results")


def merge_reports(reports: Sequence[dict]) -> dict:
    """One report from several runs (e.g. run in parallel processes, or over different retentions); they
    must share the question subset, the overrides and the unpruned result. Rows and retentions are the
    union (retentions in :data:`RETENTIONS` order); a row must have the same spec everywhere, and a cell
    may come from one report only."""
    if not reports:
        raise ValueError("reports must hold at least one report")
    for i, r in enumerate(reports):
        check_report(r, f"report {i + 1}")
    first = reports[0]
    out = {**first, "methods": [], "rows": {}, "results": {}, "seconds": 0.0, "complete": True}
    rets: list[float] = []
    for r in reports:
        if (r["n"], r["full"]["correct"], r.get("overrides", {})) != (
            first["n"],
            first["full"]["correct"],
            first.get("overrides", {}),
        ):
            raise ValueError("reports must share n, overrides and the full-token result to be merged")
        rets += [float(x) for x in r["retentions"] if float(x) not in rets]
        for m in r["methods"]:
            spec = r.get("rows", {}).get(m, {"method": m, "overrides": r.get("overrides", {}), "variant": None})
            if m not in out["rows"]:
                out["methods"].append(m)
                out["rows"][m] = spec
            elif out["rows"][m] != spec:
                raise ValueError(f"reports must give row {m!r} the same method, overrides and layout")
            for key, cell in r["results"].get(m, {}).items():
                if key in out["results"].setdefault(m, {}):
                    raise ValueError(f"reports must not score the same cell twice: {m!r} at r={key}")
                out["results"][m][key] = cell
        out["seconds"] = max(out["seconds"], r.get("seconds", 0.0))
        out["complete"] = out["complete"] and r.get("complete", True)
    order = {float(x): i for i, x in enumerate(RETENTIONS)}
    out["retentions"] = sorted(rets, key=lambda x: (order.get(x, len(order)), -x))
    out["results"] = {m: c for m, c in out["results"].items() if c}
    out["checks"] = instrument_checks(out)
    return out


#: (name, threshold, why it exists); thresholds are fractions (of accuracy, or of full-token accuracy)
CHECKS = (
    ("full", 0.95, "full-token accuracy: the model must know the answers before any token is removed"),
    (
        "redundancy-robust",
        0.97,
        "Tango at r=1.0 applies only static collapse (a position whose consecutive-frame cosine stays above "
        "the default tau_static=0.8 through a segment is kept once, HoliTom's rule), meant to remove redundant "
        "tokens: that must cost almost nothing, or the table measures layout fragility instead of lost "
        "information (on the testbed's features it also removes tokens of moving objects, see docs/testbed.md)",
    ),
    (
        "evidence oracle",
        0.95,
        "keeping the question's evidence cells and filling the budget uniformly at r=0.1 "
        "must keep the answer: proves 10% of the tokens can carry it, so a method that loses accuracy chose badly",
    ),
    (
        "headroom",
        0.10,
        "random and uniform selection at r=0.1 must stay clearly below the oracle (gap in "
        "relative accuracy), so good and bad selection can be told apart",
    ),
)


def _cell(report: dict, row: str, r: float) -> dict | None:
    return report.get("results", {}).get(row, {}).get(str(float(r)))


def _is_default(report: dict, row: str) -> bool:
    spec = report.get("rows", {}).get(row, {"overrides": report.get("overrides", {}), "variant": None})
    return not spec.get("overrides") and spec.get("variant") is None


def instrument_checks(report: dict) -> list[dict]:
    """The four instrument checks of the model (not of the methods) from a report's cells: per check its
    ``name``, ``why``, ``value`` (``None`` when the report lacks the cells it needs), ``threshold``,
    ``passed`` (``None`` when not measured) and ``detail``."""
    from .oracle import ORACLE

    out = []
    full = report.get("full")
    for name, thr, why in CHECKS:
        value, detail = None, "not measured in this report"
        if name == "full" and full is not None:
            value = full["correct"] / full["total"] if full["total"] else 0.0
            detail = f"{full['correct']}/{full['total']} with every token"
        elif name == "redundancy-robust":
            x = _cell(report, "tango", 1.0) if _is_default(report, "tango") else None
            if x is not None:
                value = x["relative"]
                detail = f"tango r=1.0: {x['correct']}/{x['total']} = {100 * value:.1f}% of full"
        elif name == "evidence oracle":
            x = _cell(report, ORACLE, 0.1)
            if x is not None:
                value = x["relative"]
                detail = f"oracle r=0.1: {x['correct']}/{x['total']} = {100 * value:.1f}% of full"
        elif name == "headroom":
            o = _cell(report, ORACLE, 0.1)
            wanted = [m for m in ("random", "uniform") if _is_default(report, m)]
            base = {m: v for m in wanted if (v := _cell(report, m, 0.1)) is not None}
            if o is not None and base and len(base) == len(wanted):
                best = max(v["relative"] for v in base.values())
                value = o["relative"] - best
                detail = (
                    f"oracle {100 * o['relative']:.1f}% vs "
                    + ", ".join(f"{m} {100 * v['relative']:.1f}%" for m, v in base.items())
                    + f" of full at r=0.1: gap {100 * value:.1f} points"
                )
        out.append(
            {
                "name": name,
                "why": why,
                "threshold": thr,
                "value": value,
                "passed": None if value is None else bool(value >= thr),
                "detail": detail,
            }
        )
    return out


def checks_markdown(checks: Sequence[dict]) -> str:
    """The instrument checks as a markdown section."""
    lines = ["## Instrument checks", "", "| check | measured | needs | result | why |", "|---|---|---|---|---|"]
    for c in checks:
        need = f">= {100 * c['threshold']:g} points" if c["name"] == "headroom" else f">= {100 * c['threshold']:g}%"
        res = "not run" if c["passed"] is None else ("PASS" if c["passed"] else "FAIL")
        lines.append(f"| {c['name']} | {c['detail']} | {need} | {res} | {c['why']} |")
    return "\n".join(lines) + "\n"


def markdown_table(report: dict, per_type_top: int = 4) -> str:
    """The report as markdown: one row per table row, one column per retention, ``accuracy% (relative%)``
    in each cell (the unpruned model first; ``-`` where a cell was not run), then the per-question-type
    accuracy at r=0.1 of the ``per_type_top`` best rows, then the instrument checks."""
    rs = report["retentions"]
    full = report["full"]
    head = "| method | " + " | ".join(f"r={r:g}" for r in rs) + " |"
    lines = [head, "|" + "---|" * (len(rs) + 1)]
    lines.append(f"| {FULL} | " + " | ".join(f"{100 * full['accuracy']:.1f} (100%)" for _ in rs) + " |")
    for m in report["methods"]:
        cells = []
        for r in rs:
            x = _cell(report, m, r)
            cells.append("-" if x is None else f"{100 * x['accuracy']:.1f} ({100 * x['relative']:.1f}%)")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Accuracy % (percentage of full-token accuracy) on the first {report['n']} questions of the "
        f"held-out testbed split; full-token accuracy {full['correct']}/{full['total']}."
    )
    if report.get("overrides"):
        lines.append(
            "Config overrides for every method: "
            + ", ".join(f"{k}={v}" for k, v in sorted(report["overrides"].items()))
            + "."
        )
    if not report.get("complete", True):
        lines.append("**Partial report**: the run was interrupted; `-` cells were not scored yet.")
    scored = [(m, _cell(report, m, 0.1)) for m in report["methods"]]
    at = sorted([(m, x) for m, x in scored if x is not None], key=lambda mx: (-mx[1]["correct"], mx[0]))[:per_type_top]
    if at:
        types = sorted(
            {t for _, x in at for t in x.get("by_qtype", {})} | set(full.get("by_qtype", {})),
            key=lambda t: D.QTYPES.index(t) if t in D.QTYPES else len(D.QTYPES),
        )
        lines += [
            "",
            f"Per question type at r=0.1 (correct/total; the {len(at)} best rows and all tokens):",
            "",
            "| type | all tokens | " + " | ".join(m for m, _ in at) + " |",
            "|" + "---|" * (len(at) + 2),
        ]
        for t in types:

            def fmt(x):
                v = x.get("by_qtype", {}).get(t)
                return "-" if v is None else f"{v['correct']}/{v['total']}"

            lines.append(f"| {t} | {fmt(full)} | " + " | ".join(fmt(x) for _, x in at) + " |")
    lines += ["", checks_markdown(report.get("checks") or instrument_checks(report)).rstrip("\n")]
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same directory and ``os.replace``, so a reader
    (or a resumed run) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the report a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_report(report: dict, json_path: str | Path | None, md_path: str | Path | None) -> None:
    """Write the report as JSON and/or markdown (parents created; each file replaced atomically)."""
    if json_path is not None:
        _atomic_write(Path(json_path), json.dumps(report, indent=2) + "\n")
    if md_path is not None:
        _atomic_write(Path(md_path), markdown_table(report))


#: the cells the instrument checks read: (row name, method, retention)
CHECK_CELLS = (("tango", "tango", 1.0), ("random", "random", 0.1), ("uniform", "uniform", 0.1))


def check_cells(model, proc, limit: int, batch_size: int = 8) -> dict:
    """Score exactly the cells the instrument checks need (all tokens, Tango at r=1.0, the oracle, random and
    uniform at r=0.1) on the first ``limit`` test questions; returns a report (``checks`` included) whose
    ``results`` hold just those cells. Cheap enough for the test suite on a small subset."""
    indices = list(D.heldout_indices(limit))
    full = accuracy(model, proc, indices, batch_size)
    report: dict[str, Any] = {
        "benchmark": "testbed",
        "n": len(indices),
        "overrides": {},
        "retentions": [1.0, 0.1],
        "methods": [],
        "rows": {},
        "full": full,
        "results": {},
        "complete": True,
    }
    encodings: dict = {}
    for name, method, r in CHECK_CELLS + ((oracle_row().name, oracle_row().method, 0.1),):
        row = Row(name, method)
        res = _score_row(model, proc, row, r, indices, batch_size, None, encodings)
        res["relative"] = res["accuracy"] / full["accuracy"] if full["accuracy"] else 0.0
        report["methods"].append(name)
        report["rows"][name] = row.spec()
        report["results"][name] = {str(r): res}
    report["checks"] = instrument_checks(report)
    return report
