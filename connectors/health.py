"""Liveness and readiness of a flow process, for Kubernetes probes (served by connectors/admin.py).

- live: the process is running its dataflow (it ends when the dataflow ends, so serving at all says most of it),
  and, with `stall_seconds`, no source partition has gone unpolled for longer: a Bytewax worker polls its input
  between steps, so a step that never returns (a deadlock, a call that hangs) stops its partitions' polls while
  the process still answers. A partition that reached its end is no longer watched.
- ready: the dataflow has built its input partitions (Bytewax hands them their recovery state then: recovery is
  loaded), the broker answered the last probe, the submission API's host accepted a connection at the last probe
  (or the embedded local worker is in use), and no fatal submit error (401/403) has happened.

The probes run on a background thread (`Monitor`, every few seconds), never inside a request: a probe answers from
the last result at once. The same thread refreshes the partitions' high watermarks and publishes the lag, status
and journal gauges, so they keep moving while the dataflow itself is stuck.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bytewax.speechmatics.connectors import metrics
from bytewax.speechmatics.connectors.kafka.lag import POSITIONS
from bytewax.speechmatics.connectors.status import BOARD

log = logging.getLogger(__name__)

#: Where the speechmatics-batch SDK sends jobs when no URL is given (its own default).
SAAS_BATCH_URL = "https://asr.api.speechmatics.com/v2"


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


class Health:
    """What the probes answer from (thread-safe: plain attribute writes of immutable values)."""

    def __init__(self, stall_seconds: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.started_at = time.time()
        self.recovery_loaded = False
        self.fatal: str | None = None
        self.broker = Check(False, "not probed yet")
        self.api = Check(False, "not probed yet")
        #: Seconds a partition may go unpolled before live() fails; 0: not watched (set by the flow's entry point).
        self.stall_seconds = stall_seconds
        self._clock = clock
        self._polled: dict[str, float] = {}  # partition -> when its worker last polled it

    def polled(self, partition: str) -> None:
        """A worker polled `partition` (called on every poll: one dict store)."""
        self._polled[partition] = self._clock()

    def finished(self, partition: str) -> None:
        """`partition` reached its end or was closed: its polls stop for a good reason."""
        self._polled.pop(partition, None)

    def partitions_built(self) -> None:
        """The source built a partition: Bytewax has loaded the recovery state it resumes from."""
        self.recovery_loaded = True

    def submit_failed(self, reason: str) -> None:
        """A fatal submit error: never ready again (the flow stops)."""
        if self.fatal is None:
            self.fatal = reason
            metrics.SUBMIT_FATAL.set(1)

    def live(self) -> tuple[bool, dict]:
        body: dict = {"uptime_seconds": round(time.time() - self.started_at, 1)}
        polled = list(self._polled.items())  # one C-level copy: safe while workers store
        if not self.stall_seconds or not polled:
            return True, body
        partition, last = min(polled, key=lambda item: item[1])
        idle = self._clock() - last
        body["longest_unpolled_seconds"] = round(idle, 1)
        if idle <= self.stall_seconds:
            return True, body
        body["stalled"] = (f"input partition {partition} not polled for {idle:.0f} s (over "
                           f"BWSM_LIVE_STALL_SECONDS={self.stall_seconds:g}): a step of its worker does not return")
        return False, body

    def ready(self) -> tuple[bool, dict]:
        checks = {
            "recovery": Check(self.recovery_loaded, "loaded" if self.recovery_loaded else "dataflow not started"),
            "broker": self.broker,
            "submission_api": self.api,
            "submit": Check(self.fatal is None, "ok" if self.fatal is None else "fatal submit error"),
        }
        ok = all(c.ok for c in checks.values())
        return ok, {name: {"ok": c.ok, "detail": c.detail} for name, c in checks.items()}


#: The process's health (the source, the submitter and the monitor write it; the admin endpoint reads it).
HEALTH = Health()


def api_address(batch_url: str | None) -> tuple[str, int]:
    """Host and port that the submission API is reached at (the SDK's SaaS default when no URL is set)."""
    parts = urlsplit(batch_url or SAAS_BATCH_URL)
    if not parts.hostname:
        raise ValueError(f"SPEECHMATICS_BATCH_URL has no host: {batch_url!r}")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def directory_bytes(directory: str | None) -> int:
    """Total size of the files directly in `directory` (0 when it does not exist)."""
    if not directory:
        return 0
    total = 0
    try:
        for path in Path(directory).iterdir():
            try:
                if path.is_file():
                    total += path.stat().st_size
            except OSError:
                continue  # compacted away meanwhile
    except OSError:
        return 0
    return total


class Monitor(threading.Thread):
    """Probes the broker and the API, refreshes watermarks, publishes gauges; every `interval` seconds."""

    def __init__(self, kafka_config: dict, batch_url: str | None, embedded_worker: bool, journal_dir: str | None,
                 interval: float = 5.0, health: Health = HEALTH) -> None:
        super().__init__(name="bwsm-health", daemon=True)
        self._kafka_config = kafka_config
        self._batch_url = batch_url
        self._embedded = embedded_worker
        self._journal_dir = journal_dir
        self._interval = interval
        self._health = health
        self._consumer = None
        self.probed = threading.Event()  # set after the first round (tests wait on it)

    def run(self) -> None:
        while True:
            try:
                self.round()
            except Exception:  # a probe must never end the thread
                log.exception("health round failed")
            self.probed.set()
            time.sleep(self._interval)

    def round(self) -> None:
        self._health.broker = self._probe_broker()
        self._health.api = self._probe_api()
        now = time.time()
        POSITIONS.publish(now)
        BOARD.publish()
        metrics.JOURNAL_BYTES.set(directory_bytes(self._journal_dir))

    def _probe_broker(self) -> Check:
        from confluent_kafka import Consumer, TopicPartition

        timeout = max(1.0, self._interval / 2)
        try:
            if self._consumer is None:
                self._consumer = Consumer({**self._kafka_config, "group.id": "bwsm-health",
                                           "enable.auto.commit": False})
            self._consumer.list_topics(timeout=timeout)
            for topic, partition in POSITIONS.partitions():
                _low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                                  timeout=timeout, cached=False)
                POSITIONS.watermark(topic, partition, high, time.time())
        except Exception as exc:  # KafkaException on a timeout or an unreachable broker
            return Check(False, f"broker did not answer: {type(exc).__name__}")
        return Check(True, "answered")

    def _probe_api(self) -> Check:
        if self._embedded:
            return Check(True, "embedded local worker")
        try:
            host, port = api_address(self._batch_url)
            with socket.create_connection((host, port), timeout=max(1.0, self._interval / 2)):
                pass
        except (OSError, ValueError) as exc:
            return Check(False, f"submission API not reachable: {type(exc).__name__}")
        return Check(True, f"{host}:{port} reachable")
