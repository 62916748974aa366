"""Checks and file helpers shared by the subcommands: user mistakes become one ``ValueError`` line that names
the argument, found before any long work starts; results are written atomically.

Every function raises ``ValueError`` (the CLI prints it as ``tango-prune CMD: error: ...`` and exits 2).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Any

# why: loading a user's checkpoint is not CLI-specific (the bench and the lmms-eval plugin load them too); it
# lives in tango_prune.checkpoints and is re-exported here for the subcommands
from ..checkpoints import load_hf_config, load_pretrained

__all__ = [
    "positive_int",
    "nonnegative_int",
    "check_out_dir",
    "check_out_file",
    "resolve_device",
    "read_json_report",
    "atomic_write_text",
    "atomic_write_json",
    "load_pretrained",
    "load_hf_config",
]


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


#: argparse ``type=`` for counts that must be >= 1 (``--frames 0`` is an error, never a silent default).
positive_int = _int_at_least(1)
#: argparse ``type=`` for counts that may be 0 (``--warmup``).
nonnegative_int = _int_at_least(0)


def _probe_writable(directory: str, arg: str) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".tango-prune-write-check-", dir=directory)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise ValueError(f"{arg}: cannot write into {directory!r} ({exc.strerror or exc})") from None


def check_out_dir(path: str, arg: str = "--out") -> str:
    """Create the output directory ``path`` if needed and prove it writable, before any work starts."""
    if not path:
        raise ValueError(f"{arg} must name a directory, got {path!r}")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{arg}: {path!r} exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{arg}: cannot create directory {path!r} ({exc.strerror or exc})") from None
    _probe_writable(path, arg)
    return path


def check_out_file(path: str, arg: str, suffixes: tuple[str, ...] = ()) -> str:
    """Prove that the file ``path`` can be written (its directory exists and is writable; it is not a
    directory; it ends in one of ``suffixes`` when given), before any work starts."""
    if not path:
        raise ValueError(f"{arg} must name a file, got {path!r}")
    if os.path.isdir(path):
        raise ValueError(f"{arg}: {path!r} is a directory; give a file name")
    if suffixes and not path.lower().endswith(suffixes):
        raise ValueError(f"{arg}: {path!r} must end in {' or '.join(suffixes)}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(f"{arg}: directory {parent!r} does not exist")
    _probe_writable(parent, arg)
    return path


def resolve_device(name: str, arg: str = "--device") -> Any:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N``, ``mps``: a usable
    ``torch.device``, or ``ValueError`` when that device does not exist on this machine."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{arg} must be auto, cpu, cuda, cuda:N or mps, got {name!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{arg} {name!r}: CUDA is not available on this machine (torch {torch.__version__})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{arg} {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"{arg} {name!r}: MPS is not available on this machine")
    elif dev.type != "cpu":
        raise ValueError(f"{arg} must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    return dev


def read_json_report(path: str, arg: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object from ``path`` with the top-level keys ``required``; ``ValueError`` naming ``arg`` for a
    missing file, invalid JSON or a report of another shape."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ValueError(f"{arg}: file {path!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{arg}: cannot read {path!r} ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{arg}: {path!r} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{arg}: {path!r} must hold a JSON object, got {type(data).__name__}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"{arg}: {path!r} is not a report of this command (missing {missing})")
    return data


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and ``os.replace``, so a
    reader (or an interrupted run) never sees a half-written file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_json(path: str, data: Any) -> None:
    """:func:`atomic_write_text` of ``data`` as indented JSON."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
