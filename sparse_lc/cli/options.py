"""Options the subcommands share: each declared once here, and the helpers that read them.

Every ``add_*`` function adds options to a subcommand's parser; the ``*_from_args`` helpers
turn the parsed values into library objects. Nothing heavy is imported at module level: the
library is imported inside the helpers, when a command runs.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, List, Sequence, Tuple, Union

Rho = Union[float, Tuple[float, float]]

RHO_FORMS = "R, or R1,R2 for stage 1 -> 2 and 2 -> 3"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each default once: the option's help text says it when it is not a plain value
    (``(default: the model's)``); otherwise the value is appended, unless it is empty (None,
    False, ``[]``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        empty = action.default in (None, False, argparse.SUPPRESS) or action.default == []
        if "default:" in text or empty or not action.option_strings:
            return text
        value = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
        return f"{text} (default: {value})"


# ------------------------------------------------------------------------------ value parsers
def parse_rho(text: str) -> Rho:
    """``"0.9"`` -> 0.9; ``"0.9,0.99"`` -> (0.9, 0.99): rho_1 (stage 1 -> 2), rho_2 (2 -> 3)."""
    try:
        values = [float(v) for v in text.split(",")]
        if len(values) > 2 or not all(0.0 <= v <= 1.0 for v in values):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a threshold is R or R1,R2 with values in [0, 1]") from None
    return values[0] if len(values) == 1 else (values[0], values[1])


def parse_threshold(text: str) -> float:
    """One threshold in [0, 1] (the values of ``calibrate --grid``)."""
    rho = parse_rho(text)
    if isinstance(rho, tuple):
        raise argparse.ArgumentTypeError(f"{text!r}: one threshold in [0, 1] per value")
    return rho


# ---------------------------------------------------------------------------- option builders
def add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set model.rho=0.9 (repeatable)")


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """The positional CONFIG of train, eval, calibrate and check-data, with ``--set``."""
    parser.add_argument("config", help="YAML config file")
    add_overrides(parser)


def add_calibration_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-calibration", action="store_true",
                        help="ignore the temperatures and thresholds `sparse-lc calibrate` saved beside the checkpoint")


def add_model_options(parser: argparse.ArgumentParser, without_both: str) -> None:
    """``--config``, ``--checkpoint``, ``--set``, ``--no-calibration``; ``without_both`` says
    which model runs when neither file is given."""
    parser.add_argument("--config", default=None,
                        help=f"YAML config of the model (default: the one stored in --checkpoint; with neither "
                             f"option: {without_both})")
    parser.add_argument("--checkpoint", default=None,
                        help=f"weights (.pth) written by sparse-lc train (default: with --config, the config's "
                             f"untrained model; with neither option: {without_both})")
    add_overrides(parser)
    add_calibration_option(parser)


def add_rho_option(parser: argparse.ArgumentParser, many: bool = False,
                   default: str = "the model's, calibrated if a calibration is saved beside the checkpoint",
                   **kwargs: Any) -> None:
    """``--rho R`` (or several with ``many``). ``parser`` may be a mutually exclusive group."""
    what = f"thresholds, each {RHO_FORMS}" if many else f"threshold, {RHO_FORMS}"
    parser.add_argument("--rho", type=parse_rho, nargs="+" if many else None, default=None,
                        help=f"{what} (default: {default})", **kwargs)


def add_json_option(parser: argparse.ArgumentParser, what: str = "one JSON list instead of the table") -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what}")


def add_out_option(parser: argparse.ArgumentParser, help: str, default: Any = None) -> None:
    parser.add_argument("--out", default=default, help=help)


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run (default: auto, CUDA when available)")


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--no-progress``."""
    add_device_option(parser)
    add_progress_option(parser)


# ------------------------------------------------------------------------------ value readers
def config_from_args(args: argparse.Namespace):
    """The config of ``args.config`` with ``--set`` overrides (and ``--work-dir``, if the command has it)."""
    from ..config import load_config

    cfg = load_config(args.config, args.overrides)
    if getattr(args, "work_dir", None):
        cfg["work_dir"] = args.work_dir
    return cfg


def model_from_args(args: argparse.Namespace, calibrated: bool = True):
    """``(model, cfg)`` from ``--config`` / ``--checkpoint`` / ``--set`` (see
    :func:`sparse_lc.load_model`); says on stderr which calibration it applied."""
    from ..apis import load_model

    model, cfg = load_model(args.config, args.checkpoint, args.overrides,
                            calibrated=calibrated and not getattr(args, "no_calibration", False))
    if model.operating_point is not None:
        print(f"calibrated: {model.operating_point.describe()}", file=sys.stderr)
    return model, cfg


def print_reports(reports: Sequence[Any], as_json: bool, table: Callable[[List[Any]], str]) -> None:
    """One JSON object (a list for several reports) with ``as_json``, else ``table(reports)``."""
    if as_json:
        data = [r.to_json() for r in reports]
        print(json.dumps(data[0] if len(data) == 1 else data))
    else:
        print(table(list(reports)))
