"""The data that flows through tango-prune: :class:`VideoTokens` in, :class:`PruneResult` out."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

__all__ = ["VideoTokens", "PruneResult", "TokenKind"]


class TokenKind:
    """Integer codes of :attr:`PruneResult.kinds`."""

    SALIENT = 0  #: kept for its attention, feature unchanged
    CONTEXT = 1  #: context anchor, carries the (weighted) average of its cluster
    STATIC = 2  #: stands for a position that is static over a segment (at its first frame)
    NAMES = ("salient", "context", "static")


def _require_float(name: str, t: Any, ndim: int, shape_doc: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {shape_doc}, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have shape {shape_doc}, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must contain only finite values (found NaN or inf)")
    return t


@dataclasses.dataclass(frozen=True, eq=False)
class VideoTokens:
    """The visual tokens of one video, as the language model would receive them.

    - ``features``: float tensor (T, H, W, D), the projected visual features on the LLM token grid.
    - ``saliency``: float tensor (T, H, W) or ``None``; attention each token receives (higher = more
      important). Methods that rank by attention raise if it is missing.
    - ``timestamps``: float tensor (T,) of frame times in seconds, non-decreasing; default 0, 1, ..., T-1.
    - ``metric``: optional features used only for temporal segmentation, (T, H, W, Dm) per token or
      (T, Dm) per frame; default the features themselves.

    Construction validates shapes, dtypes and finiteness and raises ``ValueError`` naming the argument.
    Tensors are never modified by any method.
    """

    features: torch.Tensor
    saliency: torch.Tensor | None = None
    timestamps: torch.Tensor | None = None
    metric: torch.Tensor | None = None

    def __post_init__(self) -> None:
        f = _require_float("features", self.features, 4, "(T, H, W, D)")
        T, H, W, D = f.shape
        if min(T, H, W) < 1:
            raise ValueError(f"features must be a non-empty video: T, H, W >= 1, got shape {tuple(f.shape)}")
        if D < 2:
            raise ValueError(f"features must have D >= 2 channels, got D={D}")
        if self.saliency is not None:
            s = _require_float("saliency", self.saliency, 3, f"(T, H, W) = {(T, H, W)}")
            if tuple(s.shape) != (T, H, W):
                raise ValueError(f"saliency must have shape (T, H, W) = {(T, H, W)}, got {tuple(s.shape)}")
            if s.device != f.device:
                raise ValueError(f"saliency must be on the features' device {f.device}, got {s.device}")
        if self.timestamps is None:
            object.__setattr__(self, "timestamps", torch.arange(T, dtype=torch.float64, device=f.device))
        else:
            ts = self.timestamps
            if not isinstance(ts, torch.Tensor):
                ts = torch.as_tensor(ts, dtype=torch.float64)
            ts = _require_float("timestamps", ts, 1, f"(T,) = ({T},)")
            if ts.shape[0] != T:
                raise ValueError(f"timestamps must have shape (T,) = ({T},), got {tuple(ts.shape)}")
            if T > 1 and bool((ts[1:] < ts[:-1]).any()):
                raise ValueError("timestamps must be non-decreasing (seconds of the sampled frames)")
            object.__setattr__(self, "timestamps", ts.to(f.device))
        if self.metric is not None:
            m = self.metric
            if not isinstance(m, torch.Tensor) or m.dim() not in (2, 4):
                raise ValueError(
                    f"metric must be a tensor of shape (T, H, W, Dm) or (T, Dm), got "
                    f"{tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__}"
                )
            _require_float("metric", m, m.dim(), "(T, H, W, Dm) or (T, Dm)")
            if m.dim() == 4 and tuple(m.shape[:3]) != (T, H, W) or m.dim() == 2 and m.shape[0] != T:
                raise ValueError(
                    f"metric must have shape (T, H, W, Dm) or (T, Dm) with T, H, W = {(T, H, W)}, got {tuple(m.shape)}"
                )

    @property
    def grid(self) -> tuple[int, int, int]:
        """(T, H, W) of the token grid."""
        T, H, W, _ = self.features.shape
        return T, H, W

    @property
    def num_tokens(self) -> int:
        """T * H * W."""
        T, H, W = self.grid
        return T * H * W

    def require_saliency(self, method: str) -> torch.Tensor:
        """Return the saliency map, or raise ``ValueError`` saying that ``method`` needs one."""
        if self.saliency is None:
            raise ValueError(
                f"saliency is required by method {method!r}: pass VideoTokens(saliency=...) of shape "
                f"(T, H, W) = {self.grid}"
            )
        return self.saliency


@dataclasses.dataclass(frozen=True, eq=False)
class PruneResult:
    """What a pruning method keeps.

    - ``indices``: LongTensor (K,), sorted unique indices into the flattened (T * H * W) grid.
    - ``features``: tensor (K, D) in the input dtype, the kept (possibly merged) features in index order.
    - ``positions``: LongTensor (K, 3), the (t, h, w) of each kept token.
    - ``kinds``: LongTensor (K,) of :class:`TokenKind` codes, or ``None`` if the method does not say.
    - ``grid``: (T, H, W) of the input.
    - ``info``: method-specific budget summary (segments, planned counts, ...), plain Python values.
    """

    indices: torch.Tensor
    features: torch.Tensor
    positions: torch.Tensor
    grid: tuple[int, int, int]
    kinds: torch.Tensor | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_indices(
        cls,
        tokens: VideoTokens,
        indices: torch.Tensor,
        features: torch.Tensor | None = None,
        kinds: torch.Tensor | None = None,
        info: dict[str, Any] | None = None,
    ) -> "PruneResult":
        """Build a result from (not necessarily sorted) unique flat indices and optional replacement features.

        ``features`` (K, D), if given, is aligned with ``indices`` as passed; otherwise the original features
        are gathered. Everything is re-ordered by index; indices that are already increasing are not
        re-ordered, and the result's features then share storage with ``features`` when it has the input's
        dtype (no copy of a (K, D) tensor the method has just built).
        """
        T, H, W = tokens.grid
        idx = indices.to(device=tokens.features.device, dtype=torch.long).reshape(-1)
        increasing = idx.numel() <= 1 or bool((idx[1:] > idx[:-1]).all())
        order = None if increasing else torch.argsort(idx, stable=True)
        if order is not None:
            idx = idx[order]
            if bool((idx[1:] == idx[:-1]).any()):
                raise ValueError("indices must be unique")
        if idx.numel() and (int(idx[0]) < 0 or int(idx[-1]) >= T * H * W):
            raise ValueError(f"indices must lie in [0, {T * H * W})")
        flat = tokens.features.reshape(T * H * W, -1)
        if features is None:
            feats = flat.index_select(0, idx)
        else:
            feats = (features if order is None else features.index_select(0, order)).to(flat.dtype)
        if kinds is not None:
            kinds = kinds.to(idx.device, torch.long)
            kinds = kinds if order is None else kinds[order]
        return cls(
            indices=idx,
            features=feats,
            positions=unflatten_index(idx, H, W),
            grid=(T, H, W),
            kinds=kinds,
            info=dict(info or {}),
        )

    @property
    def num_kept(self) -> int:
        """Number of kept tokens K."""
        return int(self.indices.numel())

    @property
    def kept_ratio(self) -> float:
        """K / (T * H * W)."""
        T, H, W = self.grid
        return self.num_kept / (T * H * W)

    def per_frame_counts(self) -> torch.Tensor:
        """LongTensor (T,): how many kept tokens sit in each frame."""
        return torch.bincount(self.positions[:, 0], minlength=self.grid[0])

    def mask(self) -> torch.Tensor:
        """Bool tensor (T, H, W), True at kept tokens."""
        T, H, W = self.grid
        m = torch.zeros(T * H * W, dtype=torch.bool, device=self.indices.device)
        m[self.indices] = True
        return m.reshape(T, H, W)


def unflatten_index(idx: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Map flat indices t*H*W + h*W + w to (K, 3) positions (t, h, w)."""
    t = torch.div(idx, H * W, rounding_mode="floor")
    rem = idx - t * H * W
    h = torch.div(rem, W, rounding_mode="floor")
    return torch.stack([t, h, rem - h * W], dim=1)
