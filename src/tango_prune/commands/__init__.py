"""CLI subcommands: each public module here defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; :mod:`tango_prune.cli` discovers them."""
