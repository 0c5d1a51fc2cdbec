"""A Kafka source that hands each consumed batch to a converter as raw confluent-kafka messages.

Why not `bytewax.connectors.kafka.KafkaSource`: it builds one `KafkaSourceMessage` per message, and its
operator wrapper splits messages from errors with one more Python call per message. At 20 ms frames a process
reads hundreds of thousands of messages per second, and that per-message overhead was a third of the ingest
profile. Here the converter sees the batch as it came from `Consumer.consume` and returns whatever items the
dataflow should carry (decoded frames grouped per call, dead letters), so nothing is built twice.

Semantics are those of KafkaSource: one Bytewax partition per Kafka partition, offsets kept in Bytewax's
recovery state (no consumer group, no commits), resume from the snapshot's offset, EOF only when `tail` is off.
Consumer lag is published about once a second in Bytewax's own gauge (`bytewax_kafka_consumer_lag{step_id, topic,
partition}`), from the high watermark of the last fetch, whether or not the read returned messages (a partition
that has caught up shows 0, not the lag of its last busy read); each partition's position also goes to
connectors/kafka/lag.py for the lag in seconds.

Offsets that no longer exist (the policy `offset_reset`, BWSM_SOURCE_OFFSET_RESET, `earliest` by default): after
downtime or lag longer than the topic's retention, the offset to read next has been deleted. librdkafka would then
apply its `auto.offset.reset` silently (its default, `latest`, jumps to the end and skips all retained audio). So
the consumers run with `auto.offset.reset=error`: librdkafka stops the partition and reports
`_AUTO_OFFSET_RESET` with the offset that failed, and the source applies the policy itself: it asks the broker for
the partition's watermarks, re-assigns at the low (`earliest`) or high (`latest`) one, logs a warning naming the
partition and the offsets skipped, and counts them in `bwsm_source_offsets_skipped_total{topic, partition}`;
`error` stops the flow. Why this rather than comparing the resume offset with the low watermark when a partition
is assigned: that sees only the resume at start, while the same loss happens to a running flow that lags behind
retention, and the offset librdkafka reports is the exact one it failed to fetch, whenever that happens.

Consumer errors (per message, and the client's own through `error_cb`, which is where librdkafka reports
authentication failures, a deleted topic and brokers going down): credentials or ACLs refused, errors librdkafka
marks fatal, and a topic or partition the broker confirms does not exist stop the flow: `next_batch` raises
KafkaSourceError, one line naming the topic, partition and cause, and the process exits non-zero. Every other
error is retriable (librdkafka retries on its own): it goes to `on_error` (which counts it) and is logged at most
once per LOG_EVERY seconds per partition, with the number held back.

Partitions added to a topic while the flow runs are not read until it restarts (Bytewax's partitioned sources
are fixed at start): every process checks the topics' partitions every `partition_check` seconds and reports new
ones at once, a warning naming them and the gauge `bwsm_source_partitions_unread{topic}`. A restarted flow reads
them from `starting_offset` (the beginning, by default), so nothing is lost that the topic still retains.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Generic, TypeVar

from bytewax.connectors.kafka import BYTEWAX_CONSUMER_LAG_GAUGE
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from bytewax.speechmatics.connectors.health import HEALTH
from bytewax.speechmatics.connectors.kafka.lag import POSITIONS
from bytewax.speechmatics.connectors.kafka.source_rules import (
    DEFAULT_OFFSET_RESET,
    GONE,
    LogLimit,
    is_refused,
    offset_reset_policy,
    pace_after,
    reset_to,
)
from bytewax.speechmatics.connectors.metrics import SOURCE_OFFSETS_SKIPPED, SOURCE_PARTITIONS_UNREAD
from bytewax.speechmatics.schemas.errors import BytewaxSpeechmaticsError

log = logging.getLogger(__name__)

X = TypeVar("X")
#: Turns one consumed batch (raw `confluent_kafka.Message`s, none of them an error) into dataflow items.
Convert = Callable[[list[Any]], list[X]]
#: The most messages one read returns, by default (BWSM_SOURCE_BATCH_SIZE).
DEFAULT_BATCH_SIZE = 10_000
#: Seconds a busy, caught-up partition waits before it is read again, by default (BWSM_SOURCE_PACE_SECONDS).
DEFAULT_PACE = 0.05
#: Seconds between two checks of the topics' partition counts, by default (one check per process).
DEFAULT_PARTITION_CHECK = 30.0
#: Seconds between two log lines about a partition's retriable errors (each error is counted all the same).
LOG_EVERY = 10.0
#: Seconds a metadata or watermark request to the broker may block the partition's worker.
BROKER_TIMEOUT = 5.0
#: Told of a retriable consumer error (topic, partition, the KafkaError); the source reads on.
OnError = Callable[[str, int, KafkaError], None]


class KafkaSourceError(BytewaxSpeechmaticsError, RuntimeError):
    """Reading on cannot help (credentials or ACLs refused, the topic is gone, an offset is gone under the `error`
    policy): the flow stops with this one-line message."""


def _ignore(_topic: str, _partition: int, _error: KafkaError) -> None:
    return None


def _stop(message: str) -> KafkaSourceError:
    """The error that stops the flow, logged as the one line that says why (Bytewax adds its traceback)."""
    log.error("%s", message)
    return KafkaSourceError(message)


@dataclass(frozen=True)
class _Reading:
    """What every partition of one source reads with."""

    convert: Convert
    batch_size: int
    pace: timedelta
    offset_reset: str
    on_error: OnError
    log_every: float


class _NewPartitions:
    """The partitions each topic had when the flow started; reports the ones added since, once per process.

    Shared by the source's partitions in one process (worker threads), so one of them asks the broker per interval.
    """

    def __init__(self, topics: Iterable[str], every: float) -> None:
        self._every = every
        self._topics = list(topics)
        self._known: dict[str, set[int]] = {}
        self._reported: dict[str, set[int]] = {}
        self._lock = threading.Lock()
        self._next = 0.0

    def listed(self, topic: str, partitions: Iterable[int]) -> None:
        with self._lock:
            self._known.setdefault(topic, set()).update(partitions)

    def check(self, consumer: Consumer) -> None:
        """Ask the broker for the topics' partitions when the interval has passed (a failed ask waits for the next)."""
        now = time.monotonic()
        if self._every <= 0 or now < self._next:  # the usual case, without the lock
            return
        with self._lock:
            if now < self._next:
                return
            self._next = now + self._every
        for topic in self._topics:
            try:
                meta = consumer.list_topics(topic, timeout=BROKER_TIMEOUT).topics.get(topic)
            except KafkaException:
                return
            if meta is None or meta.error is not None:
                continue
            with self._lock:  # the partitions listed at start; without a listing here, the first answer is the base
                known = self._known.setdefault(topic, set(meta.partitions))
                unread = set(meta.partitions) - known
                new = sorted(unread - self._reported.setdefault(topic, set()))
                self._reported[topic] |= unread
            SOURCE_PARTITIONS_UNREAD.labels(topic=topic).set(len(unread))
            if new:
                log.warning("kafka source: topic %s has %d new partition(s) %s that this flow does not read until "
                            "it restarts (%d unread in all)", topic, len(new), new, len(unread))


