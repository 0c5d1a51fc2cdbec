"""One call in the real-time bridge: its sessions with the official `speechmatics-rt` AsyncClient.

A call's frames arrive from Kafka as the platform publishes them; the call keeps the frames the API has not
acknowledged yet (`AudioAdded.seq_no` counts the session's binary frames, so the n-th acknowledgement is the n-th
frame sent). A session sends those frames in order, then every new frame as it arrives, and `EndOfStream` after the
call's end frame. Every server message goes to `calls.rt` unchanged, keyed by the call id, in the order the SDK
delivers them, with headers the flow reads: `rt_session` (the bridge's session number for the call), `rt_offset`
(seconds of the call's audio before the session's first sample: a resumed session's times start again at 0) and
`rt_first_seq` (the frame seq of its first sample).

Errors: `quota_exceeded`, `idle_timeout`, `session_timeout`, `job_error`, `unknown_error` and a dropped socket
start a new session (from the unacknowledged audio) up to BWSM_RT_MAX_ATTEMPTS sessions; any other error type
(`not_authorised`, `invalid_config`, ...) ends the call's real-time path at once. When the bridge gives up, the
server's `Error` (or for a dropped socket one of its own, header `rt_origin: bridge`, type `connection_lost`) goes
to `calls.rt`, which the flow turns into a real-time `call_completed` with `error`. The batch path never notices.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from speechmatics.rt import (
    AsyncClient,
    AudioEncoding,
    AudioFormat,
    ConnectionConfig,
    ServerMessageType,
    TranscriptionConfig,
)

from bytewax.speechmatics.connectors.speechmatics.realtime_progress import CallProgress
from bytewax.speechmatics.connectors.speechmatics.realtime_settings import BridgeSettings
from bytewax.speechmatics.schemas.call_start import CallConfig
from bytewax.speechmatics.schemas.frames import AudioFrame

log = logging.getLogger(__name__)

RETRIED = frozenset({"quota_exceeded", "idle_timeout", "session_timeout", "job_error", "unknown_error",
                     "connection_lost"})
_RT_FIELDS = frozenset(f.name for f in fields(TranscriptionConfig))
_ENCODINGS = {"pcm_s16le": AudioEncoding.PCM_S16LE, "mulaw": AudioEncoding.MULAW}
#: How long stop_session may wait for EndOfTranscript after EndOfStream, beyond max_delay.
STOP_GRACE_SECONDS = 30.0


@dataclass
class CallStream:
    """A call's audio as the bridge holds it: frames not yet acknowledged, and what came before them."""

    call_id: str
    progress: CallProgress
    partition: int
    config: CallConfig | None = None
    frames: deque[tuple[AudioFrame, float]] = field(default_factory=deque)  # unacknowledged: (frame, published)
    acked_seconds: float = 0.0  # audio acknowledged (or skipped on resume) before frames[0]
    last_seq: int = -1  # the highest seq received (older or repeated frames are dropped)
    ended: bool = False  # the end frame arrived
    audio_format: tuple[int, str, int] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    last_frame_at: float = field(default_factory=time.monotonic)

    def add(self, frame: AudioFrame, published: float = 0.0) -> None:
        """A frame read from Kafka (in the call's order) with its publish time (s since the epoch); frames
        acknowledged before a restart are skipped but counted as time."""
        if frame.seq <= self.last_seq:
            return
        self.last_seq = frame.seq
        self.audio_format = self.audio_format or frame.audio_format
        seconds = frame.samples / frame.sample_rate
        if frame.seq <= self.progress.acked_seq:
            self.acked_seconds += seconds  # streamed and acknowledged before a restart
        elif frame.audio:
            self.frames.append((frame, published))
        self.ended = self.ended or frame.end
        self.last_frame_at = time.monotonic()
        self.changed.set()


@dataclass
class Outcome:
    ok: bool
    error: dict[str, Any] | None = None  # the Error message that ended the session, if any

    @property
    def kind(self) -> str:
        return str((self.error or {}).get("type") or "connection_lost")


