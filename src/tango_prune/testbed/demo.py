"""The shipped testbed model answering one video question with and without pruning, plus the kept-token picture.

Used by ``tango-prune show`` (any video file) and by :func:`run_demo` (``make demo``: a generated clip written
as mp4 and decoded back with PyAV).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..viz import save_kept_png
from . import data as D

__all__ = ["answer", "compare", "subset_accuracy", "run_demo", "DEMO_INDEX", "DEMO_SUBSET"]

#: held-out item used by :func:`run_demo` (a "which shape changes color ?" question)
DEMO_INDEX = 2
#: the demo's accuracy subset: the first 100 held-out questions (a fixed rule, not chosen by outcome)
DEMO_SUBSET = range(100)


@torch.no_grad()
def answer(
    model,
    proc,
    frames: np.ndarray,
    question: str,
    options: Sequence[str] | None = None,
    timestamps: Sequence[float] | None = None,
    repeats: int = 2,
) -> dict:
    """Greedy one-word answer of ``model`` (pruned or not) with its time split.

    Returns ``answer``, ``sequence_tokens`` (prompt length the LLM sees), ``visual_tokens``, ``vision_s``,
    ``prune_s``, ``llm_s`` (prefill incl. the answer's logits) and ``total_s``; when the model is patched by
    :func:`tango_prune.apply`, also ``result`` (the :class:`~tango_prune.PruneResult`). Timings are the
    last of ``repeats`` runs (the first warms the CPU kernels up).
    """
    import tango_prune as tp
    from tango_prune.models import is_applied, stats

    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    inputs = proc(frames, question, options)
    pruned = is_applied(model)
    kwargs = dict(inputs)
    if pruned and timestamps is not None:
        kwargs["video_timestamps"] = [list(map(float, timestamps))]
    for _ in range(repeats):
        if pruned:
            t0 = time.perf_counter()
            logits = model(**kwargs).logits
            total = time.perf_counter() - t0
            st = stats(model)
            vision, prune_s = float(st["vision_s"]), float(st["prune_s"])
            visual = int(st["visual_tokens_after"])
        else:
            t0 = time.perf_counter()
            model.model.get_video_features(inputs["pixel_values_videos"], return_dict=True)
            vision = time.perf_counter() - t0
            t0 = time.perf_counter()
            logits = model(**kwargs).logits
            total = time.perf_counter() - t0
            prune_s = 0.0
            visual = proc.num_video_tokens(inputs["pixel_values_videos"].shape[1])
    out = {
        "answer": proc.tokenizer.convert_ids_to_tokens(int(logits[0, -1].argmax())),
        "sequence_tokens": int(logits.shape[1]),
        "visual_tokens": visual,
        "vision_s": vision,
        "prune_s": prune_s,
        "llm_s": max(0.0, total - vision - prune_s),
        "total_s": total,
    }
    if pruned:
        results = tp.models.last_results(model)
        if results:
            out["result"] = results[0]
    del tp
    return out


def compare(
    model,
    proc,
    frames: np.ndarray,
    question: str,
    options: Sequence[str] | None = None,
    timestamps: Sequence[float] | None = None,
    method: str = "tango",
    retention: float = 0.1,
    png: str | Path | None = None,
) -> dict:
    """Answer with all tokens, then with ``method`` at ``retention`` (the model is restored afterwards);
    optionally draw the kept tokens into ``png``. Returns ``{"full": ..., "pruned": ..., "png": ...}``."""
    import tango_prune as tp

    full = answer(model, proc, frames, question, options, timestamps)
    tp.apply(model, tp.make_config(method, retention=retention))
    try:
        pr = answer(model, proc, frames, question, options, timestamps)
    finally:
        tp.remove(model)
    out = {"full": full, "pruned": pr, "method": method, "retention": retention, "png": None}
    res = pr.pop("result", None)
    if png is not None and res is not None:
        T, H, W = res.grid
        kept = res.num_kept
        title = (
            f"{method} r={retention:g}: {kept}/{T * H * W} tokens kept   Q: {question}   "
            f"full: {full['answer']}   pruned: {pr['answer']}"
        )
        out["png"] = save_kept_png(png, frames, res, tile=4 * max(frames.shape[1:3]), title=title)
    if res is not None:
        out["kept"] = int(res.num_kept)
        out["kinds"] = (
            {name: int((res.kinds == k).sum()) for k, name in enumerate(tp.TokenKind.NAMES)}
            if res.kinds is not None
            else None
        )
    return out


def _times(r: dict) -> str:
    return (
        f"vision {1e3 * r['vision_s']:.1f} ms  pruning {1e3 * r['prune_s']:.1f} ms  "
        f"LLM prefill {1e3 * r['llm_s']:.1f} ms"
    )


def format_report(rep: dict, question: str) -> str:
    """Human-readable lines for :func:`compare`'s result."""
    lines = [f"question: {question}"]
    for key, label in (("full", "all tokens"), ("pruned", f"{rep['method']} @ {rep['retention']:g}")):
        r = rep[key]
        lines.append(
            f"{label:>16}: answer {r['answer']!r:14} visual tokens {r['visual_tokens']:4d}  "
            f"LLM sequence {r['sequence_tokens']:4d}  {_times(r)}  total {1e3 * r['total_s']:.1f} ms"
        )
    if rep.get("kinds"):
        lines.append("kept tokens by kind: " + ", ".join(f"{k} {v}" for k, v in rep["kinds"].items()))
    if rep.get("png"):
        lines.append(f"kept-token picture: {rep['png']}")
    return "\n".join(lines)


def subset_accuracy(model, proc, indices, method: str = "tango", retention: float = 0.1) -> dict:
    """Answer held-out questions ``indices`` one at a time (:func:`answer`) with all tokens and with
    ``method`` at ``retention``; per setting the correct count, and per question the mean visual tokens,
    LLM sequence length and time split (vision, pruning, LLM; seconds)."""
    import tango_prune as tp

    from .evaluate import _test_sample

    samples = [_test_sample(i) for i in indices]
    if not samples:
        raise ValueError("indices must name at least one held-out question")
    keys = ("visual_tokens", "sequence_tokens", "vision_s", "prune_s", "llm_s", "total_s")
    out: dict[str, Any] = {}
    for setting in ("full", "pruned"):
        if setting == "pruned":
            tp.apply(model, tp.make_config(method, retention=retention))
        try:
            rs = [
                (
                    s,
                    answer(
                        model,
                        proc,
                        s.clip.frames,
                        s.question.text,
                        s.question.options,
                        [t / D.FPS for t in range(s.clip.frames.shape[0])],
                        repeats=1,
                    ),
                )
                for s in samples
            ]
        finally:
            if setting == "pruned":
                tp.remove(model)
        out[setting] = {
            "correct": sum(int(r["answer"] == s.question.answer) for s, r in rs),
            "total": len(rs),
            **{k: sum(float(r[k]) for _, r in rs) / len(rs) for k in keys},
        }
    out.update(method=method, retention=retention, indices=[int(i) for i in indices])
    return out


def format_subset(rep: dict) -> str:
    """Human-readable lines for :func:`subset_accuracy`'s result."""
    n = rep["full"]["total"]
    lines = [
        f"accuracy on held-out questions {rep['indices'][0]}..{rep['indices'][-1]} ({n} questions; "
        "per question: mean visual tokens, LLM sequence and time split)"
    ]
    for key, label in (("full", "all tokens"), ("pruned", f"{rep['method']} @ {rep['retention']:g}")):
        r = rep[key]
        lines.append(
            f"{label:>16}: {r['correct']:3d}/{n} correct ({100 * r['correct'] / n:.1f}%)  visual tokens "
            f"{r['visual_tokens']:5.1f}  LLM sequence {r['sequence_tokens']:5.1f}  {_times(r)}"
        )
    f, p = rep["full"]["correct"], rep["pruned"]["correct"]
    lines.append(
        f"{rep['method']} @ {rep['retention']:g} keeps {100 * p / f if f else 0.0:.1f}% of full-token "
        "accuracy on this subset"
    )
    return "\n".join(lines)


def run_demo(
    out_dir: str | Path,
    index: int = DEMO_INDEX,
    method: str = "tango",
    retention: float = 0.1,
    model_dir: str | Path | None = None,
    subset=DEMO_SUBSET,
) -> dict:
    """First score the held-out questions ``subset`` (default the first 100) with all tokens and with
    ``method`` at ``retention`` and print accuracy, token counts and timings (:func:`subset_accuracy`). Then
    write held-out clip ``index`` as ``demo.mp4`` in ``out_dir``, decode it with PyAV, answer its question
    with and without pruning, print the comparison and write ``kept_tokens.png``. Returns the comparison
    dict (plus ``video``, ``question``, ``expected`` and ``subset``, the accuracy summary)."""
    from .model import load

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sample = D.make_sample(D.TEST, index)
    video = D.write_mp4(sample.clip.frames, out_dir / "demo.mp4")
    frames, ts = D.read_video(video)
    model, proc = load(model_dir)
    acc = subset_accuracy(model, proc, subset, method, retention)
    print(format_subset(acc))
    print()
    q = sample.question
    rep = compare(model, proc, frames, q.text, q.options, ts.tolist(), method, retention, out_dir / "kept_tokens.png")
    rep.update(video=str(video), question=q.text, options=list(q.options), expected=q.answer, subset=acc)
    print(format_report(rep, f"{q.text} (options: {' '.join(q.options)}; expected {q.answer})"))
    return rep
