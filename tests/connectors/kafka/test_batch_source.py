"""`audio_input` against a real broker: every message read once, decoded in the source, offsets resumed exactly."""

from __future__ import annotations

from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main
from confluent_kafka import Producer

from bytewax.speechmatics.flows.decode import audio_input
from bytewax.speechmatics.schemas.dead_letters import DeadLetter

pytestmark = pytest.mark.kafka


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes | None, list]], partitions: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for i, (key, value, headers) in enumerate(messages):
        producer.produce(topic, value, key, partition=i % partitions, headers=headers)
    assert producer.flush(30) == 0


def frame(call: bytes, seq: int) -> tuple[bytes, bytes, list]:
    return call, bytes([seq % 256]) * 64, [("seq", str(seq).encode())]


def read(bootstrap: str, topic: str, recovery: RecoveryConfig | None = None) -> tuple[list, list]:
    flow = Dataflow("source_test")
    frames = audio_input("audio_in", flow, brokers=[bootstrap], topics=[topic], tail=False, batch_size=7)
    oks: list = []
    errs: list = []
    op.output("oks", frames.oks, TestingSink(oks))
    op.output("errs", frames.errs, TestingSink(errs))
    run_main(flow, epoch_interval=None, recovery_config=recovery)
    return oks, errs


def by_call(oks: list) -> dict[str, list[int]]:
    calls: dict[str, list[int]] = {}
    for call_id, run in oks:
        calls.setdefault(call_id, []).extend(f.seq for f in run)
    return calls


def test_every_message_is_read_once_and_bad_ones_become_letters(kafka_bootstrap: str, make_topic) -> None:  # noqa: ANN001
    topic = make_topic("audio", partitions=3)
    messages = [frame(b"call-%d" % (i % 4), i // 4) for i in range(120)]
    messages[50] = (b"call-x", b"odd", [("seq", b"1")])
    messages[77] = (b"call-y", None, [("seq", b"1")])
    produce(kafka_bootstrap, topic, messages, 3)
    oks, errs = read(kafka_bootstrap, topic)
    calls = by_call(oks)
    assert sorted(calls) == ["call-0", "call-1", "call-2", "call-3"]
    # each call's frames came through partitions in order; across partitions the chunker reorders by seq
    assert sum(len(s) for s in calls.values()) == 118 and all(len(set(s)) == len(s) for s in calls.values())
    assert all(isinstance(e, DeadLetter) for e in errs) and len(errs) == 2
    reasons = sorted(e.reason for e in errs)
    assert "whole number" in reasons[0] + reasons[1] and "tombstone" in reasons[0] + reasons[1]


def test_a_resumed_run_reads_only_what_it_had_not(kafka_bootstrap: str, make_topic, tmp_path: Path) -> None:  # noqa: ANN001
    topic = make_topic("audio", partitions=2)
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    produce(kafka_bootstrap, topic, [frame(b"c", i) for i in range(30)], 2)
    first, _ = read(kafka_bootstrap, topic, recovery)
    produce(kafka_bootstrap, topic, [frame(b"c", i) for i in range(30, 50)], 2)
    second, _ = read(kafka_bootstrap, topic, recovery)
    assert sorted(by_call(first)["c"]) == list(range(30))
    assert sorted(by_call(second)["c"]) == list(range(30, 50))
