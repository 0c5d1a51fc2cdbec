"""`bytewax-speechmatics dlq`: what the flow refused, one line per dead letter, from the dead-letter topic.

A letter's reason, stage and source position live in its `dlq.*` headers (schemas/dead_letters.py), which no
generic consumer shows; its value is the refused bytes (audio), which no one should print. This command shows the
headers a person needs (when, which stage, which call, where the original lies, how big it was, whether the copy
was cut to fit, why) and never the value. By default the most recent letters; `--from-beginning` for all of them,
`--follow` to keep printing new ones, `--call` for one call's, `--json` for one JSON object per letter.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import orjson

from bytewax.speechmatics.connectors.cli.arguments import COUNT
from bytewax.speechmatics.connectors.kafka.config import KafkaSettings
from bytewax.speechmatics.connectors.kafka.topics import KafkaUnavailable, TopicMissing, probe_brokers, watermarks
from bytewax.speechmatics.flows.settings import Settings
from bytewax.speechmatics.schemas.dead_letters import LetterView, read_letter

#: How many of the most recent letters are shown without --from-beginning or --call.
DEFAULT_LAST = 20


def render(letter: LetterView) -> str:
    """One line: time, stage, call, source position, original size, whether the copy is whole, reason."""
    when = "-" if letter.time is None else _iso(letter.time)
    size = "no audio kept" if letter.original_size is None else f"{letter.original_size} bytes"
    kept = f"truncated ({', '.join(letter.truncated)})" if letter.truncated else "kept whole"
    if letter.original_size is None:
        kept = "replayable from the source"
    reason = " ".join(letter.reason.split())
    return (f"{when} {letter.stage or '-'} call {letter.call_id or '-'} from {letter.source or '-'}, {size}, "
            f"{kept}: {reason}")


def as_json(letter: LetterView) -> str:
    doc = letter.to_json()
    doc["time"] = None if letter.time is None else _iso(letter.time)
    return orjson.dumps(doc).decode()


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}Z"


def read_letters(topic: str, kafka: KafkaSettings | None = None, last: int | None = DEFAULT_LAST,
                 follow: bool = False, stop: Callable[[], bool] = lambda: False,
                 on_other: Callable[[str], None] = lambda where: None,
                 timeout: float = 30.0) -> Iterator[LetterView]:
    """The letters of `topic`: the `last` most recent ones (None: all, from the beginning) in time order, then,
    with `follow`, each new one as it comes until `stop()`. Records without a `dlq.reason` header are passed to
    `on_other` (their position) and skipped.

    Raises:
        TopicMissing: the topic does not exist.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer((kafka or KafkaSettings()).client_config({
        "group.id": f"bwsm-dlq-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False, "auto.offset.reset": "earliest",
    }))
    try:
        offsets = watermarks(consumer, topic, timeout, "(no letter was ever written to it, or BWSM_DLQ_TOPIC / "
                                                       "--topic names another topic)")
        ends, starts = {}, []
        for partition, (low, high) in offsets.items():
            ends[partition] = high
            starts.append(TopicPartition(topic, partition, low if last is None else max(low, high - last)))
        consumer.assign(starts)

        def letters(messages: list) -> Iterator[LetterView]:
            for msg in messages:
                if msg.error():
                    continue
                where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
                kind, ms = msg.timestamp()
                letter = read_letter(msg.key(), msg.value(), msg.headers(), ms / 1000 if kind else None, where)
                if letter is None:
                    on_other(where)
                else:
                    yield letter

        pending = {p for p, high in ends.items() if high > 0}
        backlog: list[tuple[float, int, LetterView]] = []
        order = itertools.count()
        while pending and not stop():  # what the topic held when reading started
            for letter in letters(consumer.consume(1000, 0.5)):
                item = (letter.time or 0.0, next(order), letter)
                if last is None:
                    yield letter
                elif len(backlog) < last:
                    heapq.heappush(backlog, item)
                else:
                    heapq.heappushpop(backlog, item)
            for tp in consumer.position([TopicPartition(topic, p) for p in pending]):
                if tp.offset >= ends[tp.partition]:
                    pending.discard(tp.partition)
        yield from (letter for *_, letter in sorted(backlog))
        while follow and not stop():
            yield from letters(consumer.consume(100, 0.5))
    finally:
        consumer.close()


def _command(args: argparse.Namespace) -> int:
    try:
        probe_brokers(args.kafka.client_config())  # a consumer would wait for an unreachable broker forever
    except KafkaUnavailable as exc:
        print(f"dlq: {exc}", file=sys.stderr)
        return 2
    last = None if args.from_beginning or args.call else args.last

    def other(where: str) -> None:
        print(f"dlq: skipped {where}: not a dead letter (no dlq.reason header)", file=sys.stderr, flush=True)

    shown = 0
    try:
        for letter in read_letters(args.topic, args.kafka, last, args.follow, on_other=other):
            if args.call is not None and letter.call_id != args.call:
                continue
            shown += 1
            print(as_json(letter) if args.json else render(letter), flush=True)
    except TopicMissing as exc:
        print(f"dlq: {exc}", file=sys.stderr)
        return 2
    which = f" of call {args.call}" if args.call else ""
    scope = "" if last is None else f" (the {last} most recent; --from-beginning for all)"
    print(f"dlq: {shown} dead letter{'' if shown == 1 else 's'}{which} on {args.topic}{scope}", file=sys.stderr)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dlq", help="print the dead letters: what the flow refused, and why")
    parser.add_argument("--json", action="store_true", help="one JSON object per letter")
    parser.add_argument("--from-beginning", action="store_true", help="every letter since the topic's first")
    parser.add_argument("--last", type=COUNT, default=DEFAULT_LAST,
                        help=f"how many of the most recent letters to show (default {DEFAULT_LAST})")
    parser.add_argument("--follow", action="store_true", help="keep printing new letters as they come (Ctrl-C stops)")
    parser.add_argument("--call", metavar="CALL_ID", help="only this call's letters (reads the whole topic)")
    settings = Settings.from_env()
    parser.add_argument("--topic", default=settings.topics.dead_letters, help="the dead-letter topic (BWSM_DLQ_TOPIC)")
    parser.set_defaults(func=_command, kafka=settings.kafka)
