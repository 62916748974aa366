"""Accuracy of every pruning method at every retention on the testbed's held-out split.

Each question is answered by greedy decoding of one token (argmax of the logits at the last prompt position)
through the model's standard ``forward``; pruning is enabled on the model with the model adapter
(:func:`tango_prune.apply` / :func:`tango_prune.remove`), never implemented here. The full-token row is the
unmodified model. Batches are left-padded so the last position is the prompt's end whatever the adapter
does to the visual sequence (RoPE is relative, so a constant shift of positions does not change answers).
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from . import data as D

__all__ = ["RETENTIONS", "FULL", "answer_batch", "accuracy", "evaluate", "merge_reports", "markdown_table",
           "save_report"]

RETENTIONS = (1.0, 0.25, 0.2, 0.15, 0.1, 0.05)
FULL = "full (no pruning)"


def _collate(proc, samples: Sequence[D.Sample]) -> dict:
    inputs = [proc(s.clip.frames, s.question.text, s.question.options) for s in samples]
    L = max(int(i["input_ids"].shape[1]) for i in inputs)
    ids = torch.full((len(inputs), L), proc.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(inputs), L, dtype=torch.long)
    for b, inp in enumerate(inputs):
        n = int(inp["input_ids"].shape[1])
        ids[b, L - n:] = inp["input_ids"][0]
        mask[b, L - n:] = 1
    return {"input_ids": ids, "attention_mask": mask,
            "pixel_values_videos": torch.cat([i["pixel_values_videos"] for i in inputs])}


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


@functools.lru_cache(maxsize=D.TEST_SIZE)
def _test_sample(index: int) -> D.Sample:
    # every method x retention scores the same questions: render each clip once per process
    return D.make_sample(D.TEST, index)


def accuracy(model, proc, indices: Iterable[int], batch_size: int = 16,
             progress: Callable[[int], None] | None = None) -> dict:
    """Score ``model`` on test items ``indices``: ``{"correct", "total", "accuracy", "by_qtype"}``."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    indices = list(indices)
    correct, by = 0, {}
    for s in range(0, len(indices), batch_size):
        samples = [_test_sample(i) for i in indices[s:s + batch_size]]
        for x, a in zip(samples, answer_batch(model, proc, samples)):
            ok = int(a == x.question.answer)
            correct += ok
            c, n = by.get(x.question.qtype, (0, 0))
            by[x.question.qtype] = (c + ok, n + 1)
        if progress is not None:
            progress(len(samples))
    n = len(indices)
    return {"correct": correct, "total": n, "accuracy": correct / n if n else 0.0,
            "by_qtype": {k: {"correct": c, "total": t} for k, (c, t) in sorted(by.items())}}


@contextlib.contextmanager
def _pruned(model, method: str, retention: float, overrides: dict | None = None):
    import tango_prune as tp

    if not hasattr(tp, "apply"):
        raise ValueError("pruning needs the model adapter (tango_prune.apply), which this install lacks; "
                         "evaluate with retentions=(1.0,) only")
    tp.apply(model, tp.make_config(method, retention=retention, **(overrides or {})))
    try:
        yield model
    finally:
        tp.remove(model)


