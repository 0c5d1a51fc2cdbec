"""The value types of the command line's options, and the reader of an option's default from a variable.

Why one module: argparse words a refusal from the type's name (`invalid int value: 'x'`, `invalid _port value`),
which tells a user nothing about what the option allows. Each type here refuses with one sentence that names the
allowed values in words (`must be a port number from 0 to 65535, got 'x'`), which argparse prints after the
option's name; the same sentence, after the variable's name, refuses a default read from the environment. Numbers
are finite: `nan` and `1e999` are refused like any other text that is not one.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from bytewax.speechmatics.schemas.errors import SettingsError, bounds_in_words, in_words

T = TypeVar("T")
D = TypeVar("D")

#: How much of a refused value a message repeats.
SHOWN_CHARS = 40


class OptionValueError(argparse.ArgumentTypeError, ValueError):
    """A value an option does not allow: `must be <the allowed values in words>, got '<the value>'`."""


def refused(allowed: str, text: str) -> OptionValueError:
    """The error for `text` where `allowed` (in words) was expected."""
    return OptionValueError(f"must be {allowed}, got {text[:SHOWN_CHARS]!r}")


@dataclass(frozen=True)
class WholeNumber:
    """A whole number from `low` to `high` (either may be open), e.g. `a whole number, at least 1`."""

    low: int | None = None
    high: int | None = None
    noun: str = "a whole number"

    @property
    def allowed(self) -> str:
        return self.noun + bounds_in_words(self.low, self.high)

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise refused(self.allowed, text) from None
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise refused(self.allowed, text)
        return value


@dataclass(frozen=True)
class Number:
    """A finite number of at least `low` (more than `low` when `above`) and at most `high`, e.g.
    `a number of seconds, more than 0`."""

    low: float | None = None
    high: float | None = None
    above: bool = False
    noun: str = "a number"

    @property
    def allowed(self) -> str:
        return self.noun + bounds_in_words(self.low, self.high, self.above)

    def __call__(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise refused(self.allowed, text) from None
        too_low = self.low is not None and (value <= self.low if self.above else value < self.low)
        if not math.isfinite(value) or too_low or (self.high is not None and value > self.high):
            raise refused(self.allowed, text)
        return value


@dataclass(frozen=True)
class OneOf:
    """One of a few values (`8000, 16000, 32000 or 48000 (Hz)`), read with `kind` (str: the text as it is)."""

    values: Collection[Any]
    kind: Callable[[str], Any] = str
    unit: str = ""

    @property
    def allowed(self) -> str:
        return in_words(self.values) + (f" ({self.unit})" if self.unit else "")

    def __call__(self, text: str) -> Any:
        try:
            value = self.kind(text)
        except ValueError:
            raise refused(self.allowed, text) from None
        if value not in self.values:
            raise refused(self.allowed, text)
        return value


def speed(text: str) -> float:
    """A publishing speed: `realtime` -> 1, `max` -> 0 (no pacing), N -> N times real time (N > 0)."""
    if text == "realtime":
        return 1.0
    if text == "max":
        return 0.0
    try:
        return TIMES_REAL_TIME(text)
    except OptionValueError:
        raise refused("realtime, max, or a positive number (times real time)", text) from None


def from_env(env: Mapping[str, str], name: str, parse: Callable[[str], T], default: D) -> T | D:
    """An option's default from variable `name`: `default` when it is unset or blank, else `parse` of its value.

    Raises:
        SettingsError: `<name> must be <the allowed values>, got '<value>'` (one line; the command exits 2).
    """
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except OptionValueError as exc:
        raise SettingsError(f"{name} {exc}") from None


#: The types most options use.
COUNT = WholeNumber(1)  # workers, engines, letters, ...: at least one
INDEX = WholeNumber(0)  # a process id
PORT = WholeNumber(0, 65535, "a port number")  # 0 = any free port
TCP_PORT = WholeNumber(1, 65535, "a TCP port")  # a port others connect to by number
SECONDS = Number(0, above=True, noun="a number of seconds")
NON_NEGATIVE_SECONDS = Number(0, noun="a number of seconds")
FRACTION = Number(0, 1, noun="a fraction")
TIMES_REAL_TIME = Number(0, above=True, noun="a number of times real time")
