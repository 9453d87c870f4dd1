"""``sparse-lc``: the parser of every subcommand, and the wrapper that turns errors into exit codes."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import textwrap
import traceback
import warnings
from contextlib import contextmanager
from typing import Iterator, List, Optional

from .. import __version__
from ..errors import TrainingDiverged
from .options import HelpFormatter

# subcommand -> its module in this package (each has SUMMARY, DESCRIPTION, add_arguments, run)
COMMANDS = {"demo": "demo", "segment": "segment", "profile": "profile", "bench": "bench", "train": "train",
            "eval": "eval", "calibrate": "calibrate", "check-data": "check_data", "list": "list",
            "doctor": "doctor"}

EXIT_CODES = {
    0: "success",
    1: "some of the work failed: inputs that could not be processed, failed checks, a diverged training",
    2: "usage, config, checkpoint or data error (the message names it)",
    3: "internal error: a bug (SPARSE_LC_DEBUG=1 shows the traceback; please report it)",
    130: "interrupted (Ctrl-C)",
    141: "the output was closed early (e.g. piped into head)",
}


class Parser(argparse.ArgumentParser):
    """An argument error is one line naming the option, the value and where help is; exit 2.
    It starts with the subcommand (``sparse-lc check-data: error: ...``), also for an option
    the subcommand does not know, which argparse would report from the top-level parser."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            getattr(parsed, "command_parser", self).error(f"unrecognized arguments: {' '.join(unknown)}")
        return parsed


def build_parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())
    parser = Parser(
        prog="sparse-lc", formatter_class=HelpFormatter,
        description="Deep layer cascade segmentation: easy pixels stop early, hard pixels go on through "
                    "spconv submanifold stages.",
        epilog=f"exit codes:\n{codes}\n\n'sparse-lc COMMAND --help' describes a command.")
    parser.add_argument("--version", action="version", version=f"sparse-lc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"{__package__}.{module_name}")
        command = sub.add_parser(name, formatter_class=HelpFormatter, help=module.SUMMARY,
                                 description=textwrap.fill(module.DESCRIPTION, 100))
        module.add_arguments(command)
        command.set_defaults(run=module.run, command_parser=command)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``sparse-lc`` with ``argv`` (default: the process's); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        with warnings.catch_warnings(), _said_on_stderr("sparse_lc.config", args.command):
            warnings.showwarning = _one_line_warning(args.command)
            code = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not as a message at interpreter exit
        return code
    except KeyboardInterrupt as e:
        print(f"\nsparse-lc {args.command}: {str(e) or 'interrupted'}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except Exception as e:  # noqa: BLE001  (every error becomes one line; see EXIT_CODES)
        return _report(args.command, e)


def script_main(command: str, script: str, argv: Optional[List[str]] = None) -> int:
    """``python tools/NAME.py ARGS`` (or ``torchrun ... tools/NAME.py ARGS``) == ``sparse-lc COMMAND ARGS``
    (``argv`` default: the process's), run after :func:`drop_script_folder`."""
    drop_script_folder(script)
    return main([command, *(sys.argv[1:] if argv is None else argv)])


def drop_script_folder(script: str) -> None:
    """Take the folder of ``script`` off ``sys.path``.

    Python puts the folder of the script it runs first on ``sys.path``, so any file there
    could shadow a module of the standard library or of a dependency (``tools/profile.py``
    once hid the ``profile`` module that ``torch.optim`` imports through ``cProfile``, and
    ``python tools/train.py`` failed). Nothing imported after this comes from that folder,
    whatever its files are named (``tests/test_tools.py`` also refuses such names)."""
    folder = os.path.dirname(os.path.abspath(script))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != folder]


def _report(command: str, error: Exception) -> int:
    """Print ``error`` as one line (on the main process only for a coordinated stop) and return its code."""
    code = getattr(error, "exit_code", 2 if isinstance(error, (ValueError, OSError)) else 3)
    if code == 3 and os.environ.get("SPARSE_LC_DEBUG"):
        traceback.print_exc()
    if isinstance(error, TrainingDiverged) and int(os.environ.get("RANK", "0")) != 0:
        return code  # every process stops; rank 0 says why
    what = {1: "", 2: "error: ", 3: "internal error: "}[code]
    message = one_line(error) if code != 3 else f"{type(error).__name__}: {one_line(error)}"
    hint = " (a bug: run again with SPARSE_LC_DEBUG=1 for the traceback, and report it)" if code == 3 else ""
    print(f"sparse-lc {command}: {what}{message}{hint}", file=sys.stderr)
    for line in getattr(error, "details", ()):
        print(f"  {line}", file=sys.stderr)
    return code


@contextmanager
def _said_on_stderr(logger: str, command: str) -> Iterator[None]:
    """The INFO records of ``logger`` printed as ``sparse-lc COMMAND: message`` on stderr (the
    modules custom_imports imports: a run says which code it ran)."""
    log = logging.getLogger(logger)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"sparse-lc {command}: %(message)s"))
    previous = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(previous)


def _one_line_warning(command: str):
    """``warnings.showwarning`` that prints ``sparse-lc COMMAND: warning: message``, one line."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"sparse-lc {command}: warning: {' '.join(str(message).split())}", file=file or sys.stderr)
    return show


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line; for one re-raised from a DataLoader worker (whose
    message holds the worker's traceback), the original message only."""
    text = str(error).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split()) or type(error).__name__


def _silence_stdout() -> None:
    """After a closed pipe, send what is left of stdout to /dev/null, so that Python's exit does
    not print a second error (the recipe of the Python docs, signal.rst)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
