"""Dead-letter records for `calls.audio.dlq`: the original bytes, plus why and where, in headers.

Header names follow Kafka Connect's habit of prefixing the context: `dlq.reason`, `dlq.stage`,
`dlq.source.topic`, `dlq.source.partition`, `dlq.source.offset`, and for failed chunks `dlq.call_id`,
`dlq.chunk.index`, `dlq.chunk.start_sample`, `dlq.chunk.end_sample`, `dlq.chunk.sample_rate`,
`dlq.source.ranges` (JSON list of [topic, partition, first_offset, last_offset]): enough to replay.
The original frame headers are kept as they were.

Size: a dead letter must always be producible, or the flow would stop on the very input it refuses. A letter
whose record would exceed the producer's limit (librdkafka's `message.max.bytes`, 1,000,000 by default) is cut
to fit: its value is truncated (or emptied), then if still needed its key and the original headers, and the
`dlq.truncated` header names what was cut; `dlq.original.size` and `dlq.original.sha256` describe the original
value and the source position finds it.

Reading them back (`read_letter`, the `dlq` command, the flow's dead-letter log): `LetterView` is one letter as a
person needs it (when, which stage, which call, where the original lies, how big it was, why, whether cut).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from bytewax.speechmatics.schemas.chunks import ChunkSpan, SourceRange

HEADER_PREFIX = "dlq."
#: librdkafka's default `message.max.bytes`: the largest record a default producer accepts.
DEFAULT_MAX_RECORD_BYTES = 1_000_000
#: Room kept below the limit for the record's own framing (librdkafka adds at most a few dozen bytes).
_RECORD_MARGIN = 1024
#: Per header: its framing (varint lengths) in the wire format, counted generously.
_HEADER_OVERHEAD = 10
#: A dlq.* context value (a reason, a position) longer than this is cut: they are descriptions, not data.
_MAX_CONTEXT_CHARS = 4096
#: A cut key keeps this many bytes (enough to recognise a call id).
_KEPT_KEY_BYTES = 256


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

    def record_bytes(self) -> int:
        """An upper bound of the record's size as a producer counts it (key + value + headers)."""
        heads = sum(len(name.encode()) + len(value) + _HEADER_OVERHEAD for name, value in self.kafka_headers())
        return len(self.key or b"") + len(self.value or b"") + heads


def fit(letter: DeadLetter, limit: int = DEFAULT_MAX_RECORD_BYTES) -> DeadLetter:
    """`letter` cut to a record of at most `limit` bytes (see the module doc); unchanged when it fits."""
    budget = limit - _RECORD_MARGIN
    if letter.record_bytes() <= budget:
        return letter
    value = letter.value or b""
    context = tuple((name, _cut_text(str(text))) for name, text in letter.context)
    cut = replace(letter, reason=_cut_text(letter.reason), value=b"", context=(
        *context,
        (f"{HEADER_PREFIX}original.size", str(len(value))),
        (f"{HEADER_PREFIX}original.sha256", hashlib.sha256(value).hexdigest()),
    ))
    parts = ["value"]
    if cut.record_bytes() + 64 > budget and len(cut.key or b"") > _KEPT_KEY_BYTES:
        cut = replace(cut, key=(cut.key or b"")[:_KEPT_KEY_BYTES])
        parts.append("key")
    if cut.record_bytes() + 64 > budget and cut.headers:
        cut = replace(cut, headers=())
        parts.append("headers")
    cut = replace(cut, context=(*cut.context, (f"{HEADER_PREFIX}truncated", ",".join(parts))))
    room = budget - cut.record_bytes()
    return replace(cut, value=value[:max(0, room)]) if room > 0 and value else cut


def _cut_text(text: str) -> str:
    return text if len(text) <= _MAX_CONTEXT_CHARS else text[:_MAX_CONTEXT_CHARS] + "..."


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
    limit: int = DEFAULT_MAX_RECORD_BYTES,
) -> DeadLetter:
    """A source message that broke the frame contract, kept byte for byte when it fits in `limit` (see `fit`)."""
    kept = tuple((name, _as_bytes(v) or b"") for name, v in headers or ())
    context = (
        (f"{HEADER_PREFIX}source.topic", topic),
        (f"{HEADER_PREFIX}source.partition", str(partition)),
        (f"{HEADER_PREFIX}source.offset", str(offset)),
    )
    letter = DeadLetter(reason=reason, stage=stage, key=_as_bytes(key), value=value, headers=kept, context=context)
    return fit(letter, limit)


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


#: A call id is shown up to this many characters (a key may be a megabyte long).
_SHOWN_ID_CHARS = 120


@dataclass(frozen=True, slots=True)
class LetterView:
    """One dead letter as read back: what the `dlq` command prints and the flow logs (never the value itself)."""

    stage: str
    reason: str
    call_id: str | None
    source: str  # where the original lies: "topic[partition]@offset", chunk source ranges, or "" when unknown
    original_size: int | None  # bytes of the refused value (None: a failed chunk, which carries no audio)
    truncated: tuple[str, ...] = ()  # what `fit` cut: value, key, headers
    time: float | None = None  # when the letter was written (the record's timestamp, seconds since the epoch)
    position: str = ""  # where the letter itself lies on the dead-letter topic

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "stage": self.stage, "call_id": self.call_id, "source": self.source or None,
                "original_size": self.original_size, "reason": self.reason, "truncated": list(self.truncated),
                "position": self.position or None}


def read_letter(key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes | str | None]] | None,
                time: float | None = None, position: str = "") -> LetterView | None:
    """A record of the dead-letter topic as a LetterView; None when it has no `dlq.reason` header (not a letter)."""
    ctx: dict[str, str] = {}
    for name, raw in headers or ():
        if name.startswith(HEADER_PREFIX):
            ctx[name[len(HEADER_PREFIX):]] = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw or ""
    if "reason" not in ctx:
        return None
    call_id = ctx.get("call_id") or (key.decode("utf-8", "replace") if key else None)
    if call_id is not None and len(call_id) > _SHOWN_ID_CHARS:
        call_id = call_id[:_SHOWN_ID_CHARS] + "..."
    size = ctx.get("original.size")
    return LetterView(
        stage=ctx.get("stage", ""), reason=ctx["reason"], call_id=call_id, source=_source(ctx),
        original_size=int(size) if size and size.isdigit() else (None if value is None else len(value)),
        truncated=tuple(part for part in ctx.get("truncated", "").split(",") if part), time=time, position=position)


def view(letter: DeadLetter) -> LetterView:
    """A letter the flow is about to write, as it will read back."""
    return read_letter(letter.key, letter.value, letter.kafka_headers())  # type: ignore[return-value]


def _source(ctx: dict[str, str]) -> str:
    if "source.topic" in ctx:
        return f"{ctx['source.topic']}[{ctx.get('source.partition', '?')}]@{ctx.get('source.offset', '?')}"
    if "source.ranges" in ctx:
        try:
            ranges = orjson.loads(ctx["source.ranges"])
            return ", ".join(f"{t}[{p}]@{first}-{last}" for t, p, first, last in ranges)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            return ctx["source.ranges"][:200]
    return ""
