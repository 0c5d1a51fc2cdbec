"""Build transcript events (schemas/transcript_event.schema.json) from stitched units (pure).

Everything in an event is a function of the inputs: ids come from schemas.events.event_id, times are rounded
the same way every time, and there is no wall-clock field, so a replay after recovery yields identical bytes.
Every builder validates what it returns against the schema.

Every event of a call that has metadata (its start message's) carries it as `metadata`; events of calls without
one have no such field, exactly as before schema 1.1.

A segment's `transcript` is its words as display text; with channel diarization (words carry a `channel`) one line
per turn of one channel, `agent: ...` (`schemas/punctuation.py`), never two parties' words interleaved.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from bytewax.speechmatics.flows.stitching import TIME_DECIMALS, UNDETERMINED_LANGUAGE, Completion, Release, Token, Unit
from bytewax.speechmatics.schemas.call_start import CallSettings
from bytewax.speechmatics.schemas.chunks import CallStarted
from bytewax.speechmatics.schemas.events import SCHEMA_VERSION, Event, event_id, validate_event
from bytewax.speechmatics.schemas.punctuation import transcript_text

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


def _speakers(words: Iterable[dict[str, Any]]) -> list[str]:
    return sorted({w["speaker"] for w in words if w["speaker"] is not None})


def batch_event_id(call_id: str, chunk_index: int, part: str = "segment") -> str:
    """Same chunk, same id; a chunk's held tail (released only when its successor failed) has its own."""
    if part == "segment":
        return event_id(call_id, BATCH, chunk_index)
    return event_id(call_id, BATCH, chunk_index, part)


def with_call(event: Event, call: CallSettings, warnings: tuple[str, ...] = ()) -> Event:
    """`event` with the call's metadata (when it has some) and the warnings (when there are any)."""
    if call.metadata_json is not None:
        event["metadata"] = orjson.loads(call.metadata_json)
    if warnings:
        event["warnings"] = list(warnings)
    return event


def call_settings(call: CallSettings) -> dict[str, Any]:
    """The `settings` of a call_started event: what the call's jobs ask for (the effective config), in short."""
    config = call.config
    diarization = config.diarization or "none"
    out: dict[str, Any] = {
        "language": config.language or UNDETERMINED_LANGUAGE,
        "diarization": diarization,
        "channel_labels": list(config.channel_labels) if diarization == "channel" and config.channel_labels else None,
    }
    for name in ("operating_point", "output_locale", "domain", "enable_entities"):
        if getattr(config, name) is not None:
            out[name] = getattr(config, name)
    if config.additional_vocab is not None:
        out["additional_vocab"] = len(config.additional_vocab)  # how many entries, not the words themselves
    if config.punctuation_overrides is not None:
        out["punctuation_overrides"] = config.punctuation_overrides.to_json()
    return out


def call_started(started: CallStarted) -> Event:
    """A call's first event (source batch): its settings, metadata and warnings (a refused start message, ...)."""
    settings = call_settings(started.call)
    event = {
        "schema_version": SCHEMA_VERSION, "event_id": event_id(started.call_id, BATCH, "started"),
        "call_id": started.call_id, "type": "call_started", "source": BATCH, "is_final": True,
        "start_time": 0.0, "end_time": 0.0, "transcript": "", "words": [], "speakers": [],
        "language": settings["language"], "channel": None, "settings": settings, "warnings": list(started.warnings),
    }
    return validate_event(with_call(event, started.call), where=f"call_started of call {started.call_id}")


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
        "transcript": transcript_text(words), "words": words, "speakers": _speakers(words),
        "language": release.language, "channel": None,
        "job": {"id": release.job_id, "chunk_index": span.index, "chunk_start": _t(span.start_time),
                "chunk_end": _t(span.end_time), "attempts": max(0, release.attempts),
                "gaps_filled": span.gaps_filled, "billed_seconds": _t(release.billed_seconds)},
        "supersedes": supersedes, "error": release.error,
    }
    return validate_event(with_call(event, release.call, release.warnings), where=f"segment of chunk {span.reference}")


