"""The start message contract: the Python reader and the JSON Schema file agree, bad start messages say which field,
and frames are never taken for start messages (nor the other way round)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bytewax.speechmatics.schemas.call_start import (
    MAX_METADATA_BYTES,
    MAX_START_BYTES,
    NO_SETTINGS,
    CallConfig,
    CallSettings,
    Punctuation,
    StartRefused,
    Vocab,
    decode_start,
    encode_start,
    message_kind,
    parse_start_value,
    settings_value,
)
from bytewax.speechmatics.schemas.errors import ContractError
from bytewax.speechmatics.schemas.frames import AudioFrame, decode_frame, encode_frame

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "call_start.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

FULL_CONFIG = {
    "language": "de", "operating_point": "enhanced", "output_locale": "en-GB",
    "additional_vocab": ["Lisinopril", {"content": "Acme", "sounds_like": ["ak me", "acne"]}],
    "punctuation_overrides": {"permitted_marks": [",", "."], "sensitivity": 0.4}, "enable_entities": True,
    "diarization": "channel", "channel_labels": ["agent", "caller"], "domain": "finance",
}


def test_a_start_message_round_trips_with_every_field() -> None:
    metadata = {"tenant": "acme", "agent": {"id": "a-17", "skills": ["billing"]}, "crm": 12345, "vip": True}
    key, value, headers = encode_start("call-1", FULL_CONFIG, metadata)
    assert message_kind(headers) == "start" and VALIDATOR.is_valid(orjson.loads(value))
    start = decode_start(key, value, headers, topic="calls.audio", partition=2, offset=9)
    assert (start.call_id, start.refused, start.topic, start.partition, start.offset) == (
        "call-1", None, "calls.audio", 2, 9)
    config = start.settings.config
    assert config == CallConfig(
        language="de", operating_point="enhanced", output_locale="en-GB",
        additional_vocab=(Vocab("Lisinopril"), Vocab("Acme", ("ak me", "acne"))),
        punctuation_overrides=Punctuation((",", "."), 0.4), enable_entities=True, diarization="channel",
        channel_labels=("agent", "caller"), domain="finance")
    assert start.settings.metadata == metadata
    # What the flow keeps is immutable and hashable (it travels in every chunk and snapshot), and reads back the same.
    assert hash(start.settings)
    assert CallConfig.from_json(config.to_json()) == config
    assert parse_start_value(settings_value(start.settings)) == start.settings


def test_an_empty_start_message_is_the_flow_defaults() -> None:
    assert parse_start_value(b"{}") == NO_SETTINGS
    assert parse_start_value(b'{"config": {}, "metadata": {}}') == CallSettings(metadata_json=b"{}")


@pytest.mark.parametrize(("value", "says"), [
    (b"not json", "start message is not JSON"),
    (b"[1, 2]", "field (top level): must be a JSON object"),
    (None, "null value"),
    (b'{"config": {"language": "de", "vocab": ["x"]}}',
     "field config: unknown field 'vocab' (allowed: language, operating_point, output_locale, additional_vocab, "
     "punctuation_overrides, enable_entities, diarization, channel_labels, domain)"),
    (b'{"tenant": "acme"}', "field (top level): unknown field 'tenant' (allowed: config, metadata)"),
    (b'{"config": {"diarization": "both"}}', "field config.diarization: must be none, speaker or channel"),
    (b'{"config": {"language": 7}}', "field config.language: must be a string"),
    (b'{"config": {"language": "German language"}}',
     "field config.language: must be a language code such as en, de or cmn_en, or auto"),
    (b'{"config": {"channel_labels": ["agent", "S2"]}}', "field config.channel_labels[1]"),
    (b'{"config": {"channel_labels": ["agent", "agent"]}}', "field config.channel_labels"),
    (b'{"config": {"channel_labels": ["a", "b", "c"]}}', "field config.channel_labels"),
    (b'{"config": {"additional_vocab": ["ok", {"content": ""}]}}', "field config.additional_vocab[1]"),
    (b'{"config": {"additional_vocab": [{"content": "x", "sounds": ["y"]}]}}', "field config.additional_vocab[0]"),
    (b'{"config": {"punctuation_overrides": {"sensitivity": 2}}}',
     "field config.punctuation_overrides.sensitivity: must be between 0 and 1"),
    (b'{"config": {"operating_point": "fast"}}', "field config.operating_point: must be standard or enhanced"),
    (b'{"config": {"enable_entities": "yes"}}', "field config.enable_entities: must be true or false"),
    (b'{"metadata": ["not", "an", "object"]}', "field metadata"),
    (b'{"metadata": {"note": "' + b"x" * MAX_METADATA_BYTES + b'"}}', "field metadata: 8"),
    (b'{"metadata": {"note": "' + b"x" * MAX_START_BYTES + b'"}}', f"more than the {MAX_START_BYTES} byte limit"),
])
def test_a_bad_start_message_says_which_field(value: bytes | None, says: str) -> None:
    with pytest.raises(StartRefused) as info:
        decode_start(b"call-7", value, [("kind", b"start")], topic="calls.audio", partition=1, offset=4)
    assert says in str(info.value)
    assert "calls.audio[1]@4" in str(info.value) and "call-7" in str(info.value)
    assert info.value.call_id == "call-7"  # the call still goes on with the flow's defaults


def test_reasons_never_quote_metadata() -> None:
    secret = "ssn-123-45-6789"
    value = orjson.dumps({"config": {"language": 1}, "metadata": {"customer": secret}})
    with pytest.raises(StartRefused) as info:
        decode_start(b"c", value)
    assert secret not in str(info.value)


@pytest.mark.parametrize(("key", "says"), [(None, "no key"), (b"", "no key"), (b"\xff", "not UTF-8")])
def test_a_start_message_without_a_usable_key_names_no_call(key: bytes | None, says: str) -> None:
    with pytest.raises(StartRefused) as info:
        decode_start(key, b"{}")
    assert says in str(info.value) and info.value.call_id is None


def test_frames_and_start_messages_are_never_mistaken_for_each_other() -> None:
    frame = AudioFrame("c", 0, b"\0\0" * 160)
    key, value, headers = encode_frame(frame)
    assert message_kind(headers) is None
    assert decode_frame(key, value, [*headers, ("kind", b"frame")]).audio == value  # an explicit kind: frame
    with pytest.raises(ContractError, match="start message"):
        decode_frame(*encode_start("c", {"language": "de"}))
    with pytest.raises(ContractError, match="'kind' must be"):
        decode_frame(key, value, [*headers, ("kind", b"control")])
    assert message_kind([("kind", b"start"), ("kind", b"frame")]) == "frame"  # the last header wins


# ---- the Python reader and the JSON Schema file agree ----------------------------------------------------------

# No newlines: Python's `re` lets `$` match before a final newline, unlike the ECMA regex the schema is written for.
text = st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), min_size=1, max_size=6)


def mostly(valid: st.SearchStrategy, invalid: st.SearchStrategy) -> st.SearchStrategy:
    """Valid values four times out of five, so that accepted documents are common too."""
    return st.one_of(valid, valid, valid, valid, invalid)


labels = mostly(st.sampled_from(["agent", "caller", "left", "right", "ch-1"]),
                st.sampled_from(["S1", "UU", "S12", "", "a b", "x" * 33, 7]))
config_values = {
    "language": mostly(st.sampled_from(["en", "de", "fr", "cmn_en", "auto", "EN"]),
                       st.sampled_from(["e", "german", "", 3, "en\u00e9"])),
    "operating_point": mostly(st.sampled_from(["standard", "enhanced"]), st.sampled_from(["fast", None])),
    "output_locale": mostly(st.sampled_from(["en-GB", "en-US"]), st.sampled_from(["en_GB", "", "e"])),
    "additional_vocab": st.lists(mostly(
        st.one_of(text, st.fixed_dictionaries({"content": text}, optional={"sounds_like": st.lists(text, max_size=3)})),
        st.one_of(st.just(""), st.fixed_dictionaries({"content": text, "weight": st.integers(-5, 5)}),
                  st.integers(-5, 5))), max_size=3),
    "punctuation_overrides": st.fixed_dictionaries({}, optional={
        "permitted_marks": st.lists(mostly(st.sampled_from([",", ".", "?", "all"]), st.sampled_from(["", "!" * 9])),
                                    max_size=3),
        "sensitivity": mostly(st.floats(0, 1), st.floats(-1, 2, allow_nan=False))}),
    "enable_entities": mostly(st.booleans(), st.sampled_from(["true", 1])),
    "diarization": mostly(st.sampled_from(["none", "speaker", "channel"]),
                          st.sampled_from(["channel_and_speaker", None])),
    "channel_labels": mostly(st.lists(labels, min_size=2, max_size=2), st.lists(labels, max_size=3)),
    "domain": mostly(st.sampled_from(["finance", "medical-2"]), st.sampled_from(["", "a b"])),
}
documents = st.fixed_dictionaries({}, optional={
    "config": st.fixed_dictionaries({}, optional=config_values),
    "metadata": mostly(st.dictionaries(text, st.one_of(text, st.integers(-10, 10), st.booleans()), max_size=3),
                       st.lists(st.integers(-5, 5), max_size=2)),
})


@settings(max_examples=400, deadline=None)
@given(documents)
def test_the_reader_accepts_exactly_what_the_schema_file_accepts(doc: dict) -> None:
    """Whatever the document, parse_start_value accepts it exactly when the JSON Schema does (the byte bounds, which
    a JSON Schema cannot state, aside: these documents stay far below them)."""
    value = orjson.dumps(doc)
    try:
        parse_start_value(value)
        accepted = True
    except ContractError:
        accepted = False
    assert accepted == VALIDATOR.is_valid(doc)


#: What a refusal must never show a user: Python reprs of sets/lists, regular expressions, validator internals.
INTERNALS = ("{'", "['", "^", "$", "must match pattern", "must not contain", "definition", "data.", "must be object")


@settings(max_examples=400, deadline=None)
@given(documents)
def test_every_refusal_is_said_in_words(doc: dict) -> None:
    """Whatever is wrong, the reason names the field and the values allowed in words: never a Python set or list,
    a regular expression or the validator's own wording."""
    try:
        parse_start_value(orjson.dumps(doc))
    except ContractError as exc:
        assert not [bit for bit in INTERNALS if bit in str(exc)], str(exc)


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({}, optional=config_values))
def test_an_accepted_config_reads_back_as_itself(config: dict) -> None:
    try:
        read = parse_start_value(orjson.dumps({"config": config})).config
    except ContractError:
        return
    again = CallConfig.from_json(read.to_json())
    assert again == read
    assert {k: v for k, v in read.to_json().items() if k != "additional_vocab"} == {
        k: v for k, v in config.items() if k != "additional_vocab" and v is not None}
