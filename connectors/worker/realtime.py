"""The local worker's real-time endpoint: the Speechmatics real-time API v2 over a websocket at `/v2`.

The public AsyncAPI spec (speechmatics/docs `spec/realtime.yaml`) and the official `speechmatics-rt` SDK define it,
so the SDK's `AsyncClient(url="ws://HOST:PORT/v2")` works unmodified:
- client: `StartRecognition{audio_format, transcription_config}` (raw `pcm_s16le`/`pcm_f32le`/`mulaw` at its
  `sample_rate`, or `file`: a WAV streamed in pieces), binary `AddAudio` frames, `SetRecognitionConfig` (only
  `max_delay`, `max_delay_mode`, `enable_partials`, `conversation_config`, `audio_filtering_config` may change),
  `EndOfStream{last_seq_no}`;
- server: `RecognitionStarted{id}`, `AudioAdded{seq_no}` for every binary frame (1, 2, ...),
  `AddPartialTranscript`/`AddTranscript` (format 2.1), `EndOfUtterance`, `EndOfTranscript`, `Info`
  (`recognition_quality`), `Warning` (`add_audio_after_eos`) and `Error{type, reason}` with the spec's types, after
  which the server closes the socket.
Any bearer token is accepted unless the worker was started with an API key (then `not_authorised`), as the batch
side does. Transcripts come from the worker's engine, streaming: the reference engine's truth (realtime_reference.py)
or whisper re-decoding a rolling window (realtime_whisper.py).

Faults for tests: `/admin/realtime` (realtime_faults.py; `GET` shows the document, `PUT`/`POST` replaces it);
counters at `/admin/realtime/stats`. Logs carry session ids, counts and error types only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import inspect
import json
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from bytewax.speechmatics.connectors.worker.audio import AudioFormatError, parse_wav
from bytewax.speechmatics.connectors.worker.engines.reference import ReferenceEngine
from bytewax.speechmatics.connectors.worker.realtime_config import (
    ENCODINGS,
    MID_SESSION,
    SessionError,
    channel_labels,
    check_config,
    check_mid_session,
)
from bytewax.speechmatics.connectors.worker.realtime_faults import RealtimeFaults
from bytewax.speechmatics.connectors.worker.realtime_reference import ReferenceStream
from bytewax.speechmatics.connectors.worker.realtime_whisper import SharedModel, WhisperStream

log = logging.getLogger(__name__)

@dataclass
class RealtimeState:
    """The endpoint's part of the worker: open sessions, faults, counters."""

    api_key: str | None = None
    faults: RealtimeFaults = field(default_factory=RealtimeFaults)
    open: set[str] = field(default_factory=set)
    counts: Counter = field(default_factory=Counter)
    whisper: SharedModel | None = None  # loaded on the first whisper session

    def stats(self) -> dict[str, Any]:
        return {"open_sessions": len(self.open), "counts": dict(self.counts)}


RT_STATE = web.AppKey("realtime", RealtimeState)


def _engine_of(app: web.Application) -> ReferenceEngine | SharedModel | None:
    """The recogniser behind the worker's batch engine: the reference truth, or a shared whisper model."""
    from bytewax.speechmatics.connectors.worker.app import STATE  # the batch app owns the engine
    from bytewax.speechmatics.connectors.worker.engines.whisper import WhisperConfig

    backend = app[STATE].engine
    engine = getattr(backend, "engine", None)
    if isinstance(engine, ReferenceEngine):
        return engine
    config = getattr(backend, "config", None)
    if isinstance(config, WhisperConfig):
        rt = app[RT_STATE]
        if rt.whisper is None:
            rt.whisper = SharedModel(config)
        return rt.whisper
    return None


