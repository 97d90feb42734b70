"""The package's own errors: a user's input the package refuses, in one line that says the way out.

Every error the package raises *on purpose* about what it was given — a bad config value, missing
or empty data, a model that is not there, a dataset made for another model, an output folder in
use — is a :class:`DQOError`. The command line prints its message as one line and exits with
status 2; anything else is a bug or an environment fault and keeps its traceback.

Each class also derives from the built-in exception a caller would catch without knowing this
module (``ConfigError`` is a ``ValueError``, ``ModelNotFoundError`` a ``FileNotFoundError`` …).
This module imports nothing of the package: every layer may raise these.
"""

from __future__ import annotations

__all__ = [
    "DQOError",
    "ConfigError",
    "DataError",
    "MissingDataError",
    "ModelNotFoundError",
    "MismatchError",
    "RunLockedError",
    "OutputError",
]


class DQOError(Exception):
    """Base class: the message is the whole story (what was wrong, where, and what to do)."""


class ConfigError(DQOError, ValueError):
    """A configuration field or command-line flag has a value outside what it accepts."""


class DataError(DQOError, ValueError):
    """Input data are missing, empty or malformed (the file or folder is named)."""


class MissingDataError(DataError, FileNotFoundError):
    """An input file or folder is not there (or a hub dataset cannot be reached)."""


class ModelNotFoundError(DQOError, FileNotFoundError):
    """A model spec resolves to nothing that can be loaded (offline: no hub to fall back on)."""


class MismatchError(DQOError, ValueError):
    """Two inputs disagree: a dataset sampled for another model, task or prompt template, or an
    output folder holding results of another configuration. Both sides are named."""


class RunLockedError(DQOError, RuntimeError):
    """Another process is writing into the same output folder."""


class OutputError(DQOError, OSError):
    """An output folder cannot be made or written: a file in the way, no permission, a read-only
    or full disk. The path is named, with the way out."""
