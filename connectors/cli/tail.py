"""Follow `calls.transcripts` and print it per call: readable lines by default, raw events with --json."""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable, Iterator

from bytewax.speechmatics.connectors.cli.arguments import NON_NEGATIVE_SECONDS
from bytewax.speechmatics.connectors.kafka.config import KafkaSettings
from bytewax.speechmatics.connectors.kafka.topics import KafkaUnavailable, probe_brokers
from bytewax.speechmatics.flows.settings import Settings
from bytewax.speechmatics.schemas.dead_letters import HEADER_PREFIX
from bytewax.speechmatics.schemas.errors import ContractError
from bytewax.speechmatics.schemas.events import Event, decode_event

#: The header every dead letter has: a record carrying it is shown by `dlq`, not parsed as an event.
DLQ_REASON = f"{HEADER_PREFIX}reason"


def follow(
    topic: str,
    from_beginning: bool = False,
    stop: Callable[[], bool] = lambda: False,
    idle_timeout: float | None = None,
    kafka: KafkaSettings | None = None,
) -> Iterator[Event | ContractError]:
    """Yield events from `topic` (a ContractError for a message that breaks the schema) until `stop()` or idle."""
    from confluent_kafka import Consumer

    consumer = Consumer((kafka or KafkaSettings()).client_config({
        "group.id": f"bwsm-tail-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "enable.auto.commit": False,
    }))
    consumer.subscribe([topic])
    last = time.monotonic()
    try:
        while not stop():
            msg = consumer.poll(0.2)
            if msg is None:
                if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                    return
                continue
            if msg.error():
                continue
            last = time.monotonic()
            where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
            if any(name == DLQ_REASON for name, _ in msg.headers() or ()):
                yield ContractError(f"a dead letter (refused input), not a transcript event: "
                                    f"`bytewax-speechmatics dlq --topic {msg.topic()}` shows it", where)
                continue
            try:
                yield decode_event(msg.value(), where=where)
            except ContractError as exc:
                yield exc
    finally:
        consumer.close()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes):02d}:{secs:04.1f}"


def render(event: Event) -> str:
    """A human-readable line for one event: speaker turns within a segment on their own lines; a call's start with
    its language, diarization and metadata; warnings on lines of their own."""
    head = f"[{event['call_id']}] {_clock(event['start_time'])}-{_clock(event['end_time'])}"
    kind = event["type"]
    if kind == "call_started":
        import orjson

        text = f"{head} call started ({event['source']}): {_call_settings(event)}"
        if event.get("metadata") is not None:
            text += f"\n    metadata: {orjson.dumps(event['metadata']).decode()}"
    elif kind == "utterance_end":
        text = f"{head} {event['source']} utterance end" + (f" ({event['channel']})" if event.get("channel") else "")
    elif kind == "call_completed":
        c = event.get("counts") or {}
        if event["source"] == "realtime":
            text = (f"{head} real-time session completed: {c.get('words', 0)} words, "
                    f"{c.get('audio_seconds', 0):.1f} s audio")
            if event.get("error"):
                text += f", ended by an error: {event['error']}"
        else:
            text = (f"{head} call completed: {c.get('chunks', 0)} chunks ({c.get('failed_chunks', 0)} failed), "
                    f"{c.get('words', 0)} words, {c.get('audio_seconds', 0):.1f} s audio")
    else:
        tag = mark(event)
        if event.get("error"):
            text = f"{head} {tag} chunk failed: {event['error']}"
        else:
            text = f"{head} {tag}\n" + "\n".join(f"    {who}: {said}" for who, said in speaker_turns(event))
    return text + "".join(f"\n    warning: {w}" for w in event.get("warnings") or ())


def mark(event: Event) -> str:
    """`realtime partial`, `realtime final` or `batch` (with the real-time span a batch segment replaces)."""
    if event["source"] == "realtime":
        return "realtime " + ("final" if event["is_final"] else "partial")
    span = event.get("supersedes")
    return "batch" + (f" (replaces realtime {_clock(span['start_time'])}-{_clock(span['end_time'])})" if span else "")


def _call_settings(event: Event) -> str:
    """`language de, diarization channel (agent, caller), 3 vocabulary entries` for a call_started event."""
    settings = event.get("settings") or {}
    parts = [f"language {settings.get('language', event['language'])}"]
    diarization = settings.get("diarization")
    if diarization:
        labels = settings.get("channel_labels")
        parts.append(f"diarization {diarization}" + (f" ({', '.join(labels)})" if labels else ""))
    if settings.get("additional_vocab"):
        parts.append(f"{settings['additional_vocab']} vocabulary entries")
    for name in ("operating_point", "domain", "output_locale"):
        if settings.get(name):
            parts.append(f"{name.replace('_', ' ')} {settings[name]}")
    return ", ".join(parts)


def speaker_turns(event: Event) -> list[tuple[str, str]]:
    """The event's turns (one speaker on one channel, punctuation with a word of its own channel), as the read
    side groups them (`schemas/punctuation.py`); `?` for words without a speaker."""
    from bytewax.speechmatics.schemas import punctuation

    return [(label or "?", text) for label, text in punctuation.speaker_turns(event["words"])]


def _command(args: argparse.Namespace) -> int:
    if args.topic == args.dead_letters:
        print(f"tail: {args.topic} is the dead-letter topic (refused input, not transcript events): "
              f"`bytewax-speechmatics dlq` shows its letters (--follow, --from-beginning, --call, --json)",
              file=sys.stderr)
        return 2
    try:
        probe_brokers(args.kafka.client_config())  # a consumer would wait for an unreachable broker forever, silently
    except KafkaUnavailable as exc:
        print(f"tail: {exc}", file=sys.stderr)
        return 2
    if args.final:
        from bytewax.speechmatics.connectors.cli.transcripts import print_final_transcripts

        print_final_transcripts(follow(args.topic, args.from_beginning, idle_timeout=args.idle_timeout,
                                       kafka=args.kafka), as_json=args.json, command="tail")
        return 0
    for item in follow(args.topic, args.from_beginning, idle_timeout=args.idle_timeout, kafka=args.kafka):
        if isinstance(item, ContractError):
            print(f"tail: skipped a message that breaks the event schema: {item}", file=sys.stderr, flush=True)
        elif args.json:
            import orjson

            sys.stdout.write(orjson.dumps(item).decode() + "\n")
            sys.stdout.flush()
        else:
            print(render(item), flush=True)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tail", help="print transcript events per call")
    parser.add_argument("--json", action="store_true",
                        help="print raw events (with --final: transcript documents), one JSON object per line")
    parser.add_argument("--final", action="store_true",
                        help="print each call's whole transcript once, when the call completes")
    parser.add_argument("--from-beginning", action="store_true", help="start at the topic's first message")
    parser.add_argument("--idle-timeout", type=NON_NEGATIVE_SECONDS, default=None,
                        help="exit after this many seconds without a message (default: follow forever)")
    settings = Settings.from_env()
    parser.add_argument("--topic", default=settings.topics.transcripts,
                        help="the transcript topic (BWSM_TRANSCRIPT_TOPIC)")
    parser.set_defaults(func=_command, kafka=settings.kafka, dead_letters=settings.topics.dead_letters)
