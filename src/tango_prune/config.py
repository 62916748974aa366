"""Immutable, validated method configurations with a JSON round-trip.

Every pruning method has one frozen dataclass config deriving from :class:`PruneConfig`. Configs are
values: they are validated on construction, never mutated (use :meth:`PruneConfig.replace`), and can be
saved to / loaded from JSON like Hugging Face configs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, ClassVar

from .validate import check_choice, check_cosine, check_int, check_number_above, check_unit_interval

__all__ = ["PruneConfig", "TangoConfig", "PRESETS", "check_unit_interval"]


@dataclasses.dataclass(frozen=True)
class PruneConfig:
    """Base class of all method configs: a retention ratio plus JSON (de)serialisation.

    ``retention`` is the fraction of visual tokens kept, in (0, 1].
    """

    method: ClassVar[str] = ""
    retention: float = 0.1

    def __new__(cls, *args: Any, **kwargs: Any) -> "PruneConfig":
        # why: an unknown field is a bad value, not a Python type error: ValueError naming it and the fields,
        # the same as from_dict, replace() and make_config.
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; expected a subset of {sorted(names)}")
        return super().__new__(cls)

    def __post_init__(self) -> None:
        check_unit_interval("retention", self.retention, low_open=True, high_open=False)
        self._validate()

    def _validate(self) -> None:
        """Hook for subclasses: raise ``ValueError`` for invalid fields."""

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of the fields plus the method name."""
        out: dict[str, Any] = {"method": self.method}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = [list(x) if isinstance(x, tuple) else x for x in v]
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PruneConfig":
        """Build a config from :meth:`to_dict` output; unknown keys or a wrong method raise ``ValueError``."""
        if not isinstance(data, dict):
            raise ValueError(f"config data must be a dict, got {type(data).__name__}")
        data = dict(data)
        method = data.pop("method", cls.method)
        if method != cls.method:
            raise ValueError(f"method must be {cls.method!r} for {cls.__name__}, got {method!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; expected a subset of {sorted(names)}")
        return cls(**data)

    def to_json(self) -> str:
        """Serialise to a JSON string."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def save(self, path: str | os.PathLike) -> None:
        """Write the config as JSON to ``path`` (a file, or a directory receiving ``prune_config.json``)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "prune_config.json")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PruneConfig":
        """Read a config written by :meth:`save`."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "prune_config.json")
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    def replace(self, **changes: Any) -> "PruneConfig":
        """Return a validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


_SEGMENTATIONS = ("holitom", "fastvid", "none")
#: ``TangoConfig.preset``'s "fastv not given" marker (``None`` means "no FastV stage")
_NO_FASTV: Any = object()
_COMPAT = ("fixed", "published")

# Model presets: the values the published runs use (docs/algorithm.md §2.10).
# Sinks are (row, col) cells on the pooled LLM token grid; the published flat indices are
# OV [28,27,41,169,11,12] on 14x14 and LLaVA-Video [26,157,11] on 13x13.
PRESETS: dict[str, dict[str, Any]] = {
    "llava-onevision": {
        "sinks": ((2, 0), (1, 13), (2, 13), (12, 1), (0, 11), (0, 12)),
    },
    "llava-video": {
        "sinks": ((2, 0), (12, 1), (0, 11)),
    },
    "qwen2.5-vl": {
        "sinks": (),
    },
}


