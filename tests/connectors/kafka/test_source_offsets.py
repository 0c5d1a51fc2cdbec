"""The batch source's offset policy against a real broker: a resume offset that retention deleted, partitions added
while the flow runs.

Retention is simulated the way the broker applies it: `AdminClient.delete_records` moves the partition's log start,
and a fetch below it answers OFFSET_OUT_OF_RANGE, exactly what a flow down longer than `retention.ms` meets.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions
from kafka_source_support import produce_numbered, sample, source_log, wait_for

from bytewax.speechmatics.connectors.kafka.source import BatchKafkaSource
from bytewax.speechmatics.flows.decode import audio_input

pytestmark = pytest.mark.kafka


def read_offsets(bootstrap: str, topic: str, recovery: RecoveryConfig, **kwargs: Any) -> list[tuple[int, int]]:
    """(partition, offset) of every frame one run of `audio_input` reads, to the end of the topic."""
    flow = Dataflow("source_offsets_test")
    frames = audio_input("audio_in", flow, brokers=[bootstrap], topics=[topic], tail=False, batch_size=40, **kwargs)
    out: list = []
    op.output("oks", frames.oks, TestingSink(out))
    run_main(flow, epoch_interval=None, recovery_config=recovery)
    return sorted((f.partition, f.offset) for _call, run in out for f in run)


def delete_before(bootstrap: str, topic: str, partition: int, offset: int) -> None:
    """What retention does to a partition: everything before `offset` is gone."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_records([TopicPartition(topic, partition, offset)]).values():
        future.result(30)


