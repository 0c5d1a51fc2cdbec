"""The project's errors: one base class, so a caller can catch everything this library raises on purpose."""

from __future__ import annotations


class BytewaxSpeechmaticsError(Exception):
    """Base of every error the library raises on purpose (bad input, bad settings, fatal service errors)."""


class ContractError(BytewaxSpeechmaticsError, ValueError):
    """Input that breaks a contract: `what` is wrong, `where` it was found (topic/partition/offset, header, field)."""

    def __init__(self, what: str, where: str = "") -> None:
        self.what = what
        self.where = where
        super().__init__(f"{where}: {what}" if where else what)


class SettingsError(BytewaxSpeechmaticsError, ValueError):
    """A setting that cannot be used; the message names it (the environment variable, when it came from one) and
    the values it allows."""


def in_words(values: object, last: str = "or") -> str:
    """Allowed values as a message says them: `standard or enhanced`, `8000, 16000, 32000 or 48000` (never a
    Python list, set or tuple)."""
    items = [str(v) for v in values]  # type: ignore[attr-defined]
    if len(items) < 2:
        return "".join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"


def _said(number: float) -> str:
    """A bound as a person writes it: 65535, 33554432, 0.5 (never 3.35544e+07)."""
    return str(int(number)) if float(number).is_integer() else repr(float(number))


def bounds_in_words(low: float | None, high: float | None, above: bool = False) -> str:
    """A number's bounds as a message says them: ` from 0 to 65535`, `, at least 1`, `, more than 0`,
    `, at most 10`, or nothing (the CLI's option types and the flow's settings word them alike)."""
    if low is not None and high is not None and not above:
        return f" from {_said(low)} to {_said(high)}"
    parts = [] if low is None else [f"{'more than' if above else 'at least'} {_said(low)}"]
    parts += [] if high is None else [f"at most {_said(high)}"]
    return f", {' and '.join(parts)}" if parts else ""
