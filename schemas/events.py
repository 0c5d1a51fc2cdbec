"""Transcript events of `calls.transcripts`: build, encode (orjson) and decode them, always validated.

The JSON Schema file beside this module is the contract; validation here uses that very file, so the
Python side can never drift from what consumers in other languages check against.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from typing import Any

import fastjsonschema
import orjson

from bytewax.speechmatics.schemas.errors import ContractError

#: The version of the events this library writes; events of every version in SCHEMA_VERSIONS stay valid.
SCHEMA_VERSION = "1.2"
SCHEMA_VERSIONS = ("1.0", "1.1", "1.2")
SCHEMA_FILE = "transcript_event.schema.json"

Event = dict[str, Any]


@lru_cache(maxsize=1)
def event_schema() -> dict[str, Any]:
    """The transcript event JSON Schema, read from the installed package."""
    return json.loads(resources.files(__package__).joinpath(SCHEMA_FILE).read_text())


@lru_cache(maxsize=1)
def _validator() -> Callable[[Any], Any]:
    """The schema file compiled to Python code once (fastjsonschema): every produced event passes through it."""
    return fastjsonschema.compile(event_schema())


def validate_event(event: Event, where: str = "transcript event") -> Event:
    """Raise ContractError naming the first field that breaks the schema; return the event."""
    try:
        _validator()(event)
    except fastjsonschema.JsonSchemaValueException as exc:
        path = "/".join(str(p) for p in exc.path[1:]) or "(top level)"
        raise ContractError(f"field {path}: {exc.message.removeprefix(exc.name).strip() or exc.message}",
                            where) from None
    return event


def event_id(*parts: object) -> str:
    """A deterministic id from the parts that identify a segment: same segment, same id."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return digest[:32]


def encode_event(event: Event) -> bytes:
    """Validate, then serialize with orjson (the bytes of a calls.transcripts message value)."""
    validate_event(event, where=f"event {event.get('event_id', '?')} of call {event.get('call_id', '?')}")
    return orjson.dumps(event)


def load_json_object(value: bytes | None, where: str) -> dict[str, Any]:
    """A Kafka message value as a JSON object; ContractError saying what is wrong otherwise."""
    if value is None:
        raise ContractError("empty message", where)
    try:
        loaded = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ContractError(f"not JSON: {exc}", where) from exc
    if not isinstance(loaded, dict):
        raise ContractError("not a JSON object", where)
    return loaded


def decode_event(value: bytes, where: str = "calls.transcripts message") -> Event:
    """Parse and validate one message value; ContractError on anything else."""
    return validate_event(load_json_object(value, where), where)
