"""Publish audio files as calls on `calls.audio`, frame by frame, as a telephony platform would.

Each file becomes one call: pcm_s16le frames of `frame_ms` with increasing `seq` and `end` on the last frame.
Several files go out concurrently (frames interleaved in time order), paced in real time, at full speed, or at
N x real time. With `--config` / `--metadata`, each call's start message (schemas/call_start.py: per-call
transcription settings and the platform's metadata) goes out first, on the same key, so it precedes the frames.
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from bytewax.speechmatics.connectors.kafka.config import KafkaSettings
from bytewax.speechmatics.connectors.kafka.sink import PRODUCER_DEFAULTS, produce_with_backpressure
from bytewax.speechmatics.connectors.kafka.topics import KafkaUnavailable, probe_brokers
from bytewax.speechmatics.flows.settings import Settings, TopicSettings
from bytewax.speechmatics.schemas.call_start import encode_start, parse_start_value, start_value
from bytewax.speechmatics.schemas.errors import BytewaxSpeechmaticsError, ContractError
from bytewax.speechmatics.schemas.frames import SAMPLE_RATES, AudioFrame, encode_frame


@dataclass(frozen=True)
class CallAudio:
    """One call's audio in the contract's encoding (pcm_s16le, interleaved channels)."""

    call_id: str
    pcm: bytes
    sample_rate: int
    channels: int
    start: bytes | None = None  # the value of the call's start message, sent before its first frame (as it is)

    @property
    def seconds(self) -> float:
        return len(self.pcm) / (2 * self.channels * self.sample_rate)


class AudioFileError(BytewaxSpeechmaticsError, ValueError):
    """A file that cannot be published as a call; the message names the file and says why, on one line."""


def read_call(path: str | Path, call_id: str) -> CallAudio:
    """Read a WAV/FLAC file and convert it to 16-bit PCM; refuse rates and layouts the contract has no room for."""
    file = Path(path)
    if not file.is_file():
        raise AudioFileError(f"{path}: {'is a directory' if file.is_dir() else 'no such file'}")
    try:
        data, rate = sf.read(str(path), dtype="int16", always_2d=True)
    except (sf.SoundFileError, OSError) as exc:  # libsndfile's "Format not recognised." and the like
        reason = getattr(exc, "error_string", None) or str(exc)
        raise AudioFileError(f"{path}: not an audio file libsndfile can read (WAV, FLAC, ...): "
                             f"{' '.join(reason.split())}") from exc
    if rate not in SAMPLE_RATES:
        raise AudioFileError(f"{path}: sample rate {rate} Hz is not one of {list(SAMPLE_RATES)}")
    if data.shape[1] not in (1, 2):
        raise AudioFileError(f"{path}: {data.shape[1]} channels; the frame contract allows 1 or 2")
    return CallAudio(call_id, np.ascontiguousarray(data).tobytes(), rate, data.shape[1])


def frames_of(call: CallAudio, frame_ms: int = 20) -> Iterator[AudioFrame]:
    """The call's frames: `frame_ms` each (the last may be shorter), `end` on the last one."""
    width = 2 * call.channels
    step = max(1, call.sample_rate * frame_ms // 1000) * width
    count = max(1, -(-len(call.pcm) // step))
    for seq in range(count):
        yield AudioFrame(
            call_id=call.call_id, seq=seq, audio=call.pcm[seq * step : (seq + 1) * step],
            sample_rate=call.sample_rate, encoding="pcm_s16le", channels=call.channels, end=seq == count - 1,
        )


def interleave(calls: Sequence[CallAudio], frame_ms: int) -> Iterator[tuple[float, AudioFrame]]:
    """All calls' frames in the order of their offset in audio time: (seconds since call start, frame)."""
    streams = [frames_of(call, frame_ms) for call in calls]
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


def parse_speed(text: str) -> float:
    """'realtime' -> 1, 'max' -> 0 (no pacing), N -> N x real time."""
    if text == "realtime":
        return 1.0
    if text == "max":
        return 0.0
    speed = float(text)
    if speed <= 0:
        raise argparse.ArgumentTypeError("speed must be realtime, max, or a positive number")
    return speed


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
) -> int:
    """Produce each call's start message (when it has one), then the calls' frames (interleaved, paced by `speed`;
    0 = as fast as possible); return the frames sent."""
    from confluent_kafka import Producer

    conf = (kafka or KafkaSettings()).client_config({**PRODUCER_DEFAULTS, **(producer_config or {})})
    producer = Producer(conf)
    errors: list[str] = []

    def on_delivery(err, _msg) -> None:  # noqa: ANN001 - confluent-kafka callback
        if err is not None:
            errors.append(str(err))

    started = time.monotonic()
    bar = Progress(max((c.seconds for c in calls), default=0.0), progress)
    sent = 0
    for call in calls:  # same key as the frames: Kafka keeps each start message ahead of its call's frames
        if call.start is not None:
            key, value, headers = encode_start(call.call_id, value=call.start)
            produce_with_backpressure(producer, topic, key, value, headers, on_delivery)
    for at, frame in interleave(calls, frame_ms):
        if speed:
            delay = started + at / speed - time.monotonic()
            if delay > 0:
                producer.poll(0)
                time.sleep(delay)
        key, value, headers = encode_frame(frame)
        produce_with_backpressure(producer, topic, key, value, headers, on_delivery)
        sent += 1
        if sent % 500 == 0:
            bar.update(at, sent)
    remaining = producer.flush(60)
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
    if args.sample:
        from bytewax.speechmatics.connectors.cli.sample_audio import pyannote_sample

        args.files = [*args.files, str(pyannote_sample().wav)]
    if not args.files:
        print("publish: give audio files, or --sample pyannote", file=sys.stderr)
        return 2
    ids = call_ids_for(args.files, args.call_id)
    try:
        calls = [replace(read_call(path, cid), start=start) for path, cid in zip(args.files, ids, strict=True)]
        # before the first frame: an unreachable broker is one line, not minutes of retries
        probe_brokers(args.kafka.client_config())
    except (AudioFileError, KafkaUnavailable) as exc:
        print(f"publish: {exc}", file=sys.stderr)
        return 2
    for call in calls:
        print(f"publish: call {call.call_id}: {call.seconds:.1f} s, {call.sample_rate} Hz, "
              f"{call.channels} channel(s){' after a start message' if start else ''} -> {args.topic}", flush=True)
    try:
        frames = publish_calls(calls, args.topic, args.frame_ms, args.speed, progress=True, kafka=args.kafka)
    except RuntimeError as exc:  # undelivered frames: the broker went away or refused the topic
        print(f"{exc} (topic {args.topic}, Kafka at {args.kafka.bootstrap_servers})", file=sys.stderr)
        return 1
    print(f"publish: {frames} frames sent for {len(calls)} call(s)", flush=True)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("publish", help="publish WAV/FLAC files as calls on the audio topic")
    parser.add_argument("files", nargs="*", help="WAV or FLAC files (8/16/32/48 kHz, 1 or 2 channels)")
    parser.add_argument("--sample", choices=["pyannote"],
                        help="also publish a real two-speaker call (the pyannote sample, fetched once into the cache)")
    parser.add_argument("--call-id", help="call id (numbered -0, -1, ... when several files)")
    parser.add_argument("--frame-ms", type=int, default=20, help="frame length in milliseconds (default 20)")
    parser.add_argument("--speed", type=parse_speed, default=1.0,
                        help="realtime (default), max, or N times real time")
    parser.add_argument("--config", metavar="JSON",
                        help="per-call transcription settings, sent in a start message before each call's frames: "
                             "a JSON object of language, operating_point, output_locale, additional_vocab, "
                             "punctuation_overrides, enable_entities, diarization, channel_labels, domain")
    parser.add_argument("--metadata", metavar="JSON",
                        help="the platform's own ids and attributes (a JSON object, at most 8 KB), copied into every "
                             "transcript event of each call (sent in the start message)")
    settings = Settings.from_env()
    parser.add_argument("--topic", default=settings.topics.audio, help="the audio topic (BWSM_AUDIO_TOPIC)")
    parser.set_defaults(func=_command, kafka=settings.kafka)
