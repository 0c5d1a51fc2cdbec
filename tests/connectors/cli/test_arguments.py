"""The command line's option types (connectors/cli/arguments.py): what each accepts, and that each refusal is one
sentence naming the allowed values in words and repeating at most 40 characters of the value."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bytewax.speechmatics.connectors.cli import arguments as a
from bytewax.speechmatics.connectors.cli.publish import FRAME_MS, SAMPLE_RATE
from bytewax.speechmatics.connectors.cli.run import WHOLE_SECONDS, WHOLE_SECONDS_OR_ZERO
from bytewax.speechmatics.connectors.cli.worker import PROCESSING_FACTOR, SECONDS_RANGE, seconds_range
from bytewax.speechmatics.schemas.errors import SettingsError

#: Every bounded type the commands use.
BOUNDED: list[a.WholeNumber | a.Number] = [
    a.COUNT, a.INDEX, a.PORT, a.TCP_PORT, a.SECONDS, a.NON_NEGATIVE_SECONDS, a.FRACTION, a.TIMES_REAL_TIME,
    FRAME_MS, WHOLE_SECONDS, WHOLE_SECONDS_OR_ZERO, PROCESSING_FACTOR, a.WholeNumber(),
]
#: Every type, with the allowed values its refusal names.
TYPES: list[tuple[Callable[[str], Any], str]] = [
    *((kind, kind.allowed) for kind in BOUNDED),
    (SAMPLE_RATE, SAMPLE_RATE.allowed), (a.OneOf(("whisper", "reference")), "whisper or reference"),
    (a.speed, "realtime, max, or a positive number (times real time)"), (seconds_range, SECONDS_RANGE),
]


@pytest.mark.parametrize(("kind", "text", "says"), [
    (a.COUNT, "0", "must be a whole number, at least 1, got '0'"),
    (a.COUNT, "1.5", "must be a whole number, at least 1, got '1.5'"),
    (a.INDEX, "-1", "must be a whole number, at least 0, got '-1'"),
    (a.PORT, "x", "must be a port number from 0 to 65535, got 'x'"),
    (a.PORT, "65536", "must be a port number from 0 to 65535, got '65536'"),
    (a.TCP_PORT, "0", "must be a TCP port from 1 to 65535, got '0'"),
    (a.SECONDS, "0", "must be a number of seconds, more than 0, got '0'"),
    (a.SECONDS, "1e999", "must be a number of seconds, more than 0, got '1e999'"),
    (a.NON_NEGATIVE_SECONDS, "nan", "must be a number of seconds, at least 0, got 'nan'"),
    (a.FRACTION, "1.01", "must be a fraction from 0 to 1, got '1.01'"),
    (a.FRACTION, "-inf", "must be a fraction from 0 to 1, got '-inf'"),
    (a.Number(0, 1, above=True), "0", "must be a number, more than 0 and at most 1, got '0'"),
    (a.Number(high=10), "11", "must be a number, at most 10, got '11'"),
    (a.Number(0.5, 33554432.0), "0.25", "must be a number from 0.5 to 33554432, got '0.25'"),
    (a.WholeNumber(high=10**9), "2e9", "must be a whole number, at most 1000000000, got '2e9'"),
    (a.WholeNumber(), "one", "must be a whole number, got 'one'"),
    (SAMPLE_RATE, "44100", "must be 8000, 16000, 32000 or 48000 (Hz), got '44100'"),
    (SAMPLE_RATE, "16k", "must be 8000, 16000, 32000 or 48000 (Hz), got '16k'"),
    (a.speed, "0", "must be realtime, max, or a positive number (times real time), got '0'"),
    (a.speed, "inf", "must be realtime, max, or a positive number (times real time), got 'inf'"),
    (seconds_range, "2:1", f"must be {SECONDS_RANGE}, got '2:1'"),
    (seconds_range, "1:x", f"must be {SECONDS_RANGE}, got '1:x'"),
    (seconds_range, "-1", f"must be {SECONDS_RANGE}, got '-1'"),
])
def test_a_refusal_names_the_allowed_values_in_words(kind: Callable[[str], Any], text: str, says: str) -> None:
    with pytest.raises(a.OptionValueError) as info:
        kind(text)
    assert str(info.value) == says


@pytest.mark.parametrize(("kind", "text", "value"), [
    (a.COUNT, "1", 1), (a.COUNT, " 12 ", 12), (a.INDEX, "0", 0), (a.PORT, "0", 0), (a.PORT, "65535", 65535),
    (a.SECONDS, "0.5", 0.5), (a.NON_NEGATIVE_SECONDS, "0", 0.0), (a.FRACTION, "1", 1.0), (a.FRACTION, "0", 0.0),
    (a.WholeNumber(), "-7", -7), (SAMPLE_RATE, "8000", 8000), (a.speed, "realtime", 1.0), (a.speed, "max", 0.0),
    (a.speed, "2.5", 2.5), (seconds_range, "0.1:0.3", {"dist": "uniform", "min": 0.1, "max": 0.3}),
    (seconds_range, "2", {"dist": "fixed", "value": 2.0}),
])
def test_what_each_type_accepts(kind: Callable[[str], Any], text: str, value: Any) -> None:
    assert kind(text) == value


def test_a_refusal_is_what_argparse_prints_and_a_value_error() -> None:
    assert issubclass(a.OptionValueError, argparse.ArgumentTypeError)
    assert issubclass(a.OptionValueError, ValueError)
    parser = argparse.ArgumentParser(prog="p", exit_on_error=False)
    parser.add_argument("--port", type=a.PORT)
    with pytest.raises(argparse.ArgumentError, match=r"^argument --port: must be a port number from 0 to 65535, "
                                                     r"got 'x'$"):
        parser.parse_args(["--port", "x"])


def test_a_refusal_repeats_at_most_40_characters_of_the_value() -> None:
    with pytest.raises(a.OptionValueError) as info:
        a.PORT("9" * 1000)
    assert str(info.value) == f"must be a port number from 0 to 65535, got '{'9' * 40}'"


@given(st.sampled_from(TYPES), st.text(max_size=60))
def test_any_text_is_a_value_or_one_sentence_in_words(case: tuple[Callable[[str], Any], str], text: str) -> None:
    kind, allowed = case
    try:
        value = kind(text)
    except a.OptionValueError as exc:
        message = str(exc)
        assert message == f"must be {allowed}, got {text[:40]!r}"
        assert "\n" not in message and "invalid" not in message
        return
    if isinstance(kind, a.WholeNumber | a.Number):
        assert isinstance(value, int | float) and math.isfinite(value)
        assert kind.low is None or (value > kind.low if getattr(kind, "above", False) else value >= kind.low)
        assert kind.high is None or value <= kind.high


@given(st.sampled_from(BOUNDED), st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True))
def test_a_number_is_accepted_exactly_when_it_is_within_the_bounds(kind: a.WholeNumber | a.Number,
                                                                  number: float) -> None:
    whole = isinstance(number, int)  # a float's repr (`5.0`, `1e+16`) is not a whole number's spelling
    within = (math.isfinite(number) and (kind.low is None or number >= kind.low)
              and (kind.high is None or number <= kind.high)
              and not (getattr(kind, "above", False) and number == kind.low))
    accepted = within and (whole if isinstance(kind, a.WholeNumber) else True)
    text = repr(number)
    if accepted:
        assert kind(text) == number
    else:
        with pytest.raises(a.OptionValueError):
            kind(text)


def test_a_default_from_a_variable() -> None:
    env = {"SET": "8080", "BLANK": "  ", "BAD": "http"}
    assert a.from_env(env, "SET", a.PORT, 1) == 8080
    assert a.from_env(env, "BLANK", a.PORT, 1) == 1
    assert a.from_env(env, "UNSET", a.PORT, None) is None
    with pytest.raises(SettingsError) as info:
        a.from_env(env, "BAD", a.PORT, 1)
    assert str(info.value) == "BAD must be a port number from 0 to 65535, got 'http'"
    assert not isinstance(info.value, argparse.ArgumentTypeError)  # the command line's one-line settings error
