"""The errors a user can cause, each turned into one line by the command line.

Every error here names the thing at fault (a file, a config key, a value) and how to fix it.
``exit_code`` is what ``sparse-lc`` exits with when one reaches it (see ``docs/cli.md``).
"""
from __future__ import annotations

from typing import Sequence


class SparseLCError(Exception):
    """Base of the errors caused by input: a file, a config, a name, a value. ``details``: more
    lines (e.g. every problem a data check found), printed one per line under the message."""

    exit_code = 2

    def __init__(self, message: str = "", details: Sequence[str] = ()):
        super().__init__(message)
        self.details = list(details)


class ConfigError(SparseLCError, ValueError):
    """A config file or override that cannot be used; the message names the file or key."""


class CheckpointError(SparseLCError, ValueError):
    """A weight file that cannot be used; the message names the file and the problem."""


class DataError(SparseLCError, ValueError):
    """A data file that cannot be used; the message starts with its path."""


class UsageError(SparseLCError, ValueError):
    """Options that do not go together, or a value the parser could not judge alone."""


class OutputError(SparseLCError, OSError):
    """An output path that cannot be used (a file where a folder is needed, no permission)."""


class ModelError(SparseLCError, ValueError):
    """A model whose stages 2-3 hold something the sparse path cannot run exactly, refused when
    the model is built; the message names the stage, the module's path, why, and what is supported."""


class UnknownNameError(SparseLCError, ValueError):
    """A name that no registry holds; the message lists close matches and what is available."""


class SparseLCWarning(UserWarning):
    """Something that runs but is probably not meant; the command line prints it as one line."""


class ConfigWarning(SparseLCWarning):
    """A combination of config values that runs but is probably not meant."""


class CalibrationWarning(SparseLCWarning):
    """A calibration file beside a checkpoint that does not fit it (and so is not applied)."""


class TrainingDiverged(SparseLCError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 1


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what was done and how to continue; the command line prints the message and
    exits 130."""
