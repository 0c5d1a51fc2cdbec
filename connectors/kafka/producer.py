"""Streaming a call to `calls.audio` from one's own code: the producer API (`bytewax.speechmatics.producer`).

    from bytewax.speechmatics.producer import CallPublisher

    with CallPublisher("kafka:9092", topic="calls.audio") as publisher:
        with publisher.start("call-42", config={"language": "en"}, metadata={"tenant": "acme"},
                             sample_rate=8000, encoding="mulaw") as call:
            for payload in audio_source():      # bytes of any length, or numpy arrays
                call.send(payload)
        # leaving the call's block sends its end frame; leaving the publisher's block flushes

What it guarantees, so a platform need not know the header contract (schemas/frames.py, schemas/call_start.py):
- The start message is validated before it is sent (ContractError naming the field) and precedes the frames.
- Audio of any length is cut into frames within the contract (whole samples, at most `max_frame_seconds`), `seq`
  numbered from 0 without gaps; `end()` sends the end frame with the rest.
- Order per call: every message of a call has the call id as key (one partition) and the producer is idempotent
  (`enable.idempotence`: retries neither reorder nor duplicate).
- Bounded memory: at most `max_in_flight_bytes` of audio is produced but not yet acknowledged, per publisher;
  `send` blocks (or awaits, in `AsyncCallPublisher`) until the broker catches up. A slow or unreachable broker
  therefore slows the caller down instead of growing a queue.
- Delivery failures are raised on the call they belong to (`DeliveryError`, on its next `send` or its `end`), not on
  whichever call happens to send next. `end()` returns once the broker has acknowledged all of the call's messages.

The link to Kafka (the producer, the byte cap, each call's acknowledgements) is `delivery.py`; the sync and asyncio
forms here share it and everything else, and differ only in how a caller waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from bytewax.speechmatics.connectors.kafka.delivery import (
    CallAcks,
    DeliveryError,
    KafkaLink,
    PublisherClosed,
)
from bytewax.speechmatics.connectors.kafka.frame_cutter import (
    DEFAULT_FRAME_SECONDS,
    AudioFormat,
    FrameCutter,
    audio_bytes,
)
from bytewax.speechmatics.schemas.call_start import encode_start, parse_start_value, start_value
from bytewax.speechmatics.schemas.errors import BytewaxSpeechmaticsError
from bytewax.speechmatics.schemas.frames import DEFAULT_MAX_FRAME_SECONDS, AudioFrame, encode_frame

DEFAULT_TOPIC = "calls.audio"
#: Bytes produced but not yet acknowledged, per publisher: 32 MiB is 30 minutes of one 8 kHz two-track call, or
#: 2 s of a thousand of them: enough to ride out a broker's leader election, small enough for any host.
DEFAULT_MAX_IN_FLIGHT_BYTES = 32 << 20
AudioLike = bytes | bytearray | memoryview | np.ndarray


def _start_message(call_id: str, config: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None,
                   raw_start: bytes | None = None) -> tuple[bytes, bytes, list[tuple[str, bytes]]] | None:
    """The start message when there is something to say (validated: ContractError naming the field; a `raw_start`
    goes as it is)."""
    if not call_id or not isinstance(call_id, str):
        raise ValueError("call_id must be a non-empty string")
    if raw_start is not None:
        if config is not None or metadata is not None:
            raise ValueError("give config/metadata or raw_start, not both")
        return encode_start(call_id, value=raw_start)
    if config is None and metadata is None:
        return None
    value = start_value(config, metadata)
    parse_start_value(value, f"start message of call {call_id[:120]!r}")
    return encode_start(call_id, value=value)


class _CallBase:
    def __init__(self, link: KafkaLink, call_id: str, fmt: AudioFormat, frame_seconds: float,
                 max_frame_seconds: float) -> None:
        self._link = link
        self._cutter = FrameCutter(call_id, fmt, frame_seconds, max_frame_seconds)
        self._state = CallAcks(call_id)
        self._since: float | None = None  # when the oldest audio not yet in a frame was handed over

    @property
    def call_id(self) -> str:
        return self._cutter.call_id

    @property
    def seq(self) -> int:
        """The seq the next frame will get (= frames sent so far)."""
        return self._cutter.seq

    @property
    def ended(self) -> bool:
        return self._cutter.ended

    @property
    def unacknowledged(self) -> int:
        """Messages of this call the broker has not acknowledged yet."""
        return self._state.unacked

    def _cut(self, audio: AudioLike, received_at: float | None) -> list[tuple[AudioFrame, float | None]]:
        self._state.raise_error()
        if self._link.closed:
            raise PublisherClosed(f"call {self.call_id[:120]!r}: the publisher is closed")
        now = time.monotonic()
        if self._since is None:
            self._since = now if received_at is None else received_at
        frames = self._cutter.push(audio_bytes(audio, self._cutter.fmt))
        return self._stamped(frames, now)

    def _stamped(self, frames: list[AudioFrame], now: float) -> list[tuple[AudioFrame, float | None]]:
        if not frames:
            return []
        since, self._since = self._since, (now if self._cutter.pending_bytes else None)
        return [(frame, since) for frame in frames]

    def _drained(self) -> list[tuple[AudioFrame, float | None]]:
        return self._stamped(self._cutter.drain(), time.monotonic())

    def _end_frames(self, audio: AudioLike) -> list[tuple[AudioFrame, float | None]]:
        self._state.raise_error()
        if self._since is None and len(audio):
            self._since = time.monotonic()
        since, self._since = self._since, None
        return [(frame, since) for frame in self._cutter.finish_with(audio_bytes(audio, self._cutter.fmt))]


class Call(_CallBase):
    """One call being streamed (from `CallPublisher.start`); not thread-safe: one sender per call."""

    def send(self, audio: AudioLike, received_at: float | None = None) -> None:
        """Send audio of any length (bytes in the call's format, or a numpy array); whole frames go out now, the rest
        with the next piece or the end. Blocks while the publisher's bytes in flight are at their cap.
        `received_at` (time.monotonic()) is when the oldest of this audio arrived, for `ack_latency` (default: now).

        Raises:
            DeliveryError: an earlier message of this call was refused by Kafka.
        """
        for frame, since in self._cut(audio, received_at):
            self._produce(encode_frame(frame), since)

    def flush_audio(self) -> None:
        """Send the audio held back for a whole frame now (a pause in the audio; not needed before `end`)."""
        for frame, since in self._drained():
            self._produce(encode_frame(frame), since)

    def end(self, audio: AudioLike = b"", *, wait: bool = True, timeout: float | None = 30.0) -> None:
        """Send the end frame (with the audio held back, and `audio`: the call's last piece rides in the end frame)
        and wait until Kafka has acknowledged every message of the call; raises DeliveryError if any was refused,
        TimeoutError if the broker does not answer in `timeout`. `wait=False` returns once the end frame is handed
        to the producer (a sender of many calls; `wait()` later, or the publisher's `flush`)."""
        for frame, since in self._end_frames(audio):
            self._produce(encode_frame(frame), since)
        if wait:
            self.wait(timeout)

    def abandon(self) -> None:
        """Send the audio held back but no end frame: the flow ends the call after its idle timeout
        (BWSM_IDLE_TIMEOUT_SECONDS). For a source that vanished without saying the call is over."""
        self.flush_audio()
        self._cutter.ended = True

    def wait(self, timeout: float | None = 30.0) -> None:
        """Wait until Kafka has acknowledged every message of the call sent so far."""
        if not self._state.idle.wait(timeout):
            raise TimeoutError(f"call {self.call_id[:120]!r}: Kafka did not acknowledge {self._state.unacked} "
                               f"message(s) within {timeout} s")
        self._state.raise_error()

    def _produce(self, message: tuple[bytes, bytes, list[tuple[str, bytes]]], since: float | None) -> None:
        self._link.budget.take(len(message[1]), self._link.is_closed)
        while not self._link.produce(self._state, message, since):
            time.sleep(0.01)  # librdkafka's queue is full: its acknowledgements make room

    def __enter__(self) -> Call:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        if self.ended:
            return
        if exc is None:
            self.end()
        elif not isinstance(exc, DeliveryError | PublisherClosed):
            with contextlib.suppress(BytewaxSpeechmaticsError):  # the original exception says more
                self.end()


class AsyncCall(_CallBase):
    """One call being streamed from asyncio code (from `AsyncCallPublisher.start`); one sender per call."""

    async def send(self, audio: AudioLike, received_at: float | None = None) -> None:
        """As `Call.send`, awaiting (not blocking the loop) while the bytes in flight are at their cap."""
        for frame, since in self._cut(audio, received_at):
            await self._produce(encode_frame(frame), since)

    async def flush_audio(self) -> None:
        for frame, since in self._drained():
            await self._produce(encode_frame(frame), since)

    async def end(self, audio: AudioLike = b"", *, wait: bool = True, timeout: float | None = 30.0) -> None:
        for frame, since in self._end_frames(audio):
            await self._produce(encode_frame(frame), since)
        if wait:
            await self.wait(timeout)

    async def abandon(self) -> None:
        await self.flush_audio()
        self._cutter.ended = True

    async def wait(self, timeout: float | None = 30.0) -> None:
        loop = asyncio.get_running_loop()
        with self._state.lock:
            if self._state.unacked == 0:
                waiter = None
            else:
                waiter = loop.create_future()
                self._state.waiters.append((loop, waiter))
        if waiter is not None:
            try:
                await asyncio.wait_for(waiter, timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(f"call {self.call_id[:120]!r}: Kafka did not acknowledge {self._state.unacked} "
                                   f"message(s) within {timeout} s") from None
        self._state.raise_error()

    async def _produce(self, message: tuple[bytes, bytes, list[tuple[str, bytes]]], since: float | None) -> None:
        await self._link.budget.take_async(len(message[1]), self._link.is_closed)
        while not self._link.produce(self._state, message, since):
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> AsyncCall:
        return self

    async def __aexit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        if self.ended:
            return
        if exc is None:
            await self.end()
        elif not isinstance(exc, DeliveryError | PublisherClosed):
            with contextlib.suppress(BytewaxSpeechmaticsError):
                await self.end()


class _PublisherBase:
    def __init__(self, brokers: str | Iterable[str], topic: str = DEFAULT_TOPIC, *,
                 max_in_flight_bytes: int = DEFAULT_MAX_IN_FLIGHT_BYTES,
                 frame_seconds: float = DEFAULT_FRAME_SECONDS,
                 max_frame_seconds: float = DEFAULT_MAX_FRAME_SECONDS,
                 ack_latency: Callable[[float], None] | None = None,
                 **kafka_settings: Any) -> None:
        """
        Args:
            brokers: Kafka bootstrap servers ("host:port,host:port" or a list).
            topic: the audio topic.
            max_in_flight_bytes: the most audio bytes produced but not yet acknowledged; `send` waits above it.
            frame_seconds: audio per frame (latency vs. message count); at most `max_frame_seconds`.
            max_frame_seconds: the flow's BWSM_MAX_FRAME_SECONDS (frames above it are refused there).
            ack_latency: called with the seconds from the oldest audio of each frame being handed to `send` to the
                frame's acknowledgement (for metrics; on the acknowledgement thread, so keep it quick).
            **kafka_settings: librdkafka properties (`linger_ms=10` or `**{"linger.ms": 10}`), security included.
        """
        FrameCutter("probe", AudioFormat(), frame_seconds, max_frame_seconds)  # refuse bad framing now
        self.frame_seconds = frame_seconds
        self.max_frame_seconds = max_frame_seconds
        self._link = KafkaLink(brokers, topic, max_in_flight_bytes, ack_latency, kafka_settings)

    @property
    def topic(self) -> str:
        return self._link.topic

    @property
    def in_flight_bytes(self) -> int:
        """Audio bytes produced and not yet acknowledged."""
        return self._link.budget.used

    @property
    def peak_in_flight_bytes(self) -> int:
        """The most `in_flight_bytes` has been (what the cap bounded)."""
        return self._link.budget.peak

    def _format(self, sample_rate: int, encoding: str, channels: int) -> AudioFormat:
        if self._link.closed:
            raise PublisherClosed("the publisher is closed")
        return AudioFormat(sample_rate, encoding, channels)


class CallPublisher(_PublisherBase):
    """Streams calls to the audio topic from synchronous code (thread-safe; one sender per call)."""

    def start(self, call_id: str, *, config: Mapping[str, Any] | None = None,
              metadata: Mapping[str, Any] | None = None, sample_rate: int = 16000, encoding: str = "pcm_s16le",
              channels: int = 1, raw_start: bytes | None = None) -> Call:
        """Begin a call: its start message (when `config` or `metadata` is given, validated first) goes out now.

        Args:
            call_id: the call's id (the Kafka key of all its messages).
            config: per-call transcription settings (schemas/call_start.schema.json `config`).
            metadata: an opaque JSON object (at most 8 KB) copied into every transcript event of the call.
            sample_rate, encoding, channels: the audio's format (pcm_s16le or mulaw; 1 or 2 interleaved channels).
            raw_start: instead of config/metadata, a start message's value already encoded, sent as it is without
                validation (for tools that replay recorded start messages, and tests of the flow's refusals).

        Returns:
            The Call to `send` audio on and `end`; also a context manager that ends it.

        Raises:
            ContractError: the start message breaks the contract (the message names the field).
        """
        fmt = self._format(sample_rate, encoding, channels)
        message = _start_message(call_id, config, metadata, raw_start)
        call = Call(self._link, call_id, fmt, self.frame_seconds, self.max_frame_seconds)
        if message is not None:
            call._produce(message, None)
        return call

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for every message to be acknowledged; the number still unacknowledged after `timeout`."""
        return self._link.producer.flush(timeout)

    def close(self, timeout: float = 30.0) -> int:
        """Flush and stop; the number of messages still unacknowledged after `timeout` (0 when all made it)."""
        return self._link.close(timeout)

    def __enter__(self) -> CallPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncCallPublisher(_PublisherBase):
    """Streams calls to the audio topic from asyncio code: `start`, `send`, `end` and closing are awaited."""

    async def start(self, call_id: str, *, config: Mapping[str, Any] | None = None,
                    metadata: Mapping[str, Any] | None = None, sample_rate: int = 16000,
                    encoding: str = "pcm_s16le", channels: int = 1, raw_start: bytes | None = None) -> AsyncCall:
        """As `CallPublisher.start`."""
        fmt = self._format(sample_rate, encoding, channels)
        message = _start_message(call_id, config, metadata, raw_start)
        call = AsyncCall(self._link, call_id, fmt, self.frame_seconds, self.max_frame_seconds)
        if message is not None:
            await call._produce(message, None)
        return call

    async def flush(self, timeout: float = 30.0) -> int:
        return await asyncio.to_thread(self._link.producer.flush, timeout)

    async def close(self, timeout: float = 30.0) -> int:
        return await asyncio.to_thread(self._link.close, timeout)

    async def __aenter__(self) -> AsyncCallPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
