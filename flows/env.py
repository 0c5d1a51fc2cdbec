"""Reading BWSM_* settings from the environment: one parser per kind of value, errors that name the variable.

Every module's `from_env()` uses these, so "unset or empty = default" and the wording of a bad value's error are
the same for every setting the project reads.
"""

from __future__ import annotations

from collections.abc import Mapping

from bytewax.speechmatics.schemas.errors import SettingsError

__all__ = ["SettingsError", "env_flag", "env_float", "env_int"]


def env_float(env: Mapping[str, str], name: str, default: float, low: float = 0.0) -> float:
    """A float variable (unset or empty = default); SettingsError naming the variable otherwise."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number, got {raw[:40]!r}") from exc
    if value < low:
        raise SettingsError(f"{name} must be >= {low}, got {value}")
    return value


def env_int(env: Mapping[str, str], name: str, default: int | None, low: int | None = 1) -> int | None:
    """An integer variable (unset or empty = default); SettingsError naming the variable otherwise.

    `low=None` leaves range checks to the caller (a config's own validation says what the range is)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.lstrip("-").isdigit():
        raise SettingsError(f"{name} must be an integer, got {raw[:40]!r}")
    value = int(raw)
    if low is not None and value < low:
        raise SettingsError(f"{name} must be >= {low}, got {value}")
    return value


def env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A boolean variable: 1/true/yes/on or 0/false/no/off (unset or empty = default)."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be a boolean (1/0, true/false), got {raw[:40]!r}")
