"""The argument checks every config and entry point shares: each raises ``ValueError`` naming the argument.

Method configs, :class:`~tango_prune.TangoConfig`, the FastV stage, the benchmark spec, the video loader and the
lmms-eval arguments all validate through these, so the same mistake gets the same message everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Collection

__all__ = ["check_int", "check_unit_interval", "check_cosine", "check_number_above", "check_choice"]


def check_int(name: str, value: object, minimum: int, *, optional: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an ``int`` (not a bool) >= ``minimum`` (or ``None`` when
    ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_unit_interval(name: str, value: object, *, low_open: bool, high_open: bool) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real number in the requested interval of [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    lo_ok = value > 0 if low_open else value >= 0
    hi_ok = value < 1 if high_open else value <= 1
    if not (lo_ok and hi_ok):
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{name} must be in {lo}0, 1{hi}, got {value!r}")


def check_cosine(name: str, value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is a cosine-similarity threshold in [-1, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1 <= value <= 1:
        raise ValueError(f"{name} must be a cosine similarity in [-1, 1], got {value!r}")


def check_number_above(name: str, value: object, bound: float, *, inclusive: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real number > ``bound`` (>= when ``inclusive``)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or not (value >= bound if inclusive else value > bound):  # type: ignore[operator]
        raise ValueError(f"{name} must be a finite number {'>=' if inclusive else '>'} {bound:g}, got {value!r}")


def check_choice(name: str, value: object, choices: Collection[object]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(map(str, choices))}, got {value!r}")
