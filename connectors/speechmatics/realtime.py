"""The real-time bridge: every call on `calls.audio` streamed to a Speechmatics real-time session, every server
message produced unchanged to `calls.rt` (key = call id), where the flow's `normalize_realtime` reads it.

Why its own process (`bytewax-speechmatics realtime`) and consumer group rather than a stage of the flow: a
websocket per call lives at the pace of the call and of the API, not of the flow's batches. Inside the flow a slow
or stuck session would hold up the Bytewax worker that also cuts and posts the batch chunks of every other call of
its partitions, and a flow restart from a snapshot would replay minutes of audio into sessions that cannot take it
back. Apart, batch ingest never waits for a socket, the bridge scales and restarts alone, and the batch flow keeps
working when the real-time API is down or out of quota.

Kill -9 safety: see realtime_progress (what is committed, with which metadata). Limits: at most
BWSM_RT_MAX_SESSIONS sessions at once (beyond: the call waits for one, or with BWSM_RT_OVERFLOW=batch it goes
batch-only, counted and logged), session starts spaced to BWSM_RT_START_RATE per second. Metrics (Prometheus, on
`realtime --metrics-port`): `bwsm_rt_sessions_open`, `bwsm_rt_audio_seconds_total`,
`bwsm_rt_messages_total{type}`, `bwsm_rt_first_word_seconds`, `bwsm_rt_errors_total{type,final}`,
`bwsm_rt_batch_only_calls_total{reason}`. Logs carry call ids, session numbers, counts and error types only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from speechmatics.rt import ConnectionConfig, TranscriptionConfig

from bytewax.speechmatics.connectors.kafka.config import KafkaSettings
from bytewax.speechmatics.connectors.kafka.sink import PRODUCER_DEFAULTS
from bytewax.speechmatics.connectors.metrics import (
    RT_AUDIO_SECONDS,
    RT_BATCH_ONLY,
    RT_ERRORS,
    RT_FIRST_WORD,
    RT_MESSAGES,
    RT_SESSIONS_OPEN,
)
from bytewax.speechmatics.connectors.speechmatics.realtime_progress import PartitionProgress, decode_metadata
from bytewax.speechmatics.connectors.speechmatics.realtime_session import (
    CallStream,
    Services,
    rt_transcription_config,
    run_call,
)
from bytewax.speechmatics.connectors.speechmatics.realtime_settings import BridgeSettings
from bytewax.speechmatics.connectors.speechmatics.settings import SubmitSettings
from bytewax.speechmatics.schemas.call_start import START, StartRefused, decode_start, message_kind
from bytewax.speechmatics.schemas.errors import ContractError
from bytewax.speechmatics.schemas.frames import DEFAULT_MAX_FRAME_SECONDS, decode_frame

log = logging.getLogger(__name__)


class StartSpacing:
    """Session starts at most `rate` per second (spaced, not bursty), for all calls of the process."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self.lock:
            now = time.monotonic()
            if self.next > now:
                await asyncio.sleep(self.next - now)
            self.next = max(now, self.next) + self.interval


