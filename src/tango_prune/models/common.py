"""Model-independent pieces of the adapters: per-model state, sequence compaction, timing.

An adapter turns the video inputs of one call into *visual sequences*: for every video, the embeddings that
reach the language model and the offsets (inside that video's placeholder span) of the placeholders they
occupy. :func:`compact_inputs` then drops the other placeholders from ``input_ids`` / ``attention_mask`` /
any other per-token tensor, row by row, and re-pads the batch **on the left**, always.

Why always left: pruning keeps a different number of tokens per row (data-dependent methods, the LLaVA-Video
newlines), so rows of an unpadded batch come out with different lengths. Padding them on the right would put
pad tokens between a shorter row's prompt and the tokens ``generate`` appends, which silently changes its
answer. Left padding is what ``generate`` expects, and for ``forward`` it changes nothing either: RoPE
attention only sees relative positions, and padding is masked. The input's own padding is dropped first, so
every batch (left-padded, right-padded, unpadded, no mask) is rewritten to the same canonical layout and each
row computes what it would compute alone.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import torch

from ..config import PruneConfig

__all__ = [
    "PatchState",
    "VideoSpan",
    "find_video_spans",
    "compact_inputs",
    "compact_kwargs",
    "parse_timestamps",
    "pad_id",
    "Timer",
    "STATE_ATTR",
    "check_placeholders_unmasked",
    "right_aligned_columns",
]

#: Name of the attribute holding the :class:`PatchState` on a patched model instance.
STATE_ATTR = "_tango_prune_state"


@dataclasses.dataclass
class PatchState:
    """Everything one patched model instance carries; lives on the instance, never in a module global."""

    adapter: Any
    config: PruneConfig
    originals: dict[str, Any]
    variant: str | None = None
    saliency_head: Any = None
    #: the intra-LLM stage configs given to ``apply`` (:class:`~tango_prune.models.base.StageConfig`)
    stage_configs: tuple[Any, ...] = ()
    #: an encoder output (the family's ``encode`` result) served to every call instead of encoding again;
    #: set by :func:`tango_prune.models.reuse_encoding` (benchmarks: one encoder pass for many runs)
    encoded: Any = None
    #: the encoder output the last call with videos used (served or computed; see :meth:`encoding`)
    last_encoded: Any = None
    #: figures of the last prefill with videos (see :func:`tango_prune.models.stats`)
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: the PruneResult of every video of the last call with videos
    last_results: list[Any] = dataclasses.field(default_factory=list)
    #: intra-LLM stages installed by the family (:class:`~tango_prune.models.base.Stage`)
    stages: list[Any] = dataclasses.field(default_factory=list)
    #: ``fn(phase)`` callbacks at the phase boundaries of a pruned call (:func:`tango_prune.models.on_phase`)
    phase_callbacks: list[Any] = dataclasses.field(default_factory=list)

    def encoding(self, compute: Callable[[], Any]) -> Any:
        """The encoder output for this call: the served one (:attr:`encoded`) or ``compute()``; either way
        remembered as :attr:`last_encoded` (:func:`tango_prune.models.last_encoding`)."""
        self.last_encoded = self.encoded if self.encoded is not None else compute()
        return self.last_encoded

    def mark(self, phase: str) -> None:
        """Tell every phase callback that ``phase`` (``vision_start``, ``vision_end``, ``prune_end``) is reached."""
        for fn in self.phase_callbacks:
            fn(phase)


@dataclasses.dataclass(frozen=True)
class VideoSpan:
    """One run of video placeholder tokens: batch row, first column, length."""

    row: int
    start: int
    length: int


def find_video_spans(input_ids: torch.Tensor, token_id: int, lengths: list[int]) -> list[VideoSpan]:
    """Locate one placeholder span per video, in the order the model scatters video features.

    Upstream models fill placeholders with ``masked_scatter``, i.e. in row-major order over (batch, seq);
    video ``v`` therefore owns the next ``lengths[v]`` placeholders in that order. Each span must be
    contiguous and inside a single row, otherwise ``ValueError``.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, seq), got {tuple(input_ids.shape)}")
    rows, cols = (input_ids == token_id).nonzero(as_tuple=True)
    total = sum(lengths)
    if rows.numel() != total:
        raise ValueError(
            f"input_ids must contain {total} video placeholder tokens (id {token_id}) for the "
            f"given videos, found {rows.numel()}"
        )
    spans, pos = [], 0
    rows_l, cols_l = rows.tolist(), cols.tolist()
    for n in lengths:
        r0, c0 = rows_l[pos], cols_l[pos]
        r1, c1 = rows_l[pos + n - 1], cols_l[pos + n - 1]
        if r0 != r1 or c1 - c0 + 1 != n:
            raise ValueError("input_ids: every video's placeholder tokens must be one contiguous run in one row")
        spans.append(VideoSpan(r0, c0, n))
        pos += n
    return spans


