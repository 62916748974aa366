"""Six diagnoses of a saved testbed model's failing instrument checks (docs/testbed.md, issue 10).

    python benchmarks/testbed_diagnose.py layout [--model DIR] [--questions 200] [--tau 0.8]
    python benchmarks/testbed_diagnose.py direction [--model DIR] [--questions 1000]
    python benchmarks/testbed_diagnose.py motion [--model DIR] [--questions 160]
    python benchmarks/testbed_diagnose.py packing [--model DIR] [--questions 1000]
    python benchmarks/testbed_diagnose.py collapse [--model DIR] [--questions 80] [--tau 0.8]
    python benchmarks/testbed_diagnose.py count [--model DIR] [--questions 300]

``layout``: is what Tango at r = 1.0 (static collapse only) costs the model the *layout* of the kept tokens or
their *averaged features*? For each held-out question it scores all tokens, Tango r = 1.0, and the same kept
positions with the raw per-frame features (a fixed-index selector, registered for this script only).

``direction``: on the motion-direction questions, which colour does the model answer when it is wrong (another
object's colour, i.e. the wrong mover, or a colour not in the clip), and how accuracy varies with the number
of objects, the subject's path length and the frames it is visible.

``motion``: does the LLM know which way each object moves? A linear probe (multinomial logistic regression)
on the hidden state of every object token (from 2 frames after its object appeared, as the training's
per-token auxiliary target) after each LLM layer, all tokens shown, fitted on the first 75% of the questions'
clips and scored on the rest; also on the moving objects' tokens only and on each moving object's mean token
(what attention to that object averages), with the share of the variance the direction explains. High
accuracy with a low direction score means the model perceives motion but does not retrieve the asked mover.

``packing``: training packs several questions after one clip, so a later direction question could be answered
by elimination from the earlier answers. Does the model do that? Each direction question whose clip has
others is asked alone and after the others with their correct answers.

``collapse``: what does static collapse (Tango at r = 1.0, ``--tau`` its ``tau_static``) remove on this model?
The cosine of consecutive frames' features at each cell (the similarity the static test reads), by what the
cell shows in the two frames (the same background, the same object, or a change between object and
background / another object), and the share of each object's tokens and frames that Tango keeps, for
moving and static objects.

``count``: is the evidence oracle's weak count cell a matter of *which* evidence tokens it keeps? On the count
questions among the first ``--questions`` held-out ones, the oracle at r = 0.1 is scored with its evidence
(every object token) laid out in other ways, each within the same budget: thinned and filled at random
(seeded by the question), whole frames of object tokens (as many evenly spaced frames as fit), one cell per
object per frame, each object's cells in its first frame only; next to all tokens, ``random`` and
``uniform``. If no layout of the evidence beats random selection, the model's count at that budget is
fragile whatever is kept.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
from typing import ClassVar, Iterator

import numpy as np
import torch
import torch.nn.functional as F

import tango_prune as tp
from tango_prune.config import PruneConfig
from tango_prune.methods import register, unregister
from tango_prune.testbed import data as D
from tango_prune.methods._common import frame_budget
from tango_prune.testbed import oracle as O
from tango_prune.testbed.evaluate import answer_batch
from tango_prune.testbed.oracle import cell_objects
from tango_prune.testbed.model import load
from tango_prune.tokens import PruneResult, VideoTokens

FIXED = "testbed-fixed-indices"


@dataclasses.dataclass(frozen=True)
class FixedConfig(PruneConfig):
    """Keep exactly ``keep`` (sorted flat token indices) with their own, unmerged features."""

    method: ClassVar[str] = FIXED
    keep: tuple[int, ...] = ()


def _fixed(tokens: VideoTokens, cfg: FixedConfig) -> PruneResult:
    return PruneResult.from_indices(tokens, torch.tensor(cfg.keep, dtype=torch.long))


@contextlib.contextmanager
def _registered(config_class: type[PruneConfig], fn, summary: str) -> Iterator[None]:
    """Register a diagnosis-only selector for the ``with`` block, so it never stays in ``tp.methods()``."""
    register(config_class.method, config_class, fn, summary)
    try:
        yield
    finally:
        unregister(config_class.method)


@dataclasses.dataclass(frozen=True)
class CaptureConfig(PruneConfig):
    """Keep every token and remember the :class:`VideoTokens` the adapter passed (``_CAPTURED``)."""

    method: ClassVar[str] = "testbed-capture"


_CAPTURED: list[VideoTokens] = []


def _capture(tokens: VideoTokens, cfg: CaptureConfig) -> PruneResult:
    _CAPTURED.append(tokens)
    T, H, W = tokens.grid
    return PruneResult.from_indices(tokens, torch.arange(T * H * W))


def collapse(model, proc, n: int, tau: float) -> None:
    """Print consecutive-frame cosines by cell content and the share of object tokens static collapse keeps."""
    from tango_prune.core.segment import frame_similarity

    cos: dict[str, list[float]] = {"same background": [], "same object": [], "object changes": []}
    kept_share: dict[str, list[float]] = collections.defaultdict(list)
    cell = 2 * proc.patch_size
    with _registered(CaptureConfig, _capture, "diagnosis only: capture the tokens"):
        for i in D.heldout_indices(n):
            s = D.make_sample(D.TEST, i)
            _CAPTURED.clear()
            with _applied(model, CaptureConfig(retention=1.0)):
                answer_batch(model, proc, [s])
            tok = _CAPTURED[0]
            T, H, W = tok.grid
            metric = tok.metric if tok.metric is not None else tok.features
            sim = frame_similarity(metric.reshape(T, H * W, -1).float()).numpy()  # (T-1, H*W)
            cells = cell_objects(s.clip.shape_ids, cell).reshape(T, H * W)
            same = cells[1:] == cells[:-1]
            cos["same background"] += sim[same & (cells[1:] < 0)].tolist()
            cos["same object"] += sim[same & (cells[1:] >= 0)].tolist()
            cos["object changes"] += sim[~same].tolist()
            with _applied(model, tp.make_config("tango", retention=1.0, tau_static=tau)):
                answer_batch(model, proc, [s])
                (res,) = tp.models.last_results(model)
            kept = np.zeros(T * H * W, dtype=bool)
            kept[res.indices.numpy()] = True
            flat = cells.reshape(-1)
            for o in s.clip.objects:
                mine = flat == D.SHAPES.index(o.shape)
                kind = "static" if o.direction == "none" else "moving"
                frames = np.unique(np.nonzero(mine)[0] // (H * W))
                kept_frames = np.unique(np.nonzero(mine & kept)[0] // (H * W))
                kept_share[f"{kind} objects: tokens kept"].append(float((mine & kept).sum() / max(1, mine.sum())))
                kept_share[f"{kind} objects: frames with a token kept"].append(len(kept_frames) / max(1, len(frames)))
    print(f"consecutive-frame cosine per cell, first {n} clips (quartiles 10/25/50/75/90%; share > tau={tau}):")
    for k, v in cos.items():
        a = np.array(v)
        print(f"  {k:18s} n={a.size:6d} {np.percentile(a, [10, 25, 50, 75, 90]).round(3)} {(a > tau).mean():.2f}")
    print(f"tango r=1.0, tau_static={tau} (mean; quartiles 10/25/50/75/90%):")
    for k, v in kept_share.items():
        print(f"  {k:38s} {np.mean(v):.2f} {np.percentile(v, [10, 25, 50, 75, 90]).round(2)}")


@contextlib.contextmanager
def _applied(model, config) -> Iterator[None]:
    tp.apply(model, config)
    try:
        yield
    finally:
        tp.remove(model)


def layout(model, proc, n: int, tau: float = 0.8) -> None:
    """Print all-token, Tango r=1.0 (``tau_static=tau``) and same-positions-raw-features accuracy on the first
    ``n`` questions."""
    ok: collections.Counter = collections.Counter()
    with _registered(FixedConfig, _fixed, "diagnosis only: fixed indices"):
        for i in D.heldout_indices(n):
            s = D.make_sample(D.TEST, i)
            ok["all tokens"] += answer_batch(model, proc, [s])[0] == s.question.answer
            with _applied(model, tp.make_config("tango", retention=1.0, tau_static=tau)):
                ok["tango r=1.0"] += answer_batch(model, proc, [s])[0] == s.question.answer
                (res,) = tp.models.last_results(model)
            with _applied(model, FixedConfig(retention=1.0, keep=tuple(int(x) for x in res.indices))):
                ok["same positions, raw features"] += answer_batch(model, proc, [s])[0] == s.question.answer
    print(f"first {n} held-out questions, tau_static={tau}:")
    for k in ("all tokens", "tango r=1.0", "same positions, raw features"):
        print(f"  {k:30s} {ok[k]}/{n}")


def direction(model, proc, n: int) -> None:
    """Print the direction questions' error kinds and accuracy by objects, path length and visible frames."""
    samples = [s for s in (D.make_sample(D.TEST, i) for i in D.heldout_indices(n)) if s.question.qtype == "direction"]
    kinds: collections.Counter = collections.Counter()
    rows = []
    for b in range(0, len(samples), 16):
        batch = samples[b : b + 16]
        for s, a in zip(batch, answer_batch(model, proc, batch)):
            subj = next(o for o in s.clip.objects if o.shape == s.question.subject)
            others = [o for o in s.clip.objects if o is not subj]
            ok = a == s.question.answer
            if ok:
                kinds["right"] += 1
            elif any(a in (o.color, o.color_after) for o in others):
                moved = next(o for o in others if a in (o.color, o.color_after)).direction
                kinds["another object's colour (" + ("a static one" if moved == "none" else "another mover") + ")"] += 1
            else:
                kinds["a colour not in the clip"] += 1
            last = min(subj.disappear, D.NUM_FRAMES) - 1
            path = float(np.abs(subj.positions[last] - subj.positions[subj.appear]).max())
            rows.append((ok, len(s.clip.objects), path, subj.disappear - subj.appear))
    print(f"{len(samples)} direction questions among the first {n}:")
    for k, v in kinds.most_common():
        print(f"  {k:45s} {v}")
    r = np.array(rows, dtype=float)
    for label, col, bins in (
        ("objects in the clip", 1, [(2, 3), (3, 4), (4, 5)]),
        ("subject's path (px)", 2, [(0, 15), (15, 25), (25, 80)]),
        ("frames the subject is visible", 3, [(0, 8), (8, 13), (13, 17)]),
    ):
        parts = [
            f"{lo}-{hi - 1}: {int(r[m, 0].sum())}/{int(m.sum())}"
            for lo, hi in bins
            if (m := (r[:, col] >= lo) & (r[:, col] < hi)).any()
        ]
        print(f"  by {label}: " + ", ".join(parts))


