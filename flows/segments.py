"""Build transcript events (schemas/transcript_event.schema.json) from stitched units (pure).

Everything in an event is a function of the inputs: ids come from schemas.events.event_id, times are rounded
the same way every time, and there is no wall-clock field, so a replay after recovery yields identical bytes.
Every builder validates what it returns against the schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bytewax.speechmatics.flows.stitching import TIME_DECIMALS, Completion, Release, Token, Unit
from bytewax.speechmatics.schemas.events import SCHEMA_VERSION, Event, event_id, validate_event

BATCH, REALTIME = "batch", "realtime"


@dataclass(frozen=True, slots=True)
class Produced:
    """An event on its way to calls.transcripts, with the wall-clock time its chunk was cut.

    The clock stays beside the event, never in it (replays must be byte-identical); the flow turns
    `time.time() - closed_at` into the "chunk closed -> event produced" latency when it produces the event.
    Real-time events have no chunk: closed_at is None.
    """

    event: Event
    closed_at: float | None = None
_GLUE_BEFORE = ("previous", "both")  # no space before such punctuation
_GLUE_AFTER = ("next", "both")  # no space after


def _t(seconds: float) -> float:
    return round(max(0.0, seconds), TIME_DECIMALS) + 0.0  # + 0.0: never -0.0


def _placed(unit: Unit) -> list[tuple[Token, float, float]]:
    """The unit's tokens with their times: punctuation sits at its word's edge (the word may have been merged)."""
    host = unit.host
    before = [(t, host.start, host.start) for t in unit.before]
    after = [(t, host.end, host.end) for t in unit.after]
    return [*before, (host, host.start, host.end), *after]


def word_dict(token: Token, start: float, end: float) -> dict[str, Any]:
    word: dict[str, Any] = {
        "text": token.text, "start_time": _t(start), "end_time": _t(max(start, end)),
        "confidence": token.confidence, "speaker": token.speaker, "type": token.kind,
    }
    if token.channel is not None:
        word["channel"] = token.channel
    if token.kind == "punctuation":
        word["attaches_to"] = token.attaches_to or "previous"
        word["is_eos"] = token.is_eos
    if token.language is not None:
        word["language"] = token.language
    return word


def words_of(units: Iterable[Unit]) -> list[dict[str, Any]]:
    return [word_dict(t, s, e) for unit in units for t, s, e in _placed(unit)]


def display_text(words: Sequence[dict[str, Any]]) -> str:
    """Words joined with spaces; punctuation glued to the side it attaches to."""
    parts: list[str] = []
    glue_next = True
    for word in words:
        attaches = word.get("attaches_to") if word["type"] == "punctuation" else None
        if parts and not glue_next and attaches not in _GLUE_BEFORE:
            parts.append(" ")
        parts.append(word["text"])
        glue_next = attaches in _GLUE_AFTER
    return "".join(parts)


def _speakers(words: Iterable[dict[str, Any]]) -> list[str]:
    return sorted({w["speaker"] for w in words if w["speaker"] is not None})


def batch_event_id(call_id: str, chunk_index: int, part: str = "segment") -> str:
    """Same chunk, same id; a chunk's held tail (released only when its successor failed) has its own."""
    if part == "segment":
        return event_id(call_id, BATCH, chunk_index)
    return event_id(call_id, BATCH, chunk_index, part)


def batch_segment(release: Release) -> Event:
    """One chunk's `segment` event (source batch, final), or its failure (error set, no words)."""
    span = release.span
    words = words_of(release.units)
    if release.supersedes is None:
        start, end = span.start_time, span.end_time
        supersedes = None
    else:
        lo, hi = release.supersedes
        start = min([lo, *(w["start_time"] for w in words)])
        end = max([hi, *(w["end_time"] for w in words)])
        supersedes = {"start_time": _t(lo), "end_time": _t(hi)}
    event = {
        "schema_version": SCHEMA_VERSION,
        "event_id": batch_event_id(span.call_id, span.index, release.part),
        "call_id": span.call_id, "type": "segment", "source": BATCH, "is_final": True,
        "start_time": _t(start), "end_time": _t(end),
        "transcript": display_text(words), "words": words, "speakers": _speakers(words),
        "language": release.language, "channel": None,
        "job": {"id": release.job_id, "chunk_index": span.index, "chunk_start": _t(span.start_time),
                "chunk_end": _t(span.end_time), "attempts": max(0, release.attempts),
                "gaps_filled": span.gaps_filled},
        "supersedes": supersedes, "error": release.error,
    }
    return validate_event(event, where=f"segment of chunk {span.reference}")


def call_completed(done: Completion) -> Event:
    """The last event of a call's batch timeline, with its counts."""
    event = {
        "schema_version": SCHEMA_VERSION, "event_id": event_id(done.call_id, BATCH, "completed", done.chunks),
        "call_id": done.call_id, "type": "call_completed", "source": BATCH, "is_final": True,
        "start_time": 0.0, "end_time": _t(done.audio_seconds), "transcript": "", "words": [],
        "speakers": list(done.speakers), "language": done.language, "channel": None,
        "counts": {"chunks": done.chunks, "failed_chunks": done.failed_chunks, "words": done.words,
                   "audio_seconds": _t(done.audio_seconds), "gaps_filled": done.gaps_filled},
    }
    return validate_event(event, where=f"call_completed of call {done.call_id}")


def realtime_segment(call_id: str, segment_id: str, *, is_final: bool, start: float, end: float,
                     units: Sequence[Unit], language: str, channel: str | None) -> Event:
    """A real-time `segment`; `segment_id` is shared by a final and the partials it replaces."""
    words = words_of(units)
    event = {
        "schema_version": SCHEMA_VERSION, "event_id": event_id(call_id, REALTIME, segment_id),
        "call_id": call_id, "type": "segment", "source": REALTIME, "is_final": is_final,
        "start_time": _t(start), "end_time": _t(max(start, end)), "transcript": display_text(words),
        "words": words, "speakers": _speakers(words), "language": language, "channel": channel,
    }
    return validate_event(event, where=f"real-time segment {segment_id} of call {call_id}")
