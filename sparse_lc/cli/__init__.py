"""The ``sparse-lc`` command line: one module per subcommand, each with ``add_arguments(parser)``
and ``run(args) -> exit code``; :mod:`.options` declares the options they share, :mod:`.entry`
builds the parser and turns errors into one line and an exit code.

Parsing imports only argparse and these small modules; a subcommand imports the library (torch,
spconv) inside ``run``, so ``--help``, ``--version`` and argument errors answer at once.
"""
from .entry import EXIT_CODES, build_parser, drop_script_folder, main, script_main

__all__ = ["EXIT_CODES", "build_parser", "drop_script_folder", "main", "script_main"]
