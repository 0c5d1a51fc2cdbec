"""`group_consumed` (the decode inside `audio_input`) says exactly what `decode_batch` says, grouped per call.

The per-message path (`decode_frames` over KafkaSourceMessage) is the reference: for any batch of raw messages,
good and bad, the grouped path must give each call the same frames and start messages in the same order, and the
same dead letters.
"""

from __future__ import annotations

import orjson
from bytewax.connectors.kafka import KafkaSourceMessage
from confluent_kafka import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from bytewax.speechmatics.flows.decode import decode_batch, group_consumed
from bytewax.speechmatics.schemas.dead_letters import DeadLetter

CALLS = [b"call-a", b"call-b", b"call-\xff", b""]


def frame_message(key: bytes, seq: int, audio: bytes, end: bool = False) -> tuple:
    headers = [("seq", str(seq).encode()), ("sample_rate", b"16000"), ("end", b"1" if end else b"0")]
    return key, audio, headers


messages = st.one_of(
    st.builds(frame_message, st.sampled_from(CALLS), st.integers(0, 20), st.sampled_from([b"\x00\x01" * 160, b""]),
              st.booleans()),
    st.tuples(st.sampled_from(CALLS), st.one_of(st.none(), st.binary(max_size=9)),
              st.lists(st.tuples(st.sampled_from(["seq", "kind", "end", "x"]),
                                 st.sampled_from([b"1", b"start", b"frame", b"zz", b""])), max_size=4)),
    st.tuples(st.sampled_from(CALLS[:2]), st.sampled_from([orjson.dumps({"language": "en"}), b"{", b"[]"]),
              st.just([("kind", b"start")])),
)


def both(batch: list[tuple]) -> tuple[list[Message], list[KafkaSourceMessage]]:
    raw, wrapped = [], []
    for offset, (key, value, headers) in enumerate(batch):
        raw.append(Message(topic="calls.audio", partition=2, offset=offset, key=key, value=value,
                           headers=headers or None))
        wrapped.append(KafkaSourceMessage(key=key, value=value, topic="calls.audio", headers=headers or [],
                                          partition=2, offset=offset))
    return raw, wrapped


@settings(max_examples=300, deadline=None)
@given(st.lists(messages, max_size=30))
def test_grouped_decode_matches_the_per_message_decode(batch: list[tuple]) -> None:
    raw, wrapped = both(batch)
    grouped = group_consumed(raw)
    reference = decode_batch(wrapped)
    want_calls: dict[str, list] = {}
    for item in reference:
        if not isinstance(item, DeadLetter):
            want_calls.setdefault(item[0], []).append(item[1])
    got_calls = {item[0]: item[1] for item in grouped if not isinstance(item, DeadLetter)}
    assert got_calls == want_calls
    assert [x for x in grouped if isinstance(x, DeadLetter)] == [x for x in reference if isinstance(x, DeadLetter)]
    assert len({item[0] for item in grouped if not isinstance(item, DeadLetter)}) == len(got_calls)  # one per call


def test_a_calls_frames_of_one_batch_travel_together_in_offset_order() -> None:
    raw, _ = both([frame_message(b"a", 0, b"\x00\x00"), frame_message(b"b", 0, b"\x00\x00"),
                   frame_message(b"a", 1, b"\x00\x00"), (b"a", b"odd", [("seq", b"2")])])
    grouped = group_consumed(raw)
    calls = {item[0]: [f.seq for f in item[1]] for item in grouped if not isinstance(item, DeadLetter)}
    assert calls == {"a": [0, 1], "b": [0]}
    letters = [x for x in grouped if isinstance(x, DeadLetter)]
    assert len(letters) == 1 and "whole number" in letters[0].reason
    assert ("dlq.source.offset", "3") in letters[0].context
