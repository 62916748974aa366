"""Exact integer budget arithmetic: a ratio is the decimal fraction the user wrote, not its binary double.

``context_ratio = 0.9`` is stored as the double 0.90000000000000002220, so the float expression
``int(K * (1 - 0.9))`` gives 1 for K = 20 instead of 2 (and ``int(K * (1 - 0.3))`` gives 62 for K = 90);
``ceil(100 * 0.07)`` is 8. Here every ratio ``x`` is read as the shortest decimal that round-trips to the
same double, ``Fraction(repr(x))`` (0.9 -> 9/10, 1/3 -> 3333333333333333/10**16), and floors and
ceilings are taken on exact rationals. ``compat="published"`` keeps the published double expressions.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

__all__ = ["ratio", "floor_mul", "ceil_mul"]


@lru_cache(maxsize=1024)
def _decimal(x: float) -> Fraction:
    return Fraction(repr(x))


def ratio(x: float | int | Fraction) -> Fraction:
    """``x`` as an exact fraction: the shortest decimal that round-trips to the double ``x``."""
    if isinstance(x, Fraction):
        return x
    if isinstance(x, int) and not isinstance(x, bool):
        return Fraction(x)
    return _decimal(float(x))


def floor_mul(n: int, x: float | int | Fraction) -> int:
    """``floor(n * x)`` computed exactly, ``x`` read by :func:`ratio`."""
    q = ratio(x) * n
    return q.numerator // q.denominator


def ceil_mul(n: int, x: float | int | Fraction) -> int:
    """``ceil(n * x)`` computed exactly, ``x`` read by :func:`ratio`."""
    q = ratio(x) * n
    return -((-q.numerator) // q.denominator)
