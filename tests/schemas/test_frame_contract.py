"""The audio frame contract: decode_frame and the JSON Schema file agree, and bad frames say what and where."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bytewax.speechmatics.schemas.errors import ContractError
from bytewax.speechmatics.schemas.frames import BYTES_PER_SAMPLE, AudioFrame, decode_frame, encode_frame

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "audio_frame.schema.json").read_text())


def json_view(key: str, value: bytes, headers: dict[str, str]) -> dict:
    return {"key": key, "value_bytes": len(value), "headers": headers}


def schema_accepts(view: dict) -> bool:
    return jsonschema.Draft202012Validator(SCHEMA).is_valid(view)


def test_round_trip_keeps_every_field() -> None:
    frame = AudioFrame("call-1", 7, b"\x01\x00" * 320, 8000, "pcm_s16le", 2, end=True)
    key, value, headers = encode_frame(frame)
    decoded = decode_frame(key, value, headers, topic="calls.audio", partition=3, offset=99)
    assert decoded == AudioFrame("call-1", 7, value, 8000, "pcm_s16le", 2, True, "calls.audio", 3, 99)
    assert schema_accepts(json_view("call-1", value, {k: v.decode() for k, v in headers}))


def test_defaults_apply_when_headers_are_absent() -> None:
    frame = decode_frame(b"c", b"\x00" * 4, [("seq", b"0")])
    assert frame.audio_format == (16000, "pcm_s16le", 1) and not frame.end


@pytest.mark.parametrize(
    ("key", "value", "headers", "fragment"),
    [
        (None, b"\0\0", [("seq", b"0")], "no key"),
        (b"\xff\xfe", b"\0\0", [("seq", b"0")], "key is not UTF-8"),
        (b"c", b"\0\0", [], "'seq' is missing"),
        (b"c", b"\0\0", [("seq", b"-1")], "'seq' must be a non-negative"),
        (b"c", b"\0\0", [("seq", b"1"), ("sample_rate", b"44100")],
         "'sample_rate' must be 8000, 16000, 32000 or 48000, got 44100"),
        (b"c", b"\0\0", [("seq", b"1"), ("encoding", b"opus")], "'encoding' must be pcm_s16le or mulaw, got 'opus'"),
        (b"c", b"\0\0", [("seq", b"1"), ("channels", b"3")], "'channels' must be 1 or 2, got 3"),
        (b"c", b"\0\0\0", [("seq", b"1")], "not a whole number of 2-byte samples"),
        (b"c", b"\0\0", [("seq", b"1"), ("channels", b"2")], "not a whole number of 4-byte samples"),
        (b"c", b"\0\0", [("seq", b"1"), ("end", b"yes")], "'end' must be"),
        (b"c", b"\0\0", [("seq", b"\xff")], "'seq' is not UTF-8"),
        (b"c", b"\0\0", [("seq", b"9" * 5000)], "'seq' must be a non-negative decimal integer of at most 18"),
    ],
)
def test_bad_frames_say_what_and_where(key, value, headers, fragment) -> None:  # noqa: ANN001
    with pytest.raises(ContractError) as info:
        decode_frame(key, value, headers, topic="calls.audio", partition=2, offset=41)
    assert fragment in str(info.value)
    assert "calls.audio[2]@41" in str(info.value)


header_values = st.one_of(
    st.sampled_from(["0", "1", "2", "8000", "16000", "32000", "44100", "48000", "pcm_s16le", "mulaw", "opus",
                     "", "true", "false", "-3", "x"]),
    # No newlines: Python's `re` lets `$` match before a final newline, unlike the ECMA regex the schema is written
    # for, so the Python jsonschema library would accept "1\n" where the contract (and decode_frame) does not.
    st.text(st.characters(blacklist_characters="\n"), max_size=4),
)


@given(
    headers=st.dictionaries(st.sampled_from(["seq", "sample_rate", "encoding", "channels", "end"]), header_values),
    frames=st.integers(0, 8),
    extra=st.integers(0, 3),
)
def test_decoder_and_json_schema_agree(headers: dict[str, str], frames: int, extra: int) -> None:
    """Whatever the headers, the Python decoder accepts a frame exactly when the JSON Schema does (sizes aside)."""
    encoding = headers.get("encoding", "pcm_s16le")
    width = BYTES_PER_SAMPLE.get(encoding, 1) * (int(headers["channels"]) if headers.get("channels") in ("1", "2")
                                                 else 1)
    value = b"\x00" * (frames * width)
    try:
        decode_frame(b"call", value, list(headers.items()))
        decoded = True
    except ContractError:
        decoded = False
    assert decoded == schema_accepts(json_view("call", value, headers))
    if decoded and extra % width:
        with pytest.raises(ContractError):
            decode_frame(b"call", value + b"\x00" * (extra % width), list(headers.items()))
