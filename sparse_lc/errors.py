"""The errors a user can cause, each turned into one line by the command line.

Every error here names the thing at fault (a file, a config key, a value) and how to fix it.
``exit_code`` is what ``sparse-lc`` exits with when one reaches it (see ``docs/cli.md``).
"""
from __future__ import annotations


class SparseLCError(Exception):
    """Base of the errors caused by input: a file, a config, a name, a value."""

    exit_code = 2


class ConfigError(SparseLCError, ValueError):
    """A config file or override that cannot be used; the message names the file or key."""


class CheckpointError(SparseLCError, ValueError):
    """A weight file that cannot be used; the message names the file and the problem."""


class DataError(SparseLCError, ValueError):
    """A data file that cannot be used; the message starts with its path."""


class UnknownNameError(SparseLCError, ValueError):
    """A name that no registry holds; the message lists close matches and what is available."""


class TrainingDiverged(SparseLCError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 1
