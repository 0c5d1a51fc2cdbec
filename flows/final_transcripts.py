"""Example dataflow: one final transcript per call, for summarizers that want exactly one message per call.

Reads `calls.transcripts` (BWSM_TRANSCRIPT_TOPIC), collects each call's events with `collect_transcripts`, and
writes each call's document (`schemas/call_transcript.schema.json`, key = call id) to `calls.transcripts.final`
(BWSM_FINAL_TOPIC) once the call completes; with BWSM_COLLECT_IDLE_SECONDS also a provisional one
(`completed` false) for a call that goes idle first. Messages that are not transcript events go to the dead-letter
topic (stage `collect`).

    python -m bytewax.run bytewax.speechmatics.flows.final_transcripts:flow -r /var/lib/bwsm/final -s 5 -b 0

Run it with recovery like the main flow: without it, a restarted flow reads the transcript topic from its beginning
and emits every call's document again. `flow` is a factory that reads its settings from the environment
(`Settings.from_env`); importing this module or reading the attribute reads nothing. With BWSM_CREATE_TOPICS on,
a missing output topic is created at start (BWSM_TOPIC_PARTITIONS partitions).
"""

from __future__ import annotations

import logging

import bytewax.operators as op
import orjson
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow

from bytewax.speechmatics.connectors.kafka.sink import OutMessage, ProducingSink
from bytewax.speechmatics.connectors.logs import configure_logging
from bytewax.speechmatics.connectors.metrics import DEAD_LETTERS
from bytewax.speechmatics.flows.collector import STAGE, Document, collect_transcripts
from bytewax.speechmatics.flows.dead_letter_log import DeadLetterLog
from bytewax.speechmatics.flows.microbatch import dead_letter_message, kafka_input
from bytewax.speechmatics.flows.settings import Settings
from bytewax.speechmatics.flows.stages import split_letters
from bytewax.speechmatics.schemas.dead_letters import DeadLetter, bad_message
from bytewax.speechmatics.schemas.errors import BytewaxSpeechmaticsError, ContractError
from bytewax.speechmatics.schemas.events import Event, load_json_object

log = logging.getLogger(__name__)


def message_event(msg: KafkaSourceMessage) -> tuple[str, Event] | DeadLetter:
    """(call_id, event) for a transcript message, or a dead letter when it is not a JSON object with a call id.

    The event itself is checked by the collector (a tolerant reader: any schema 1.x), not against this version's
    schema file, so a newer producer's events are still collected.
    """
    where = f"{msg.topic}[{msg.partition}]@{msg.offset}"
    try:
        event = load_json_object(msg.value, where)
    except ContractError as exc:
        return _refused(msg, exc.what)
    call_id = event.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        return _refused(msg, "no call_id (a string) in the event")
    return call_id, event


def _refused(msg: KafkaSourceMessage, what: str) -> DeadLetter:
    DEAD_LETTERS.labels(stage=STAGE).inc()
    reason = f"{msg.topic}[{msg.partition}]@{msg.offset}: {what}"
    log.debug("transcript message refused: %s", reason)  # rate-limited as a dead letter
    return bad_message(reason, STAGE, msg.key, msg.value, list(msg.headers or ()), msg.topic or "",
                       -1 if msg.partition is None else msg.partition, -1 if msg.offset is None else msg.offset)


def document_message(topic: str, keyed: tuple[str, Document]) -> OutMessage:
    """A call's document as the message for the final-transcript topic (key = call id)."""
    call_id, document = keyed
    kind = "final_transcript" if document["completed"] else "provisional_transcript"
    return OutMessage(topic=topic, key=call_id.encode(), value=orjson.dumps(document), kind=kind)


def build_final_flow(settings: Settings | None = None) -> Dataflow:
    """Transcript topic -> `collect_transcripts` -> final-transcript topic (and dead letters).

    Args:
        settings: Every setting (`topics`, `kafka`, `collect` are used); built-in defaults when omitted.

    Returns:
        The dataflow, ready for `bytewax.run`.
    """
    settings = settings or Settings()
    topics = settings.topics
    flow = Dataflow("bytewax_speechmatics_final_transcripts")
    sink = ProducingSink(settings.kafka)
    messages = kafka_input(flow, "transcripts_in", topics.transcripts, settings.kafka)
    events = split_letters("events", op.map("decode", messages, message_event))
    documents = collect_transcripts("collect", events.oks, settings.collect)
    logged = DeadLetterLog()  # a warning per letter, rate-limited
    out = op.merge(
        "to_kafka",
        op.map("documents", documents.oks, lambda kv: document_message(topics.final_transcripts, kv)),
        op.map("dead_letters", op.merge("letters", events.errs, documents.errs),
               lambda letter: dead_letter_message(topics.dead_letters, sink.max_record_bytes, logged(letter))),
    )
    op.output("kafka_out", out, sink)
    return flow


def flow() -> Dataflow:
    """The dataflow for `python -m bytewax.run ...final_transcripts:flow` (Bytewax calls this factory): settings
    from the environment, logging configured, the output topic created when asked. Importing this module or
    reading the attribute builds nothing.

    Returns:
        The dataflow, built by `build_final_flow`.
    """
    try:
        settings = Settings.from_env()
        configure_logging(settings.logging)
        if settings.topics.create:
            from bytewax.speechmatics.connectors.kafka.topics import ensure_topics

            ensure_topics([settings.topics.final_transcripts], settings.topics.partitions, create=True,
                          config=settings.kafka.client_config())
        return build_final_flow(settings)
    except BytewaxSpeechmaticsError as exc:  # bad settings, unreachable brokers: one line, not a traceback
        raise SystemExit(f"bytewax-speechmatics final_transcripts: {exc}") from None
