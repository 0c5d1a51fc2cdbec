"""Kafka message of `calls.audio` -> AudioFrame, or a DeadLetter saying what was wrong and where.

A bad message never stops the flow: it leaves as a dead letter, byte for byte, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import bytewax.operators as op
from bytewax.dataflow import Stream, operator
from prometheus_client import Counter

from ..schemas.dead_letters import DeadLetter, bad_message
from ..schemas.errors import ContractError
from ..schemas.frames import AudioFrame, decode_frame

STAGE = "decode"

#: Every stage that refuses input counts it here, labelled by stage (never by call id: unbounded).
DEAD_LETTERS = Counter("bwsm_dead_letters_total", "Messages or chunks sent to the dead-letter topic", ["stage"])
_DECODE_DEAD = DEAD_LETTERS.labels(stage=STAGE)


class SourceMessage(Protocol):
    """What decode reads of bytewax.connectors.kafka.KafkaSourceMessage."""

    key: Any
    value: Any
    topic: str | None
    headers: Any
    offset: int | None
    partition: int | None


def decode_message(msg: SourceMessage) -> AudioFrame | DeadLetter:
    """One message as a validated frame, or as a dead letter carrying the ContractError's text."""
    topic = msg.topic or ""
    partition = -1 if msg.partition is None else msg.partition
    offset = -1 if msg.offset is None else msg.offset
    try:
        return decode_frame(msg.key, msg.value, msg.headers, topic=topic, partition=partition, offset=offset)
    except ContractError as exc:
        _DECODE_DEAD.inc()
        return bad_message(str(exc), STAGE, msg.key, msg.value, list(msg.headers or ()), topic, partition, offset)


def _is_frame(item: AudioFrame | DeadLetter) -> bool:
    return isinstance(item, AudioFrame)


def _call_id(frame: AudioFrame) -> str:
    return frame.call_id


@dataclass(frozen=True)
class Decoded:
    """Frames keyed by call id (for the chunker), and the messages refused."""

    frames: Stream[tuple[str, AudioFrame]]
    dead_letters: Stream[DeadLetter]


@operator
def decode(step_id: str, up: Stream[SourceMessage]) -> Decoded:
    """Decode `calls.audio` messages; split frames (keyed by call id) from dead letters."""
    items = op.map("decode", up, decode_message)
    split = op.branch("split", items, _is_frame)
    return Decoded(op.key_on("key", split.trues, _call_id), split.falses)
