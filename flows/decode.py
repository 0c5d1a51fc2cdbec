"""Kafka message of `calls.audio` -> AudioFrame, or a DeadLetter saying what was wrong and where.

A bad message never stops the flow: it leaves as a dead letter with the reason, byte for byte when it fits the
producer's limit (else cut to fit, see schemas.dead_letters), and it never creates call state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import bytewax.operators as op
from bytewax.dataflow import Stream, operator

from bytewax.speechmatics.connectors.metrics import DEAD_LETTERS
from bytewax.speechmatics.flows.stages import StageOut, split_letters
from bytewax.speechmatics.schemas.dead_letters import DEFAULT_MAX_RECORD_BYTES, DeadLetter, bad_message
from bytewax.speechmatics.schemas.errors import ContractError
from bytewax.speechmatics.schemas.frames import DEFAULT_MAX_FRAME_SECONDS, AudioFrame, decode_frame

STAGE = "decode"

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


@dataclass(frozen=True)
class DecodeSettings:
    """Bounds of the frame contract, and the largest dead letter the producer accepts."""

    #: A frame carrying more audio than this is refused (BWSM_MAX_FRAME_SECONDS).
    max_frame_seconds: float = DEFAULT_MAX_FRAME_SECONDS
    #: Dead letters are cut to fit this record size (the producer's message.max.bytes).
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES

    def __post_init__(self) -> None:
        if self.max_frame_seconds <= 0 or self.max_record_bytes < 4096:
            raise ValueError(f"max_frame_seconds must be > 0 and max_record_bytes >= 4096, got "
                             f"{self.max_frame_seconds}, {self.max_record_bytes}")


@operator
def decode_frames(step_id: str, up: Stream[SourceMessage], config: DecodeSettings | None = None
                  ) -> StageOut[AudioFrame]:
    """Decode and validate `calls.audio` messages into audio frames keyed by call id.

    Args:
        step_id: Unique ID.
        up: Kafka messages (`KafkaSourceMessage` from `bytewax.connectors.kafka.operators.input`, or anything
            with `key`, `value`, `headers`, `topic`, `partition`, `offset`).
        config: Frame bounds; the built-in defaults when omitted.

    Returns:
        `StageOut`: `oks` are `(call_id, AudioFrame)`; `errs` are DeadLetters for messages that break the frame
        contract (the reason says what and where). Never raises on bad input.

    Example:
        >>> import bytewax.connectors.kafka.operators as kop
        >>> from bytewax.speechmatics.flows import decode_frames
        >>> msgs = kop.input("audio_in", flow, brokers=["localhost:9092"], topics=["calls.audio"]).oks
        >>> frames = decode_frames("decode", msgs)   # frames.oks -> chunk_calls, frames.errs -> your DLQ
    """
    cfg = config or DecodeSettings()

    def batch(messages: list[SourceMessage]) -> list[tuple[str, AudioFrame] | DeadLetter]:
        return decode_batch(messages, cfg.max_frame_seconds, cfg.max_record_bytes)

    return split_letters("out", op.flat_map_batch("decode", up, batch))
