"""The chunker operator in a dataflow: bad frames leave as dead letters, the call goes on, metrics count."""

from __future__ import annotations

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main
from prometheus_client import REGISTRY

from bytewax.speechmatics.flows.chunker import chunk_calls
from bytewax.speechmatics.flows.chunking import ChunkConfig
from bytewax.speechmatics.flows.decode import decode_frames
from bytewax.speechmatics.schemas.chunks import CallStarted
from bytewax.speechmatics.schemas.frames import AudioFrame, encode_frame


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def as_message(frame: AudioFrame, offset: int) -> KafkaSourceMessage:
    key, value, headers = encode_frame(frame)
    return KafkaSourceMessage(key, value, topic="calls.audio", headers=headers, offset=offset, partition=1)


def test_refused_frames_come_out_as_dead_letters_beside_the_chunks() -> None:
    frames = [
        AudioFrame("a", 0, b"\x01\x00" * 4000, 8000),
        AudioFrame("a", 1, b"\x02" * 4000, 8000, "mulaw"),  # format change: refused
        AudioFrame("a", 3, b"\x03\x00" * 4000, 8000),  # seq 2 is lost (and refused seq 1 is missing too)
        AudioFrame("a", 0, b"\x01\x00" * 4000, 8000),  # a replay: dropped
        AudioFrame("a", 4, b"\x04\x00" * 100, 8000, end=True),
        AudioFrame("a", 5, b"\x05\x00" * 100, 8000),  # after the end: refused
    ]
    before = {name: metric(name, **labels) for name, labels in [
        ("bwsm_dead_letters_total", {"stage": "chunker"}), ("bwsm_chunker_duplicate_frames_total", {}),
        ("bwsm_chunker_gap_frames_total", {}), ("bwsm_chunks_total", {"reason": "end"}),
        ("bwsm_chunker_frames_total", {})]}
    flow = Dataflow("chunker_dead_letters")
    source = TestingSource([as_message(f, i) for i, f in enumerate(frames)])
    decoded = decode_frames("decode", op.input("in", flow, source))
    split = chunk_calls("chunker", decoded.oks, ChunkConfig(reorder_window_frames=1))
    chunks, dead = [], []
    op.output("chunks", split.oks, TestingSink(chunks))
    op.output("dead", split.errs, TestingSink(dead))
    run_main(flow)
    assert [(d.key, d.stage, dict(d.context)["dlq.source.offset"]) for d in dead] == [(b"a", "chunker", "1"),
                                                                                     (b"a", "chunker", "5")]
    assert "format changed" in dead[0].reason and "after the call ended" in dead[1].reason
    started, (key, chunk) = chunks
    assert started == ("a", CallStarted("a"))  # the call is announced before its first chunk
    assert key == "a" and chunk.span.last and chunk.span.gaps_filled == 2
    assert chunk.new_audio == b"\x01\x00" * 4000 + b"\0\0" * 8000 + b"\x03\x00" * 4000 + b"\x04\x00" * 100
    assert chunk.source == (("calls.audio", 1, 0, 4),)
    assert metric("bwsm_dead_letters_total", stage="chunker") - before["bwsm_dead_letters_total"] == 2
    assert metric("bwsm_chunker_duplicate_frames_total") - before["bwsm_chunker_duplicate_frames_total"] == 1
    assert metric("bwsm_chunker_gap_frames_total") - before["bwsm_chunker_gap_frames_total"] == 2
    assert metric("bwsm_chunks_total", reason="end") - before["bwsm_chunks_total"] == 1
    assert metric("bwsm_chunker_frames_total") - before["bwsm_chunker_frames_total"] == 3