class Session:
    """One websocket: the protocol's state machine around a ReferenceStream."""

    def __init__(self, ws: web.WebSocketResponse, rt: RealtimeState, engine: ReferenceEngine | SharedModel | None,
                 authorised: bool) -> None:
        self.ws, self.rt, self.engine, self.authorised = ws, rt, engine, authorised
        self.id = str(uuid.uuid4())
        self.stream: ReferenceStream | WhisperStream | None = None
        self.seq = 0
        self.eos = False
        self.file: bytearray | None = None  # `file` audio received so far
        self.file_used = 0  # bytes of the parsed file's samples already fed
        self.f32 = False
        self.config: dict[str, Any] = {}
        self.drop_after: int | None = None
        self.channels: dict[str, ReferenceStream] = {}  # a multichannel session's streams by channel label
        self.channel_seq: dict[str, int] = {}

    async def send(self, message: dict[str, Any]) -> None:
        self.rt.counts[f"sent.{message['message']}"] += 1
        await self.ws.send_str(json.dumps(message))

    async def run(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.BINARY:
                    await self.add_audio(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    if await self.on_text(msg.data):
                        break
                else:
                    break
        except SessionError as exc:
            self.rt.counts[f"error.{exc.kind}"] += 1
            log.info("realtime session error id=%s type=%s", self.id, exc.kind)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.send({"message": "Error", "type": exc.kind, "reason": exc.reason})

    async def on_text(self, text: str) -> bool:
        """Handle one JSON message; True when the session is over."""
        try:
            message = json.loads(text)
        except ValueError:
            raise SessionError("invalid_message", "message is not valid JSON") from None
        kind = message.get("message") if isinstance(message, dict) else None
        if kind == "StartRecognition":
            await self.start(message)
        elif self.stream is None:
            raise SessionError("protocol_error", f"{kind or 'a message'} before StartRecognition")
        elif kind == "EndOfStream":
            if not isinstance(message.get("last_seq_no"), int):
                raise SessionError("invalid_message", "EndOfStream needs an integer last_seq_no")
            self.eos = True
            for label in list(self.channels):
                await self.end_channel(label)
            finished = self.stream.finish()
            for out in (await finished) if inspect.isawaitable(finished) else finished:
                await self.send(out)
            await self.send({"message": "EndOfTranscript"})
            return True
        elif kind == "AddChannelAudio":
            await self.add_channel_audio(message)
        elif kind == "EndOfChannel":
            label = message.get("channel")
            if label not in self.channels:
                raise SessionError("protocol_error", "EndOfChannel for a channel that is not open")
            await self.end_channel(label)
            if not self.channels:
                self.eos = True
                await self.send({"message": "EndOfTranscript"})
                return True
        elif kind == "SetRecognitionConfig":
            self.reconfigure(message)
        elif kind in ("ForceEndOfUtterance", "GetSpeakers"):
            pass
        else:
            raise SessionError("invalid_message", f"unknown message {str(kind)[:40]!r}")
        return False

    async def start(self, message: dict[str, Any]) -> None:
        if self.stream is not None:
            raise SessionError("protocol_error", "StartRecognition sent twice")
        if not self.authorised:
            raise SessionError("not_authorised", "the API key is not valid")
        fault = self.rt.faults
        if fault.errors:
            kind = fault.errors.pop(0)
            raise SessionError(kind, f"{kind} (injected fault)")
        if fault.max_sessions is not None and len(self.rt.open) >= fault.max_sessions:
            raise SessionError("quota_exceeded", "maximum number of concurrent sessions reached")
        audio = message.get("audio_format")
        config = message.get("transcription_config")
        if not isinstance(audio, dict):
            raise SessionError("invalid_audio_type", "audio_format must be an object")
        if not isinstance(config, dict):
            raise SessionError("invalid_config", "transcription_config must be an object")
        rate, encoding = self._audio_format(audio)
        check_config(config)
        if self.engine is None:
            raise SessionError("invalid_model", "this worker's engine cannot stream")
        self.config = dict(config)
        conversation = config.get("conversation_config") or {}
        if isinstance(self.engine, SharedModel):
            if self.file is not None:
                raise SessionError("invalid_audio_type", "the whisper engine streams raw audio only")
            if channel_labels(config):
                raise SessionError("invalid_config", "the whisper engine streams one channel (use the reference "
                                                     "engine for multichannel sessions)")
            self.stream = WhisperStream(self.engine, rate, encoding, self.send, language=config["language"],
                                        enable_partials=bool(config.get("enable_partials")),
                                        max_delay=float(config.get("max_delay") or 4.0))
        else:
            def stream(channel: int | None = None, label: str | None = None) -> ReferenceStream:
                assert isinstance(self.engine, ReferenceEngine)
                return ReferenceStream(
                    self.engine, rate, encoding, language=config["language"],
                    enable_partials=bool(config.get("enable_partials")),
                    diarization=str(config.get("diarization") or "none"),
                    eou_trigger=float(conversation.get("end_of_utterance_silence_trigger") or 0.0),
                    channel=channel, label=label)

            self.stream = stream()
            for n, label in enumerate(channel_labels(config), 1):
                self.channels[str(label)] = stream(n, str(label))
                self.channel_seq[str(label)] = 0
        if fault.drop_after is not None:
            self.drop_after, fault.drop_after = fault.drop_after, None
        self.rt.open.add(self.id)
        self.rt.counts["sessions"] += 1
        log.info("realtime session started id=%s rate=%s", self.id, rate)
        started: dict[str, Any] = {
            "message": "RecognitionStarted", "id": self.id, "orchestrator_version": "bwsm-local",
            "language_pack_info": {"language_description": config["language"], "word_delimiter": " ",
                                   "writing_direction": "left-to-right", "itn": True, "adapted": False}}
        if self.channels:
            started["channel_ids"] = list(self.channels)
        await self.send(started)
        await self.send({"message": "Info", "type": "recognition_quality", "quality": "telephony"
                         if rate <= 8000 else "broadcast", "reason": "running the reference engine"})

    def _audio_format(self, audio: dict[str, Any]) -> tuple[int, str]:
        kind = audio.get("type")
        if kind == "file":
            self.file = bytearray()
            return 0, "pcm_s16le"  # the rate comes from the file's header
        if kind != "raw":
            raise SessionError("invalid_audio_type", f"audio_format.type must be raw or file, got {kind!r}")
        encoding, rate = audio.get("encoding"), audio.get("sample_rate")
        if encoding not in ENCODINGS:
            raise SessionError("invalid_audio_type", f"encoding must be one of {list(ENCODINGS)}")
        if not isinstance(rate, int) or isinstance(rate, bool) or not 8000 <= rate <= 96000:
            raise SessionError("invalid_audio_type", "sample_rate must be an integer from 8000 to 96000")
        self.f32 = encoding == "pcm_f32le"
        return rate, "pcm_s16le" if self.f32 else encoding

    def reconfigure(self, message: dict[str, Any]) -> None:
        config = message.get("transcription_config")
        if not isinstance(config, dict):
            raise SessionError("invalid_message", "SetRecognitionConfig needs a transcription_config object")
        if set(config) - MID_SESSION:
            raise SessionError("invalid_config", f"only {sorted(MID_SESSION)} may change in a session")
        if config.get("language", self.config["language"]) != self.config["language"]:
            raise SessionError("invalid_config", "the language cannot change in a session")
        check_mid_session(config)
        stream = self.stream
        assert stream is not None
        if "enable_partials" in config:
            stream.enable_partials = bool(config["enable_partials"])
        if "max_delay" in config and isinstance(stream, WhisperStream):
            stream.agreement.max_delay = float(config["max_delay"])
        trigger = (config.get("conversation_config") or {}).get("end_of_utterance_silence_trigger")
        if trigger is not None and isinstance(stream, ReferenceStream):
            stream.eou_trigger = float(trigger)
        self.config.update(config)

    async def add_channel_audio(self, message: dict[str, Any]) -> None:
        label = message.get("channel")
        if label not in self.channels:
            raise SessionError("protocol_error", "AddChannelAudio for a channel that is not open")
        try:
            data = base64.b64decode(str(message.get("data") or ""), validate=True)
        except (binascii.Error, ValueError):
            raise SessionError("invalid_message", "AddChannelAudio data must be base64") from None
        self.channel_seq[label] += 1
        self.rt.counts["audio_frames"] += 1
        out = self.channels[label].feed(data) if data else []
        await self.send({"message": "ChannelAudioAdded", "channel": label, "seq_no": self.channel_seq[label]})
        for item in out:
            await self.send(item)

    async def end_channel(self, label: str) -> None:
        for item in self.channels.pop(label).finish():
            await self.send(item)

    async def add_audio(self, data: bytes) -> None:
        if self.stream is None:
            raise SessionError("protocol_error", "audio before StartRecognition")
        if self.channels:
            raise SessionError("protocol_error", "a multichannel session takes AddChannelAudio, not binary audio")
        if self.eos:
            await self.send({"message": "Warning", "type": "add_audio_after_eos",
                             "reason": "audio after EndOfStream is ignored"})
            return
        self.seq += 1
        self.rt.counts["audio_frames"] += 1
        if self.drop_after is not None and self.seq > self.drop_after:
            self.rt.counts["dropped"] += 1
            log.info("realtime session dropped id=%s after %d frames (fault)", self.id, self.drop_after)
            raise _Dropped
        samples = self._samples(data)
        out = self.stream.feed(samples) if samples else []
        if self.rt.faults.ack_delay > 0:
            await asyncio.sleep(self.rt.faults.ack_delay)
        await self.send({"message": "AudioAdded", "seq_no": self.seq})
        for message in out:
            await self.send(message)

    def _samples(self, data: bytes) -> bytes:
        if self.file is not None:
            self.file += data
            try:
                raw = parse_wav(bytes(self.file))
            except AudioFormatError:
                if len(self.file) > 65536:
                    raise SessionError("invalid_audio_type", "the file is not a 16-bit PCM or mu-law WAV") from None
                return b""
            assert self.stream is not None
            if self.stream.sample_rate == 0:
                if raw.channels != 1:
                    raise SessionError("invalid_audio_type", "file audio must be mono")
                self.stream.sample_rate, self.stream.encoding = raw.sample_rate, raw.encoding
            new = raw.data[self.file_used:]
            self.file_used = len(raw.data)
            return new
        if self.f32:
            usable = len(data) - len(data) % 4
            floats = np.frombuffer(data[:usable], dtype="<f4")
            return np.clip(np.round(floats * 32768.0), -32768, 32767).astype("<i2").tobytes()
        return data


class _Dropped(Exception):
    """An injected dropped socket: close without an Error."""


async def realtime_session(request: web.Request) -> web.StreamResponse:
    rt = request.app[RT_STATE]
    # no permessage-deflate: audio does not compress, and deflating every frame was most of a client's CPU
    ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024, heartbeat=None, compress=False)
    await ws.prepare(request)
    token = request.headers.get("Authorization", "")
    authorised = not rt.api_key or token == f"Bearer {rt.api_key}"
    session = Session(ws, rt, _engine_of(request.app), authorised)
    try:
        await session.run()
    except _Dropped:
        if request.transport is not None:
            request.transport.abort()
        return ws
    finally:
        rt.open.discard(session.id)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.close()
    log.info("realtime session ended id=%s frames=%d", session.id, session.seq)
    return ws


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[RT_STATE].faults.describe())


async def set_faults(request: web.Request) -> web.Response:
    rt = request.app[RT_STATE]
    try:
        rt.faults = RealtimeFaults.parse(await request.json() if request.can_read_body else {})
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": f"bad real-time fault document: {exc}"}, status=400)
    return web.json_response(rt.faults.describe())


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[RT_STATE].stats())


def add_realtime(app: web.Application, api_key: str | None = None) -> None:
    """Mount the real-time endpoint (`/v2`, websocket) and its admin routes on the worker's app."""
    app[RT_STATE] = RealtimeState(api_key=api_key or None)
    app.add_routes([
        web.get("/v2", realtime_session),
        web.get("/admin/realtime", get_faults),
        web.put("/admin/realtime", set_faults),
        web.post("/admin/realtime", set_faults),
        web.get("/admin/realtime/stats", get_stats),
    ])
