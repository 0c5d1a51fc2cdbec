"""Kafka message of `calls.audio` -> AudioFrame or CallStart, or a DeadLetter saying what was wrong and where.

A bad message never stops the flow: it leaves as a dead letter with the reason, byte for byte when it fits the
producer's limit (else cut to fit, see schemas.dead_letters), and a bad frame never creates call state.

Start messages (header `kind: start`, schemas/call_start.py) are control, not audio: a valid one becomes a
`CallStart` for the chunker. A refused one (not JSON, breaks the schema, too large) becomes a dead letter whose
reason names the field AND, when its key names a call, a `CallStart` marked `refused` so the call still runs (with
the flow's defaults) and its call_started event says the start message was refused: audio is never lost because
of control-plane errors. Frames pay nothing for this: a start message fails the frame fast path, and only then is
its `kind` looked at.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream, operator
from confluent_kafka import OFFSET_BEGINNING

from bytewax.speechmatics.connectors.kafka.source import DEFAULT_BATCH_SIZE, DEFAULT_PACE, BatchKafkaSource
from bytewax.speechmatics.connectors.kafka.source_rules import DEFAULT_OFFSET_RESET
from bytewax.speechmatics.connectors.logs import fields
from bytewax.speechmatics.connectors.metrics import DEAD_LETTERS, SOURCE_ERRORS
from bytewax.speechmatics.flows.stages import StageOut, split_letters
from bytewax.speechmatics.schemas.call_start import START, CallStart, StartRefused, decode_start, message_kind
from bytewax.speechmatics.schemas.dead_letters import DEFAULT_MAX_RECORD_BYTES, DeadLetter, bad_message
from bytewax.speechmatics.schemas.errors import ContractError
from bytewax.speechmatics.schemas.frames import DEFAULT_MAX_FRAME_SECONDS, AudioFrame, decode_frame, decode_usual

log = logging.getLogger(__name__)

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


@dataclass(frozen=True, slots=True)
class RefusedStart:
    """A start message that broke the contract: its dead letter, and the marker that lets the call go on."""

    letter: DeadLetter
    marker: CallStart  # `refused` set: the call uses the flow's defaults, its call_started carries the warning


Decoded = AudioFrame | CallStart | DeadLetter | RefusedStart
#: What the decode stage emits: (call_id, frame or start) and dead letters.
DecodeOutput = tuple[str, AudioFrame | CallStart] | DeadLetter


def decode_message(msg: SourceMessage, max_frame_seconds: float = DEFAULT_MAX_FRAME_SECONDS,
                   max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Decoded:
    """One message as a validated frame or start message, or as a dead letter carrying the ContractError's text
    (a refused start message whose key names a call: `RefusedStart`, the dead letter plus the call's marker).

    The dead letter fits a record of `max_record_bytes` (the producer's `message.max.bytes`).
    """
    topic = msg.topic or ""
    partition = -1 if msg.partition is None else msg.partition
    offset = -1 if msg.offset is None else msg.offset
    try:
        return decode_frame(msg.key, msg.value, msg.headers, topic=topic, partition=partition, offset=offset,
                            max_frame_seconds=max_frame_seconds)
    except ContractError as exc:
        error: ContractError = exc
    if message_kind(msg.headers) == START:  # only refused messages get here: frames never pay for this look
        try:
            return decode_start(msg.key, msg.value, msg.headers, topic=topic, partition=partition, offset=offset)
        except StartRefused as exc:
            error = exc
            _DECODE_DEAD.inc()
            letter = bad_message(str(exc), STAGE, msg.key, msg.value, list(msg.headers or ()), topic, partition,
                                 offset, limit=max_record_bytes)
            if exc.call_id is None:
                return letter
            # the reason names a field, never a value of the metadata; the warning is the dead letter's, which is
            # rate-limited (flows/dead_letter_log.py): a flood of refused starts must not flood the log
            log.debug("start message refused (%s): the call goes on with the flow's defaults", exc.what,
                        extra=fields(call_id=exc.call_id, stage=STAGE))
            marker = CallStart(exc.call_id, refused=exc.what, topic=topic, partition=partition, offset=offset)
            return RefusedStart(letter, marker)
    _DECODE_DEAD.inc()
    return bad_message(str(error), STAGE, msg.key, msg.value, list(msg.headers or ()), topic, partition, offset,
                       limit=max_record_bytes)


def decode_batch(messages: list[SourceMessage], max_frame_seconds: float = DEFAULT_MAX_FRAME_SECONDS,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> list[DecodeOutput]:
    """A batch of messages as (call_id, frame or start) pairs or dead letters, in one pass.

    Why one batch step instead of map + key_on: each per-item operator costs a Python call and a generator
    step per frame, and frames come by hundreds of thousands per second.
    """
    out: list[DecodeOutput] = []
    append = out.append
    for msg in messages:
        item = decode_message(msg, max_frame_seconds, max_record_bytes)
        cls = item.__class__
        if cls is not AudioFrame and cls is not CallStart:
            item = _refused(item, append)
            if item is None:
                continue
        append((item.call_id, item))
    return out


def _refused(item: DeadLetter | RefusedStart, letters: Callable[[DeadLetter], object]) -> CallStart | None:
    """Hand a refused message's dead letter to `letters`; the call's marker when it was a start message."""
    if item.__class__ is DeadLetter:
        letters(item)
        return None
    letters(item.letter)
    return item.marker


class _Consumed:
    """A raw confluent-kafka message seen through `SourceMessage` (only for the rare message the fast path refuses)."""

    __slots__ = ("key", "value", "topic", "headers", "offset", "partition")

    def __init__(self, msg: Any) -> None:
        self.key, self.value, self.topic = msg.key(), msg.value(), msg.topic()
        self.headers, self.offset, self.partition = msg.headers(), msg.offset(), msg.partition()


#: What `audio_input` emits: a call's frames (and start messages) of one consumed batch, in offset order.
Frames = list[AudioFrame | CallStart]


def group_consumed(messages: list[Any], max_frame_seconds: float = DEFAULT_MAX_FRAME_SECONDS,
                   max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> list[tuple[str, Frames] | DeadLetter]:
    """A consumed batch of raw confluent-kafka messages as one `(call_id, frames)` item per call, plus dead letters.

    Why grouped: every item costs Bytewax a routing step and the chunker a call, so frames of one call that came in
    one batch travel together (in offset order, which the chunker's reorder buffer expects).
    """
    calls: dict[str, Frames] = {}
    letters: list[DeadLetter] = []
    usual = decode_usual
    for msg in messages:
        frame = usual(msg.key(), msg.value(), msg.headers(), msg.topic(), msg.partition(), msg.offset(),
                      max_frame_seconds)
        if frame is None:
            frame = decode_message(_Consumed(msg), max_frame_seconds, max_record_bytes)
            if frame.__class__ is DeadLetter or frame.__class__ is RefusedStart:
                frame = _refused(frame, letters.append)
                if frame is None:
                    continue
        run = calls.get(frame.call_id)
        if run is None:
            calls[frame.call_id] = [frame]
        else:
            run.append(frame)
    out: list[tuple[str, Frames] | DeadLetter] = list(calls.items())
    out.extend(letters)
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
                  ) -> StageOut[AudioFrame | CallStart]:
    """Decode and validate `calls.audio` messages into audio frames (and start messages) keyed by call id.

    Args:
        step_id: Unique ID.
        up: Kafka messages (`KafkaSourceMessage` from `bytewax.connectors.kafka.operators.input`, or anything
            with `key`, `value`, `headers`, `topic`, `partition`, `offset`).
        config: Frame bounds; the built-in defaults when omitted.

    Returns:
        `StageOut`: `oks` are `(call_id, AudioFrame)` and `(call_id, CallStart)` (a call's start message; one
        marked `refused` when it broke the contract, so the call still runs with the flow's defaults); `errs` are
        DeadLetters for messages that break the frame or start contract (the reason says what and where). Never
        raises on bad input.

    Example:
        >>> import bytewax.connectors.kafka.operators as kop
        >>> from bytewax.speechmatics.flows import decode_frames
        >>> msgs = kop.input("audio_in", flow, brokers=["localhost:9092"], topics=["calls.audio"]).oks
        >>> frames = decode_frames("decode", msgs)   # frames.oks -> chunk_calls, frames.errs -> your DLQ
    """
    cfg = config or DecodeSettings()

    def batch(messages: list[SourceMessage]) -> list[DecodeOutput]:
        return decode_batch(messages, cfg.max_frame_seconds, cfg.max_record_bytes)

    return split_letters("out", op.flat_map_batch("decode", up, batch))


@operator
def audio_input(step_id: str, flow: Dataflow, *, brokers: Sequence[str], topics: Sequence[str],
                config: DecodeSettings | None = None, add_config: dict | None = None,
                batch_size: int = DEFAULT_BATCH_SIZE, pace: float = DEFAULT_PACE, tail: bool = True,
                starting_offset: int = OFFSET_BEGINNING,
                offset_reset: str = DEFAULT_OFFSET_RESET) -> StageOut[Frames]:
    """Read `calls.audio` from Kafka and decode it in the same step: the fast way in (no message object per frame).

    Equivalent to `kafka.operators.input` followed by `decode_frames`, but each consumed batch is decoded where it
    is read and a call's frames of that batch travel as one item. Offsets are kept in Bytewax's recovery state,
    so a resumed run re-reads exactly what the last snapshot had not seen. Retriable consumer errors are logged
    (at most one line per partition per 10 s) and counted (`bwsm_kafka_source_errors_total`); refused credentials
    or ACLs and a deleted topic stop the flow (KafkaSourceError, one line). Offsets gone from the topic when a
    partition reads on are skipped as `offset_reset` says, logged and counted
    (`bwsm_source_offsets_skipped_total`); partitions added while the flow runs are reported, and read after a
    restart (connectors/kafka/source.py).

    Args:
        step_id: Unique ID.
        flow: The dataflow.
        brokers: Bootstrap servers.
        topics: Audio topics (every partition of each).
        config: Frame bounds; the built-in defaults when omitted.
        add_config: librdkafka properties for the consumers (security, tuning).
        batch_size: The most messages one consume returns.
        pace: Seconds a busy, caught-up partition (its last read returned 100 or more messages) waits before it
            is read again (BWSM_SOURCE_PACE_SECONDS), so that a call's frames arrive a few at a time instead of one
            by one (much cheaper per frame); a partition that is behind, or quiet, is read again at once. 0: read
            as fast as possible.
        tail: Keep reading at the end (False: stop there, for backfills and benchmarks).
        starting_offset: Where a partition without recovery state starts.
        offset_reset: When the offset a partition should read next is gone (retention, downtime): `earliest`
            reads on from the earliest retained offset, `latest` jumps to the end, `error` stops the flow
            (BWSM_SOURCE_OFFSET_RESET).

    Returns:
        `StageOut`: `oks` are `(call_id, [AudioFrame | CallStart, ...])`, a call's messages of one batch in
        offset order (`chunk_calls` takes them as they are); `errs` are DeadLetters for messages that break the
        frame or start contract, as with `decode_frames`.

    Example:
        >>> from bytewax.speechmatics.flows import audio_input, chunk_calls
        >>> frames = audio_input("audio_in", flow, brokers=["localhost:9092"], topics=["calls.audio"])
        >>> chunks = chunk_calls("chunk", frames.oks)
    """
    cfg = config or DecodeSettings()
    errors = SOURCE_ERRORS.labels(step=step_id)

    def convert(messages: list[Any]) -> list[tuple[str, Frames] | DeadLetter]:
        return group_consumed(messages, cfg.max_frame_seconds, cfg.max_record_bytes)

    def count(_topic: str, _partition: int, _error: object) -> None:
        errors.inc()  # the source logs it (rate-limited)

    source = BatchKafkaSource(brokers, topics, convert, tail=tail, starting_offset=starting_offset,
                              add_config=add_config, batch_size=batch_size, on_error=count, pace=pace,
                              offset_reset=offset_reset)
    return split_letters("out", op.input("read", flow, source))
