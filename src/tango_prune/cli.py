"""The ``tango-prune`` command line: one subcommand per module of :mod:`tango_prune.commands`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import commands as _commands

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(prog="tango-prune", description="Visual token pruning for Video LLMs.")
    sub = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{_commands.__name__}.{info.name}")
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except ValueError as exc:  # bad input: one clear line, no traceback
        print(f"tango-prune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # long runs keep their finished results on disk and resume from them
        print(f"tango-prune {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