def add_partitions(bootstrap: str, topic: str, total: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_partitions([NewPartitions(topic, total)]).values():
        future.result(30)


def causes(exc: BaseException) -> str:
    text = []
    while exc is not None:
        text.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(text)


@pytest.fixture
def recovery(tmp_path: Path) -> RecoveryConfig:
    init_db_dir(tmp_path, 1)
    return RecoveryConfig(str(tmp_path))


def test_a_resume_offset_that_retention_deleted_reads_on_from_the_earliest_retained_one(
        kafka_bootstrap: str, make_topic, recovery: RecoveryConfig) -> None:  # noqa: ANN001
    topic = make_topic("oor")
    produce_numbered(kafka_bootstrap, topic, 100)
    assert read_offsets(kafka_bootstrap, topic, recovery) == [(0, o) for o in range(100)]  # snapshot: offset 100
    produce_numbered(kafka_bootstrap, topic, 100, first_seq=100)  # offsets 100..199 while the flow is down
    delete_before(kafka_bootstrap, topic, 0, 150)  # ... and retention deletes 100..149
    with source_log() as lines:
        resumed = read_offsets(kafka_bootstrap, topic, recovery)
    # librdkafka's default (latest) jumped to the end here and read nothing: 50 retained frames silently lost
    assert resumed == [(0, o) for o in range(150, 200)]
    assert sample("bwsm_source_offsets_skipped_total", topic=topic, partition=0) == 50
    warnings = [line for line in lines if line.startswith("WARNING") and "skipped offsets 100..149 (50)" in line]
    assert len(warnings) == 1 and f"topic {topic!r} partition 0" in warnings[0], lines
    # the reset position is what the next snapshot holds: a later run neither skips nor repeats
    produce_numbered(kafka_bootstrap, topic, 5, first_seq=200)
    assert read_offsets(kafka_bootstrap, topic, recovery) == [(0, o) for o in range(200, 205)]
    assert sample("bwsm_source_offsets_skipped_total", topic=topic, partition=0) == 50


def test_the_error_policy_stops_the_flow_naming_the_partition_and_what_is_gone(
        kafka_bootstrap: str, make_topic, recovery: RecoveryConfig) -> None:  # noqa: ANN001
    topic = make_topic("oor")
    produce_numbered(kafka_bootstrap, topic, 30)
    read_offsets(kafka_bootstrap, topic, recovery)
    produce_numbered(kafka_bootstrap, topic, 30, first_seq=30)
    delete_before(kafka_bootstrap, topic, 0, 40)
    with pytest.raises(Exception) as info:  # noqa: PT011 - Bytewax wraps it; the cause is checked below
        read_offsets(kafka_bootstrap, topic, recovery, offset_reset="error")
    assert (f"topic {topic!r} partition 0: offset 30 is no longer in the topic (it holds 40..59)"
            in causes(info.value))
    assert sample("bwsm_source_offsets_skipped_total", topic=topic, partition=0) == 0


def test_partitions_added_while_running_are_reported_at_once(kafka_bootstrap: str, make_topic) -> None:  # noqa: ANN001
    topic = make_topic("grow")
    source = BatchKafkaSource([kafka_bootstrap], [topic], lambda msgs: msgs, partition_check=0.1)
    part = source.build_part("grow_test", source.list_parts()[0], None)
    try:
        add_partitions(kafka_bootstrap, topic, 3)
        with source_log() as lines:
            wait_for(lambda: sample("bwsm_source_partitions_unread", topic=topic) == 2, 30,
                     "the gauge of unread partitions", step=part.next_batch)
            more_checks = time.monotonic() + 0.5  # several more checks: new partitions are reported once
            while time.monotonic() < more_checks:
                part.next_batch()
    finally:
        part.close()
    reported = [line for line in lines if "new partition" in line]
    assert len(reported) == 1 and topic in reported[0] and "[1, 2]" in reported[0], lines


def test_partitions_added_while_running_are_read_from_their_start_after_a_restart(
        kafka_bootstrap: str, make_topic, recovery: RecoveryConfig) -> None:  # noqa: ANN001
    topic = make_topic("grow")
    produce_numbered(kafka_bootstrap, topic, 10)
    assert read_offsets(kafka_bootstrap, topic, recovery) == [(0, o) for o in range(10)]
    add_partitions(kafka_bootstrap, topic, 2)
    produce_numbered(kafka_bootstrap, topic, 5, partition=1, key=b"d")
    produce_numbered(kafka_bootstrap, topic, 5, first_seq=10)
    assert read_offsets(kafka_bootstrap, topic, recovery) == [(0, o) for o in range(10, 15)] + [
        (1, o) for o in range(5)]


def test_a_running_flow_that_falls_behind_retention_reads_on_from_the_earliest_retained_offset(
        kafka_bootstrap: str, make_topic) -> None:  # noqa: ANN001
    topic = make_topic("behind")
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "batch.num.messages": 10})
    for _ in range(300):  # small record batches, so the consumer can be kept from fetching far ahead
        producer.produce(topic, bytes(64), b"c", partition=0)
    assert producer.flush(30) == 0
    source = BatchKafkaSource([kafka_bootstrap], [topic], lambda msgs: [m.offset() for m in msgs], batch_size=10,
                              add_config={"queued.min.messages": 1, "max.partition.fetch.bytes": 512,
                                          "fetch.queue.backoff.ms": 10})
    part = source.build_part("behind_test", f"0-{topic}", None)
    read: list[int] = []
    try:
        wait_for(lambda: read, 30, "a first read", step=lambda: read.extend(part.next_batch()))
        delete_before(kafka_bootstrap, topic, 0, 200)  # retention overtakes the partition while it is read
        with source_log() as lines:
            wait_for(lambda: read[-1] == 299, 30, "the end of the partition",
                     step=lambda: read.extend(part.next_batch()))
    finally:
        part.close()
    last_before = max(o for o in read if o < 200)
    assert read == list(range(last_before + 1)) + list(range(200, 300))
    skipped = 200 - (last_before + 1)
    assert skipped > 0 and sample("bwsm_source_offsets_skipped_total", topic=topic, partition=0) == skipped
    assert [line for line in lines if f"skipped offsets {last_before + 1}..199 ({skipped})" in line], lines
