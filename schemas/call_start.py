"""The start message of `calls.audio`: per-call transcription settings and the platform's metadata.

A call may begin with one control message on the audio topic itself, with the call id as key (so Kafka keeps it in
order with the call's frames) and the header `kind: start`; its value is a JSON object described by
`call_start.schema.json` beside this module (the contract: validation here compiles that very file, plus the two
byte bounds a JSON Schema cannot state). Frames need no start message: a call without one uses the flow's defaults.

    key, value, headers = encode_start("call-1", config={"language": "de"}, metadata={"tenant": "acme"})

What the flow keeps of it is small and immutable (it travels in every chunk, in snapshots): a `CallConfig` (each
field None = the flow's default) and the metadata as compact JSON bytes (`CallSettings`). Nothing here logs or
quotes metadata values: refusal reasons name the field, never its content.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import fastjsonschema
import orjson

from bytewax.speechmatics.schemas.errors import ContractError, in_words
from bytewax.speechmatics.schemas.snapshots import evolvable

SCHEMA_FILE = "call_start.schema.json"
#: The header that tells a start message from a frame, and its value.
KIND_HEADER = "kind"
START = "start"
FRAME = "frame"
#: The most bytes a start message's value may have (the schema's x-max-bytes).
MAX_START_BYTES = 65536
#: The most bytes the metadata object may have, encoded as compact JSON (the schema's x-max-metadata-bytes).
MAX_METADATA_BYTES = 8192
DIARIZATIONS = ("none", "speaker", "channel")


@lru_cache(maxsize=1)
def start_schema() -> dict[str, Any]:
    """The start message JSON Schema, read from the installed package."""
    return json.loads(resources.files(__package__).joinpath(SCHEMA_FILE).read_text())


@lru_cache(maxsize=1)
def _validator() -> Callable[[Any], Any]:
    return fastjsonschema.compile(start_schema())


@evolvable
@dataclass(frozen=True, slots=True)
class Vocab:
    """One custom vocabulary entry: the word as it must be written, and how it may sound."""

    content: str
    sounds_like: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"content": self.content}
        if self.sounds_like:
            out["sounds_like"] = list(self.sounds_like)
        return out


@evolvable
@dataclass(frozen=True, slots=True)
class Punctuation:
    """punctuation_overrides: the marks allowed, and how readily they are placed (0..1)."""

    permitted_marks: tuple[str, ...] | None = None
    sensitivity: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.permitted_marks is not None:
            out["permitted_marks"] = list(self.permitted_marks)
        if self.sensitivity is not None:
            out["sensitivity"] = self.sensitivity
        return out


@evolvable
@dataclass(frozen=True, slots=True)
class CallConfig:
    """A call's own transcription settings; None = the flow's default. Hashable and picklable.

    Submission merges it over the flow's defaults (connectors/speechmatics/settings.py); what a job then asks for is
    also described by a CallConfig with every field resolved (the *effective* config).
    """

    language: str | None = None
    operating_point: str | None = None
    output_locale: str | None = None
    additional_vocab: tuple[Vocab, ...] | None = None
    punctuation_overrides: Punctuation | None = None
    enable_entities: bool | None = None
    diarization: str | None = None
    channel_labels: tuple[str, ...] | None = None
    domain: str | None = None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> CallConfig:
        """A config object of the contract as a CallConfig (also a job's resolved transcription fields, which a flow's
        BWSM_TRANSCRIPTION_CONFIG may shape freely): unknown keys and values of the wrong type are left out."""
        if not doc:
            return NO_CONFIG
        vocab = doc.get("additional_vocab")
        punct = doc.get("punctuation_overrides")
        labels = doc.get("channel_labels")
        return cls(
            language=_str_or_none(doc.get("language")),
            operating_point=_str_or_none(doc.get("operating_point")),
            output_locale=_str_or_none(doc.get("output_locale")),
            additional_vocab=(tuple(v for v in map(_vocab, vocab) if v is not None)
                              if isinstance(vocab, list | tuple) else None),
            punctuation_overrides=_punctuation(punct),
            enable_entities=None if doc.get("enable_entities") is None else bool(doc["enable_entities"]),
            diarization=_str_or_none(doc.get("diarization")),
            channel_labels=tuple(str(label) for label in labels) if isinstance(labels, list | tuple) else None,
            domain=_str_or_none(doc.get("domain")),
        )

    def to_json(self) -> dict[str, Any]:
        """The contract's form of the fields that are set (what a start message would carry)."""
        out: dict[str, Any] = {}
        for name in ("language", "operating_point", "output_locale"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.additional_vocab is not None:
            out["additional_vocab"] = [v.to_json() for v in self.additional_vocab]
        if self.punctuation_overrides is not None:
            out["punctuation_overrides"] = self.punctuation_overrides.to_json()
        if self.enable_entities is not None:
            out["enable_entities"] = self.enable_entities
        for name in ("diarization", "domain"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.channel_labels is not None:
            out["channel_labels"] = list(self.channel_labels)
        return out


NO_CONFIG = CallConfig()


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _punctuation(doc: Any) -> Punctuation | None:
    if not isinstance(doc, Mapping):
        return None
    marks, sensitivity = doc.get("permitted_marks"), doc.get("sensitivity")
    return Punctuation(
        tuple(str(m) for m in marks) if isinstance(marks, list | tuple) else None,
        float(sensitivity) if isinstance(sensitivity, int | float) and not isinstance(sensitivity, bool) else None)


def _vocab(entry: Any) -> Vocab | None:
    if isinstance(entry, str):
        return Vocab(entry) if entry else None
    if isinstance(entry, Mapping) and isinstance(entry.get("content"), str):
        sounds = entry.get("sounds_like")
        return Vocab(entry["content"], tuple(str(s) for s in sounds) if isinstance(sounds, list | tuple) else ())
    return None


@evolvable
@dataclass(frozen=True, slots=True)
class CallSettings:
    """What a call carries through the flow: its config and its metadata (compact JSON bytes, or None)."""

    config: CallConfig = NO_CONFIG
    metadata_json: bytes | None = None

    @property
    def metadata(self) -> dict[str, Any] | None:
        """A fresh copy of the metadata object (None when the call has none)."""
        return None if self.metadata_json is None else orjson.loads(self.metadata_json)


NO_SETTINGS = CallSettings()


@dataclass(frozen=True, slots=True)
class CallStart:
    """A start message as the decode stage hands it to the chunker, with where it came from.

    `refused` is set when the message broke the contract (its dead letter says why): the call then goes on with
    the flow's defaults, and its call_started event carries the reason as a warning.
    """

    call_id: str
    settings: CallSettings = NO_SETTINGS
    refused: str | None = None
    topic: str = ""
    partition: int = -1
    offset: int = -1


class StartRefused(ContractError):
    """A start message that breaks the contract; `call_id` when its key was usable (the call still goes on)."""

    def __init__(self, what: str, where: str = "", call_id: str | None = None) -> None:
        super().__init__(what, where)
        self.call_id = call_id


def _text(value: bytes | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.decode("utf-8")


def message_kind(headers: Iterable[tuple[str, bytes | str | None]] | None) -> str | None:
    """The value of the `kind` header (the last one wins, as for every header), or None when absent.

    A value that is not UTF-8 is returned as "" (not a kind anyone sends).
    """
    kind = None
    for name, value in headers or ():
        if name == KIND_HEADER:
            try:
                kind = _text(value) or ""
            except UnicodeDecodeError:
                kind = ""
    return kind


def _field(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int) or (isinstance(part, str) and part.isdigit()):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


_TYPES = {"object": "a JSON object", "array": "a list", "string": "a string", "boolean": "true or false",
          "number": "a number", "integer": "a whole number", "null": "null"}


def explain(exc: fastjsonschema.JsonSchemaValueException) -> str:
    """A schema violation in words, with the values allowed: never a Python set, a regular expression or a rule
    name. Quotes field names only, never a value (a value may be a metadata secret)."""
    rule, schema = exc.rule, exc.definition if isinstance(exc.definition, dict) else {}
    expected = schema.get("x-expected")
    if rule == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        unknown = [str(k) for k in exc.value if k not in allowed] if isinstance(exc.value, dict) else []
        names = ", ".join(repr(name[:40]) for name in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        return f"unknown field{'s' if len(unknown) > 1 else ''} {names} (allowed: {', '.join(allowed)})"
    if rule == "type":
        kinds = schema.get("type")
        return f"must be {in_words(_TYPES.get(k, k) for k in (kinds if isinstance(kinds, list) else [kinds]))}"
    if rule == "enum":
        return f"must be {in_words(schema['enum'])}"
    if expected and rule in ("pattern", "not", "anyOf", "oneOf", "minLength", "maxLength"):
        return f"must be {expected}"
    if rule in ("minimum", "maximum") and "minimum" in schema and "maximum" in schema:
        return f"must be between {schema['minimum']} and {schema['maximum']}"
    bounds = {
        "minItems": f"must have at least {schema.get('minItems')} items",
        "maxItems": f"must have at most {schema.get('maxItems')} items",
        "uniqueItems": "must not repeat an item",
        "minLength": f"must have at least {schema.get('minLength')} character(s)",
        "maxLength": f"must have at most {schema.get('maxLength')} characters",
        "minimum": f"must be at least {schema.get('minimum')}",
        "maximum": f"must be at most {schema.get('maximum')}",
        "required": f"must have {in_words(schema.get('required', ()), 'and')}",
    }
    if rule in bounds:
        return bounds[rule]
    return f"must be {expected}" if expected else f"does not follow the start message contract ({SCHEMA_FILE})"


def parse_start_value(value: bytes | None, where: str = "") -> CallSettings:
    """Validate a start message's value against the contract; ContractError naming the field otherwise."""
    if value is None:
        raise ContractError("start message has a null value (it must be a JSON object)", where)
    if len(value) > MAX_START_BYTES:
        raise ContractError(f"start message is {len(value)} bytes, more than the {MAX_START_BYTES} byte limit", where)
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ContractError(f"start message is not JSON: {exc}", where) from None
    try:
        _validator()(doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        path = list(exc.path[1:]) if exc.path else []
        raise ContractError(f"start message field {_field(path)}: {explain(exc)}", where) from None
    metadata = doc.get("metadata")
    encoded = None
    if metadata is not None:
        encoded = orjson.dumps(metadata)
        if len(encoded) > MAX_METADATA_BYTES:
            raise ContractError(f"start message field metadata: {len(encoded)} bytes encoded, more than the "
                                f"{MAX_METADATA_BYTES} byte limit", where)
    return CallSettings(CallConfig.from_json(doc.get("config")), encoded)


def decode_start(
    key: bytes | str | None,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes | str | None]] | None = None,
    *,
    topic: str = "",
    partition: int = -1,
    offset: int = -1,
) -> CallStart:
    """Decode a message whose header says `kind: start`; StartRefused (with the call id when the key is usable)."""
    where = f"{topic or 'start'}[{partition}]@{offset}"
    if key is None or key in (b"", ""):
        raise StartRefused("start message has no key (the key must be the call id)", where)
    try:
        call_id = _text(key) or ""
    except UnicodeDecodeError:
        raise StartRefused("start message key is not UTF-8 (the key must be the call id)", where) from None
    where = f"{where} call {call_id[:120]!r}"
    try:
        settings = parse_start_value(value, where)
    except ContractError as exc:
        raise StartRefused(exc.what, where, call_id) from None
    return CallStart(call_id, settings, None, topic, partition, offset)


def start_value(config: Mapping[str, Any] | None = None, metadata: Mapping[str, Any] | None = None) -> bytes:
    """The JSON value of a start message (not validated: parse_start_value says whether the flow accepts it)."""
    doc: dict[str, Any] = {}
    if config is not None:
        doc["config"] = dict(config)
    if metadata is not None:
        doc["metadata"] = dict(metadata)
    return orjson.dumps(doc)


def encode_start(call_id: str, config: Mapping[str, Any] | None = None, metadata: Mapping[str, Any] | None = None,
                 value: bytes | None = None) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """The Kafka key, value and headers of a start message (`value` as is when given), as a producer sends them."""
    body = value if value is not None else start_value(config, metadata)
    return call_id.encode("utf-8"), body, [(KIND_HEADER, START.encode())]


def settings_value(settings: CallSettings) -> bytes:
    """A start message's value that decodes to `settings` again (for dead letters of starts the flow has read)."""
    doc: dict[str, Any] = {}
    config = settings.config.to_json()
    if config:
        doc["config"] = config
    out = orjson.dumps(doc)
    if settings.metadata_json is not None:
        out = out[:-1] + (b"," if doc else b"") + b'"metadata":' + settings.metadata_json + b"}"
    return out
