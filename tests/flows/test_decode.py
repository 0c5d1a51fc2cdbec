"""Decode step: Kafka source messages -> frames keyed by call id, or dead letters that keep the message."""

from __future__ import annotations

import bytewax.operators as op
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from bytewax.speechmatics.flows.decode import decode_frames, decode_message
from bytewax.speechmatics.schemas.dead_letters import DeadLetter
from bytewax.speechmatics.schemas.frames import AudioFrame, encode_frame


def message(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]], offset: int = 5) -> KafkaSourceMessage:
    return KafkaSourceMessage(key=key, value=value, topic="calls.audio", headers=headers, offset=offset, partition=2)


def test_a_good_message_becomes_a_frame_with_its_origin() -> None:
    sent = AudioFrame("call-9", 4, b"\x01\x02" * 80, 8000, "pcm_s16le", 1, end=True)
    got = decode_message(message(*encode_frame(sent)))
    assert isinstance(got, AudioFrame)
    assert (got.call_id, got.seq, got.audio, got.sample_rate, got.end) == ("call-9", 4, sent.audio, 8000, True)
    assert (got.topic, got.partition, got.offset) == ("calls.audio", 2, 5)


@pytest.mark.parametrize("key, value, headers, says", [
    (b"c", b"\x01\x02\x03", [("seq", b"0")], "not a whole number of 2-byte samples"),
    (b"c", b"\x01\x02", [], "'seq' is missing"),
    (None, b"\x01\x02", [("seq", b"0")], "no key"),
    (b"c", b"\x01\x02", [("seq", b"0"), ("sample_rate", b"44100")], "sample_rate"),
    (b"c", b"\x01", [("seq", b"0"), ("encoding", b"mulaw"), ("channels", b"2")], "2-byte samples"),
])
def test_a_bad_message_becomes_a_dead_letter_kept_byte_for_byte(key, value, headers, says: str) -> None:
    got = decode_message(message(key, value, headers, offset=41))
    assert isinstance(got, DeadLetter)
    assert says in got.reason and "calls.audio[2]@41" in got.reason
    assert (got.stage, got.key, got.value, got.headers) == ("decode", key, value, tuple(headers))
    assert ("dlq.source.offset", "41") in got.context


def test_the_decode_operator_keys_frames_by_call_and_splits_off_dead_letters() -> None:
    good = [message(*encode_frame(AudioFrame(f"call-{i % 2}", i // 2, b"\0\0" * 10)), offset=i) for i in range(4)]
    bad = message(b"call-0", b"\0", [("seq", b"9")], offset=99)
    flow = Dataflow("decode_test")
    decoded = decode_frames("decode", op.input("in", flow, TestingSource([*good[:2], bad, *good[2:]])))
    frames, dead = [], []
    op.output("frames", decoded.oks, TestingSink(frames))
    op.output("dead", decoded.errs, TestingSink(dead))
    run_main(flow)
    assert [(k, f.seq, f.offset) for k, f in frames] == [("call-0", 0, 0), ("call-1", 0, 1), ("call-0", 1, 2),
                                                        ("call-1", 1, 3)]
    assert [d.context for d in dead] == [bad_context(99)]


def bad_context(offset: int) -> tuple[tuple[str, str], ...]:
    return (("dlq.source.topic", "calls.audio"), ("dlq.source.partition", "2"), ("dlq.source.offset", str(offset)))


@pytest.mark.parametrize("value, headers, says", [
    (b"", [("seq", b"3")], "empty but not the call's end frame"),
    (None, [("seq", b"3")], "null value (a tombstone is not a frame)"),
    (None, [("seq", b"3"), ("end", b"1")], "null value"),
    (b"\0\0" * 32001, [("seq", b"3")], "64002 bytes (2.000 s of audio), more than the 2 s limit"),
    (b"\0" * 2_000_000, [("seq", b"3")], "2000000 bytes (62.500 s of audio), more than the 2 s limit"),
])
def test_frames_the_contract_bounds_are_dead_lettered(value: bytes | None, headers, says: str) -> None:
    got = decode_message(message(b"call-b", value, headers))
    assert isinstance(got, DeadLetter) and says in got.reason and "call-b" in got.reason


def test_an_empty_end_frame_and_a_frame_at_the_limit_are_frames() -> None:
    assert decode_message(message(b"c", b"", [("seq", b"4"), ("end", b"")])).end is True
    at_limit = decode_message(message(b"c", b"\0\0" * 16000, [("seq", b"0")]), max_frame_seconds=1.0)
    assert isinstance(at_limit, AudioFrame)
    over = decode_message(message(b"c", b"\0\0" * 16001, [("seq", b"0")]), max_frame_seconds=1.0)
    assert isinstance(over, DeadLetter) and "the 1 s limit" in over.reason
