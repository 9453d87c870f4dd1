"""Options the subcommands share: each declared once here, and the helpers that read them.

Every ``add_*`` function adds options to a subcommand's parser; the ``*_from_args`` helpers
turn the parsed values into library objects. Nothing heavy is imported at module level: the
library is imported inside the helpers, when a command runs.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

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


def at_least(minimum: int, meaning: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum`` (``meaning`` explains a special value)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}{meaning}, got {text!r}")
        return value
    return parse


def share(text: str) -> float:
    """An argparse type: a number in [0, 1] (a share of the pixels)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {text!r}")
    return value


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


def add_model_options(parser: argparse.ArgumentParser, without_both: str, refuse_random: bool = False) -> None:
    """``--config``, ``--checkpoint``, ``--set``, ``--no-calibration``; ``without_both`` says
    which model runs when neither file is given. With ``refuse_random``, a config without a
    checkpoint (random weights) is refused unless ``--random-weights`` is given."""
    parser.add_argument("--config", default=None,
                        help=f"YAML config of the model (default: the one stored in --checkpoint; with neither "
                             f"option: {without_both})")
    with_config = ("refused unless --random-weights" if refuse_random
                   else "the config's untrained model, random weights (said on stderr)")
    parser.add_argument("--checkpoint", default=None,
                        help=f"weights (.pth) written by sparse-lc train (default: with --config only, "
                             f"{with_config}; with neither option: {without_both})")
    if refuse_random:
        parser.add_argument("--random-weights", action="store_true",
                            help="allow --config without --checkpoint: run the config's untrained model")
    add_overrides(parser)
    add_calibration_option(parser)


def add_rho_option(parser: argparse.ArgumentParser, many: bool = False,
                   default: str = "the model's, calibrated if a calibration is saved beside the checkpoint") -> None:
    """``--rho R`` (or several with ``many``). ``parser`` may be a mutually exclusive group."""
    what = f"thresholds, each {RHO_FORMS}" if many else f"threshold, {RHO_FORMS}"
    parser.add_argument("--rho", type=parse_rho, nargs="+" if many else None, default=None,
                        help=f"{what} (default: {default})")


def add_json_option(parser: argparse.ArgumentParser, what: str = "one JSON list instead of the table") -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what}")


def add_out_option(parser: argparse.ArgumentParser, help: str, default: Any = None) -> None:
    parser.add_argument("--out", default=default, help=help)


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run (default: auto, CUDA when available)")


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                        help="weights and activations in float32, float16 (for GPUs: on the CPU it runs, slower) or "
                             "bfloat16 (dense runs only: spconv has no bfloat16 kernels)")


def to_precision(model, args: argparse.Namespace, execution: str = "sparse"):
    """``model`` in the dtype of ``--precision`` for a run of ``execution`` (``"both"``: the
    cascade and the dense run); a UsageError in one line when that run cannot use it."""
    import torch

    from ..errors import UsageError
    from ..utils.precision import precision_dtype

    try:
        dtype = precision_dtype(args.precision, "sparse" if execution == "both" else execution)
    except ValueError as e:
        raise UsageError(f"--precision {args.precision}: {e}") from None
    device = next(model.parameters()).device
    if dtype != torch.float32 and device.type == "cpu":
        print(f"note: --precision {args.precision} on the CPU runs slower than fp32 (it is meant for GPUs)",
              file=sys.stderr)
    return model.to(dtype)


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_data_check_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip-data-check", action="store_true",
                        help="do not read every data file before starting (valid files are remembered between "
                             "runs, so the check is fast after the first)")


def checked_dataset(cfg, args: argparse.Namespace, progress: bool = True, **kwargs):
    """``build_dataset(cfg, **kwargs)``, every file of it checked first unless ``--skip-data-check``."""
    from ..data import build_dataset
    from ..data.check import require_valid_data

    dataset = build_dataset(cfg, **kwargs)
    if not args.skip_data_check:
        require_valid_data([dataset], cfg["model"]["num_classes"], progress and not args.no_progress)
    return dataset


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