class Services:
    """What a call's sessions need from the bridge process (produce, limits, metrics); see realtime.Bridge."""

    settings: BridgeSettings
    idle_seconds: float
    #: One for all sessions: each new ConnectionConfig builds a TLS context (tens of ms of CPU on the event loop).
    connection: ConnectionConfig

    def produce(self, call: CallStream, message: dict[str, Any], headers: list[tuple[str, bytes]]) -> None: ...
    def count(self, kind: str) -> None: ...
    def streamed(self, seconds: float) -> None: ...
    def first_word(self, seconds: float) -> None: ...
    def error(self, call: CallStream, session: int, kind: str, final: bool) -> None: ...
    def transcription_config(self, call: CallStream) -> TranscriptionConfig: ...


def rt_transcription_config(batch_fields: dict[str, Any], settings: BridgeSettings, channels: int,
                            default_labels: tuple[str, ...] = ("agent", "caller")) -> TranscriptionConfig:
    """The real-time config from a batch job's fields (the call's merged settings): the fields the RT API knows,
    plus max_delay and partials from the bridge's settings. A 2-channel call is a multichannel session, always with
    channel diarization (its labels, else the flow's); a mono call never asks for it."""
    out = {k: v for k, v in batch_fields.items() if k in _RT_FIELDS and k != "speaker_diarization_config"}
    if channels == 1 and out.get("diarization") == "channel":
        out.pop("diarization")
        out.pop("channel_diarization_labels", None)
    elif channels > 1:
        labels = list(out.get("channel_diarization_labels") or default_labels)[:channels]
        out.update(diarization="channel", channel_diarization_labels=labels)
    out["max_delay"] = settings.max_delay
    out["enable_partials"] = settings.partials
    return TranscriptionConfig(**out)


