"""The producer API's link to Kafka: one librdkafka producer, the cap on bytes in flight, and each call's
acknowledgements (how many are outstanding, the first refusal).

librdkafka serves acknowledgements on one background thread per publisher (`KafkaLink._serve`); the sync and asyncio
calls of `producer.py` share everything here and differ only in how they wait: on a threading.Condition, or on a
future the acknowledgement thread resolves through the caller's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from bytewax.speechmatics.connectors.kafka.config import CLIENT_LOGGER
from bytewax.speechmatics.schemas.errors import BytewaxSpeechmaticsError

PRODUCER_SETTINGS = {
    "enable.idempotence": True,  # acks=all; retries keep order and never duplicate
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "lz4",
}


class DeliveryError(BytewaxSpeechmaticsError):
    """Kafka did not take a message of this call (after the producer's own retries); the call's audio has a hole."""

    def __init__(self, call_id: str, reason: str) -> None:
        self.call_id = call_id
        self.reason = reason
        super().__init__(f"call {call_id[:120]!r}: Kafka refused a message: {reason}")


class PublisherClosed(BytewaxSpeechmaticsError):
    """The publisher was closed; its calls can send no more."""


def kafka_config(brokers: str | Iterable[str], settings: Mapping[str, Any]) -> dict[str, Any]:
    """A producer config: the idempotent defaults, then `settings` (librdkafka names; `linger_ms` means
    `linger.ms`, so they can be given as keyword arguments; `error_cb` and the other callbacks stay as they are)."""
    servers = brokers if isinstance(brokers, str) else ",".join(brokers)
    conf: dict[str, Any] = {"bootstrap.servers": servers, "logger": logging.getLogger(CLIENT_LOGGER),
                            **PRODUCER_SETTINGS}
    # confluent-kafka's own callbacks (error_cb, stats_cb, ...) keep their underscores
    conf.update({name if "." in name or name.endswith("_cb") else name.replace("_", "."): value
                 for name, value in settings.items()})
    if str(conf.get("enable.idempotence")).lower() in ("false", "0"):
        raise ValueError("enable.idempotence cannot be turned off: it is what keeps a call's frames in order")
    return conf


class _Budget:
    """The cap on bytes in flight: taken before a message is produced, given back when it is acknowledged."""

    def __init__(self, cap: int) -> None:
        if cap <= 0:
            raise ValueError(f"max_in_flight_bytes must be positive, got {cap}")
        self.cap = cap
        self.used = 0
        self.peak = 0
        self._cond = threading.Condition()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []

    def _fits(self, n: int) -> bool:
        return self.used == 0 or self.used + n <= self.cap  # a message bigger than the cap goes alone

    def _take(self, n: int) -> None:
        self.used += n
        self.peak = max(self.peak, self.used)

    def take(self, n: int, closed: Callable[[], bool]) -> None:
        with self._cond:
            while not self._fits(n):
                if closed():
                    raise PublisherClosed("the publisher was closed while a send waited for the broker")
                self._cond.wait(0.2)
            self._take(n)

    async def take_async(self, n: int, closed: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                if self._fits(n):
                    self._take(n)
                    return
                if closed():
                    raise PublisherClosed("the publisher was closed while a send waited for the broker")
                waiter = loop.create_future()
                self._waiters.append((loop, waiter))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(waiter, 0.5)

    def give(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()
            waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            loop.call_soon_threadsafe(_resolve, waiter)


def _resolve(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


class CallAcks:
    """What the acknowledgement thread and the call's sender share: messages not yet acknowledged, the first error."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.unacked = 0
        self.error: str | None = None
        self.lock = threading.Lock()
        self.idle = threading.Event()
        self.idle.set()
        self.waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []

    def sent(self) -> None:
        with self.lock:
            self.unacked += 1
            self.idle.clear()

    def acked(self, err: KafkaError | None, reason: str | None = None) -> None:
        with self.lock:
            self.unacked -= 1
            if (err is not None or reason is not None) and self.error is None:
                self.error = reason or err.str()
            waiters = []
            if self.unacked == 0:
                self.idle.set()
                waiters, self.waiters = self.waiters, []
        for loop, waiter in waiters:
            loop.call_soon_threadsafe(_resolve, waiter)

    def raise_error(self) -> None:
        if self.error is not None:
            raise DeliveryError(self.call_id, self.error)


class KafkaLink:
    """One librdkafka producer, the byte budget and the thread that serves acknowledgements."""

    def __init__(self, brokers: str | Iterable[str], topic: str, max_in_flight_bytes: int,
                 ack_latency: Callable[[float], None] | None, settings: Mapping[str, Any]) -> None:
        self.topic = topic
        self.budget = _Budget(max_in_flight_bytes)
        self.ack_latency = ack_latency
        self.closed = False
        self.producer = Producer(kafka_config(brokers, settings))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="bwsm-call-publisher", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    def is_closed(self) -> bool:
        return self.closed

    def produce(self, state: CallAcks, message: tuple[bytes, bytes, list[tuple[str, bytes]]],
                since: float | None) -> bool:
        """Hand one message to librdkafka (the budget is already taken); its acknowledgement settles `state`.
        False when librdkafka's own queue is full (its message count): the caller waits its own way and tries again.
        """
        key, value, headers = message
        size = len(value)
        latency = self.ack_latency

        def delivered(err: KafkaError | None, _msg: object) -> None:
            self.budget.give(size)
            if latency is not None and err is None and since is not None:
                latency(time.monotonic() - since)
            state.acked(err)

        state.sent()  # before produce: the acknowledgement may come on the other thread at once
        try:
            self.producer.produce(self.topic, value=value, key=key, headers=headers, on_delivery=delivered)
        except BufferError:
            state.acked(None)  # not sent after all
            return False
        except KafkaException as exc:  # refused before it was queued (too large, unknown topic, ...)
            self.budget.give(size)
            state.acked(None, str(exc))
            raise DeliveryError(state.call_id, str(exc)) from None
        return True

    def close(self, timeout: float) -> int:
        """Flush (serving the last acknowledgements), stop the thread; the number of messages still unsent."""
        if self.closed:
            return 0
        self.closed = True
        self._stop.set()
        self._thread.join()
        return self.producer.flush(timeout)
