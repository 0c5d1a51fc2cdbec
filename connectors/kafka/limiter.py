"""The lending reports of the cluster's POST limit on a small Kafka topic (the rule is `speechmatics/lending.py`).

One thread per process: before each slot it decides and records this process's report (the commitment binds from
then on, delivered or not) and produces it; in between it consumes the peers' reports. The submission service's
POST limiter asks `rate()` at each grant and again at each send gate. Nothing here can raise the rate beyond what
`Lending` allows: a broker that is down, a topic that cannot be created or a report that arrives late only means
fewer loans, and without any reports every process stays on its reserved share. Until the limiter says its sends
are gated (`sends_tracked`) this process neither lends nor borrows: its reports keep the reserved share.

The topic (BWSM_LIMITER_TOPIC, default `bwsm.limiter`) has one partition and keeps a minute of reports; it is
created here when missing (it is internal to the cluster, like a consumer group's offsets). Reports carry the
cluster's name (BWSM_CLUSTER_ID, by default derived from the flow's topics): reports of another deployment on the
same topic are ignored and counted (`ignored`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from bytewax.speechmatics.connectors.kafka.config import KafkaSettings
from bytewax.speechmatics.connectors.speechmatics.lending import Lending, Report, decide

if TYPE_CHECKING:
    from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
    from bytewax.speechmatics.connectors.speechmatics.throttle import ClusterPlace

log = logging.getLogger(__name__)

#: Reports are useless after a few slots; a minute of them is plenty to read back.
RETENTION_MS = 60_000
#: Seconds before a slot starts at which its report is decided (a fresher demand vs time to deliver it).
LEAD_SECONDS = 0.3
#: Where a starting consumer begins: reports of the last seconds (the current slots' reports).
REWIND_SECONDS = 5.0

#: (requests ready to POST now, requests handed in so far): the demand a report is decided from.
Demand = Callable[[], tuple[int, int]]


class LimiterLink:
    """This process's `Lending`, fed by the limiter topic; `rate()` is thread-safe."""

    def __init__(self, kafka: KafkaSettings, topic: str, lending: Lending, demand: Demand,
                 clock: Callable[[], float] = time.time) -> None:
        self.kafka = kafka
        self.topic = topic
        self.lending = lending
        self.demand = demand
        self.clock = clock
        self.published = 0
        self.received = 0
        self.ignored = 0  # reports of another cluster (or rule): never counted as loans
        self.connected = threading.Event()  # set once the topic is there and both clients are up
        self._tracked = threading.Event()  # set while the POST limiter gates sends: only then lend and borrow
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._arrivals: deque[tuple[float, int]] = deque(maxlen=64)

    @classmethod
    def from_settings(cls, settings: SubmitSettings, place: ClusterPlace, demand: Demand,
                      clock: Callable[[], float] = time.time) -> LimiterLink:
        """The link of the submission service of process `place.index` (not started)."""
        assert settings.kafka is not None
        lending = Lending(int(settings.post_rate), place.processes, place.index, settings.limiter_slot_seconds,
                          1.0 + settings.rate_margin + settings.clock_guard, clock(), settings.cluster_id or "")
        return cls(settings.kafka, settings.limiter_topic, lending, demand, clock)

    # -- the service's side (`throttle.Plan`) --

    def rate(self) -> float:
        with self._lock:
            return float(self.lending.rate(self.clock()))

    def sends_tracked(self, tracked: bool) -> None:
        """The POST limiter gates sends (or no longer does): lending is sound only then (throttle.py)."""
        if tracked:
            self._tracked.set()
        else:
            self._tracked.clear()

    def start(self) -> LimiterLink:
        self._thread = threading.Thread(target=self._run, name="bwsm-limiter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- the thread --

    def _run(self) -> None:
        producer = consumer = None
        try:
            while not self._stop.is_set():
                try:
                    producer, consumer = self._connect()
                    break
                except Exception as exc:  # noqa: BLE001 - no loans until the topic works; reserved shares meanwhile
                    log.warning("rate lending unavailable (%s): staying on the reserved share, retrying",
                                " ".join(str(exc).split())[:200])
                    self._stop.wait(5.0)
            if producer is None or consumer is None:
                return
            self.connected.set()
            self._loop(producer, consumer)
        finally:
            if consumer is not None:
                with contextlib.suppress(Exception):
                    consumer.close()
            if producer is not None:
                with contextlib.suppress(Exception):
                    producer.flush(1.0)

    def _connect(self) -> tuple[Any, Any]:
        from confluent_kafka import Consumer, Producer, TopicPartition
        from confluent_kafka.admin import AdminClient, NewTopic

        config = self.kafka.client_config()
        admin = AdminClient(config)
        if self.topic not in admin.list_topics(timeout=5).topics:
            future = admin.create_topics([NewTopic(self.topic, 1, 1, config={
                "retention.ms": str(RETENTION_MS), "cleanup.policy": "delete"})])[self.topic]
            try:
                future.result(timeout=10)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
        producer = Producer(self.kafka.client_config({"linger.ms": 0, "acks": 1, "message.timeout.ms": 2000}))
        consumer = Consumer(self.kafka.client_config({
            "group.id": f"bwsm-limiter-{uuid.uuid4().hex}", "enable.auto.commit": False,
            "auto.offset.reset": "latest", "fetch.wait.max.ms": 20}))
        since = int((self.clock() - REWIND_SECONDS) * 1000)
        found = consumer.offsets_for_times([TopicPartition(self.topic, 0, since)], timeout=5)
        offset = found[0].offset if found and found[0].offset >= 0 else -1  # -1: the end (no newer reports)
        consumer.assign([TopicPartition(self.topic, 0, offset)])
        return producer, consumer

    def _loop(self, producer: Any, consumer: Any) -> None:
        lending = self.lending
        while not self._stop.is_set():
            now = self.clock()
            slot = lending.slot_of(now) + 1
            decide_at = lending.start_of(slot) - LEAD_SECONDS
            if now >= decide_at and slot >= lending.first_slot:
                self._publish(producer, slot, now)
                with self._lock:
                    lending.forget_before(now)
                # the next slot's decision time
                wait = lending.start_of(slot + 1) - LEAD_SECONDS - self.clock()
            else:
                wait = decide_at - now
            self._consume(consumer, max(0.0, min(wait, 0.1)))
            producer.poll(0)

    def _publish(self, producer: Any, slot: int, now: float) -> None:
        report = self.decide(slot, now)
        if report is None:
            return
        try:
            producer.produce(self.topic, orjson.dumps(report.to_json()), str(report.index).encode())
            self.published += 1
        except Exception as exc:  # noqa: BLE001 - a lost report only means no loan; the commitment stands
            log.debug("limiter report not produced: %s", exc)

    def decide(self, slot: int, now: float) -> Report | None:
        """Decide and record this process's report for `slot` from its demand now; None when already decided or
        too late. Without gated sends it keeps its reserved share and wants nothing more (fixed share)."""
        waiting, handed_in = self.demand()
        self._arrivals.append((now, handed_in))
        lending = self.lending
        window = 2 * lending.slot
        past = next(((t, n) for t, n in self._arrivals if t >= now - window - 1e-9), self._arrivals[0])
        span = now - past[0]
        arrivals = (handed_in - past[1]) / span if span > 0 else 0.0
        with self._lock:
            if lending.recorded(slot):  # decided already
                return None
            commit, want = lending.share, 0
            if self._tracked.is_set():
                commit, want = decide(lending.share, waiting, arrivals, lending.slot)
            return lending.record(slot, commit, want, self.clock())

    def _consume(self, consumer: Any, timeout: float) -> None:
        message = consumer.poll(timeout)
        while message is not None:
            if message.error() is None:
                try:
                    report = Report.from_json(orjson.loads(message.value()))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    log.debug("ignored a malformed limiter report")
                else:
                    self.observe(report)
            message = consumer.poll(0)

    def observe(self, report: Report) -> None:
        """A report read from the topic (a peer's, our own, or another cluster's)."""
        lending = self.lending
        with self._lock:
            lending.observe(report)
        self.received += 1
        if (report.cluster, report.limit, report.processes) != (lending.cluster, lending.limit, lending.processes):
            self.ignored += 1
            if self.ignored == 1:
                log.warning("limiter topic %s carries reports of another cluster or cluster rule (not %r, limit %d, "
                            "%d processes): ignored; give each deployment its own BWSM_CLUSTER_ID or topic",
                            self.topic, lending.cluster, lending.limit, lending.processes)
