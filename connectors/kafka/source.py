"""A Kafka source that hands each consumed batch to a converter as raw confluent-kafka messages.

Why not `bytewax.connectors.kafka.KafkaSource`: it builds one `KafkaSourceMessage` per message, and its
operator wrapper splits messages from errors with one more Python call per message. At 20 ms frames a process
reads hundreds of thousands of messages per second, and that per-message overhead was a third of the ingest
profile. Here the converter sees the batch as it came from `Consumer.consume` and returns whatever items the
dataflow should carry (decoded frames grouped per call, dead letters), so nothing is built twice.

Semantics are those of KafkaSource: one Bytewax partition per Kafka partition, offsets kept in Bytewax's
recovery state (no consumer group, no commits), resume from the snapshot's offset, EOF only when `tail` is off.
Consumer errors other than EOF are reported to `on_error` and skipped (never raised): a broker hiccup must not
stop the flow, and librdkafka retries on its own. Consumer lag is published about once a second in Bytewax's own
gauge (`bytewax_kafka_consumer_lag{step_id, topic, partition}`), from the high watermark of the last fetch, and
each partition's position goes to connectors/kafka/lag.py for the lag in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Generic, TypeVar

from bytewax.connectors.kafka import BYTEWAX_CONSUMER_LAG_GAUGE
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from bytewax.speechmatics.connectors.health import HEALTH
from bytewax.speechmatics.connectors.kafka.lag import POSITIONS

X = TypeVar("X")
#: Turns one consumed batch (raw `confluent_kafka.Message`s, none of them an error) into dataflow items.
Convert = Callable[[list[Any]], list[X]]
#: The most messages one read returns, by default (BWSM_SOURCE_BATCH_SIZE).
DEFAULT_BATCH_SIZE = 10_000
#: Seconds a busy, caught-up partition waits before it is read again, by default (BWSM_SOURCE_PACE_SECONDS).
DEFAULT_PACE = 0.05
#: A partition is paced only after a batch of at least this many messages: below it the flow is far from busy.
PACE_FROM_BATCH = 100
#: Told of a consumer error (topic, partition, the KafkaError); the message is skipped.
OnError = Callable[[str, int, KafkaError], None]


def _ignore(_topic: str, _partition: int, _error: KafkaError) -> None:
    return None


class _BatchPartition(StatefulSourcePartition[X, int], Generic[X]):
    """One Kafka partition: consume a batch, convert it, remember the next offset."""

    def __init__(self, step_id: str, config: dict, topic: str, partition: int, offset: int, batch_size: int,
                 convert: Convert[X], on_error: OnError, pace: timedelta) -> None:
        self._consumer = Consumer(config)
        self._tp = TopicPartition(topic, partition, offset)
        self._consumer.assign([self._tp])
        self._lag = BYTEWAX_CONSUMER_LAG_GAUGE.labels(step_id=step_id, topic=topic, partition=partition)
        self._lag_at = 0.0
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._batch_size = batch_size
        self._convert = convert
        self._on_error = on_error
        self._eof = False
        self._pace = pace
        self._awake: datetime | None = None

    def next_awake(self) -> datetime | None:
        return self._awake

    def next_batch(self) -> list[X]:
        if self._eof:
            raise StopIteration()
        msgs = self._consumer.consume(self._batch_size, 0.001)
        # Busy but caught up (a sizeable, not full batch): come back after `pace`, so the next batch holds several
        # frames of each call rather than one. Behind (a full batch): at once. Quiet (a small batch): at once too,
        # as per-item costs do not matter there and waiting would only add latency.
        n = len(msgs)
        paced = self._pace and PACE_FROM_BATCH <= n < self._batch_size
        self._awake = datetime.now(timezone.utc) + self._pace if paced else None
        if not msgs:
            return []
        good = msgs
        if any(m.error() is not None for m in msgs):  # rare: filter without paying for it on every batch
            good = []
            for msg in msgs:
                error = msg.error()
                if error is None:
                    good.append(msg)
                elif error.code() == KafkaError._PARTITION_EOF:
                    self._eof = True  # emit what came before it; StopIteration on the next call
                    break
                else:
                    self._on_error(self._topic, self._partition, error)
        if good:
            self._offset = good[-1].offset() + 1
            self._report_lag(good[-1])
            return self._convert(good)
        return []

    def _report_lag(self, last: Any) -> None:
        now = time.monotonic()
        if now - self._lag_at < 1.0:
            return
        self._lag_at = now
        _low, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
        if high >= 0:
            self._lag.set(max(0, high - self._offset))
        _kind, written_ms = last.timestamp()
        POSITIONS.read(self._topic, self._partition, self._offset, high, max(0, written_ms) / 1000, time.time())

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        self._consumer.close()


class BatchKafkaSource(FixedPartitionedSource[X, int], Generic[X]):
    """Kafka topics as a Bytewax source whose items are made by `convert` from whole consumed batches.

    Args:
        brokers: Bootstrap servers.
        topics: Topics to read (every partition of each).
        convert: Consumed batch -> items (called in the partition's worker, once per batch).
        tail: Keep reading at the end of the topics (False: EOF there, for benchmarks and backfills).
        starting_offset: Where a partition without recovery state starts (`OFFSET_BEGINNING` by default).
        add_config: librdkafka properties for every consumer (security, tuning); they win over ours.
        batch_size: The most messages one `consume` returns.
        on_error: Told of consumer errors, which are skipped.
        pace: How long a busy partition that is caught up (its last batch held PACE_FROM_BATCH messages or more,
            but not `batch_size`) waits before it is read again. Every item costs the dataflow a routing step and
            every call's state a wake-up, so reading a busy partition 20 times a second instead of 1000 times turns
            one frame per call per item into several, at the price of at most that much latency (small against
            30 s chunks). A partition that is behind, or quiet, is read again at once.
    """

    def __init__(self, brokers: Sequence[str], topics: Iterable[str], convert: Convert[X], *, tail: bool = True,
                 starting_offset: int = OFFSET_BEGINNING, add_config: dict | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE,
                 on_error: OnError = _ignore, pace: float = 0.0) -> None:
        if isinstance(brokers, str) or isinstance(topics, str):
            raise TypeError("brokers and topics must be lists of strings, not a string")
        self._brokers = list(brokers)
        self._topics = list(topics)
        self._convert = convert
        self._tail = tail
        self._starting_offset = starting_offset
        self._add_config = dict(add_config or {})
        self._batch_size = batch_size
        self._on_error = on_error
        self._pace = timedelta(seconds=pace)

    def list_parts(self) -> list[str]:
        client = AdminClient({"bootstrap.servers": ",".join(self._brokers), **self._add_config})
        parts = []
        for topic in self._topics:  # one at a time, so a broker that auto-creates topics does so
            meta = client.list_topics(topic).topics[topic]
            if meta.error is not None:
                raise RuntimeError(f"cannot list the partitions of Kafka topic {topic!r}: {meta.error.str()}")
            parts.extend(f"{p}-{topic}" for p in sorted(meta.partitions))
        return parts

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _BatchPartition[X]:
        index, topic = for_part.split("-", 1)
        config = {
            "bootstrap.servers": ",".join(self._brokers),
            "group.id": "BYTEWAX_IGNORED",  # offsets live in Bytewax's recovery state, not in a group
            "enable.auto.commit": "false",
            "enable.partition.eof": str(not self._tail).lower(),
            **self._add_config,
        }
        offset = self._starting_offset if resume_state is None else resume_state
        HEALTH.partitions_built()
        return _BatchPartition(step_id, config, topic, int(index), offset, self._batch_size, self._convert,
                               self._on_error, self._pace)
