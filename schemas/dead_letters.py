"""Dead-letter records for `calls.audio.dlq`: the original bytes, plus why and where, in headers.

Header names follow Kafka Connect's habit of prefixing the context: `dlq.reason`, `dlq.stage`,
`dlq.source.topic`, `dlq.source.partition`, `dlq.source.offset`, and for failed chunks `dlq.call_id`,
`dlq.chunk.index`, `dlq.chunk.start_sample`, `dlq.chunk.end_sample`, `dlq.chunk.sample_rate`,
`dlq.source.ranges` (JSON list of [topic, partition, first_offset, last_offset]): enough to replay.
The original frame headers are kept as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from .chunks import ChunkSpan, SourceRange

HEADER_PREFIX = "dlq."


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message for the dead-letter topic. `stage` names the step that refused it (decode, chunker, submit)."""

    reason: str
    stage: str
    key: bytes | None = None
    value: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    context: tuple[tuple[str, str], ...] = field(default=())

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        ctx = [(f"{HEADER_PREFIX}reason", self.reason), (f"{HEADER_PREFIX}stage", self.stage), *self.context]
        return [*self.headers, *((name, str(value).encode()) for name, value in ctx)]


def _as_bytes(value: bytes | str | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return value.encode("utf-8")


def bad_message(
    reason: str,
    stage: str,
    key: bytes | str | None,
    value: bytes | None,
    headers: list[tuple[str, bytes | str | None]] | None,
    topic: str,
    partition: int,
    offset: int,
) -> DeadLetter:
    """A source message that broke the frame contract, kept byte for byte."""
    kept = tuple((name, _as_bytes(v) or b"") for name, v in headers or ())
    context = (
        (f"{HEADER_PREFIX}source.topic", topic),
        (f"{HEADER_PREFIX}source.partition", str(partition)),
        (f"{HEADER_PREFIX}source.offset", str(offset)),
    )
    return DeadLetter(reason=reason, stage=stage, key=_as_bytes(key), value=value, headers=kept, context=context)


def failed_chunk(reason: str, stage: str, span: ChunkSpan, source: tuple[SourceRange, ...],
                 job_id: str | None = None, attempts: int = 0) -> DeadLetter:
    """A chunk that could not be transcribed: no audio (it is replayable from the source ranges)."""
    context = (
        (f"{HEADER_PREFIX}call_id", span.call_id),
        (f"{HEADER_PREFIX}chunk.index", str(span.index)),
        (f"{HEADER_PREFIX}chunk.start_sample", str(span.start_sample)),
        (f"{HEADER_PREFIX}chunk.end_sample", str(span.end_sample)),
        (f"{HEADER_PREFIX}chunk.sample_rate", str(span.sample_rate)),
        (f"{HEADER_PREFIX}job_id", job_id or ""),
        (f"{HEADER_PREFIX}attempts", str(attempts)),
        (f"{HEADER_PREFIX}source.ranges", orjson.dumps([list(r) for r in source]).decode()),
    )
    return DeadLetter(reason=reason, stage=stage, key=span.call_id.encode(), value=None, context=context)
