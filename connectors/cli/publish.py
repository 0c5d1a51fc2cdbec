"""Publish audio files as calls on `calls.audio`, frame by frame, as a telephony platform would.

Each file becomes one call: pcm_s16le frames of `frame_ms` with increasing `seq` and `end` on the last frame.
Any file libsndfile reads (WAV, FLAC, OGG, MP3, ...) at any rate: a rate the frame contract has no room for
(44.1 kHz, 22.05 kHz, ...) is resampled to 16 kHz, or every file to `--sample-rate`, with soxr (the SoX
resampler: high quality, fast, multi-channel, a small wheel on every platform); 2 channels stay 2 channels.
Frames never exceed the flow's limit (BWSM_MAX_FRAME_SECONDS): a longer `--frame-ms` is refused before anything
is sent, since the flow would dead-letter every frame.

Several files go out concurrently (frames interleaved in time order), paced in real time, at full speed, or at
N x real time. With `--config` / `--metadata`, each call's start message (schemas/call_start.py: per-call
transcription settings and the platform's metadata) goes out first, on the same key, so it precedes the frames.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from bytewax.speechmatics.connectors.cli.arguments import OneOf, WholeNumber, speed
from bytewax.speechmatics.connectors.kafka.config import KafkaSettings
from bytewax.speechmatics.connectors.kafka.frame_cutter import AudioFormat, FrameCutter
from bytewax.speechmatics.connectors.kafka.producer import CallPublisher, DeliveryError
from bytewax.speechmatics.connectors.kafka.topics import KafkaUnavailable, probe_brokers
from bytewax.speechmatics.flows.settings import Settings, TopicSettings
from bytewax.speechmatics.schemas.call_start import parse_start_value, start_value
from bytewax.speechmatics.schemas.errors import BytewaxSpeechmaticsError, ContractError
from bytewax.speechmatics.schemas.frames import (
    DEFAULT_MAX_FRAME_SECONDS,
    DEFAULT_SAMPLE_RATE,
    SAMPLE_RATES,
    AudioFrame,
    frame_samples,
)

#: What the error line for an unreadable file offers instead (libsndfile's own formats, as soundfile reads them).
READABLE = "WAV, FLAC, OGG, MP3, AIFF, ..."


@dataclass(frozen=True)
class CallAudio:
    """One call's audio in the contract's encoding (pcm_s16le, interleaved channels)."""

    call_id: str
    pcm: bytes
    sample_rate: int
    channels: int
    start: bytes | None = None  # the value of the call's start message, sent before its first frame (as it is)
    file_rate: int | None = None  # the file's own rate when it was resampled

    @property
    def seconds(self) -> float:
        return len(self.pcm) / (2 * self.channels * self.sample_rate)


class AudioFileError(BytewaxSpeechmaticsError, ValueError):
    """A file that cannot be published as a call; the message names the file and says why, on one line."""


def read_call(path: str | Path, call_id: str, sample_rate: int | None = None) -> CallAudio:
    """Read an audio file as 16-bit PCM at `sample_rate` (None: the file's rate when the contract allows it, else
    16 kHz), resampling when the rates differ; refuse layouts the contract has no room for (more than 2 channels).

    Raises:
        AudioFileError: one line naming the file and why (the decoders' own notes on stderr are silenced).
    """
    file = Path(path)
    if not file.is_file():
        raise AudioFileError(f"{path}: {'is a directory' if file.is_dir() else 'no such file'}")
    try:
        with _quiet_decoders(), sf.SoundFile(str(path)) as audio:
            rate = audio.samplerate
            target = sample_rate or (rate if rate in SAMPLE_RATES else DEFAULT_SAMPLE_RATE)
            data = audio.read(dtype="int16" if target == rate else "float32", always_2d=True)
    except (sf.SoundFileError, OSError, RuntimeError, ValueError) as exc:
        raise AudioFileError(f"{path}: not an audio file libsndfile can read ({READABLE}): "
                             f"{_unreadable_reason(exc)}") from exc
    if data.shape[1] not in (1, 2):
        raise AudioFileError(f"{path}: {data.shape[1]} channels; the frame contract allows 1 or 2 (mix it down "
                             f"first)")
    if target != rate:
        return CallAudio(call_id, resample(data, rate, target).tobytes(), target, data.shape[1], file_rate=rate)
    return CallAudio(call_id, np.ascontiguousarray(data).tobytes(), rate, data.shape[1])


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Float samples (frames x channels, full scale 1.0) at `rate` as int16 samples at `target`, each channel on
    its own (soxr's high-quality setting)."""
    import soxr

    if not len(audio):
        return np.zeros((0, audio.shape[1]), dtype=np.int16)
    out = soxr.resample(np.ascontiguousarray(audio, dtype=np.float32), rate, target, quality="HQ")
    out = out.reshape(-1, audio.shape[1])  # soxr returns 1-D for a single channel
    return np.ascontiguousarray(np.clip(np.round(out * 32768.0), -32768, 32767).astype(np.int16))


def _unreadable_reason(exc: BaseException) -> str:
    """libsndfile's reason on one line; its "File does not exist or is not a regular file" for an existing file
    that no decoder recognises (a text file named .mp3) says so instead."""
    reason = " ".join((getattr(exc, "error_string", None) or str(exc)).split())
    if "does not exist" in reason or "not a regular file" in reason or not reason:
        return "no decoder recognises its contents"
    return reason


@contextlib.contextmanager
def _quiet_decoders() -> Iterator[None]:
    """Silence what libsndfile's decoders (mpg123, ...) write to file descriptor 2 themselves while a file is read:
    the user gets one line naming the file and the reason instead of decoder notes."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def frames_of(call: CallAudio, frame_ms: int = 20,
              max_frame_seconds: float = DEFAULT_MAX_FRAME_SECONDS) -> Iterator[AudioFrame]:
    """The call's frames: `frame_ms` each (the last may be shorter), `end` on the last one; cut by the producer
    API's FrameCutter, so `publish` and every other producer here frame alike.

    Raises:
        ContractError: frames of `frame_ms` would carry more than `max_frame_seconds` of audio (see frame_samples).
    """
    frame_samples(frame_ms, call.sample_rate, max_frame_seconds)  # the refusal as a ContractError, on the first next()
    cutter = FrameCutter(call.call_id, AudioFormat(call.sample_rate, "pcm_s16le", call.channels), frame_ms / 1000,
                         max_frame_seconds)
    yield from cutter.finish_with(call.pcm)


def interleave(calls: Sequence[CallAudio], frame_ms: int,
               max_frame_seconds: float = DEFAULT_MAX_FRAME_SECONDS) -> Iterator[tuple[float, AudioFrame]]:
    """All calls' frames in the order of their offset in audio time: (seconds since call start, frame).

    Raises:
        ContractError: at once (not on the first frame) when frames of `frame_ms` would exceed the limit.
    """
    for call in calls:  # before the first frame of any call: a refused framing sends nothing
        frame_samples(frame_ms, call.sample_rate, max_frame_seconds)
    return _in_time_order([frames_of(call, frame_ms, max_frame_seconds) for call in calls])


def _in_time_order(streams: list[Iterator[AudioFrame]]) -> Iterator[tuple[float, AudioFrame]]:
    heap: list[tuple[float, int, AudioFrame]] = []
    for i, stream in enumerate(streams):
        first = next(stream, None)
        if first is not None:
            heap.append((0.0, i, first))
    heapq.heapify(heap)
    while heap:
        at, i, frame = heapq.heappop(heap)
        yield at, frame
        nxt = next(streams[i], None)
        if nxt is not None:
            heapq.heappush(heap, (at + frame.samples / frame.sample_rate, i, nxt))


#: A frame's length (the upper bound is the flow's, checked against BWSM_MAX_FRAME_SECONDS before sending).
FRAME_MS = WholeNumber(1, noun="a whole number of milliseconds")
#: One of the contract's sample rates.
SAMPLE_RATE = OneOf(SAMPLE_RATES, int, "Hz")


class Progress:
    """A one-line progress display on stderr for long publishes (quiet when not a terminal, but for a final line)."""

    def __init__(self, total_seconds: float, enabled: bool) -> None:
        self.total = total_seconds
        self.enabled = enabled and sys.stderr.isatty()
        self.last = 0.0

    def update(self, done_seconds: float, frames: int) -> None:
        now = time.monotonic()
        if self.enabled and now - self.last >= 0.2:
            self.last = now
            pct = 100.0 * done_seconds / self.total if self.total else 100.0
            sys.stderr.write(f"\rpublish: {pct:5.1f}%  {done_seconds:7.1f}/{self.total:.1f} s audio  {frames} frames")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def publish_calls(
    calls: Sequence[CallAudio],
    topic: str = TopicSettings.audio,
    frame_ms: int = 20,
    speed: float = 0.0,
    producer_config: dict | None = None,
    progress: bool = False,
    kafka: KafkaSettings | None = None,
    max_frame_seconds: float = DEFAULT_MAX_FRAME_SECONDS,
) -> int:
    """Send each call's start message (when it has one), then the calls' frames (interleaved, paced by `speed`;
    0 = as fast as possible) through the producer API; return the frames sent.

    Raises:
        ContractError: before anything is sent, when frames of `frame_ms` would be longer than `max_frame_seconds`.
        RuntimeError: frames Kafka refused or did not acknowledge (one line saying how many and the first reason).
    """
    frames = interleave(calls, frame_ms, max_frame_seconds)  # checks the framing first
    settings = kafka or KafkaSettings()
    conf = settings.client_config(producer_config)
    brokers = conf.pop("bootstrap.servers")
    publisher = CallPublisher(brokers, topic, frame_seconds=frame_ms / 1000, max_frame_seconds=max_frame_seconds,
                              **conf)
    errors: list[str] = []
    started = time.monotonic()
    bar = Progress(max((c.seconds for c in calls), default=0.0), progress)
    sent = 0
    try:
        # start messages first, in the producer API's own way (a call's messages share its key: Kafka keeps each
        # start ahead of its call's frames)
        live = {call.call_id: publisher.start(call.call_id, raw_start=call.start, sample_rate=call.sample_rate,
                                              channels=call.channels) for call in calls}
        for at, frame in frames:
            if speed:
                delay = started + at / speed - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            out = live[frame.call_id]
            try:
                if frame.end:
                    out.end(frame.audio, wait=False)
                else:
                    out.send(frame.audio)
            except DeliveryError as exc:  # this call has a hole: the others go on
                errors.append(exc.reason)
                del live[frame.call_id]
            sent += 1
            if sent % 500 == 0:
                bar.update(at, sent)
        for out in live.values():
            try:
                out.wait(60)
            except (DeliveryError, TimeoutError) as exc:
                errors.append(getattr(exc, "reason", str(exc)))
    finally:
        remaining = publisher.close(60)
        bar.close()
    if remaining or errors:
        raise RuntimeError(f"publish: {remaining} frames undelivered, {len(errors)} delivery errors "
                           f"(first: {errors[0] if errors else '-'})")
    return sent


def call_ids_for(paths: Sequence[str], call_id: str | None) -> list[str]:
    """One call id per file: the given id (numbered when several files), else the file stem plus a short suffix."""
    if call_id:
        return [call_id] if len(paths) == 1 else [f"{call_id}-{i}" for i in range(len(paths))]
    return [f"{Path(p).stem}-{uuid.uuid4().hex[:6]}" for p in paths]


def start_message(config: str | None, metadata: str | None) -> bytes | None:
    """The start message value for `--config` / `--metadata` (JSON objects), checked against the contract; None
    without either. Raises ContractError naming the option and what is wrong."""
    if config is None and metadata is None:
        return None
    parsed = {}
    for option, text in (("--config", config), ("--metadata", metadata)):
        if text is None:
            continue
        try:
            parsed[option] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContractError(f"{option} is not JSON: {exc}") from None
        if not isinstance(parsed[option], dict):
            raise ContractError(f"{option} must be a JSON object, got {type(parsed[option]).__name__}")
    value = start_value(parsed.get("--config"), parsed.get("--metadata"))
    parse_start_value(value, "--config/--metadata")
    return value


def _command(args: argparse.Namespace) -> int:
    try:
        start = start_message(args.config, args.metadata)
    except ContractError as exc:
        print(f"publish: {exc}", file=sys.stderr)
        return 2
    try:  # the flow would dead-letter every frame: say so before reading or sending anything
        frame_samples(args.frame_ms, DEFAULT_SAMPLE_RATE, args.max_frame_seconds)
    except ContractError as exc:
        print(f"publish: --frame-ms {args.frame_ms}: {exc}", file=sys.stderr)
        return 2
    if args.sample:
        from bytewax.speechmatics.connectors.cli.sample_audio import pyannote_sample

        args.files = [*args.files, str(pyannote_sample().wav)]
    if not args.files:
        print("publish: give audio files, or --sample pyannote", file=sys.stderr)
        return 2
    ids = call_ids_for(args.files, args.call_id)
    try:
        calls = [replace(read_call(path, cid, args.sample_rate), start=start)
                 for path, cid in zip(args.files, ids, strict=True)]
        # before the first frame: an unreachable broker is one line, not minutes of retries
        probe_brokers(args.kafka.client_config())
    except (AudioFileError, KafkaUnavailable) as exc:
        print(f"publish: {exc}", file=sys.stderr)
        return 2
    for call in calls:
        resampled = f" (resampled from {call.file_rate} Hz)" if call.file_rate else ""
        print(f"publish: call {call.call_id}: {call.seconds:.1f} s, {call.sample_rate} Hz{resampled}, "
              f"{call.channels} channel(s){' after a start message' if start else ''} -> {args.topic}", flush=True)
    try:
        frames = publish_calls(calls, args.topic, args.frame_ms, args.speed, progress=True, kafka=args.kafka,
                               max_frame_seconds=args.max_frame_seconds)
    except ContractError as exc:  # a framing the flow refuses at one of the calls' rates: nothing was sent
        print(f"publish: --frame-ms {args.frame_ms}: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # undelivered frames: the broker went away or refused the topic
        print(f"{exc} (topic {args.topic}, Kafka at {args.kafka.bootstrap_servers})", file=sys.stderr)
        return 1
    print(f"publish: {frames} frames sent for {len(calls)} call(s)", flush=True)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("publish", help="publish audio files as calls on the audio topic")
    parser.add_argument("files", nargs="*",
                        help=f"audio files libsndfile reads ({READABLE}), 1 or 2 channels, any sample rate")
    parser.add_argument("--sample", choices=["pyannote"],
                        help="also publish a real two-speaker call (the pyannote sample, fetched once into the cache)")
    parser.add_argument("--call-id", help="call id (numbered -0, -1, ... when several files)")
    settings = Settings.from_env()
    parser.add_argument("--frame-ms", type=FRAME_MS, default=20,
                        help=f"frame length in milliseconds (default 20; at most the flow's frame limit, "
                             f"BWSM_MAX_FRAME_SECONDS, here {settings.decoding.max_frame_seconds * 1000:g})")
    parser.add_argument("--sample-rate", type=SAMPLE_RATE, default=None,
                        help="resample every file to this rate: 8000, 16000, 32000 or 48000 Hz (default: keep the "
                             "file's rate when it is one of those, else 16000)")
    parser.add_argument("--speed", type=speed, default=1.0,
                        help="realtime (default), max, or N times real time")
    parser.add_argument("--config", metavar="JSON",
                        help="per-call transcription settings, sent in a start message before each call's frames: "
                             "a JSON object of language, operating_point, output_locale, additional_vocab, "
                             "punctuation_overrides, enable_entities, diarization, channel_labels, domain")
    parser.add_argument("--metadata", metavar="JSON",
                        help="the platform's own ids and attributes (a JSON object, at most 8 KB), copied into every "
                             "transcript event of each call (sent in the start message)")
    parser.add_argument("--topic", default=settings.topics.audio, help="the audio topic (BWSM_AUDIO_TOPIC)")
    parser.set_defaults(func=_command, kafka=settings.kafka, max_frame_seconds=settings.decoding.max_frame_seconds)
