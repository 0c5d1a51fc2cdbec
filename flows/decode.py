"""Kafka message of `calls.audio` -> AudioFrame, or a DeadLetter saying what was wrong and where.

A bad message never stops the flow: it leaves as a dead letter with the reason, byte for byte when it fits the
producer's limit (else cut to fit, see schemas.dead_letters), and it never creates call state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import bytewax.operators as op
from bytewax.dataflow import Stream, operator
from prometheus_client import Counter

from bytewax.speechmatics.schemas.dead_letters import DEFAULT_MAX_RECORD_BYTES, DeadLetter, bad_message
from bytewax.speechmatics.schemas.errors import ContractError
from bytewax.speechmatics.schemas.frames import DEFAULT_MAX_FRAME_SECONDS, AudioFrame, decode_frame

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


def decode_message(msg: SourceMessage, max_frame_seconds: float = DEFAULT_MAX_FRAME_SECONDS,
                   max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> AudioFrame | DeadLetter:
    """One message as a validated frame, or as a dead letter carrying the ContractError's text.

    The dead letter fits a record of `max_record_bytes` (the producer's `message.max.bytes`).
    """
    topic = msg.topic or ""
    partition = -1 if msg.partition is None else msg.partition
    offset = -1 if msg.offset is None else msg.offset
    try:
        return decode_frame(msg.key, msg.value, msg.headers, topic=topic, partition=partition, offset=offset,
                            max_frame_seconds=max_frame_seconds)
    except ContractError as exc:
        _DECODE_DEAD.inc()
        return bad_message(str(exc), STAGE, msg.key, msg.value, list(msg.headers or ()), topic, partition, offset,
                           limit=max_record_bytes)


def decode_batch(messages: list[SourceMessage], max_frame_seconds: float = DEFAULT_MAX_FRAME_SECONDS,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> list[tuple[str, AudioFrame] | DeadLetter]:
    """A batch of messages as (call_id, frame) pairs or dead letters, in one pass.

    Why one batch step instead of map + key_on: each per-item operator costs a Python call and a generator
    step per frame, and frames come by hundreds of thousands per second.
    """
    out: list[tuple[str, AudioFrame] | DeadLetter] = []
    append = out.append
    for msg in messages:
        item = decode_message(msg, max_frame_seconds, max_record_bytes)
        append((item.call_id, item) if item.__class__ is AudioFrame else item)
    return out


def _is_keyed(item: tuple[str, AudioFrame] | DeadLetter) -> bool:
    return item.__class__ is tuple


@dataclass(frozen=True)
class Decoded:
    """Frames keyed by call id (for the chunker), and the messages refused."""

    frames: Stream[tuple[str, AudioFrame]]
    dead_letters: Stream[DeadLetter]


@operator
def decode(step_id: str, up: Stream[SourceMessage], max_frame_seconds: float = DEFAULT_MAX_FRAME_SECONDS,
           max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Decoded:
    """Decode `calls.audio` messages; split frames (keyed by call id) from dead letters."""

    def batch(messages: list[SourceMessage]) -> list[tuple[str, AudioFrame] | DeadLetter]:
        return decode_batch(messages, max_frame_seconds, max_record_bytes)

    split = op.branch("split", op.flat_map_batch("decode", up, batch), _is_keyed)
    return Decoded(split.trues, split.falses)
