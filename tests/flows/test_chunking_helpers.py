"""Helpers the chunking tests share (frames from audio, speech-like audio, a chunker driver), and their checks."""

from __future__ import annotations

import dataclasses
import pickle
import random
from collections.abc import Iterable, Sequence

import numpy as np
import webrtcvad

from bytewax.speechmatics.flows.chunking import CallChunker, ChunkConfig
from bytewax.speechmatics.schemas.chunks import Chunk
from bytewax.speechmatics.schemas.frames import BYTES_PER_SAMPLE, AudioFrame

TOPIC = "calls.audio"


def frames_for(call_id: str, audio: bytes, sizes: Sequence[int], fmt: tuple[int, str, int] = (16000, "pcm_s16le", 1),
               first_offset: int = 0, partition: int = 0) -> list[AudioFrame]:
    """Cut `audio` into frames of the given sizes (in samples, cycled); the last frame carries `end`."""
    rate, encoding, channels = fmt
    width = BYTES_PER_SAMPLE[encoding] * channels
    frames: list[AudioFrame] = []
    pos = 0
    while pos < len(audio) or not frames:
        n = sizes[len(frames) % len(sizes)] * width
        frames.append(AudioFrame(call_id, len(frames), audio[pos : pos + n], rate, encoding, channels,
                                 topic=TOPIC, partition=partition, offset=first_offset + len(frames)))
        pos += n
    frames[-1] = dataclasses.replace(frames[-1], end=True)
    return frames


def bounded_shuffle(frames: Sequence[AudioFrame], window: int, rng: random.Random) -> list[AudioFrame]:
    """Reorder so no frame arrives after one `window` or more seqs ahead of it; the end frame comes last."""
    body = sorted(frames[:-1], key=lambda f: f.seq + rng.random() * window)
    return [*body, frames[-1]]


def add_duplicates(arrivals: list[AudioFrame], count: int, rng: random.Random) -> list[AudioFrame]:
    """Insert copies of random frames somewhere after the original (as replays and retries do)."""
    out = list(arrivals)
    for _ in range(count):
        i = rng.randrange(len(out))
        out.insert(rng.randint(i + 1, len(out)), out[i])
    return out


def strip_clock(chunk: Chunk) -> Chunk:
    """A chunk without its wall-clock field, for comparing runs (anything else, as it is)."""
    if not isinstance(chunk, Chunk):
        return chunk
    return dataclasses.replace(chunk, span=dataclasses.replace(chunk.span, closed_at=0.0))


def run_chunker(config: ChunkConfig, arrivals: Iterable[AudioFrame], restore_at: Iterable[int] = ()) -> list:
    """Push frames through one CallChunker; at each index in `restore_at`, pickle and restore it first."""
    stops = set(restore_at)
    chunker = CallChunker(config)
    out: list = []
    for i, frame in enumerate(arrivals):
        if i in stops:
            chunker = CallChunker(config, pickle.loads(pickle.dumps(chunker.snapshot())))
        chunker.push(frame, out)
    return out


def speech_like(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Voiced, harmonic audio with a gliding pitch and syllable-rate amplitude modulation (webrtcvad: speech)."""
    t = np.arange(n) / rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum((1.0 / k) * np.sin(k * phase) for k in range(1, 12))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6))
    return (voiced * envelope * 6000).astype(np.int16)


def quiet(n: int, rng: np.random.Generator, level: float) -> np.ndarray:
    """Silence: digital zeros (level 0) or faint noise."""
    if level <= 0:
        return np.zeros(n, dtype=np.int16)
    return rng.normal(0, level, n).astype(np.int16)


def pcm_to_mulaw(samples: np.ndarray) -> bytes:
    """G.711 mu-law encoding (the inverse of flows.vad's table), to make mu-law test calls."""
    x = samples.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 7
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def encode_call(samples: np.ndarray, encoding: str, channels: int) -> bytes:
    """Mono int16 samples as call audio: stereo puts the voice on the first channel and silence on the second."""
    if channels == 2:
        samples = np.stack([samples, np.zeros_like(samples)], axis=1).reshape(-1)
    return pcm_to_mulaw(samples) if encoding == "mulaw" else samples.astype("<i2").tobytes()


# --- checks of the helpers themselves -------------------------------------------------------------------


def test_speech_like_audio_is_speech_and_quiet_is_not() -> None:
    rng = np.random.default_rng(7)
    for rate in (8000, 16000, 32000, 48000):
        vad = webrtcvad.Vad(3)
        step = rate * 30 // 1000
        voice = speech_like(rate * 3, rate, rng).tobytes()
        assert all(vad.is_speech(voice[i : i + 2 * step], rate) for i in range(0, len(voice), 2 * step))
        calm = quiet(rate * 2, rng, 5).tobytes()
        flags = [vad.is_speech(calm[i : i + 2 * step], rate) for i in range(0, len(calm), 2 * step)]
        assert not any(flags[10:])  # after webrtcvad's hangover


def test_frames_for_covers_the_audio_and_ends() -> None:
    audio = bytes(range(250)) * 4
    frames = frames_for("c", audio, [100, 7], (8000, "pcm_s16le", 1))
    assert b"".join(f.audio for f in frames) == audio
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert frames[-1].end and not any(f.end for f in frames[:-1])


def test_mulaw_encoder_round_trips_through_the_vad_table() -> None:
    from bytewax.speechmatics.flows.vad import MULAW_TO_PCM16

    assert pcm_to_mulaw(MULAW_TO_PCM16[np.arange(256)]) == bytes(
        b if b != 0x7F else 0xFF for b in range(256)  # 0x7F and 0xFF both decode to 0; the encoder picks 0xFF
    )
