"""Dead letters always fit the producer's limit, and decode never raises whatever a producer sends."""

from __future__ import annotations

import hashlib

from bytewax.connectors.kafka import KafkaSourceMessage
from hypothesis import given, settings
from hypothesis import strategies as st

from bytewax.speechmatics.flows.decode import decode_message
from bytewax.speechmatics.schemas.dead_letters import DEFAULT_MAX_RECORD_BYTES, DeadLetter, bad_message, fit
from bytewax.speechmatics.schemas.frames import AudioFrame


def wire_bytes(letter: DeadLetter) -> int:
    """The record's size as librdkafka counts it, without the framing (key + value + header names and values)."""
    return (len(letter.key or b"") + len(letter.value or b"")
            + sum(len(name.encode()) + len(value) for name, value in letter.kafka_headers()))


def test_a_letter_that_fits_is_kept_byte_for_byte() -> None:
    letter = bad_message("bad", "decode", b"k", b"v" * 1000, [("seq", b"1")], "calls.audio", 0, 7)
    assert letter.value == b"v" * 1000 and dict(letter.context).get("dlq.truncated") is None


def test_an_oversized_value_is_cut_and_described() -> None:
    value = bytes(range(256)) * 8000  # 2,048,000 bytes
    letter = bad_message("bad", "decode", b"call-1", value, [("seq", b"1")], "calls.audio", 2, 41)
    context = dict(letter.context)
    assert wire_bytes(letter) <= DEFAULT_MAX_RECORD_BYTES - 512
    assert context["dlq.truncated"] == "value"
    assert context["dlq.original.size"] == str(len(value))
    assert context["dlq.original.sha256"] == hashlib.sha256(value).hexdigest()
    assert (context["dlq.source.partition"], context["dlq.source.offset"]) == ("2", "41")
    assert value.startswith(letter.value) and len(letter.value) > 900_000  # as much of the original as fits
    assert letter.key == b"call-1" and letter.headers == (("seq", b"1"),)


def test_a_huge_key_and_huge_headers_are_cut_too() -> None:
    letter = fit(DeadLetter("r" * 50_000, "decode", key=b"k" * 600_000, value=b"v" * 10,
                            headers=tuple((f"h{i}", b"x" * 1000) for i in range(700))), limit=100_000)
    assert wire_bytes(letter) <= 100_000
    assert dict(letter.context)["dlq.truncated"] == "value,key,headers"
    assert letter.key == b"k" * 256 and letter.headers == () and len(letter.reason) < 5000


header_names = st.one_of(st.sampled_from(["seq", "sample_rate", "encoding", "channels", "end"]), st.text(max_size=8))
header_values = st.one_of(st.none(), st.binary(max_size=30),
                          st.sampled_from([b"0", b"1", b"16000", b"8000", b"2", b"mulaw", b"", b"99999"]))


@settings(max_examples=400, deadline=None)
@given(
    key=st.one_of(st.none(), st.binary(max_size=40), st.binary(min_size=3000, max_size=9000)),
    value=st.one_of(st.none(), st.binary(max_size=70), st.binary(min_size=3000, max_size=9000)),
    headers=st.one_of(st.none(), st.lists(st.tuples(header_names, header_values), max_size=8)),
    limit=st.sampled_from([4096, 6000, DEFAULT_MAX_RECORD_BYTES]),
)
def test_decode_returns_a_frame_or_a_letter_that_fits(key, value, headers, limit: int) -> None:  # noqa: ANN001
    msg = KafkaSourceMessage(key=key, value=value, topic="calls.audio", headers=headers, partition=1, offset=9)
    got = decode_message(msg, max_frame_seconds=0.05, max_record_bytes=limit)
    if isinstance(got, AudioFrame):
        assert key and value is not None and len(got.audio) == len(value) and len(value) <= 0.05 * 48000 * 4
        return
    assert isinstance(got, DeadLetter) and got.reason and got.stage == "decode"
    assert wire_bytes(got) <= limit - 512
    assert ("dlq.source.offset", "9") in got.context