class _BatchPartition(StatefulSourcePartition[X, int], Generic[X]):
    """One Kafka partition: consume a batch, convert it, remember the next offset."""

    def __init__(self, step_id: str, config: dict, topic: str, partition: int, offset: int, reading: _Reading,
                 watch: _NewPartitions) -> None:
        self._user_error_cb = config.get("error_cb")
        self._client_errors: list[KafkaError] = []
        # Our policy, not librdkafka's: it must report an offset it cannot fetch (see the module docstring).
        self._consumer = Consumer({**config, "auto.offset.reset": "error", "error_cb": self._on_client_error})
        self._tp = TopicPartition(topic, partition, offset)
        self._consumer.assign([self._tp])
        self._lag = BYTEWAX_CONSUMER_LAG_GAUGE.labels(step_id=step_id, topic=topic, partition=partition)
        self._lag_at = 0.0
        self._topic = topic
        self._partition = partition
        self._where = f"topic {topic!r} partition {partition}"
        self._offset = offset
        self._read_ts = 0.0  # Kafka timestamp (s) of the last message read, for the lag in seconds
        self._reading = reading
        self._watch = watch
        self._errors_log = LogLimit(reading.log_every)
        self._reset_from: int | None = None  # an out-of-range offset whose reset could not be completed yet
        self._eof = False
        self._awake: datetime | None = None

    def next_awake(self) -> datetime | None:
        return self._awake

    def next_batch(self) -> list[X]:
        if self._eof:
            HEALTH.finished(self._where)
            raise StopIteration()
        HEALTH.polled(self._where)
        reading = self._reading
        if self._reset_from is not None:
            self._reset(self._reset_from)
        msgs = self._consumer.consume(reading.batch_size, 0.001)
        delay = pace_after(len(msgs), reading.batch_size, reading.pace)
        self._awake = datetime.now(timezone.utc) + delay if delay is not None else None
        good = msgs
        reset_from = None
        if any(m.error() is not None for m in msgs):  # rare: filter without paying for it on every batch
            good = []
            for msg in msgs:
                error = msg.error()
                if error is None:
                    good.append(msg)
                elif error.code() == KafkaError._PARTITION_EOF:
                    self._eof = True  # emit what came before it; StopIteration on the next call
                    break
                elif error.code() == KafkaError._AUTO_OFFSET_RESET:
                    reset_from = msg.offset()
                    break  # librdkafka stopped fetching the partition at this offset
                else:
                    self._on_error(error)
        for error in self._take_client_errors():
            self._on_error(error)
        if good:
            self._offset = good[-1].offset() + 1
            self._read_ts = max(0, good[-1].timestamp()[1]) / 1000
        if reset_from is not None:
            self._reset(reset_from)
        self._watch.check(self._consumer)
        self._report_lag(force=self._eof)
        return reading.convert(good) if good else []

    def _on_client_error(self, error: KafkaError) -> None:
        """librdkafka's error_cb (called inside `consume`, on this thread): handled after the read."""
        self._client_errors.append(error)
        if self._user_error_cb is not None:
            self._user_error_cb(error)

    def _take_client_errors(self) -> list[KafkaError]:
        errors, self._client_errors = self._client_errors, []
        return errors

    def _on_error(self, error: KafkaError) -> None:
        """Stop the flow on a refusal or a topic that is gone; count and (rate-limited) log anything else."""
        if is_refused(error.code(), error.fatal()) or (error.code() in GONE and self._gone()):
            raise _stop(f"kafka source: stopping the flow: {self._where}: {error.str()} ({error.name()})")
        self._reading.on_error(self._topic, self._partition, error)
        held = self._errors_log.allow(time.monotonic())
        if held is not None:
            more = f" ({held} more since the last line)" if held else ""
            log.warning("kafka source: %s: %s (%s), retrying%s", self._where, error.str(), error.name(), more)

    def _gone(self) -> bool:
        """The broker's fresh metadata has no such topic or partition (False when it cannot be asked)."""
        try:
            meta = self._consumer.list_topics(self._topic, timeout=BROKER_TIMEOUT).topics.get(self._topic)
        except KafkaException:
            return False
        return meta is None or meta.error is not None or self._partition not in meta.partitions

    def _reset(self, failed: int) -> None:
        """Offset `failed` is out of range: apply the policy (or stop), count and report what is skipped."""
        policy = self._reading.offset_reset
        self._reset_from = failed
        try:
            low, high = self._consumer.get_watermark_offsets(self._tp, timeout=BROKER_TIMEOUT, cached=False)
        except KafkaException as exc:  # retried on the next read; the partition reads nothing until then
            self._on_error(exc.args[0])
            return
        if policy == "error":
            raise _stop(f"kafka source: stopping the flow: {self._where}: offset {failed} is no longer in the topic "
                        f"(it holds {low}..{high - 1}); BWSM_SOURCE_OFFSET_RESET=earliest reads on from {low}")
        reset = reset_to(policy, failed, low, high)
        self._consumer.assign([TopicPartition(self._topic, self._partition, reset.offset)])
        self._reset_from = None
        self._offset = reset.offset
        if reset.skipped:
            SOURCE_OFFSETS_SKIPPED.labels(topic=self._topic, partition=self._partition).inc(reset.skipped)
        if reset.beyond_end:
            log.warning("kafka source: %s: offset %d is past the end of the partition (it holds %d..%d: truncated "
                        "or recreated?); reading on from %d (%s)", self._where, failed, low, high - 1, reset.offset,
                        policy)
        else:
            skipped = f"skipped offsets {failed}..{reset.offset - 1} ({reset.skipped})" if reset.skipped else \
                "nothing skipped"
            log.warning("kafka source: %s: offset %d is no longer in the topic; %s, reading on from %d (%s)",
                        self._where, failed, skipped, reset.offset, policy)

    def _report_lag(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._offset < 0 or (now - self._lag_at < 1.0 and not force):
            return
        self._lag_at = now
        _low, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
        if high >= 0:
            self._lag.set(max(0, high - self._offset))
        POSITIONS.read(self._topic, self._partition, self._offset, high, self._read_ts, time.time())

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        self._consumer.close()


def _topic_metadata(client: AdminClient, topic: str, refused: list[KafkaError]) -> Any:
    """The topic's metadata; waits for a broker that does not answer (logged), stops at once on refused credentials
    (librdkafka reports those through `error_cb` and keeps retrying)."""
    limit = LogLimit(LOG_EVERY)
    while True:
        try:
            return client.list_topics(topic, timeout=1.0).topics[topic]
        except KafkaException as exc:
            client.poll(0)  # serves error_cb
            if refused:
                error = refused[0]
                raise _stop(f"kafka source: cannot read topic {topic!r}: {error.str()} ({error.name()})") from None
            if limit.allow(time.monotonic()) is not None:
                log.warning("kafka source: cannot list the partitions of topic %s yet: %s", topic, exc.args[0].str())


class BatchKafkaSource(FixedPartitionedSource[X, int], Generic[X]):
    """Kafka topics as a Bytewax source whose items are made by `convert` from whole consumed batches.

    Args:
        brokers: Bootstrap servers.
        topics: Topics to read (every partition of each).
        convert: Consumed batch -> items (called in the partition's worker, once per batch).
        tail: Keep reading at the end of the topics (False: EOF there, for benchmarks and backfills).
        starting_offset: Where a partition without recovery state starts (`OFFSET_BEGINNING` by default).
        add_config: librdkafka properties for every consumer (security, tuning); they win over ours, except that
            an `auto.offset.reset` there is taken as `offset_reset`.
        batch_size: The most messages one `consume` returns.
        on_error: Told of retriable consumer errors (to count them); the source logs them, rate-limited, and reads
            on. Fatal ones raise KafkaSourceError from the running dataflow instead.
        pace: How long a busy partition that is caught up (its last batch held PACE_FROM_BATCH messages or more,
            but not `batch_size`) waits before it is read again. Every item costs the dataflow a routing step and
            every call's state a wake-up, so reading a busy partition 20 times a second instead of 1000 times turns
            one frame per call per item into several, at the price of at most that much latency (small against
            30 s chunks). A partition that is behind, or quiet, is read again at once.
        offset_reset: What a partition does when the offset it should read next no longer exists: `earliest`
            (read on from the earliest retained offset), `latest` (jump to the end) or `error` (stop the flow);
            offsets skipped are logged and counted (see the module docstring).
        partition_check: Seconds between two checks for partitions added to the topics (reported, not read);
            0 never checks.
    """

    def __init__(self, brokers: Sequence[str], topics: Iterable[str], convert: Convert[X], *, tail: bool = True,
                 starting_offset: int = OFFSET_BEGINNING, add_config: dict | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, on_error: OnError = _ignore, pace: float = 0.0,
                 offset_reset: str = DEFAULT_OFFSET_RESET,
                 partition_check: float = DEFAULT_PARTITION_CHECK) -> None:
        if isinstance(brokers, str) or isinstance(topics, str):
            raise TypeError("brokers and topics must be lists of strings, not a string")
        self._brokers = list(brokers)
        self._topics = list(topics)
        self._tail = tail
        self._starting_offset = starting_offset
        self._add_config = dict(add_config or {})
        policy = offset_reset_policy(str(self._add_config.pop("auto.offset.reset", offset_reset)))
        self._reading = _Reading(convert, batch_size, timedelta(seconds=pace), policy, on_error, LOG_EVERY)
        self._watch = _NewPartitions(self._topics, partition_check)

    def list_parts(self) -> list[str]:
        refused: list[KafkaError] = []
        user_error_cb = self._add_config.get("error_cb")

        def on_error(error: KafkaError) -> None:
            if is_refused(error.code(), error.fatal()):
                refused.append(error)
            if user_error_cb is not None:
                user_error_cb(error)

        client = AdminClient({"bootstrap.servers": ",".join(self._brokers), **self._add_config,
                              "error_cb": on_error})
        parts = []
        for topic in self._topics:  # one at a time, so a broker that auto-creates topics does so
            meta = _topic_metadata(client, topic, refused)
            if meta.error is not None:
                raise _stop(f"kafka source: cannot list the partitions of topic {topic!r}: {meta.error.str()}")
            self._watch.listed(topic, meta.partitions)
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
        return _BatchPartition(step_id, config, topic, int(index), offset, self._reading, self._watch)
