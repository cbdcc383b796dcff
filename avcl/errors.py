"""The user-error family. A `UserError` is a problem with what the user gave (a config, a source, a
checkpoint, an output location, storage that refuses a write): the CLI prints its message, which names the
bad input and what to do, as one line. Any other exception is a bug and keeps its traceback."""
from __future__ import annotations


class UserError(Exception):
    """A problem with the input or the environment; the message names it and what to do."""


class ConfigError(UserError):
    """A config value, file, preset, --set or protocol setting that cannot be used; the message names it."""


class TrainingError(UserError):
    """A training run cannot start or go on; the message says why and what to do."""
