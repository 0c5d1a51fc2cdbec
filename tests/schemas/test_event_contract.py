"""The transcript event contract: the Python codec validates with the JSON Schema file consumers use."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from bytewax.speechmatics.schemas.errors import ContractError
from bytewax.speechmatics.schemas.events import decode_event, encode_event, event_id

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "transcript_event.schema.json").read_text())


def segment() -> dict:
    return {
        "schema_version": "1.0", "event_id": event_id("call-1", "batch", 0), "call_id": "call-1",
        "type": "segment", "source": "batch", "is_final": True, "start_time": 0.0, "end_time": 30.0,
        "transcript": "Hello there.", "language": "en", "speakers": ["spk_1"], "channel": None,
        "words": [
            {"text": "Hello", "start_time": 0.5, "end_time": 0.9, "confidence": 0.98, "speaker": "spk_1",
             "type": "word"},
            {"text": "there", "start_time": 0.9, "end_time": 1.2, "confidence": 0.9, "speaker": "spk_1",
             "type": "word"},
            {"text": ".", "start_time": 1.2, "end_time": 1.2, "confidence": 1.0, "speaker": "spk_1",
             "type": "punctuation", "attaches_to": "previous", "is_eos": True},
        ],
        "job": {"id": "abc", "chunk_index": 0, "chunk_start": 0.0, "chunk_end": 30.0, "attempts": 1},
        "supersedes": {"start_time": 0.0, "end_time": 29.85},
    }


def test_valid_event_round_trips_and_matches_the_schema_file() -> None:
    event = segment()
    jsonschema.validate(event, SCHEMA)
    assert decode_event(encode_event(event)) == event


def test_event_ids_are_deterministic_and_distinct() -> None:
    assert event_id("c", "batch", 1) == event_id("c", "batch", 1)
    assert event_id("c", "batch", 1) != event_id("c", "batch", 2)
    assert event_id("c1", "batch", 1) != event_id("c", "1batch", 1)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e.pop("call_id"), "(top level)"),
        (lambda e: e.update(type="partial"), "type"),
        (lambda e: e.update(source="whisper"), "source"),
        (lambda e: e["words"][1].update(confidence=1.5), "words/1/confidence"),
        (lambda e: e["words"][0].update(type="entity"), "words/0/type"),
        (lambda e: e.update(start_time=-1), "start_time"),
        (lambda e: e.update(unknown=1), "(top level)"),
    ],
)
def test_invalid_events_are_refused_by_both_validators(mutate, field: str) -> None:  # noqa: ANN001
    event = copy.deepcopy(segment())
    mutate(event)
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(event)
    with pytest.raises(ContractError) as info:
        encode_event(event)
    assert f"field {field}" in str(info.value)
    with pytest.raises(ContractError):
        decode_event(orjson.dumps(event))


def test_non_json_is_a_contract_error() -> None:
    with pytest.raises(ContractError, match="not JSON"):
        decode_event(b"\x00garbage", where="calls.transcripts[0]@5")