def model_from_args(args: argparse.Namespace, calibrated: bool = True, random_weights: str = ""):
    """``(model, cfg)`` from ``--config`` / ``--checkpoint`` / ``--set`` (see
    :func:`sparse_lc.load_model`); says on stderr which calibration it applied.

    ``--config`` without ``--checkpoint`` means random weights: refused (UsageError) if the
    command declared ``--random-weights`` and it is not given, else said in one line on stderr,
    followed by ``random_weights`` (why they do for this command)."""
    from ..apis import load_model
    from ..errors import UsageError

    random = args.config is not None and args.checkpoint is None
    if random and not getattr(args, "random_weights", True):
        raise UsageError(f"--config {args.config} without --checkpoint would run random weights: pass "
                         f"--checkpoint with trained weights (sparse-lc train writes them), leave out --config "
                         f"for the bundled model, or pass --random-weights")
    model, cfg = load_model(args.config, args.checkpoint, args.overrides,
                            calibrated=calibrated and not getattr(args, "no_calibration", False))
    if random:
        print(f"note: no --checkpoint: random weights{random_weights}", file=sys.stderr)
    if model.operating_point is not None:
        print(f"calibrated: {model.operating_point.describe()}", file=sys.stderr)
    return model, cfg


def tiling_from_args(crop_size: Sequence[int], args: argparse.Namespace, batch: Optional[int], device=None):
    """The :class:`~sparse_lc.apis.Tiling` of ``--tile`` / ``--stride`` (defaults from the
    training crop) with ``batch`` tiles per pass (None: :class:`Tiling`'s default on the CPU,
    :func:`~sparse_lc.apis.auto_batch` of the tile on CUDA); a UsageError naming both options if
    they do not fit together."""
    from ..apis import Tiling, auto_batch
    from ..errors import UsageError

    try:
        tiling = Tiling.for_crop(crop_size, args.tile, args.stride, batch or Tiling.batch)
    except ValueError as e:
        raise UsageError(f"--tile / --stride: {e}") from None
    if batch is None and device is not None and device.type == "cuda":
        tiling = Tiling(tiling.tile, tiling.stride, auto_batch(*tiling.tile, device))
    return tiling


def batch_size(text: str) -> Optional[int]:
    """An argparse type: ``auto`` (None: the library chooses, see ``auto_batch``) or a whole number >= 1."""
    return None if text == "auto" else at_least(1, " or auto")(text)


def add_cuda_graphs_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cuda-graphs", choices=("auto", "on", "off"), default="auto",
                        help="replay the passes from CUDA graphs (sparse_lc.cuda_graphs); auto: on when the model runs "
                             "on CUDA")


def set_cuda_graphs(model, args: argparse.Namespace) -> None:
    """``model.cuda_graphs`` from ``--cuda-graphs`` (UsageError: ``on`` without CUDA)."""
    from ..errors import UsageError

    cuda = next(model.parameters()).device.type == "cuda"
    if args.cuda_graphs == "on" and not cuda:
        raise UsageError("--cuda-graphs on: CUDA graphs need a CUDA device and the model runs on the CPU; leave the "
                         "option out (auto) or pass --device cuda")
    model.cuda_graphs = args.cuda_graphs == "on" or (args.cuda_graphs == "auto" and cuda)


def say_cuda_graphs(model) -> None:
    """On stderr: what ran as CUDA graphs, and what was refused and why."""
    from ..cuda_graphs import graph_report

    for line in graph_report(model):
        print(f"note: {line}", file=sys.stderr)


def print_reports(reports: Sequence[Any], as_json: bool, table: Callable[[List[Any]], str]) -> None:
    """One JSON object (a list for several reports) with ``as_json``, else ``table(reports)``."""
    if as_json:
        data = [r.to_json() for r in reports]
        print(json.dumps(data[0] if len(data) == 1 else data))
    else:
        print(table(list(reports)))


def input_files(inputs: Sequence[str], failed: List[str]) -> List[str]:
    """Image files of ``inputs`` (files and folders, as segment takes them); inputs that cannot
    be used are appended to ``failed`` as ``"path: reason"``."""
    from ..apis import collect_inputs

    files, unusable = collect_inputs(inputs)
    failed += [f"{r.path}: {r.error}" for r in unusable]
    return files


def report_failures(failed: Sequence[str], total: int) -> int:
    """Print each failed input (``"path: reason"``) and a count on stderr; the exit code."""
    for line in failed:
        print(line, file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {total} input(s) failed", file=sys.stderr)
    return 1 if failed else 0
