"""User-facing errors: each carries one line that names the problem and the fix.

The CLI prints ``error: <message>`` and exits non-zero for any ``NasforgeError``;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class NasforgeError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class ConfigError(NasforgeError):
    """A malformed, unknown or out-of-range configuration value."""


class ArchError(NasforgeError):
    """An architecture description that does not fit its search space."""


class DataError(NasforgeError):
    """A dataset that cannot be found, read or understood."""


class TrainingError(NasforgeError):
    """Training that cannot go on (e.g. a NaN loss); checkpoints already written are kept."""

    exit_code = 3


class ExperimentError(NasforgeError):
    """An experiment directory that is missing, corrupt or would be overwritten."""
