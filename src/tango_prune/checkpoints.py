"""Loading a user's checkpoint: every failure becomes one ``ValueError`` that names the argument it came from.

transformers, safetensors and torch fail in many ways on a bad directory (``OSError``, ``SafetensorError``,
``RuntimeError`` for a size mismatch, JSON and key errors for a broken config). The CLI, the bench and the
lmms-eval plugin all turn these into the same one-line message, through the helpers here.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

__all__ = ["checkpoint_errors", "load_hf_config", "load_pretrained"]


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else ""


@contextlib.contextmanager
def checkpoint_errors(arg: str, model_dir: Any, what: str = "the weights") -> Iterator[None]:
    """Turn any exception raised inside the block into ``ValueError("{arg}: cannot load {what} in {dir}
    (Type: first line)")``; nothing is chained, so the user sees one line, not a traceback."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - OSError, SafetensorError, RuntimeError (size mismatch), ...
        raise ValueError(
            f"{arg}: cannot load {what} in {str(model_dir)!r} ({type(exc).__name__}: {_first_line(exc)})"
        ) from None


def load_hf_config(model_dir: str, arg: str = "--model") -> Any:
    """``AutoConfig`` of a checkpoint directory; ``ValueError`` for a missing directory or ``config.json``,
    or one that is not valid JSON / not a known model type."""
    from transformers import AutoConfig

    if not os.path.isdir(model_dir):
        raise ValueError(f"{arg}: model directory {model_dir!r} does not exist")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ValueError(f"{arg}: {model_dir!r} has no config.json (not a Hugging Face checkpoint directory)")
    try:
        return AutoConfig.from_pretrained(model_dir)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, KeyError, JSON errors
        raise ValueError(
            f"{arg}: {model_dir!r} has an invalid config.json ({type(exc).__name__}: {_first_line(exc)})"
        ) from None


def load_pretrained(cls: Any, model_dir: str, arg: str = "--model", **kwargs: Any) -> Any:
    """``cls.from_pretrained(model_dir, **kwargs)``; missing, truncated or mismatched weights become one
    ``ValueError`` naming ``arg`` instead of a traceback from safetensors or torch."""
    with checkpoint_errors(arg, model_dir), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls.from_pretrained(model_dir, **kwargs)
