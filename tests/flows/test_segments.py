"""Event building: display text, ids, spans, and that every event matches the JSON Schema file."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson

from bytewax.speechmatics.flows.segments import (
    batch_event_id,
    batch_segment,
    call_completed,
    realtime_segment,
)
from bytewax.speechmatics.flows.stitching import Completion, Release, Token, Unit
from bytewax.speechmatics.schemas.chunks import ChunkSpan
from bytewax.speechmatics.schemas.events import decode_event, encode_event, event_id
from bytewax.speechmatics.schemas.punctuation import display_text

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "transcript_event.schema.json").read_text())
SPAN = ChunkSpan("call-s", 2, 16000 * 59, 16000 * 90, 4800, 16000, "pcm_s16le", 1, gaps_filled=1, closed_at=5.0)


def tok(text: str, start: float, end: float, kind: str = "word", attaches_to: str | None = None,
        speaker: str | None = "spk_1") -> Token:
    return Token(text, start, end, 0.8, speaker, kind, attaches_to=attaches_to,
                 is_eos=True if text == "." else None if kind == "word" else False, language="en")


def w(text: str, attaches_to: str | None = None) -> dict:
    return {"text": text, "type": "punctuation" if attaches_to else "word", "attaches_to": attaches_to}


def test_display_text_glues_punctuation_to_its_side() -> None:
    assert display_text([]) == ""
    assert display_text([w("Hi"), w(",", "previous"), w("there"), w(".", "previous")]) == "Hi, there."
    assert display_text([w("("), w("¿", "next"), w("sí"), w("?", "previous")]) == "( ¿sí?"
    assert display_text([w("well"), w("-", "both"), w("known")]) == "well-known"
    assert display_text([w("a"), w("&", "none"), w("b")]) == "a & b"


def test_batch_segment_carries_job_span_and_supersedes() -> None:
    unit = Unit(tok("yes", 60.123456789, 60.5), after=(tok(".", 60.4, 60.4, "punctuation", "previous"),))
    event = batch_segment(Release(SPAN, (unit,), (59.15, 89.7), "en", "job-9", 2, billed_seconds=12.3456))
    jsonschema.validate(event, SCHEMA)
    assert event["event_id"] == batch_event_id("call-s", 2) == event_id("call-s", "batch", 2)
    assert event["transcript"] == "yes."
    assert event["job"] == {"id": "job-9", "chunk_index": 2, "chunk_start": 59.0, "chunk_end": 90.0,
                            "attempts": 2, "gaps_filled": 1, "billed_seconds": 12.3456}
    assert event["supersedes"] == {"start_time": 59.15, "end_time": 89.7}
    assert (event["start_time"], event["end_time"]) == (59.15, 89.7)
    # Times are rounded to microseconds; punctuation sits at the end of its word.
    assert [(x["start_time"], x["end_time"]) for x in event["words"]] == [(60.123457, 60.5), (60.5, 60.5)]
    assert event["words"][1]["is_eos"] is True
    assert decode_event(encode_event(event)) == event


def test_failed_segment_and_tail_ids() -> None:
    event = batch_segment(Release(SPAN, (), None, "und", None, 3, error="rejected"))
    jsonschema.validate(event, SCHEMA)
    assert event["words"] == [] and event["supersedes"] is None and event["error"] == "rejected"
    assert (event["start_time"], event["end_time"]) == (59.0, 90.0)
    tail = batch_segment(Release(SPAN, (), (89.7, 90.0), "en", "job-9", 1, part="tail"))
    assert tail["event_id"] == batch_event_id("call-s", 2, "tail") != event["event_id"]


def test_call_completed() -> None:
    done = Completion("call-s", chunks=4, failed_chunks=1, words=120, audio_seconds=118.5, gaps_filled=2,
                      speakers=("spk_1", "spk_2"), language="en", closed_at=7.0, billed_seconds=40.25)
    event = call_completed(done)
    jsonschema.validate(event, SCHEMA)
    assert event["type"] == "call_completed" and event["words"] == [] and event["transcript"] == ""
    assert event["counts"] == {"chunks": 4, "failed_chunks": 1, "words": 120, "audio_seconds": 118.5,
                               "gaps_filled": 2, "billed_seconds": 40.25}
    assert event["event_id"] == event_id("call-s", "batch", "completed", 4)  # a reopened call completes anew
    assert orjson.dumps(call_completed(done)) == orjson.dumps(event)


def test_realtime_segment() -> None:
    event = realtime_segment("call-s", "agent/3", is_final=False, start=1.0, end=0.5,
                             units=[Unit(tok("hi", 1.0, 1.2, speaker=None))], language="en", channel="agent")
    jsonschema.validate(event, SCHEMA)
    assert event["source"] == "realtime" and event["is_final"] is False and "job" not in event
    assert event["end_time"] == 1.0  # never before the start
    assert event["speakers"] == [] and event["words"][0]["speaker"] is None