@dataclasses.dataclass(frozen=True)
class TangoConfig(PruneConfig):
    """Configuration of the Tango pruner (arXiv 2604.09547).

    Fields (defaults are the published run values, docs/algorithm.md §2.10):

    - ``retention``: fraction of visual tokens kept, in (0, 1].
    - ``context_ratio`` (0.4): fraction of each budget spent on merged context anchors; the rest goes to
      diversity-selected salient tokens.
    - ``alpha`` (1.5): candidate expansion; ``floor(alpha * K_s)`` top-attention candidates are clustered.
    - ``beta`` (0.6): minimum weight of an anchor in its merged cluster average.
    - ``k_neighbors`` (7): neighbours used for the DPC-KNN density.
    - ``segmentation``: ``"holitom"`` (DP maximising collapsible static tokens), ``"fastvid"``
      (cuts at the ``fastvid_cuts - 1`` lowest frame similarities and below ``tau_segment``) or
      ``"none"`` (one segment).
    - ``tau_segment`` (0.8): similarity threshold of the segmentation; presets use 0.65 at retention 0.1.
    - ``tau_static`` (0.8): cosine threshold above which a position is static across a whole segment.
    - ``base_time`` / ``base_space`` (1e4 / 1e3): ST-RoPE bases, time in seconds, space in grid cells.
    - ``sinks``: (row, col) cells whose saliency is zeroed on every frame (attention sinks).
    - ``compat``: ``"fixed"`` (default) or ``"published"``, which reproduces the published anchor /
      merged-feature permutation bug (docs/algorithm.md §2.4) bit for bit.
    - ``diversity`` / ``strope`` / ``merge_context``: ablation switches; turning one off gives plain top-k
      salient selection, plain cosine geometry, or no context merging (all budget salient).
    - ``fastvid_cuts`` (8), ``holitom_max_window`` (1024): segmentation constants of the published code.
    - ``max_cluster_tokens`` (16384): the largest token set clustered at once. A segment whose context
      pool is larger is clustered in consecutive frame windows, each with its exact share of the budget,
      so cost stays linear in the number of frames. The default exceeds every published setting
      (64 x 169 frames gives a pool of ~10k), where results are unchanged.
    - ``gram_bytes`` (256 MiB): the largest fp32 pairwise-distance matrix DPC-KNN builds at once; it then
      serves the density, the delta and the nearest-anchor assignment. A larger pool is clustered in
      strips of the same fixed tiles (about twice the flops, same result bit for bit). 0 always uses strips.

    The intra-LLM FastV stage of LLaVA-Video is not a field: it has its own config,
    :class:`tango_prune.models.fastv.FastVConfig`, passed as ``apply(..., stages=[...])``.
    """

    method: ClassVar[str] = "tango"
    retention: float = 0.1
    context_ratio: float = 0.4
    alpha: float = 1.5
    beta: float = 0.6
    k_neighbors: int = 7
    segmentation: str = "holitom"
    tau_segment: float = 0.8
    tau_static: float = 0.8
    base_time: float = 1e4
    base_space: float = 1e3
    sinks: tuple[tuple[int, int], ...] = ()
    compat: str = "fixed"
    diversity: bool = True
    strope: bool = True
    merge_context: bool = True
    fastvid_cuts: int = 8
    holitom_max_window: int = 1024
    max_cluster_tokens: int = 16384
    gram_bytes: int = 1 << 28

    def _validate(self) -> None:
        check_unit_interval("context_ratio", self.context_ratio, low_open=False, high_open=False)
        check_unit_interval("beta", self.beta, low_open=False, high_open=False)
        check_unit_interval("tau_static", self.tau_static, low_open=False, high_open=False)
        check_cosine("tau_segment", self.tau_segment)
        check_number_above("alpha", self.alpha, 1, inclusive=True)
        for name, minimum in (
            ("k_neighbors", 1),
            ("fastvid_cuts", 1),
            ("holitom_max_window", 2),
            ("max_cluster_tokens", 64),
            ("gram_bytes", 0),
        ):
            check_int(name, getattr(self, name), minimum)
        for name in ("base_time", "base_space"):
            check_number_above(name, getattr(self, name), 1)
        check_choice("segmentation", self.segmentation, _SEGMENTATIONS)
        if self.compat not in _COMPAT:
            raise ValueError(f"compat must be one of {_COMPAT}, got {self.compat!r}")
        for name in ("diversity", "strope", "merge_context"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        # Normalise sinks to a tuple of (int, int) so configs hash, compare and serialise identically.
        try:
            sinks = tuple((int(r), int(c)) for r, c in self.sinks)
            ok = all(float(r) == int(r) and float(c) == int(c) for r, c in self.sinks)
        except (TypeError, ValueError):
            ok = False
        if not ok or any(r < 0 or c < 0 for r, c in sinks):
            raise ValueError(f"sinks must be a sequence of non-negative (row, col) integer pairs, got {self.sinks!r}")
        object.__setattr__(self, "sinks", sinks)

    @property
    def effective_context_ratio(self) -> float:
        """The context ratio actually used: 0 when context merging is ablated."""
        return self.context_ratio if self.merge_context else 0.0

    @classmethod
    def preset(
        cls, model: str, retention: float = 0.1, *, llm_layers: int = 28, fastv: Any = _NO_FASTV, **overrides: Any
    ) -> "TangoConfig":
        """The published run configuration for ``model`` at overall ``retention``.

        ``model`` is ``"llava-onevision"``, ``"llava-video"`` or ``"qwen2.5-vl"``. The segmentation
        threshold is 0.65 at retention 0.1 and 0.8 otherwise.

        The published LLaVA-Video run adds an intra-LLM FastV stage, which is not part of this config. Its
        pre-LLM retention depends on that stage, so for ``"llava-video"`` ``fastv`` must be given: the
        :class:`~tango_prune.models.fastv.FastVConfig` you pass to ``apply(..., stages=[...])`` (the published
        one is ``FastVConfig()``, layer 18, keep 0.5), or ``None`` for no stage. With a stage, the pre-LLM
        retention is ``min(1, N r / (K + (N - K) keep))`` for a stage at layer K of an N = ``llm_layers``-layer
        LLM, so that the layer-averaged retention is ``r`` (``28 r / 23`` for the published 28-layer checkpoints; docs/algorithm.md §2.10).
        ``llm_layers`` is the language model's layer count (the model families pass the checkpoint's own).
        """
        if model not in PRESETS:
            raise ValueError(f"model must name a preset, one of {sorted(PRESETS)}, got {model!r}")
        check_unit_interval("retention", retention, low_open=True, high_open=False)
        if fastv is _NO_FASTV:
            if model == "llava-video":
                raise ValueError(
                    "fastv: the llava-video preset's pre-LLM retention depends on its intra-LLM FastV stage; pass "
                    "fastv=tango_prune.FastVConfig() (the published stage; give the same object to "
                    "tango_prune.apply(..., stages=[...])) or fastv=None (no stage, pre-LLM retention = retention)"
                )
            fastv = None
        fields: dict[str, Any] = dict(PRESETS[model])
        fields.update(
            segmentation="holitom",
            context_ratio=0.4,
            alpha=1.5,
            beta=0.6,
            k_neighbors=7,
            tau_static=0.8,
            tau_segment=0.65 if math.isclose(retention, 0.1) else 0.8,
        )
        pre = retention
        if fastv is not None:
            from .models.fastv import FastVConfig

            if not isinstance(fastv, FastVConfig):
                raise ValueError(f"fastv must be a tango_prune.FastVConfig or None, got {fastv!r}")
            check_int("llm_layers (more than fastv.layer)", llm_layers, fastv.layer + 1)
            # Same double expression as the published preset, so budgets do not move by a rounding.
            pre = min(1.0, llm_layers * retention / (fastv.layer + (llm_layers - fastv.layer) * fastv.keep))
        fields["retention"] = pre
        fields.update(overrides)
        return cls(**fields)
