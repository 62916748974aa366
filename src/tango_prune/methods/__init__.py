"""Registry of pruning methods behind one interface.

A method is a function ``fn(tokens: VideoTokens, config) -> PruneResult`` plus a frozen config class
deriving from :class:`tango_prune.config.PruneConfig`. Built-in methods register themselves when this
package is imported; :func:`register` adds a third-party one.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Callable

from ..config import PruneConfig
from ..tokens import PruneResult, VideoTokens

__all__ = ["Method", "register", "unregister", "get", "names"]


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered pruning method."""

    name: str
    config_class: type[PruneConfig]
    fn: Callable[[VideoTokens, PruneConfig], PruneResult]
    summary: str = ""


_REGISTRY: dict[str, Method] = {}


def register(
    name: str, config_class: type[PruneConfig], fn: Callable[[VideoTokens, Any], PruneResult], summary: str = ""
) -> Method:
    """Register a method under ``name`` (its ``config_class.method`` must equal ``name``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if getattr(config_class, "method", None) != name:
        raise ValueError(
            f"config_class.method must equal the method name {name!r}, got {getattr(config_class, 'method', None)!r}"
        )
    if name in _REGISTRY and _REGISTRY[name].fn is not fn:
        raise ValueError(f"a different method is already registered as {name!r}")
    m = Method(name, config_class, fn, summary)
    _REGISTRY[name] = m
    return m


def unregister(name: str) -> None:
    """Remove a registered method (e.g. a reference selector registered for one evaluation only);
    ``ValueError`` when ``name`` is not registered."""
    if name not in _REGISTRY:
        raise ValueError(f"method {name!r} is not registered")
    del _REGISTRY[name]


def get(name: str) -> Method:
    """The method registered as ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"method must be one of {names()}, got {name!r}") from None


def names() -> list[str]:
    """Sorted names of the registered methods."""
    return sorted(_REGISTRY)


# Built-in methods: every module of this package registers itself on import.
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
