"""Efficiency benchmark: random-weight architecture presets, inputs, profiler and the runner.

Entry points: :func:`run_bench` with a :class:`BenchSpec`, or the ``tango-prune bench`` command.
"""

from .runner import BenchSpec, markdown_table, run_bench

__all__ = ["BenchSpec", "run_bench", "markdown_table"]
