"""Fault injection for the local worker's real-time endpoint (tests): the document `/admin/realtime` takes.

`{"max_sessions": N}` (more concurrent sessions get `quota_exceeded`), `{"errors": ["job_error", ...]}` (the next
sessions are refused at StartRecognition with these types, one each), `{"drop_after": N}` (the next session's
socket is cut without a word after N audio frames), `{"ack_delay": S}` (AudioAdded held S seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The spec's ErrorTypeEnum.
ERROR_TYPES = (
    "invalid_message", "invalid_model", "invalid_language", "invalid_config", "invalid_audio_type",
    "invalid_output_format", "not_authorised", "not_allowed", "job_error", "protocol_error", "quota_exceeded",
    "timelimit_exceeded", "idle_timeout", "session_timeout", "unknown_error",
)

@dataclass
class RealtimeFaults:
    max_sessions: int | None = None
    errors: list[str] = field(default_factory=list)
    drop_after: int | None = None
    ack_delay: float = 0.0

    @classmethod
    def parse(cls, doc: dict[str, Any] | None) -> RealtimeFaults:
        doc = doc or {}
        unknown = set(doc) - {"max_sessions", "errors", "drop_after", "ack_delay"}
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        errors = list(doc.get("errors") or [])
        bad = [e for e in errors if e not in ERROR_TYPES]
        if bad:
            raise ValueError(f"error types must be among {list(ERROR_TYPES)}, got {bad}")
        max_sessions = doc.get("max_sessions")
        drop_after = doc.get("drop_after")
        return cls(None if max_sessions is None else int(max_sessions), errors,
                   None if drop_after is None else int(drop_after), float(doc.get("ack_delay") or 0.0))

    def describe(self) -> dict[str, Any]:
        return {"max_sessions": self.max_sessions, "errors": list(self.errors), "drop_after": self.drop_after,
                "ack_delay": self.ack_delay}
