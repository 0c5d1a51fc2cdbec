"""WAV encoding of every frame format the contract allows: bit-exact samples, the right WAV subtype."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from bytewax.speechmatics.connectors.speechmatics.wav import audio_hash, chunk_wav, encode_wav
from bytewax.speechmatics.schemas.chunks import Chunk, ChunkSpan
from bytewax.speechmatics.schemas.errors import ContractError
from bytewax.speechmatics.schemas.frames import SAMPLE_RATES


def ulaw_decode(data: bytes) -> np.ndarray:
    """G.711 mu-law -> int16, written out from the standard (independent of soundfile)."""
    u = ~np.frombuffer(data, dtype=np.uint8)
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa.astype(np.int32) << 3) + 0x84) << exponent) - 0x84
    return np.where(sign, -magnitude, magnitude).astype(np.int16)


@settings(max_examples=40, deadline=None)
@given(rate=st.sampled_from(SAMPLE_RATES), channels=st.sampled_from((1, 2)), frames=st.integers(1, 4000),
       seed=st.integers(0, 2**32 - 1))
def test_pcm_s16le_round_trips_exactly(rate: int, channels: int, frames: int, seed: int) -> None:
    samples = np.random.default_rng(seed).integers(-32768, 32767, (frames, channels), dtype=np.int16)
    wav = encode_wav(samples.astype("<i2").tobytes(), rate, "pcm_s16le", channels)
    info = sf.info(io.BytesIO(wav))
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "PCM_16", rate, channels)
    back, _ = sf.read(io.BytesIO(wav), dtype="int16", always_2d=True)
    assert np.array_equal(back, samples)


@settings(max_examples=40, deadline=None)
@given(rate=st.sampled_from(SAMPLE_RATES), channels=st.sampled_from((1, 2)), data=st.binary(min_size=2, max_size=4000))
def test_mulaw_stays_mulaw_with_the_same_samples(rate: int, channels: int, data: bytes) -> None:
    data = data[: len(data) - len(data) % channels]
    wav = encode_wav(data, rate, "mulaw", channels)
    info = sf.info(io.BytesIO(wav))
    assert (info.subtype, info.samplerate, info.channels) == ("ULAW", rate, channels)
    back, _ = sf.read(io.BytesIO(wav), dtype="int16", always_2d=True)
    assert np.array_equal(back.reshape(-1), ulaw_decode(data))


def test_chunk_wav_uses_the_span_format_and_bad_input_says_what() -> None:
    span = ChunkSpan("call", 0, 0, 8, 0, 8000, "mulaw", 2)
    info = sf.info(io.BytesIO(chunk_wav(Chunk(span, bytes(16)))))
    assert (info.subtype, info.channels, info.frames) == ("ULAW", 2, 8)
    with pytest.raises(ContractError, match="whole number"):
        encode_wav(b"\x00\x01\x02", 16000, "pcm_s16le", 1)
    with pytest.raises(ContractError, match="encoding"):
        encode_wav(b"\x00\x01", 16000, "alaw", 1)
    with pytest.raises(ContractError, match="sample rate"):
        encode_wav(b"\x00\x01", 44100, "pcm_s16le", 1)


def test_audio_hash_tells_chunks_apart() -> None:
    assert audio_hash(b"a") == audio_hash(b"a") != audio_hash(b"b")
