"""What goes into the submission service and what comes out of it: a chunk to transcribe, and per chunk a job id
as soon as it is known, then exactly one result or failure (see service.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bytewax.speechmatics.schemas.chunks import Chunk
from bytewax.speechmatics.schemas.errors import BytewaxSpeechmaticsError

__all__ = ["ChunkDone", "ChunkFailed", "FatalSubmitError", "JobKnown", "SubmitEvent", "SubmitRequest"]


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """One chunk to transcribe; `job_id` when a job is already known (resume: wait for it, never re-post)."""

    chunk: Chunk
    job_id: str | None = None
    speaker_config: dict[str, Any] | None = None
    attempts: int = 0  # POST attempts already spent on `job_id` (from the state or the journal)


@dataclass(frozen=True, slots=True)
class JobKnown:
    index: int
    job_id: str
    attempts: int


@dataclass(frozen=True, slots=True)
class ChunkDone:
    index: int
    job_id: str
    transcript: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class ChunkFailed:
    index: int
    reason: str
    job_id: str | None
    attempts: int


SubmitEvent = JobKnown | ChunkDone | ChunkFailed


class FatalSubmitError(BytewaxSpeechmaticsError, RuntimeError):
    """Submission cannot work at all (bad API key): the flow must stop."""