def evaluate(model, proc, methods: Sequence[str], retentions: Sequence[float] = RETENTIONS,
             limit: int | None = None, batch_size: int = 16, show_progress: bool = True,
             overrides: dict | None = None) -> dict:
    """Accuracy of the unpruned model and of each method at each retention on the first ``limit`` test items.
    ``overrides`` are config fields set for every method (e.g. ``{"tau_static": 1.0}``).

    Returns a JSON-ready dict: ``n``, ``full`` (the unpruned result), ``results[method][str(retention)]``
    (each with ``relative`` = accuracy / full accuracy) and ``seconds``.
    """
    import tango_prune as tp

    known = tp.methods()
    for m in methods:
        if m not in known:
            raise ValueError(f"methods must be registered names {known}, got {m!r}")
    for r in retentions:
        if not (isinstance(r, (int, float)) and 0.0 < r <= 1.0):
            raise ValueError(f"retentions must be floats in (0, 1], got {r!r}")
    indices = list(D.heldout_indices(limit))
    total_steps = len(indices) * (1 + len(methods) * len(retentions))
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, desc="testbed eval", unit="q", file=sys.stderr, dynamic_ncols=True)
    t0 = time.time()
    model.eval()
    try:
        if bar is not None:
            bar.set_postfix_str(FULL)
        full = accuracy(model, proc, indices, batch_size, bar.update if bar is not None else None)
        results: dict = {}
        for m in methods:
            results[m] = {}
            for r in retentions:
                if bar is not None:
                    bar.set_postfix_str(f"{m} r={r}")
                with _pruned(model, m, float(r), overrides):
                    res = accuracy(model, proc, indices, batch_size, bar.update if bar is not None else None)
                res["relative"] = res["accuracy"] / full["accuracy"] if full["accuracy"] else 0.0
                results[m][str(float(r))] = res
    finally:
        if bar is not None:
            bar.close()
    return {"benchmark": "testbed", "n": len(indices), "overrides": dict(overrides or {}),
            "retentions": [float(r) for r in retentions],
            "methods": list(methods), "full": full, "results": results, "seconds": round(time.time() - t0, 1),
            "torch_threads": torch.get_num_threads()}


def merge_reports(reports: Sequence[dict]) -> dict:
    """One report from several runs over disjoint method sets (e.g. run in parallel processes); they must
    share the question subset, the retentions and the unpruned result."""
    if not reports:
        raise ValueError("reports must hold at least one report")
    first = reports[0]
    out = {**first, "methods": [], "results": {}, "seconds": 0.0}
    for r in reports:
        if (r["n"], r["retentions"], r["full"]["correct"], r.get("overrides", {})) != (
                first["n"], first["retentions"], first["full"]["correct"], first.get("overrides", {})):
            raise ValueError("reports must share n, retentions, overrides and the full-token result to be merged")
        for m in r["methods"]:
            if m in out["results"]:
                raise ValueError(f"reports must cover disjoint methods, {m!r} appears twice")
            out["methods"].append(m)
            out["results"][m] = r["results"][m]
        out["seconds"] = max(out["seconds"], r["seconds"])
    return out


def markdown_table(report: dict) -> str:
    """The report as a markdown table: one row per method, one column per retention,
    ``accuracy% (relative%)`` in each cell, the unpruned model first."""
    rs = report["retentions"]
    full = report["full"]
    head = "| method | " + " | ".join(f"r={r:g}" for r in rs) + " |"
    lines = [head, "|" + "---|" * (len(rs) + 1)]
    lines.append(f"| {FULL} | " + " | ".join(
        f"{100 * full['accuracy']:.1f} (100%)" for _ in rs) + " |")
    for m in report["methods"]:
        cells = []
        for r in rs:
            x = report["results"][m][str(float(r))]
            cells.append(f"{100 * x['accuracy']:.1f} ({100 * x['relative']:.1f}%)")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Accuracy % (percentage of full-token accuracy) on the first {report['n']} questions of the "
                 f"held-out testbed split; full-token accuracy {full['correct']}/{full['total']}.")
    if report.get("overrides"):
        lines.append("Config overrides for every method: " +
                     ", ".join(f"{k}={v}" for k, v in sorted(report["overrides"].items())) + ".")
    return "\n".join(lines) + "\n"


def save_report(report: dict, json_path: str | Path | None, md_path: str | Path | None) -> None:
    """Write the report as JSON and/or markdown (parents created)."""
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
    if md_path is not None:
        Path(md_path).parent.mkdir(parents=True, exist_ok=True)
        Path(md_path).write_text(markdown_table(report))
