"""Structured logs for the flow: one line per record, ids, counts and timings as fields, never transcript text.

Code logs with `extra=fields(call_id=..., chunk=..., job_id=...)`; the formatter puts those fields on the line
(JSON with `LoggingSettings(format="json")`, i.e. BWSM_LOG_FORMAT=json; `key=value` otherwise) so logs can be
searched by call, chunk and job. Only the fields named in FIELDS are ever emitted, which keeps secrets and
transcript text out by construction.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

import orjson

FIELDS = ("call_id", "chunk", "job_id", "reference", "attempts", "status", "seconds", "count", "stage")
LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
_CONFIGURED = False


@dataclass(frozen=True)
class LoggingSettings:
    """How the flow's process logs (applied by the application entry points, never by importing the library)."""

    level: str = "info"
    format: str = "text"

    def __post_init__(self) -> None:
        if self.level.lower() not in LEVELS or self.format.lower() not in FORMATS:
            raise ValueError(f"log level must be one of {LEVELS} and format one of {FORMATS}, got "
                             f"{self.level!r}, {self.format!r}")


def fields(**values: Any) -> dict[str, Any]:
    """`extra=` for a log call; unknown names are refused so that nothing else slips into the logs."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise ValueError(f"not a structured log field: {sorted(unknown)}")
    return {name: value for name, value in values.items() if value is not None}


class StructuredFormatter(logging.Formatter):
    """JSON lines or `key=value` text, with the structured fields of the record."""

    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update({name: getattr(record, name) for name in FIELDS if hasattr(record, name)})
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        if self.as_json:
            return orjson.dumps(line, default=str).decode()
        extra = " ".join(f"{k}={v}" for k, v in line.items() if k not in ("ts", "level", "logger", "msg"))
        return f"{line['ts']} {line['level']:<7} {line['logger']} {line['msg']}" + (f" {extra}" if extra else "")


def configure_logging(settings: LoggingSettings | None = None) -> None:
    """Install the formatter on the `bytewax.speechmatics` loggers once; called by the flow's entry point (the
    `flow` factory, the command line), not by the library: a user's own dataflow keeps its own logging."""
    global _CONFIGURED
    if _CONFIGURED:
        return
    settings = settings or LoggingSettings()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(StructuredFormatter(settings.format.lower() == "json"))
    root = logging.getLogger("bytewax.speechmatics")
    root.addHandler(handler)
    root.setLevel(settings.level.upper())
    root.propagate = False
    _CONFIGURED = True
