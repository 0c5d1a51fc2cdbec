"""The flow's producing sink against a real broker: dead letters never stop the flow, transcript events do."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, KafkaException

from bytewax.speechmatics.connectors.kafka.config import KafkaSettings
from bytewax.speechmatics.connectors.kafka.sink import OutMessage, ProducingSink
from bytewax.speechmatics.connectors.metrics import LOST_LETTERS

pytestmark = pytest.mark.kafka


def read_all(bootstrap: str, topic: str, expected: int, deadline_s: float = 30.0) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"sink-test-{topic}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got = []
    try:
        for _ in range(int(deadline_s / 0.5)):
            got += [m for m in consumer.consume(100, 0.5) if not m.error()]
            if len(got) >= expected:
                break
    finally:
        consumer.close()
    return got


def test_a_refused_dead_letter_is_counted_and_the_batch_goes_on(kafka_bootstrap: str, make_topic) -> None:  # noqa: ANN001
    topic = make_topic("sink")
    sink = ProducingSink(KafkaSettings(kafka_bootstrap), {"message.max.bytes": 10_000})
    part = sink.build("out", 0, 1)
    before = LOST_LETTERS.labels(kind="dlq_decode")._value.get()
    too_big = OutMessage(topic, b"bad", b"x" * 20_000, "dlq_decode", best_effort=True)
    event = OutMessage(topic, b"call", b'{"ok": 1}', "batch_segment")
    part.write_batch([too_big, event])
    part.close()
    assert LOST_LETTERS.labels(kind="dlq_decode")._value.get() == before + 1
    assert [m.value() for m in read_all(kafka_bootstrap, topic, 1)] == [b'{"ok": 1}']


def test_a_refused_transcript_event_still_stops_the_flow(kafka_bootstrap: str, make_topic) -> None:  # noqa: ANN001
    topic = make_topic("sink")
    part = ProducingSink(KafkaSettings(kafka_bootstrap), {"message.max.bytes": 10_000}).build("out", 0, 1)
    with pytest.raises(KafkaException):
        part.write_batch([OutMessage(topic, b"call", b"x" * 20_000, "batch_segment")])
    assert ProducingSink(config={"message.max.bytes": 10_000}).max_record_bytes == 10_000
