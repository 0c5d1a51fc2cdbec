"""The read side on the command line: whole call transcripts (`CallTranscript`) from the transcript topic, for
`tail --final` (each call once, when it completes) and `export` (one call, read from the topic's beginning)."""

from __future__ import annotations

import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from typing import TextIO

from bytewax.speechmatics.connectors.kafka.config import KafkaSettings
from bytewax.speechmatics.connectors.kafka.topics import TopicMissing, watermarks
from bytewax.speechmatics.schemas.call_transcript import CallTranscript
from bytewax.speechmatics.schemas.errors import BytewaxSpeechmaticsError, ContractError
from bytewax.speechmatics.schemas.events import Event, load_json_object

FORMATS = ("txt", "srt", "vtt", "json")
#: `tail --final` remembers this many printed calls, to ignore their repeats and late events.
REMEMBERED_CALLS = 100_000


class ReadError(BytewaxSpeechmaticsError, RuntimeError):
    """The transcript topic cannot be read (missing, or it stopped answering); the message says which."""


def render_final(transcript: CallTranscript) -> str:
    """A completed call's whole transcript: a header line, then one indented line per speaker turn."""
    document = transcript.to_document()
    counts = document["counts"]
    failed_chunks = counts["failed_chunks"]
    failed = f", {failed_chunks} failed chunk{'' if failed_chunks == 1 else 's'}" if failed_chunks else ""
    speakers = len(document["speakers"])
    head = (f"[{document['call_id']}] final transcript: {counts['words']} words, {speakers} "
            f"speaker{'' if speakers == 1 else 's'}, {document['end_time']:.1f} s{failed}")
    return "\n".join([head, *(f"    {line}" for line in transcript.to_txt().splitlines())])


def print_final_transcripts(items: Iterable[Event | ContractError], as_json: bool = False, out: TextIO | None = None,
                            command: str = "tail") -> int:
    """Collect events per call and print each call's whole transcript once, when it completes; then forget the
    call (its repeats and late events are ignored). Returns the number of calls printed."""
    out = out or sys.stdout
    open_calls: dict[str, CallTranscript] = {}
    printed: OrderedDict[str, None] = OrderedDict()
    for item in items:
        if isinstance(item, ContractError):
            print(f"{command}: skipped a message that breaks the event schema: {item}", file=sys.stderr, flush=True)
            continue
        call_id = item.get("call_id")
        if call_id in printed:
            continue
        transcript = open_calls.setdefault(str(call_id), CallTranscript())
        try:
            transcript.apply(item)
        except ContractError as exc:
            print(f"{command}: skipped an event: {exc}", file=sys.stderr, flush=True)
            continue
        if not transcript.completed:
            continue
        del open_calls[str(call_id)]
        printed[str(call_id)] = None
        while len(printed) > REMEMBERED_CALLS:
            printed.popitem(last=False)
        out.write((transcript.to_json() if as_json else render_final(transcript)) + "\n")
        out.flush()
    return len(printed)


def formatted(transcript: CallTranscript, fmt: str) -> str:
    """The transcript in one of FORMATS."""
    if fmt == "txt":
        return transcript.to_txt()
    if fmt == "srt":
        return transcript.to_srt()
    if fmt == "vtt":
        return transcript.to_vtt()
    if fmt == "json":
        return transcript.to_json(indent=True) + "\n"
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


def read_call(topic: str, call_id: str, kafka: KafkaSettings | None = None, stall_seconds: float = 30.0,
              ) -> tuple[list[Event], int]:
    """Every message of `call_id` (key = call id) on `topic`, from the beginning to the end it had when reading
    started: (the JSON objects, how many of its messages were not JSON objects).

    Raises:
        ReadError: the topic does not exist, or reading made no progress for `stall_seconds`.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer((kafka or KafkaSettings()).client_config({
        "group.id": f"bwsm-export-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }))
    key = call_id.encode()
    events: list[Event] = []
    skipped = 0
    try:
        try:
            offsets = watermarks(consumer, topic, stall_seconds, "(BWSM_TRANSCRIPT_TOPIC or --topic)")
        except TopicMissing as exc:
            raise ReadError(str(exc)) from exc
        ends: dict[int, int] = {}
        starts = []
        for partition, (low, high) in offsets.items():
            if high > low:
                ends[partition] = high
                starts.append(TopicPartition(topic, partition, low))
        if not ends:
            return [], 0
        consumer.assign(starts)
        progress = time.monotonic()
        while ends:
            messages = consumer.consume(1000, 0.5)
            for msg in messages:
                if msg.error():
                    continue
                progress = time.monotonic()
                if msg.key() == key:
                    try:
                        events.append(load_json_object(msg.value(), f"{topic}[{msg.partition()}]@{msg.offset()}"))
                    except ContractError:
                        skipped += 1
            for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                if tp.offset >= ends[tp.partition]:
                    del ends[tp.partition]
            if ends and time.monotonic() - progress > stall_seconds:
                raise ReadError(f"reading topic {topic} made no progress for {stall_seconds:g} s "
                                f"({len(ends)} partition(s) not read to their end)")
    finally:
        consumer.close()
    return events, skipped