def right_aligned_columns(keep: torch.Tensor) -> torch.Tensor:
    """For a (B, L) bool mask, the (B, L') columns where each row's True entries go when the rows are
    right-aligned (left-padded) to the longest row, in their original order; -1 marks padding."""
    B, L = keep.shape
    counts = keep.sum(dim=1)
    Lp = int(counts.max()) if B else 0
    # Stable sort puts dropped columns (key 0) first and kept ones (key 1) last, in their original order:
    # the last ``Lp`` sorted columns are each row's kept columns, right-aligned, with no Python loop.
    order = torch.sort(keep.to(torch.uint8), dim=1, stable=True).indices[:, L - Lp :]
    real = torch.arange(Lp, device=keep.device)[None, :] >= (Lp - counts)[:, None]
    return torch.where(real, order, torch.full_like(order, -1))


def compact_inputs(
    keep: torch.Tensor, attention_mask: torch.Tensor | None, tensors: dict[str, tuple[torch.Tensor, int, Any]]
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Keep the columns where ``keep`` (B, L) is True and the input is not padding; left-pad every row.

    ``tensors`` maps a name to ``(tensor, seq_dim, pad_value)``; each tensor has the batch dimension right
    before ``seq_dim`` (``seq_dim`` is the last dim; e.g. (B, L) or (4, B, L)). Columns where
    ``attention_mask`` is 0 are dropped too, and the kept columns of every row are right-aligned, whatever
    side (if any) the input was padded on: see the module docstring for why.
    Returns ``(new_tensors, new_attention_mask, index)`` where ``index`` (B, L') holds, for every new
    column, the old column it came from (-1 for padding). Inputs are never modified.
    """
    B, L = keep.shape
    if attention_mask is not None:
        if attention_mask.shape != keep.shape:
            raise ValueError(f"attention_mask must have shape {tuple(keep.shape)}, got {tuple(attention_mask.shape)}")
        keep = keep & (attention_mask.to(keep.device) != 0)
    index = right_aligned_columns(keep)
    Lp = index.shape[1]
    valid = index >= 0
    safe = index.clamp(min=0)
    out: dict[str, torch.Tensor] = {}
    for name, (t, _dim, pad) in tensors.items():
        lead = t.shape[:-2]
        idx = safe.expand(*lead, B, Lp) if lead else safe
        g = torch.gather(t, -1, idx.to(t.device))
        out[name] = torch.where(valid.to(t.device).expand_as(g), g, torch.full_like(g, pad))
    if attention_mask is not None:
        am = torch.gather(attention_mask, 1, safe.to(attention_mask.device))
        am = torch.where(valid.to(am.device), am, torch.zeros_like(am))
    else:
        am = valid.to(torch.long)
    return out, am, index


def check_placeholders_unmasked(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, token_id: int) -> None:
    """``ValueError`` when ``attention_mask`` masks a video placeholder: padding columns are dropped by
    :func:`compact_inputs`, and a masked placeholder would then lose the feature the model scatters into it."""
    if attention_mask is None:
        return
    if bool((attention_mask[input_ids == token_id] == 0).any()):
        raise ValueError("attention_mask must be 1 on every video placeholder token (only padding may be masked)")


class Timer:
    """Wall-clock seconds with ``time.perf_counter``; synchronises CUDA only when ``device`` is CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.t0 = 0.0

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def start(self) -> "Timer":
        """Start (or restart) the clock."""
        self._sync()
        self.t0 = time.perf_counter()
        return self

    def stop(self) -> float:
        """Seconds since :meth:`start`."""
        self._sync()
        return time.perf_counter() - self.t0


def parse_timestamps(raw: Any, V: int, T: int, device: torch.device) -> list[torch.Tensor | None]:
    """Per-video (T,) float64 timestamps from the ``video_timestamps`` call argument; ``None`` entries mean
    "use the adapter default"."""
    if raw is None:
        return [None] * V
    if isinstance(raw, torch.Tensor) and raw.dim() == 1:
        raw = raw[None]
    try:
        ts = [torch.as_tensor(r, dtype=torch.float64).reshape(-1) for r in raw]
    except (TypeError, ValueError):
        ts = []
    if len(ts) != V or any(t.shape != (T,) for t in ts):
        raise ValueError(f"video_timestamps must hold {V} sequence(s) of {T} frame times in seconds, got {raw!r}")
    return [t.to(device) for t in ts]


def pad_id(cfg: Any) -> int:
    """The padding token id of a (multimodal) config, 0 when none is set."""
    pid = getattr(cfg, "pad_token_id", None)
    if pid is None:
        pid = getattr(getattr(cfg, "text_config", None), "pad_token_id", None)
    return 0 if pid is None else int(pid)


def compact_kwargs(
    kwargs: dict[str, Any], keep: torch.Tensor, pad: int, extra: dict[str, int] | None = None
) -> dict[str, Any]:
    """Apply :func:`compact_inputs` to ``input_ids`` / ``attention_mask`` / ``labels`` / ``position_ids``."""
    names = {"input_ids": pad, "labels": -100, "position_ids": 0, **(extra or {})}
    tensors = {
        n: (kwargs[n], -1, p)
        for n, p in names.items()
        if isinstance(kwargs.get(n), torch.Tensor) and kwargs[n].shape[-1] == keep.shape[1]
    }
    am = kwargs.get("attention_mask")
    new, new_am, _ = compact_inputs(keep, am, tensors)
    kwargs = dict(kwargs)
    kwargs.update(new)
    if am is not None or not bool(new_am.all()):
        kwargs["attention_mask"] = new_am
    return kwargs