@torch.no_grad()
def _object_states(model, proc, n: int) -> tuple[dict[int, list[torch.Tensor]], list[int], list[int]]:
    """Per LLM layer (0 = input embeddings) the hidden states of the object tokens of the first ``n`` clips,
    with each token's direction index and clip index."""
    layers = model.config.text_config.num_hidden_layers
    states: dict[int, list[torch.Tensor]] = {k: [] for k in range(layers + 1)}
    labels, clips = [], []
    cell = 2 * proc.patch_size
    for i in D.heldout_indices(n):
        s = D.make_sample(D.TEST, i)
        inputs = proc(s.clip.frames, s.question.text, s.question.options)
        hidden = model(**inputs, output_hidden_states=True).hidden_states
        T = s.clip.frames.shape[0]
        per = (s.clip.frames.shape[1] // cell) ** 2
        pos = torch.nonzero(inputs["input_ids"][0] == proc.video_token_id)[: T * per, 0]
        cells = cell_objects(s.clip.shape_ids, cell)
        by_shape = {D.SHAPES.index(o.shape): o for o in s.clip.objects}
        for k in np.nonzero(cells >= 0)[0]:
            o = by_shape[int(cells[k])]
            if k // per < o.appear + 2:  # too early to tell the direction
                continue
            labels.append(D.DIRECTIONS.index(o.direction))
            clips.append(i)
            for layer in states:
                states[layer].append(hidden[layer][0, pos[k]])
    return states, labels, clips


def _probe_accuracy(x: torch.Tensor, y: torch.Tensor, fit: torch.Tensor, classes: int) -> float:
    """Held-out accuracy of a multinomial logistic regression on standardised ``x``, fitted where ``fit``."""
    x = (x - x[fit].mean(0)) / (x[fit].std(0) + 1e-6)
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = F.cross_entropy(x[fit] @ w + b, y[fit]) + 1e-3 * (w**2).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return ((x[~fit] @ w + b).argmax(1) == y[~fit]).float().mean().item()


def motion(model, proc, n: int) -> None:
    """Print the held-out accuracy of a linear direction probe on the object tokens after each LLM layer: on
    every object token, on the moving objects' tokens only, and on each moving object's mean token; and the
    share of the moving tokens' variance (after RMS normalisation, what the next layer reads) that the
    direction explains."""
    states, labels, clips = _object_states(model, proc, n)
    y, g = torch.tensor(labels), torch.tensor(clips)
    fit = g < int(0.75 * n)
    chance = torch.bincount(y[~fit], minlength=len(D.DIRECTIONS)).max().item() / int((~fit).sum())
    moving = y != D.DIRECTIONS.index("none")
    objects = sorted(set(zip(g[moving].tolist(), y[moving].tolist())))  # (clip, direction): one per mover
    print(f"{len(labels)} object tokens from {n} clips; majority-class accuracy {chance:.3f}")
    print(f"{int(moving.sum())} of them from {len(objects)} moving objects")
    k = len(D.DIRECTIONS)
    for layer, xs in states.items():
        x = torch.stack(xs).float()
        acc = _probe_accuracy(x, y, fit, k)
        xm, ym, gm = x[moving], y[moving], g[moving]
        acc_m = _probe_accuracy(xm, ym, fit[moving], k)
        xo = torch.stack([xm[(gm == c) & (ym == d)].mean(0) for c, d in objects])
        yo, go = torch.tensor([d for _, d in objects]), torch.tensor([c for c, _ in objects])
        acc_o = _probe_accuracy(xo, yo, go < int(0.75 * n), k)
        z = xm / xm.pow(2).mean(-1, keepdim=True).sqrt()
        mu = z.mean(0)
        between = sum(
            float((z[ym == d].mean(0) - mu).pow(2).sum() * (ym == d).float().mean()) for d in ym.unique().tolist()
        )
        share = between / float((z - mu).pow(2).sum(-1).mean())
        print(
            f"  after LLM layer {layer}{' (input embeddings)' if layer == 0 else ''}: direction {acc:.3f}; "
            f"moving tokens {acc_m:.3f}, moving objects' mean token {acc_o:.3f}, "
            f"direction's share of the moving tokens' variance {share:.3f}"
        )


@torch.no_grad()
def packing(model, proc, n: int) -> None:
    """Print the direction accuracy of questions asked alone (as the evaluation asks them) and asked after the
    clip's other direction questions with their correct answers (as training packs them, so an answer could be
    found by elimination), on the first ``n`` held-out questions whose clip has another direction question."""
    tok = proc.tokenizer
    correct = {"alone": 0, "after": 0}
    total = 0
    for i in D.heldout_indices(n):
        s = D.make_sample(D.TEST, i)
        q = s.question
        if q.qtype != "direction":
            continue
        rng = np.random.default_rng([i, 17])
        others = [o for o in D.questions_for(s.clip, rng) if o.qtype == "direction" and o.subject != q.subject]
        if not others:
            continue
        inputs = proc(s.clip.frames, q.text, q.options)
        ids = inputs["input_ids"][0]
        nv = int((ids == proc.video_token_id).sum())
        pre = " ".join(f"{proc.prompt(o.text, o.options)} {o.answer} {tok.eos_token}" for o in others)
        packed = torch.cat([ids[:nv], torch.tensor(tok(pre, add_special_tokens=False)["input_ids"]), ids[nv:]])
        for key, seq in (("alone", ids), ("after", packed)):
            logits = model(
                input_ids=seq[None],
                attention_mask=torch.ones_like(seq)[None],
                pixel_values_videos=inputs["pixel_values_videos"],
            ).logits[0, -1]
            correct[key] += int(tok.convert_ids_to_tokens([int(logits.argmax())])[0] == q.answer)
        total += 1
    print(f"{total} direction questions (of the first {n}) whose clip has another direction question:")
    print(
        f"  asked alone: {correct['alone']} correct; after the other direction questions and their answers: "
        f"{correct['after']} correct"
    )


def _evidence_layouts(ev: np.ndarray, cells: np.ndarray, T: int, budget: int, seed: int) -> dict[str, np.ndarray]:
    """The count evidence ``ev`` (N,) bool laid out in the ways :func:`count` compares; each a bool mask of the
    evidence to hand to the oracle, except ``"random thinning and fill"``, the full kept set (``budget``
    tokens)."""
    L = ev.size // T
    e, c = ev.reshape(T, L), cells.reshape(T, L)
    rng = np.random.default_rng([seed, 23])
    idx = np.nonzero(ev)[0]
    if idx.size > budget:
        idx = rng.choice(idx, budget, replace=False)
    fill = rng.choice(np.setdiff1d(np.arange(ev.size), idx), budget - idx.size, replace=False)
    rand = np.zeros_like(ev)
    rand[np.concatenate([idx, fill])] = True
    frames = np.zeros_like(e)
    for k in range(T, 0, -1):  # the most evenly spaced whole frames whose object tokens fit the budget
        fr = np.unique(np.round(np.linspace(0, T - 1, k)).astype(int))
        if e[fr].sum() <= budget:
            frames[fr] = e[fr]
            break
    per_frame = np.zeros_like(e)
    once = np.zeros_like(e)
    for o in np.unique(cells[ev]):
        mine = e & (c == o)
        t_rows, l_cols = np.nonzero(mine)
        first_cell = np.unique(t_rows, return_index=True)[1]  # raster-first cell of the object in each frame
        per_frame[t_rows[first_cell], l_cols[first_cell]] = True
        once[t_rows[0]] |= mine[t_rows[0]]
    return {
        "oracle (evidence thinned evenly)": ev,
        "random thinning and fill": rand,
        "whole frames": frames.reshape(-1),
        "one cell per object per frame": per_frame.reshape(-1),
        "each object once": once.reshape(-1),
    }


def count(model, proc, n: int) -> None:
    """Print the count questions' accuracy at r = 0.1 with the oracle's evidence laid out in several ways."""
    ok: collections.Counter = collections.Counter()
    total = 0
    cell = 2 * proc.patch_size
    with O.registered(), _registered(FixedConfig, _fixed, "diagnosis only: fixed indices"):
        for i in D.heldout_indices(n):
            s = D.make_sample(D.TEST, i)
            if s.question.qtype != "count":
                continue
            total += 1
            cells = cell_objects(s.clip.shape_ids, cell)
            T = s.clip.shape_ids.shape[0]
            ev = O.evidence_cells(s.question, s.clip.objects, cells, T)
            budget = T * frame_budget(cells.size // T, 0.1)
            configs: dict[str, PruneConfig | None] = {"all tokens": None}
            for name, mask in _evidence_layouts(ev, cells, T, budget, i).items():
                keep = tuple(int(x) for x in np.nonzero(mask)[0])
                configs[name] = (
                    FixedConfig(retention=0.1, keep=keep)
                    if name.startswith("random")
                    else O.OracleConfig(retention=0.1, evidence=keep)
                )
            configs["random r=0.1"] = tp.make_config("random", retention=0.1)
            configs["uniform r=0.1"] = tp.make_config("uniform", retention=0.1)
            for name, config in configs.items():
                if config is None:
                    ok[name] += answer_batch(model, proc, [s])[0] == s.question.answer
                    continue
                with _applied(model, config):
                    ok[name] += answer_batch(model, proc, [s])[0] == s.question.answer
    print(f"{total} count questions among the first {n} held-out questions, correct answers:")
    for name, v in ok.items():
        print(f"  {name:34s} {v}")


def main() -> None:
    """Run one diagnosis."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("layout", "direction", "motion", "packing", "collapse", "count"))
    ap.add_argument("--model", default=None, help="saved testbed model directory (default: shipped weights)")
    ap.add_argument(
        "--questions",
        type=int,
        default=None,
        help="first N held-out questions (layout 200, direction 1000, motion 160, packing 1000, collapse 80, count 300)",
    )
    ap.add_argument(
        "--tau", type=float, default=0.8, help="layout, collapse: Tango's tau_static (default the published 0.8)"
    )
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, proc = load(args.model)
    if args.what == "layout":
        layout(model, proc, args.questions or 200, args.tau)
    elif args.what == "direction":
        direction(model, proc, args.questions or 1000)
    elif args.what == "motion":
        motion(model, proc, args.questions or 160)
    elif args.what == "packing":
        packing(model, proc, args.questions or 1000)
    elif args.what == "count":
        count(model, proc, args.questions or 300)
    else:
        collapse(model, proc, args.questions or 80, args.tau)


if __name__ == "__main__":
    main()
