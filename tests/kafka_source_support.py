"""Helpers the batch source's broker tests share: producing numbered messages, reading the source's log lines and
its metrics, waiting on a condition with a deadline."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

from confluent_kafka import Producer
from prometheus_client import REGISTRY

SOURCE_LOGGER = "bytewax.speechmatics.connectors.kafka.source"


def produce_numbered(bootstrap: str, topic: str, count: int, partition: int = 0, key: bytes = b"c",
                     first_seq: int = 0) -> None:
    """`count` small frames of one call on one partition, seq numbers from `first_seq`."""
    producer = Producer({"bootstrap.servers": bootstrap})
    for seq in range(first_seq, first_seq + count):
        producer.produce(topic, bytes(64), key, partition=partition, headers=[("seq", str(seq).encode())])
    assert producer.flush(30) == 0


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


@contextlib.contextmanager
def source_log() -> Iterator[list[str]]:
    """The source's warning and error lines while the block runs (whatever the process's logging setup)."""
    handler = _Lines()
    logger = logging.getLogger(SOURCE_LOGGER)
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


def sample(name: str, **labels: object) -> float:
    """A metric's current value in this process (0 when it was never set)."""
    return REGISTRY.get_sample_value(name, {k: str(v) for k, v in labels.items()}) or 0.0


def wait_for(predicate: Callable[[], object], deadline_s: float, what: str, step: Callable[[], object] | None = None,
             ) -> None:
    """Call `step` (if any) until `predicate` holds; AssertionError naming `what` after `deadline_s`."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if step is not None:
            step()
        if predicate():
            return
        if step is None:
            time.sleep(0.05)
    raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
