"""Model-free entry point: :func:`prune`."""

from __future__ import annotations

import dataclasses
from typing import Any

from . import methods as _methods
from .config import PruneConfig
from .tokens import PruneResult, VideoTokens

__all__ = ["prune", "make_config"]


def make_config(method: str | PruneConfig | None = None, **kwargs: Any) -> PruneConfig:
    """Resolve ``method`` (a name, a config, or ``None`` for Tango) plus field overrides into a config."""
    if isinstance(method, PruneConfig):
        if kwargs:
            return method.replace(**kwargs)
        return method
    name = "tango" if method is None else method
    spec = _methods.get(name)
    fields = sorted(f.name for f in dataclasses.fields(spec.config_class))
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        raise ValueError(
            f"invalid option for method {name!r}: unknown field(s) {unknown}; expected a subset of {fields}"
        )
    return spec.config_class(**kwargs)


def prune(tokens: VideoTokens, method: str | PruneConfig | None = None, **kwargs: Any) -> PruneResult:
    """Prune the visual tokens of one video.

    ``prune(tokens, TangoConfig(retention=0.1))``, ``prune(tokens, "tango", retention=0.1)`` and
    ``prune(tokens, retention=0.1)`` (Tango) are equivalent. Keyword arguments override config fields.
    Returns a :class:`PruneResult`; the input tensors are never modified.
    """
    if not isinstance(tokens, VideoTokens):
        raise ValueError(f"tokens must be a VideoTokens, got {type(tokens).__name__}")
    config = make_config(method, **kwargs)
    return _methods.get(config.method).fn(tokens, config)