class Bridge(Services):
    """One bridge process: a consumer of the audio topic, a producer to the real-time topic, the calls' sessions."""

    def __init__(self, settings: BridgeSettings, submission: SubmitSettings, kafka: KafkaSettings, audio_topic: str,
                 rt_topic: str, idle_seconds: float = 60.0,
                 max_frame_seconds: float = DEFAULT_MAX_FRAME_SECONDS) -> None:
        self.settings, self.submission, self.kafka = settings, submission, kafka
        self.audio_topic, self.rt_topic = audio_topic, rt_topic
        self.idle_seconds, self.max_frame_seconds = idle_seconds, max_frame_seconds
        self.sessions = asyncio.Semaphore(settings.max_sessions)
        self.open = 0
        self.spacing = StartSpacing(settings.start_rate)
        self.connection = ConnectionConfig()
        self.partitions: dict[int, PartitionProgress] = {}
        self.calls: dict[str, CallStream] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        self.failed: list[str] = []
        self.revoked: set[int] = set()  # partitions revoked in the consumer's thread, dropped on the loop
        self.assigned: set[int] = set()
        self.producer = Producer(kafka.client_config({**PRODUCER_DEFAULTS, "enable.idempotence": True,
                                                      "linger.ms": 5}))
        self.consumer = Consumer(kafka.client_config({
            "group.id": settings.group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            # a rebalance moves only the partitions that change owner: the others' sessions go on undisturbed
            "partition.assignment.strategy": "cooperative-sticky"}))

    # ---- Services (for realtime_session) ----

    def produce(self, call: CallStream, message: dict[str, Any], headers: list[tuple[str, bytes]]) -> None:
        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                self.failed.append(str(err))

        self.producer.produce(self.rt_topic, key=call.call_id.encode(), value=orjson.dumps(message),
                              headers=headers, on_delivery=delivered)
        self.producer.poll(0)

    def count(self, kind: str) -> None:
        RT_MESSAGES.labels(type=kind).inc()

    def streamed(self, seconds: float) -> None:
        RT_AUDIO_SECONDS.inc(seconds)

    def first_word(self, seconds: float) -> None:
        RT_FIRST_WORD.observe(seconds)

    def error(self, call: CallStream, session: int, kind: str, final: bool) -> None:
        RT_ERRORS.labels(type=kind, final=str(final).lower()).inc()
        log.warning("real-time session error call_id=%s session=%d type=%s %s", call.call_id, session, kind,
                    "giving up (batch only)" if final else "retrying in a new session")

    def transcription_config(self, call: CallStream) -> TranscriptionConfig:
        fields = self.submission.transcription_config(call=call.config).to_dict()
        channels = call.audio_format[2] if call.audio_format else 1
        return rt_transcription_config(fields, self.settings, channels, self.submission.channel_labels)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self.sessions:
            await self.spacing.wait()
            self.open += 1
            RT_SESSIONS_OPEN.set(self.open)
            try:
                yield
            finally:
                self.open -= 1
                RT_SESSIONS_OPEN.set(self.open)

    # ---- Kafka side ----

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=10)
        for tp in committed:
            self.partitions[tp.partition] = PartitionProgress(decode_metadata(tp.metadata))
        self.assigned.update(tp.partition for tp in partitions)
        log.info("real-time bridge assigned partitions=%s", sorted(tp.partition for tp in partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Runs in the consumer's thread: the event loop drops the partitions' calls (`_drop_revoked`)."""
        self.revoked.update(tp.partition for tp in partitions)
        self.assigned.difference_update(tp.partition for tp in partitions)

    def _drop_revoked(self) -> None:
        """Cancel the sessions of partitions another bridge now owns (it resumes them from the committed progress)."""
        gone, self.revoked = self.revoked, set()
        for call_id, call in list(self.calls.items()):
            if call.partition in gone:
                task = self.tasks.pop(call_id, None)
                if task is not None:
                    task.cancel()
                del self.calls[call_id]
        for p in gone - self.assigned:  # one given back in the same rebalance keeps the progress it read anew
            self.partitions.pop(p, None)

    def handle(self, msg: Any) -> None:
        """One message of the audio topic: a start message or a frame of a call (anything else is the flow's DLQ)."""
        if msg.partition() not in self.assigned:
            return  # fetched before its partition went to another bridge
        progress = self.partitions.setdefault(msg.partition(), PartitionProgress())
        key = msg.key()
        try:
            call_id = key.decode("utf-8") if key else ""
        except UnicodeDecodeError:
            call_id = ""
        if not call_id:
            progress.position = max(progress.position or 0, msg.offset() + 1)
            return
        state, _ = progress.seen(call_id, msg.offset())
        if state.done:
            return
        call = self.calls.get(call_id)
        if call is None:
            call = CallStream(call_id, state, msg.partition())
            self.calls[call_id] = call
        headers = msg.headers()
        try:
            if message_kind(headers) == START:
                call.config = decode_start(key, msg.value(), headers).settings.config
                return
            frame = decode_frame(key, msg.value(), headers, topic=msg.topic(), partition=msg.partition(),
                                 offset=msg.offset(), max_frame_seconds=self.max_frame_seconds)
        except (StartRefused, ContractError):
            return  # the flow dead-letters it; the call goes on with the defaults
        _, ts = msg.timestamp()
        call.add(frame, ts / 1000.0 if ts and ts > 0 else time.time())
        if call_id not in self.tasks:
            self._begin(call)

    def _begin(self, call: CallStream) -> None:
        if self.settings.overflow == "batch" and len(self.tasks) >= self.settings.max_sessions:
            RT_BATCH_ONLY.labels(reason="max_sessions").inc()
            log.warning("real-time bridge: call_id=%s beyond BWSM_RT_MAX_SESSIONS=%d: batch only", call.call_id,
                        self.settings.max_sessions)
            call.progress.done = True
            self.calls.pop(call.call_id, None)
            return
        task = asyncio.ensure_future(run_call(call, self, self.slot))
        self.tasks[call.call_id] = task

        def finished(t: asyncio.Task) -> None:
            self.tasks.pop(call.call_id, None)
            self.calls.pop(call.call_id, None)
            if not t.cancelled() and t.exception() is not None:
                log.error("real-time bridge: call_id=%s failed (%s)", call.call_id, type(t.exception()).__name__)
                call.progress.done = True

        task.add_done_callback(finished)

    def commit_points(self) -> list[TopicPartition]:
        """What may be committed now (taken on the event loop, before the flush that makes it true)."""
        offsets = []
        for partition, progress in self.partitions.items():
            point = progress.commit_point()
            if point is not None:
                offsets.append(TopicPartition(self.audio_topic, partition, point[0], metadata=point[1]))
        return offsets

    def commit(self, offsets: list[TopicPartition]) -> None:
        """Commit `offsets` once everything produced before they were taken is on `calls.rt`."""
        remaining = self.producer.flush(10)
        if remaining or self.failed:
            log.error("real-time bridge: %d messages not delivered to the real-time topic; not committing",
                      remaining + len(self.failed))
            self.failed.clear()
            return
        if offsets:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except Exception as exc:  # noqa: BLE001 - a failed commit is retried at the next interval
                log.warning("real-time bridge: commit failed (%s)", type(exc).__name__)

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Consume, stream and commit until `stop` is set; then end the open sessions without EndOfStream (a
        restart resumes them) and commit."""
        self.consumer.subscribe([self.audio_topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        last_commit = time.monotonic()
        log.info("real-time bridge started group=%s max_sessions=%d", self.settings.group, self.settings.max_sessions)
        try:
            while not stop.is_set():
                messages = await asyncio.to_thread(self.consumer.consume, 500, 0.1)
                if self.revoked:
                    self._drop_revoked()
                if ready is not None and self.partitions:
                    ready.set()
                for msg in messages:
                    if msg.error() is None:
                        self.handle(msg)
                self.producer.poll(0)
                if time.monotonic() - last_commit >= self.settings.commit_seconds:
                    await asyncio.to_thread(self.commit, self.commit_points())
                    last_commit = time.monotonic()
                await asyncio.sleep(0)
        finally:
            for task in list(self.tasks.values()):
                task.cancel()
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            await asyncio.to_thread(self.commit, self.commit_points())
            self.consumer.close()
            log.info("real-time bridge stopped")
