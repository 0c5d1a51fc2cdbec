"""The micro-batch dataflow: call audio on Kafka -> chunks -> Speechmatics jobs -> stitched transcripts on Kafka.

Run it with `python -m bytewax.run bytewax.speechmatics.flows.microbatch:flow` (every Bytewax option applies) or
`bytewax-speechmatics run`; `flow` is a factory (Bytewax calls it) that reads its settings from the environment
(`Settings.from_env`). Importing this module, or looking at its attributes, builds and starts nothing.
Composing your own dataflow: call the stages (`decode_frames`, `chunk_calls`, `transcribe_chunks`,
`stitch_calls`, `normalize_realtime`) yourself, or `build_flow(settings)` for this whole one.

One dataflow carries both sources: the real-time branch (`calls.rt`, raw Speechmatics RT messages) is merged into
this flow rather than run beside it, so one deployment, one recovery store and one producer serve the transcript
topic, and a single consumer sees batch and real-time events for a call in one ordered stream per partition.
`RealtimeSettings(enabled=False)` (BWSM_REALTIME=0) leaves the real-time topic alone.
"""

from __future__ import annotations

import gc
import logging
import sys
from dataclasses import replace

import bytewax.operators as op
import orjson
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow, Stream

from bytewax.speechmatics.connectors.kafka.config import KafkaSettings
from bytewax.speechmatics.connectors.kafka.sink import OutMessage, ProducingSink
from bytewax.speechmatics.connectors.logs import configure_logging
from bytewax.speechmatics.connectors.metrics import SOURCE_ERRORS
from bytewax.speechmatics.connectors.speechmatics.journal import shared_journal
from bytewax.speechmatics.flows.chunker import chunk_calls
from bytewax.speechmatics.flows.dead_letter_log import DeadLetterLog
from bytewax.speechmatics.flows.decode import audio_input
from bytewax.speechmatics.flows.realtime import normalize_realtime
from bytewax.speechmatics.flows.segments import Produced
from bytewax.speechmatics.flows.settings import RunSettings, Settings
from bytewax.speechmatics.flows.stitcher import stitch_calls
from bytewax.speechmatics.flows.submitter import transcribe_chunks
from bytewax.speechmatics.schemas.dead_letters import DeadLetter, fit
from bytewax.speechmatics.schemas.errors import BytewaxSpeechmaticsError

log = logging.getLogger(__name__)


def kafka_input(flow: Dataflow, step_id: str, topic: str, kafka: KafkaSettings) -> Stream[KafkaSourceMessage]:
    """Consume one topic (one Bytewax partition per Kafka partition); consumer errors are logged and counted.

    Bytewax's KafkaSource leaves librdkafka's `auto.offset.reset` (`latest`: a gone offset jumps to the end); here
    it follows BWSM_SOURCE_OFFSET_RESET (`error` reads as `earliest`: this source cannot stop on it), without the
    audio source's count of what was skipped.
    """
    reset = "latest" if kafka.source_offset_reset == "latest" else "earliest"
    kin = kop.input(step_id, flow, brokers=kafka.brokers, topics=[topic],
                    add_config={"auto.offset.reset": reset, **kafka.properties}, batch_size=kafka.source_batch_size)

    def report(_step: str, err: object) -> None:
        SOURCE_ERRORS.labels(step=step_id).inc()
        log.warning("kafka consumer error on %s: %s", topic, getattr(err, "err", err))

    op.inspect(f"{step_id}_errors", kin.errs, report)
    return kin.oks


def transcript_message(topic: str, keyed: tuple[str, Produced]) -> OutMessage:
    """A transcript event as the message for the transcript topic (key = call id)."""
    call_id, produced = keyed
    return OutMessage(topic=topic, key=call_id.encode(), value=orjson.dumps(produced.event),
                      kind=f"{produced.event['source']}_{produced.event['type']}", closed_at=produced.closed_at)


def dead_letter_message(topic: str, max_record_bytes: int, letter: DeadLetter) -> OutMessage:
    """A dead letter as the message for the dead-letter topic, cut to fit the producer (best effort)."""
    letter = fit(letter, max_record_bytes)
    return OutMessage(topic=topic, key=letter.key, value=letter.value, headers=letter.kafka_headers(),
                      kind=f"dlq_{letter.stage}", best_effort=True)