def call_completed(done: Completion) -> Event:
    """The last event of a call's batch timeline, with its counts."""
    event = {
        "schema_version": SCHEMA_VERSION, "event_id": event_id(done.call_id, BATCH, "completed", done.chunks),
        "call_id": done.call_id, "type": "call_completed", "source": BATCH, "is_final": True,
        "start_time": 0.0, "end_time": _t(done.audio_seconds), "transcript": "", "words": [],
        "speakers": list(done.speakers), "language": done.language, "channel": None,
        "counts": {"chunks": done.chunks, "failed_chunks": done.failed_chunks, "words": done.words,
                   "audio_seconds": _t(done.audio_seconds), "gaps_filled": done.gaps_filled,
                   "billed_seconds": _t(done.billed_seconds)},
    }
    return validate_event(with_call(event, done.call), where=f"call_completed of call {done.call_id}")


def realtime_segment(call_id: str, segment_id: str, *, is_final: bool, start: float, end: float,
                     units: Sequence[Unit], language: str, channel: str | None) -> Event:
    """A real-time `segment`; `segment_id` is shared by a final and the partials it replaces."""
    words = words_of(units)
    event = {
        "schema_version": SCHEMA_VERSION, "event_id": event_id(call_id, REALTIME, segment_id),
        "call_id": call_id, "type": "segment", "source": REALTIME, "is_final": is_final,
        "start_time": _t(start), "end_time": _t(max(start, end)), "transcript": transcript_text(words),
        "words": words, "speakers": _speakers(words), "language": language, "channel": channel,
    }
    return validate_event(event, where=f"real-time segment {segment_id} of call {call_id}")


def realtime_started(call_id: str, session: str, language: str) -> Event:
    """A real-time session began (RecognitionStarted): the call's real-time call_started."""
    event = {
        "schema_version": SCHEMA_VERSION, "event_id": event_id(call_id, REALTIME, f"{session}/started"),
        "call_id": call_id, "type": "call_started", "source": REALTIME, "is_final": True,
        "start_time": 0.0, "end_time": 0.0, "transcript": "", "words": [], "speakers": [], "language": language,
        "channel": None, "warnings": [],
    }
    return validate_event(event, where=f"real-time call_started of call {call_id}")


def utterance_end(call_id: str, utterance_id: str, *, start: float, end: float, language: str,
                  channel: str | None) -> Event:
    """A turn ended (EndOfUtterance: silence after speech), for voice agents that act on turn ends."""
    event = {
        "schema_version": SCHEMA_VERSION, "event_id": event_id(call_id, REALTIME, utterance_id),
        "call_id": call_id, "type": "utterance_end", "source": REALTIME, "is_final": True,
        "start_time": _t(start), "end_time": _t(max(start, end)), "transcript": "", "words": [], "speakers": [],
        "language": language, "channel": channel,
    }
    return validate_event(event, where=f"utterance_end {utterance_id} of call {call_id}")


def realtime_completed(call_id: str, session: str, *, words: int, audio_seconds: float, speakers: Sequence[str],
                       language: str, error: str | None = None) -> Event:
    """A real-time session ended (EndOfTranscript, or an Error that ended it: `error` set)."""
    event = {
        "schema_version": SCHEMA_VERSION, "event_id": event_id(call_id, REALTIME, f"{session}/completed"),
        "call_id": call_id, "type": "call_completed", "source": REALTIME, "is_final": True,
        "start_time": 0.0, "end_time": _t(audio_seconds), "transcript": "", "words": [],
        "speakers": sorted(set(speakers)), "language": language, "channel": None,
        "counts": {"chunks": 0, "failed_chunks": 0, "words": words, "audio_seconds": _t(audio_seconds)},
        "error": error,
    }
    return validate_event(event, where=f"real-time call_completed of call {call_id}")
