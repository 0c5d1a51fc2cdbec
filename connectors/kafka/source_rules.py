"""The batch source's decisions, free of Kafka I/O: where to go when an offset is gone, which consumer errors stop
the flow, how often an error is logged, when a busy partition is read again.

The source (`source.py`) does the I/O and asks these; they are small and exact, so they are tested on their own
(property tests in tests/connectors/kafka/test_source_rules.py) and the broker tests only check the wiring.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from confluent_kafka import KafkaError

#: What a partition does when the offset it should read next no longer exists (BWSM_SOURCE_OFFSET_RESET):
#: `earliest` reads on from the earliest offset still retained (what was deleted is counted as skipped), `latest`
#: jumps to the end (everything retained in between is skipped too, librdkafka's own default), `error` stops the
#: flow instead of skipping anything.
OFFSET_RESETS = ("earliest", "latest", "error")
DEFAULT_OFFSET_RESET = "earliest"
#: librdkafka's other spellings of the same policies (a KAFKA_CONF_AUTO_OFFSET_RESET may use them).
_ALIASES = {"smallest": "earliest", "beginning": "earliest", "largest": "latest", "end": "latest"}

#: A partition is paced only after a batch of at least this many messages: below it the flow is far from busy.
PACE_FROM_BATCH = 100

#: Errors after which reading on cannot help: the credentials or the ACLs refuse us. Not GROUP_AUTHORIZATION_FAILED:
#: the source keeps its offsets in Bytewax's recovery state and needs no consumer group, so a deployment whose ACLs
#: grant only the topics must keep running (librdkafka still looks the group's coordinator up).
REFUSED = frozenset({
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
})
#: Errors that say the topic or partition does not exist (deleted while the flow runs). Fatal once the broker's
#: fresh metadata confirms it: a replica that has not caught up with a new topic can say the same for a moment.
GONE = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION})


def offset_reset_policy(value: str) -> str:
    """`value` as one of OFFSET_RESETS (librdkafka's aliases accepted); ValueError for anything else."""
    policy = _ALIASES.get(value.strip().lower(), value.strip().lower())
    if policy not in OFFSET_RESETS:
        raise ValueError(f"auto.offset.reset must be one of {', '.join(OFFSET_RESETS)}, got {value!r}")
    return policy


@dataclass(frozen=True, slots=True)
class Reset:
    """Where a partition reads on after its offset `failed` was out of range, and how many offsets it skips."""

    offset: int
    skipped: int
    #: `failed` was past the end (the topic was truncated or recreated): nothing was skipped, what is re-read from
    #: `offset` on is not what was read before under those offsets.
    beyond_end: bool


def reset_to(policy: str, failed: int, low: int, high: int) -> Reset:
    """Where to read on when offset `failed` is out of range and the partition holds [low, high).

    `skipped` counts the offsets between `failed` and the new position that were never read: those deleted by
    retention (or `delete_records`) with `earliest`, and also every retained one with `latest`. A logical `failed`
    (negative: no offset known) skips nothing that can be counted.
    """
    if policy not in ("earliest", "latest"):
        raise ValueError(f"no position to reset to under policy {policy!r}")
    target = low if policy == "earliest" else high
    beyond = failed >= 0 and failed > high
    skipped = max(0, target - failed) if failed >= 0 and not beyond else 0
    return Reset(target, skipped, beyond)


def is_refused(code: int, fatal: bool) -> bool:
    """The error stops the flow at once: librdkafka marks it fatal, or the broker refuses our credentials/ACLs."""
    return fatal or code in REFUSED


def pace_after(n: int, batch_size: int, pace: timedelta) -> timedelta | None:
    """How long a partition waits before its next read after a read of `n` messages (None: read again at once).

    Busy but caught up (a sizeable batch, not a full one): wait `pace`, so the next batch holds several frames of
    each call rather than one. Behind (a full batch): at once. Quiet (a small batch): at once too, as per-item
    costs do not matter there and waiting would only add latency.
    """
    if pace and PACE_FROM_BATCH <= n < batch_size:
        return pace
    return None


class LogLimit:
    """At most one log line per `every` seconds (per partition), saying how many errors went unlogged since.

    A broker that is down makes librdkafka report every reconnect attempt; each is counted in the metric, but a
    log that repeats them would bury everything else.
    """

    def __init__(self, every: float) -> None:
        self._every = every
        self._next = float("-inf")
        self._held = 0

    def allow(self, now: float) -> int | None:
        """None: do not log this one (it is held). Else log it, with the number of errors held back before it."""
        if now < self._next:
            self._held += 1
            return None
        held, self._held = self._held, 0
        self._next = now + self._every
        return held