def build_flow(settings: Settings | None = None) -> Dataflow:
    """The whole micro-batch dataflow, Kafka in and out.

    With neither an API key nor a batch URL in `settings.submission` and `settings.worker.embedded` (the default),
    this process's local worker is started here (it needs the `[worker]` extra for the whisper engine) and
    submission is pointed at it. A batch URL of a self-hosted worker needs no key.

    Args:
        settings: Every setting; the built-in defaults when omitted (`Settings.from_env()` reads the environment).

    Returns:
        The dataflow, ready for `bytewax.run` (or `cli_main`).

    Raises:
        WorkerUnavailable: no API key, and the local worker cannot be started (its engine is not installed).
        SettingsError: the Speechmatics SaaS would be called without a key.

    Example:
        >>> from bytewax.speechmatics.flows import Settings, build_flow
        >>> flow = build_flow(Settings.from_env())
    """
    settings = _with_endpoint(settings or Settings())
    flow = Dataflow("bytewax_speechmatics_microbatch")
    topics = settings.topics
    sink = ProducingSink(settings.kafka)
    decoding = replace(settings.decoding, max_record_bytes=sink.max_record_bytes)

    kafka = settings.kafka
    frames = audio_input("audio_in", flow, brokers=kafka.brokers, topics=[topics.audio], config=decoding,
                         add_config=dict(kafka.properties), batch_size=kafka.source_batch_size,
                         pace=kafka.source_pace_seconds, offset_reset=kafka.source_offset_reset)
    chunks = chunk_calls("chunk", frames.oks, settings.chunking)
    results = transcribe_chunks("transcribe", chunks.oks, settings.submission)
    stitched = stitch_calls("stitch", results.oks, settings.stitching)
    events = [stitched.oks]
    letters = [frames.errs, chunks.errs, results.errs, stitched.errs]
    if settings.realtime.enabled:
        rt = normalize_realtime("realtime", kafka_input(flow, "rt_in", topics.realtime, settings.kafka),
                                settings.realtime)
        events.append(rt.oks)
        letters.append(rt.errs)

    logged = DeadLetterLog()  # a warning per letter, rate-limited
    out = op.merge(
        "to_kafka",
        op.map("transcripts", op.merge("events", *events), lambda kv: transcript_message(topics.transcripts, kv)),
        op.map("dead_letters", op.merge("letters", *letters),
               lambda letter: dead_letter_message(topics.dead_letters, sink.max_record_bytes, logged(letter))),
    )
    op.output("kafka_out", out, sink)
    return flow


def tune_runtime(run: RunSettings) -> None:
    """The flow's process, tuned for it (the entry point's job, never an import's): the young-generation GC
    threshold and the GIL switch interval (0 leaves Python's default); see RunSettings for why."""
    if run.gc_threshold > 0:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(run.gc_threshold, older, oldest)
    if run.switch_interval > 0:
        sys.setswitchinterval(run.switch_interval)


def _with_endpoint(settings: Settings) -> Settings:
    """Point submission at the embedded local worker when neither an API key nor a URL is set (and it is not off)."""
    if settings.submission.api_key or settings.submission.batch_url or not settings.worker.embedded:
        return settings
    from bytewax.speechmatics.connectors.worker.embedded import start_embedded_worker

    endpoint = start_embedded_worker(settings.worker.engine, settings.worker.parallel)
    return settings.with_endpoint(endpoint.url, endpoint.api_key)


def flow(tune: bool = False) -> Dataflow:
    """The dataflow for `python -m bytewax.run bytewax.speechmatics.flows.microbatch:flow` (Bytewax calls this
    factory): settings from the environment, logging configured, and this process's index claimed (its job
    journal opened: a second live process with the same index stops here, naming it).

    Args:
        tune: Also tune the process for the flow (`tune_runtime`: GC threshold, GIL switch interval). Process-wide,
            so only for a process that is the flow's: `bytewax-speechmatics run` does it, and with `python -m
            bytewax.run` ask for it as `"bytewax.speechmatics.flows.microbatch:flow(tune=True)"`.

    Returns:
        The dataflow, built by `build_flow`.
    """
    try:
        settings = Settings.from_env()
        configure_logging(settings.logging)
        sub = settings.submission
        shared_journal(sub.journal_dir, sub.process_index, sub.journal_retention)  # claims the index, or stops
        if tune:
            tune_runtime(settings.run)
        return build_flow(settings)
    except BytewaxSpeechmaticsError as exc:  # bad settings, no engine: one line, not a traceback
        raise SystemExit(f"bytewax-speechmatics: {exc}") from None