class Session:
    """One websocket session of a call: sends the call's unacknowledged frames and relays the server's messages."""

    def __init__(self, call: CallStream, number: int, services: Services) -> None:
        self.call, self.number, self.services = call, number, services
        self.sent: list[AudioFrame] = []
        self.acked = 0
        self.sent_end: list[tuple[float, float]] = []  # (session time at the frame's end, its publish time)
        self.offset = call.acked_seconds
        self.first_seq = call.frames[0][0].seq if call.frames else call.last_seq + 1
        self.error: dict[str, Any] | None = None
        self.finished = False
        self.first_final = True
        self.labels: list[str] = []  # a 2-channel call's channel labels (a multichannel session)
        self.channel_acks: dict[str, int] = {}
        self.closed = asyncio.Event()
        self.headers = [("rt_session", str(number).encode()), ("rt_offset", f"{self.offset:.6f}".encode()),
                        ("rt_first_seq", str(self.first_seq).encode())]

    def on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("message")
        self.services.count(str(kind))
        if kind == "Error":
            self.error = message
            self.closed.set()
            return  # produced only if the bridge gives up (a retried session must not end the call's events)
        if kind == "AudioAdded":
            self._acknowledge(int(message.get("seq_no") or 0))
        elif kind == "ChannelAudioAdded":  # a frame is acknowledged once every channel's part of it is
            self.channel_acks[str(message.get("channel"))] = int(message.get("seq_no") or 0)
            self._acknowledge(min(self.channel_acks.get(label, 0) for label in self.labels))
        elif kind == "EndOfTranscript":
            self.finished = True
            self.closed.set()
        elif kind == "AddTranscript" and self.first_final and message.get("results"):
            self.first_final = False
            self._first_word_latency(message)
        self.services.produce(self.call, message, self.headers)

    def _acknowledge(self, seq_no: int) -> None:
        call = self.call
        while self.acked < min(seq_no, len(self.sent)):
            frame = self.sent[self.acked]
            self.acked += 1
            if call.frames and call.frames[0][0] is frame:
                call.frames.popleft()
            call.acked_seconds += frame.samples / frame.sample_rate
            call.progress.acked_seq = max(call.progress.acked_seq, frame.seq)

    def _first_word_latency(self, message: dict[str, Any]) -> None:
        """From the publish time of the frame holding the first final word's end to now."""
        end = min((r.get("end_time", 0.0) for r in message["results"]), default=0.0)
        for until, published in self.sent_end:
            if until >= end and published > 0:
                self.services.first_word(time.time() - published)
                return

    async def run(self) -> Outcome:
        s = self.services.settings
        rate, encoding, channels = self.call.audio_format or (16000, "pcm_s16le", 1)
        client = AsyncClient(api_key=s.api_key, url=s.rt_url, conn_config=self.services.connection)
        for kind in ServerMessageType:
            client.on(kind, self.on_message)
        config = self.services.transcription_config(self.call)
        if channels > 1:
            self.labels = list(config.channel_diarization_labels or [])
        try:
            await client.start_session(transcription_config=config,
                                       audio_format=AudioFormat(encoding=_ENCODINGS[encoding], sample_rate=rate))
            await self._stream(client)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await client.close()
            raise
        except Exception as exc:  # noqa: BLE001 - any SDK or socket failure ends this session; the caller decides
            log.info("real-time session ended call_id=%s session=%d by %s", self.call.call_id, self.number,
                     type(exc).__name__)
        finally:
            with contextlib.suppress(Exception):
                await client.close()
        return Outcome(self.finished and self.error is None, self.error)

    async def _stream(self, client: AsyncClient) -> None:
        call = self.call
        elapsed = 0.0
        while not self.closed.is_set():
            index = len(self.sent) - self.acked
            if index < len(call.frames):
                frame, published = call.frames[index]
                await self._send(client, frame)
                seconds = frame.samples / frame.sample_rate
                elapsed += seconds
                self.sent.append(frame)
                self.sent_end.append((elapsed, published))
                self.services.streamed(seconds)
                continue
            if call.ended or time.monotonic() - call.last_frame_at > self.services.idle_seconds:
                await asyncio.wait_for(self._stop(client), self.services.settings.max_delay + STOP_GRACE_SECONDS)
                return
            call.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(call.changed.wait(), 1.0)


    async def _send(self, client: AsyncClient, frame: AudioFrame) -> None:
        """One frame: binary AddAudio, or for a 2-channel call one AddChannelAudio per channel."""
        if not self.labels:
            await client.send_audio(frame.audio)
            return
        width = len(frame.audio) // (frame.samples * frame.channels)
        samples = np.frombuffer(frame.audio, dtype=np.uint8).reshape(-1, frame.channels, width)
        for n, label in enumerate(self.labels):
            await client.send_message({"message": "AddChannelAudio", "channel": label,
                                       "data": base64.b64encode(samples[:, n, :].tobytes()).decode()})

    async def _stop(self, client: AsyncClient) -> None:
        """EndOfStream (mono) or EndOfChannel per channel, then wait for EndOfTranscript (or an error)."""
        if not self.labels:
            await client.stop_session()
            return
        for label in self.labels:
            await client.send_message({"message": "EndOfChannel", "channel": label, "last_seq_no": len(self.sent)})
        await self.closed.wait()


async def run_call(call: CallStream, services: Services, slot: Callable[[], Any]) -> None:
    """All sessions of one call, until it ends, fails for good, or is cancelled (a revoked partition, a stop).

    `slot()` is an async context manager holding one of the process's sessions (and the start rate limit).
    """
    settings = services.settings
    attempts = 0
    while True:
        while call.audio_format is None and not call.ended:
            call.changed.clear()
            await call.changed.wait()
        if call.audio_format is None:  # a call that ended without audio
            break
        attempts += 1
        call.progress.sessions += 1
        number = call.progress.sessions
        async with slot():
            session = Session(call, number, services)
            log.info("real-time session starting call_id=%s session=%d first_seq=%d offset=%.3f", call.call_id,
                     number, session.first_seq, session.offset)
            outcome = await session.run()
        if outcome.ok:
            break
        final = outcome.kind not in RETRIED or attempts >= settings.max_attempts
        services.error(call, number, outcome.kind, final)
        if final:
            message = outcome.error or {"message": "Error", "type": "connection_lost",
                                        "reason": "the real-time connection was lost"}
            extra = [] if outcome.error else [("rt_origin", b"bridge")]
            services.produce(call, message, session.headers + extra)
            break
        await asyncio.sleep(min(10.0, 0.5 * 2 ** attempts))
    call.progress.done = True
