"""The flow's Kafka output: one idempotent producer (acks=all) per worker for transcripts and dead letters.

Bytewax's KafkaSink would do for plain writes, but it fails on a full librdkafka queue (bytewax #522) and cannot
tell when a message was really acknowledged. This sink waits for queue space, flushes every batch before Bytewax
may close the epoch (at-least-once: a resumed flow repeats at most the last epoch's events, with the same ids),
raises if a transcript event could not be delivered (losing one is data loss; recovery replays it), and records
"chunk closed -> event acknowledged" latency once the broker has the event.

Dead letters are best effort: they are cut to fit the producer's limit before they get here (schemas.dead_letters
`fit`), and one that the producer or broker still refuses is logged (ids and reason only) and counted in
`bwsm_dead_letters_lost_total`, never raised: raising would stop the flow and every restart would replay the same
refused input.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaException

from bytewax.speechmatics.connectors.kafka.config import KafkaSettings
from bytewax.speechmatics.connectors.metrics import CHUNK_TO_EVENT, LOST_LETTERS, PRODUCED
from bytewax.speechmatics.schemas.dead_letters import DEFAULT_MAX_RECORD_BYTES

log = logging.getLogger(__name__)


PRODUCER_DEFAULTS = {
    "enable.idempotence": True,  # implies acks=all and ordered, de-duplicated retries per partition
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "lz4",
}


@dataclass(frozen=True, slots=True)
class OutMessage:
    """One message for Kafka; `closed_at` (wall clock of the chunk's cut) feeds the latency histogram."""

    topic: str
    key: bytes | None
    value: bytes | None
    kind: str
    headers: Sequence[tuple[str, bytes]] = field(default=())
    closed_at: float | None = None
    best_effort: bool = False  # a dead letter: a refusal is logged and counted instead of stopping the flow


def produce_with_backpressure(producer, topic: str, key: bytes | None, value: bytes | None,  # noqa: ANN001
                              headers: Sequence[tuple[str, bytes]] | None = None,
                              on_delivery: Callable | None = None) -> None:
    """Produce one message; when librdkafka's queue is full, serve delivery reports until there is room."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=list(headers or ()), on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)


class _ProducerPartition(StatelessSinkPartition[OutMessage]):
    def __init__(self, config: dict) -> None:
        from confluent_kafka import Producer

        self._producer = Producer(config)

    def write_batch(self, items: list[OutMessage]) -> None:
        failures: list[str] = []
        lost: list[OutMessage] = []

        def on_delivery(item: OutMessage) -> Callable:
            def delivered(err, msg) -> None:  # noqa: ANN001 - confluent-kafka callback
                if err is None:
                    return
                if item.best_effort:
                    _lose(item, err, lost)
                else:
                    failures.append(f"{msg.topic()}: {err}")
            return delivered

        for item in items:
            try:
                produce_with_backpressure(self._producer, item.topic, item.key, item.value, item.headers,
                                          on_delivery(item))
            except KafkaException as exc:  # refused before it was queued (too large, unknown topic, ...)
                if not item.best_effort:
                    raise
                _lose(item, exc.args[0] if exc.args else exc, lost)
        if self._producer.flush(60.0):
            raise RuntimeError("Kafka did not acknowledge the flow's output within 60 s; stopping so that recovery "
                               "replays it")
        if failures:
            raise RuntimeError(f"Kafka refused {len(failures)} output message(s), first: {failures[0]}")
        now = time.time()
        gone = {id(item) for item in lost}
        for item in items:
            if id(item) in gone:
                continue
            PRODUCED.labels(kind=item.kind).inc()
            if item.closed_at is not None:
                CHUNK_TO_EVENT.observe(max(0.0, now - item.closed_at))

    def close(self) -> None:
        self._producer.flush(30.0)


def _lose(item: OutMessage, err: object, lost: list[OutMessage]) -> None:
    """A dead letter Kafka refused: say which (never its contents) and count it."""
    lost.append(item)
    LOST_LETTERS.labels(kind=item.kind).inc()
    log.error("dead letter refused by Kafka and dropped (%s, %d value bytes): %s", item.kind, len(item.value or b""),
              err)


class ProducingSink(DynamicSink[OutMessage]):
    """A sink writing each OutMessage to its own topic through one idempotent producer per worker."""

    def __init__(self, kafka: KafkaSettings | None = None, config: dict | None = None) -> None:
        self._config = (kafka or KafkaSettings()).client_config({**PRODUCER_DEFAULTS, **(config or {})})

    @property
    def max_record_bytes(self) -> int:
        """The producer's `message.max.bytes`: what a dead letter is cut to fit."""
        return int(self._config.get("message.max.bytes", DEFAULT_MAX_RECORD_BYTES))

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProducerPartition:
        return _ProducerPartition(dict(self._config))
