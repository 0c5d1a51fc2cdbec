"""The micro-batch dataflow: call audio on Kafka -> chunks -> Speechmatics jobs -> stitched transcripts on Kafka.

Run it with `python -m bytewax.run bytewax.speechmatics.flows.microbatch:flow` (every Bytewax option applies) or
`bytewax-speechmatics run`. Configuration comes from the environment (see the README's table).

One dataflow carries both sources: the real-time branch (`calls.rt`, raw Speechmatics RT messages) is merged into
this flow rather than run beside it, so one deployment, one recovery store and one producer serve the transcript
topic, and a single consumer sees batch and real-time events for a call in one ordered stream per partition.
Set BWSM_REALTIME=0 to leave the real-time topic alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow, Stream
from prometheus_client import Counter

from bytewax.speechmatics.connectors.kafka.config import security_config
from bytewax.speechmatics.connectors.kafka.sink import OutMessage, ProducingSink
from bytewax.speechmatics.connectors.logs import configure_logging
from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
from bytewax.speechmatics.flows.chunker import chunk_calls, is_chunk
from bytewax.speechmatics.flows.chunking import ChunkConfig
from bytewax.speechmatics.flows.decode import decode
from bytewax.speechmatics.flows.realtime import realtime_events
from bytewax.speechmatics.flows.segments import Produced
from bytewax.speechmatics.flows.settings import FlowSettings
from bytewax.speechmatics.flows.stitcher import stitch_calls
from bytewax.speechmatics.flows.submitter import submit_chunks
from bytewax.speechmatics.schemas.dead_letters import DeadLetter, bad_message, fit

log = logging.getLogger(__name__)

SOURCE_ERRORS = Counter("bwsm_kafka_source_errors_total", "Errors reported by the Kafka consumers", ["step"])


def _source(flow: Dataflow, step_id: str, topic: str, settings: FlowSettings) -> Stream[KafkaSourceMessage]:
    """Consume one topic (one Bytewax partition per Kafka partition); consumer errors are logged and counted."""
    kin = kop.input(step_id, flow, brokers=list(settings.brokers), topics=[topic],
                    add_config=security_config(), batch_size=settings.source_batch_size)

    def report(_step: str, err: object) -> None:
        SOURCE_ERRORS.labels(step=step_id).inc()
        log.warning("kafka consumer error on %s: %s", topic, getattr(err, "err", err))

    op.inspect(f"{step_id}_errors", kin.errs, report)
    return kin.oks


def _transcript_message(topic: str) -> Callable[[Any], OutMessage]:
    def convert(keyed: tuple[str, Produced]) -> OutMessage:
        call_id, produced = keyed
        return OutMessage(topic=topic, key=call_id.encode(), value=orjson.dumps(produced.event),
                          kind=f"{produced.event['source']}_{produced.event['type']}", closed_at=produced.closed_at)

    return convert


def _dead_letter_message(topic: str, max_record_bytes: int) -> Callable[[Any], OutMessage]:
    def convert(letter: DeadLetter) -> OutMessage:
        letter = fit(letter, max_record_bytes)
        return OutMessage(topic=topic, key=letter.key, value=letter.value, headers=letter.kafka_headers(),
                          kind=f"dlq_{letter.stage}", best_effort=True)

    return convert


def _rt_keyed(msg: KafkaSourceMessage) -> tuple[str, bytes] | DeadLetter:
    """(call_id, raw RT message), or a dead letter when the message has no usable call id as key."""
    if msg.value is None:
        return _rt_refused(msg, "null value (a tombstone is not a real-time message)")
    if not msg.key:
        return _rt_refused(msg, "message has no key (the key must be the call id)")
    try:
        return msg.key.decode("utf-8"), msg.value
    except UnicodeDecodeError:
        return _rt_refused(msg, "key is not UTF-8 (the key must be the call id)")


def _rt_refused(msg: KafkaSourceMessage, what: str) -> DeadLetter:
    reason = f"{msg.topic}[{msg.partition}]@{msg.offset}: {what}"
    return bad_message(reason, "realtime", msg.key, msg.value, msg.headers, msg.topic, msg.partition, msg.offset)


def build_flow(
    settings: FlowSettings | None = None,
    chunking: ChunkConfig | None = None,
    submission: SubmitSettings | None = None,
) -> Dataflow:
    """The whole dataflow; every argument defaults to its `from_env()`."""
    configure_logging()
    settings = settings or FlowSettings.from_env()
    flow = Dataflow("bytewax_speechmatics_microbatch")

    sink = ProducingSink()
    decoded = decode("decode", _source(flow, "audio_in", settings.audio_topic, settings),
                     max_frame_seconds=settings.max_frame_seconds, max_record_bytes=sink.max_record_bytes)
    cut = op.branch("chunks_or_refused", chunk_calls("chunker", decoded.frames, chunking), lambda kv: is_chunk(kv[1]))
    submitted = submit_chunks("submit", cut.trues, submission)
    events: list[Stream[tuple[str, Produced]]] = [stitch_calls("stitch", submitted.results)]
    letters: list[Stream[DeadLetter]] = [
        decoded.dead_letters, op.map("chunker_refused", cut.falses, lambda kv: kv[1]), submitted.dead_letters,
    ]

    if settings.realtime:
        rt = op.map("rt_key", _source(flow, "rt_in", settings.rt_topic, settings), _rt_keyed)
        rt_split = op.branch("rt_keyed_or_refused", rt, lambda item: not isinstance(item, DeadLetter))
        rt_out = realtime_events("realtime", rt_split.trues)
        events.append(rt_out.events)
        letters += [rt_split.falses, op.map("rt_refused", rt_out.dead_letters, lambda kv: kv[1])]

    out = op.merge(
        "to_kafka",
        op.map("transcripts", op.merge("events", *events), _transcript_message(settings.transcript_topic)),
        op.map("dead_letters", op.merge("letters", *letters),
               _dead_letter_message(settings.dlq_topic, sink.max_record_bytes)),
    )
    op.output("kafka_out", out, sink)
    return flow


def __getattr__(name: str) -> Dataflow:
    """`flow` is built on first access, so importing this module never reads the environment by itself."""
    if name == "flow":
        return build_flow()
    raise AttributeError(name)
