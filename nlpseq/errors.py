"""The project's own error types: one-line messages that name the file, line or option at fault.

Entry points catch `NlpseqError` and print `error: <message>` instead of a traceback.
"""
from __future__ import annotations

import math
from typing import Any, Iterable


class NlpseqError(Exception):
    """Base class: every error nlpseq raises on purpose for bad input or bad settings."""


class ConfigError(NlpseqError, ValueError):
    """A setting has a bad name or value. The message starts with the option's full key."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.detail = message
        super().__init__(f"{key}: {message}" if key else message)

    def under(self, prefix: str) -> "ConfigError":
        """The same error with its key placed under `prefix` (e.g. 'model.encoder')."""
        key = f"{prefix}.{self.key}" if self.key else prefix
        return ConfigError(key, self.detail)


class DataError(NlpseqError, ValueError):
    """A data file is missing, unreadable or malformed. The message names the file (and line)."""

    def __init__(self, message: str, path: Any = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")
        self.path, self.line = path, line


class CheckpointError(NlpseqError, ValueError):
    """A checkpoint is missing, unsafe, truncated, of another task or of an unknown format."""


# ---- small validators used by constructors, so bad values fail with the option's name ----

def check_choice(key: str, value: Any, choices: Iterable[str]) -> str:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(key, f"{value!r} is not one of {', '.join(map(str, choices))}")
    return value


def check_int(key: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(key, f"must be >= {minimum}, got {value}")
    return value


def check_float(key: str, value: Any, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):  # NaN would pass every comparison below
        raise ConfigError(key, f"expected a finite number, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ConfigError(key, f"must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ConfigError(key, f"must be {'<' if high_open else '<='} {high}, got {value}")
    return value


def check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {value!r}")
    return value
