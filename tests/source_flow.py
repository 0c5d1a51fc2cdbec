"""A flow that reads one topic with the batch source and appends `partition offset` lines to a file, for the
source's process tests (`python -m bytewax.run tests/source_flow.py:flow -r ...`: recovery, kill -9, exit codes).

Test plumbing, configured by the test through its environment: SOURCE_TEST_TOPIC, SOURCE_TEST_OUT (the file),
SOURCE_TEST_KAFKA_CONF (a JSON object of librdkafka properties), KAFKA_BOOTSTRAP_SERVERS; SOURCE_TEST_HANG_AT (an
offset): the step after the source never returns from the message at that offset (a stuck dataflow).
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from bytewax.speechmatics.connectors.kafka.source import BatchKafkaSource
from bytewax.speechmatics.connectors.logs import configure_logging


class _Append(StatelessSinkPartition[tuple[int, int]]):
    def __init__(self, path: str) -> None:
        self._file = open(path, "a")  # noqa: SIM115 - closed by close()

    def write_batch(self, items: list[tuple[int, int]]) -> None:
        self._file.write("".join(f"{partition} {offset}\n" for partition, offset in items))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class AppendSink(DynamicSink[tuple[int, int]]):
    """Appends each item as a line, flushed per batch (a kill -9 loses nothing written)."""

    def __init__(self, path: str) -> None:
        self._path = path

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Append:
        return _Append(self._path)


def offsets(messages: list[Any]) -> list[tuple[int, int]]:
    return [(m.partition(), m.offset()) for m in messages]


def hang_at(offset: int) -> Any:
    """A step that never returns from the message at `offset`."""
    def step(item: tuple[int, int]) -> tuple[int, int]:
        if item[1] == offset:
            threading.Event().wait()
        return item
    return step


def build() -> Dataflow:
    env = os.environ
    configure_logging()
    flow = Dataflow("source_process")
    source = BatchKafkaSource([env["KAFKA_BOOTSTRAP_SERVERS"]], [env["SOURCE_TEST_TOPIC"]], offsets,
                              add_config=json.loads(env.get("SOURCE_TEST_KAFKA_CONF", "{}")), batch_size=50)
    read = op.input("read", flow, source)
    if env.get("SOURCE_TEST_HANG_AT"):
        read = op.map("hang", read, hang_at(int(env["SOURCE_TEST_HANG_AT"])))
    op.output("out", read, AppendSink(env["SOURCE_TEST_OUT"]))
    return flow


flow = build()
