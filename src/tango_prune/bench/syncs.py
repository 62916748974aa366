"""Counting, on any device, the operations that make the host wait for a CUDA device.

A host-device synchronisation happens whenever Python needs a value or a size that only the device knows:
``.item()``, ``.tolist()``, ``bool(t)`` / ``int(t)`` / ``float(t)``, a copy to the CPU, and every operation
whose output size depends on the data (``nonzero``, ``unique``, ``masked_select``, boolean-mask
indexing, ...). :class:`SyncCounter` is a :class:`torch.overrides.TorchFunctionMode` that records each
such call with the line of ``tango_prune`` that made it, so the count is the same on CPU as on CUDA and a
test can bound it without a GPU. ``torch.cuda.set_sync_debug_mode("warn")`` counts the same thing on a
real device (``benchmarks/gpu_profile.py --count-syncs`` reports both).
"""

from __future__ import annotations

import collections
import sys
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["SyncCounter", "SYNCING_OPS"]

#: Calls that always need a value from the device (by ``__name__``).
SYNCING_OPS = frozenset(
    {
        "item",
        "tolist",
        "numpy",
        "cpu",
        "__bool__",
        "__int__",
        "__float__",
        "__index__",
        "__complex__",
        "is_nonzero",
        "nonzero",
        "argwhere",
        "unique",
        "unique_consecutive",
        "masked_select",
        "equal",
        "allclose",
        "bincount",
        "repeat_interleave",
    }
)
_INDEXING = frozenset({"__getitem__", "__setitem__", "index_put", "index_put_", "index"})


def _has_bool_index(idx: Any) -> bool:
    if isinstance(idx, torch.Tensor):
        return idx.dtype == torch.bool
    if isinstance(idx, (tuple, list)):
        return any(_has_bool_index(i) for i in idx)
    return False


def _to_cpu(args: tuple, kwargs: dict) -> bool:
    # Only a literal "cpu" target counts: ``.to(x.device)`` is the device path, even when a CPU run makes
    # that device the CPU.
    targets = list(args[1:]) + [kwargs.get("device")]
    return any(isinstance(t, str) and t.startswith("cpu") for t in targets)


def _syncs(name: str, args: tuple, kwargs: dict) -> bool:
    if name in SYNCING_OPS:
        if name == "repeat_interleave":
            return kwargs.get("output_size") is None
        return True
    if name == "where":
        return len(args) + len(kwargs) == 1  # torch.where(cond) is nonzero(cond, as_tuple=True)
    if name in _INDEXING:
        return len(args) > 1 and _has_bool_index(args[1])
    if name == "to":
        return _to_cpu(args, kwargs)
    return False


def _caller() -> str:
    """``file:line`` of the innermost frame in ``tango_prune`` outside this module."""
    frame: Any = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if "tango_prune" in path and not path.endswith("syncs.py"):
            return f"{path.split('tango_prune')[-1].lstrip('/')}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


class SyncCounter(TorchFunctionMode):
    """Counts the calls that would synchronise the host with a CUDA device, on whatever device they run.

    ``with SyncCounter() as c: ...`` then ``c.total`` (an int) and ``c.sites`` (a Counter of
    ``"op @ file:line"``). Only calls made through torch's Python API are seen, which is all of
    ``tango_prune``; nested calls inside an op are not double counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sites: collections.Counter[str] = collections.Counter()

    @property
    def total(self) -> int:
        """Number of syncing calls recorded so far."""
        return sum(self.sites.values())

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if _syncs(name, args, kwargs):
            self.sites[f"{name} @ {_caller()}"] += 1
        return func(*args, **kwargs)
