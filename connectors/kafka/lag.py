"""Consumer lag in seconds beside lag in records: the age of the oldest unread message of each partition.

Lag in records says how much is queued, not how late the transcripts are; a contact centre's alerting wants the
second. The exact age needs the unread message itself (a fetch the flow is about to do anyway), so it is bounded
from what is already known instead: the oldest unread message was written after the last one read (its Kafka
timestamp) and after the last moment the partition was seen caught up. `now - max(both)` is never below the true
age and is exact while the flow reads steadily; it is 0 while nothing is unread.

The source records each partition's position after a read; a health thread refreshes the high watermarks (so lag
still grows while the dataflow is stuck) and publishes both gauges (`bwsm_source_lag_seconds`,
`bwsm_source_read_timestamp_seconds`). `Positions` is process-wide and thread-safe; nothing here does I/O.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from bytewax.speechmatics.connectors import metrics


@dataclass
class Position:
    """What is known of one partition: next offset to read, high watermark, when its last message was written."""

    position: int = -1
    high: int = -1
    read_ts: float = 0.0  # Kafka timestamp (s) of the last message read; 0 = none yet
    caught_up_at: float = 0.0  # wall time (s) the partition was last seen with nothing unread; 0 = never

    def lag_records(self) -> int:
        if self.position < 0 or self.high < 0:
            return 0
        return max(0, self.high - self.position)

    def lag_seconds(self, now: float) -> float:
        """Upper bound of the oldest unread message's age (0 when nothing is unread or nothing is known yet)."""
        if not self.lag_records():
            return 0.0
        since = max(self.read_ts, self.caught_up_at)
        return max(0.0, now - since) if since > 0 else 0.0


class Positions:
    """Every partition this process reads, keyed by (topic, partition)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[tuple[str, int], Position] = {}

    def read(self, topic: str, partition: int, position: int, high: int, read_ts: float, now: float) -> None:
        """The source read up to `position` (exclusive); `high` is the watermark of that fetch (-1: unknown)."""
        with self._lock:
            p = self._parts.setdefault((topic, partition), Position())
            p.position, p.read_ts = position, max(p.read_ts, read_ts)
            if high >= 0:
                p.high = high
                if position >= high:
                    p.caught_up_at = now

    def watermark(self, topic: str, partition: int, high: int, now: float) -> None:
        """A fresh high watermark (from the health thread)."""
        with self._lock:
            p = self._parts.get((topic, partition))
            if p is None or high < 0:
                return
            p.high = high
            if p.position >= high:
                p.caught_up_at = now

    def partitions(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._parts)

    def publish(self, now: float) -> None:
        """Set the lag gauges of every known partition."""
        with self._lock:
            parts = [(key, p.lag_seconds(now), p.read_ts) for key, p in self._parts.items()]
        for (topic, partition), seconds, read_ts in parts:
            labels = {"topic": topic, "partition": str(partition)}
            metrics.SOURCE_LAG_SECONDS.labels(**labels).set(seconds)
            if read_ts:
                metrics.SOURCE_READ_TIMESTAMP.labels(**labels).set(read_ts)


#: The process's partitions (one table: the source writes it, the health thread refreshes and publishes it).
POSITIONS = Positions()
