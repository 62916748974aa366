"""The evidence oracle: a reference token selector for the testbed eval, not a pruning method.

The generator knows where each question's evidence is (its subject's cells in the frames that matter, see
:func:`evidence_cells`). The oracle keeps those tokens and fills the rest of the same budget every method
gets (``T * max(1, ceil(H W r))`` tokens) with tokens spread evenly over the remaining grid. If it answers
at r = 0.1 about as well as with every token, 10% of the tokens can carry the answer, so a method that loses
accuracy there chose badly rather than lacked budget.

It needs the question, which no real pruning method has, so it is never in :func:`tango_prune.methods`.
The model adapter only calls registered methods; :func:`registered` registers the oracle for the duration
of one evaluation and removes it again.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import ClassVar, Iterator

import numpy as np
import torch

from ..config import PruneConfig
from ..methods._common import frame_budget
from ..tokens import PruneResult, VideoTokens
from . import data as D

__all__ = ["ORACLE", "OracleConfig", "cell_labels", "cell_objects", "evidence_cells", "select", "registered"]

#: the name the oracle rows carry in eval reports (and is registered under while one is scored)
ORACLE = "evidence-oracle"


def cell_labels(ids: np.ndarray, cell: int, classes: int) -> np.ndarray:
    """(T, H, W) int ids (0 = background) -> (T * g * g,) int64: per pooled cell of ``cell`` x ``cell`` pixels
    (one LLM token) the id covering most of it, 0 where fewer than 4 object pixels fall in the cell."""
    T, H, W = ids.shape
    if H % cell or W % cell:
        raise ValueError(f"cell must divide the frame size {H}x{W}, got {cell!r}")
    onehot = np.eye(classes, dtype=np.int32)[ids.astype(np.int64)]
    cnt = onehot.reshape(T, H // cell, cell, W // cell, cell, classes).sum(axis=(2, 4))[..., 1:]
    return np.where(cnt.max(-1) >= 4, cnt.argmax(-1) + 1, 0).reshape(-1)


def cell_objects(shape_ids: np.ndarray, cell: int) -> np.ndarray:
    """(T, H, W) per-pixel shape ids -> (T * g * g,) int8: per pooled cell the index into
    :data:`~tango_prune.testbed.data.SHAPES` of the object covering most of it, -1 where fewer than 4 object
    pixels fall in the cell. Shapes are distinct within a clip, so this identifies the object."""
    return (cell_labels(shape_ids, cell, len(D.SHAPES) + 1) - 1).astype(np.int8)


def evidence_cells(question: D.Question, objects, cell_obj: np.ndarray, T: int) -> np.ndarray:
    """(N,) bool over the clip's visual tokens: those holding the answer to ``question``.

    The subject's tokens in every frame, except: only the frames from the colour change on for ``change_to``,
    only the last 3 frames for ``end``, and every object token for ``count`` (no single subject)."""
    n = cell_obj.shape[0]
    if question.subject is None:
        return cell_obj >= 0
    frame = np.arange(n) // (n // T)
    ev = cell_obj == D.SHAPES.index(question.subject)
    if question.qtype == "change_to":
        o = next(o for o in objects if o.shape == question.subject)
        ev &= frame >= o.change_frame
    elif question.qtype == "end":
        ev &= frame >= T - 3
    return ev


@dataclasses.dataclass(frozen=True)
class OracleConfig(PruneConfig):
    """The oracle's config for one video: ``retention`` and ``evidence``, the sorted flat token indices
    (``t * H * W + h * W + w``) holding the answer."""

    method: ClassVar[str] = ORACLE
    evidence: tuple[int, ...] = ()

    def _validate(self) -> None:
        ev = tuple(int(i) for i in self.evidence)
        if any(i < 0 for i in ev) or list(ev) != sorted(set(ev)):
            raise ValueError(f"evidence must be sorted distinct non-negative token indices, got {self.evidence!r}")
        object.__setattr__(self, "evidence", ev)


def _spread(pool: torch.Tensor, k: int) -> torch.Tensor:
    """``k`` entries of the sorted 1-D ``pool`` evenly spaced over it (first and last included)."""
    if k <= 0:
        return pool[:0]
    if k >= pool.numel():
        return pool
    pos = torch.round(torch.linspace(0, pool.numel() - 1, k, dtype=torch.float64)).long()
    return pool[pos]


def select(tokens: VideoTokens, config: OracleConfig) -> PruneResult:
    """Keep the evidence tokens (evenly thinned if they exceed the budget) and fill the budget with tokens
    evenly spread over the rest of the video. Deterministic, integer-only choices."""
    T, H, W = tokens.grid
    N = T * H * W
    budget = T * frame_budget(H * W, config.retention)  # the budget every method gets
    ev = torch.tensor(config.evidence, dtype=torch.long)
    if ev.numel() and int(ev[-1]) >= N:
        raise ValueError(f"evidence indices must be < {N} for a {T}x{H}x{W} grid, got {int(ev[-1])}")
    keep = _spread(ev, budget)
    is_ev = torch.zeros(N, dtype=torch.bool)
    is_ev[ev] = True
    rest = torch.nonzero(~is_ev).reshape(-1)
    keep = torch.cat([keep, _spread(rest, budget - keep.numel())])
    return PruneResult.from_indices(
        tokens,
        keep,
        info={
            "method": ORACLE,
            "retention": config.retention,
            "evidence": int(ev.numel()),
            "kept": int(keep.numel()),
            "total": N,
        },
    )


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """Register the oracle with the method registry for the ``with`` block only (the adapter dispatches by
    name), and take it out again afterwards, so :func:`tango_prune.methods` never lists it."""
    # why not ``from .. import methods``: the package attribute ``tango_prune.methods`` is the listing function
    from ..methods import names, register, unregister

    if ORACLE in names():
        raise ValueError(f"{ORACLE!r} is already registered; the oracle must not be a public method")
    register(ORACLE, OracleConfig, select, "testbed-only evidence oracle")
    try:
        yield
    finally:
        unregister(ORACLE)
