"""WAV-encode a chunk for upload: the API does not accept raw PCM, and WAV keeps the samples bit-exact.

pcm_s16le becomes a PCM_16 WAV; mulaw stays mu-law inside the WAV (subtype ULAW, WAVE_FORMAT_MULAW), so
telephony audio is not re-quantised and the upload is half the size of 16-bit PCM.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import soundfile as sf

from bytewax.speechmatics.schemas.chunks import Chunk
from bytewax.speechmatics.schemas.errors import ContractError
from bytewax.speechmatics.schemas.frames import BYTES_PER_SAMPLE, CHANNELS, SAMPLE_RATES

#: Our frame encoding -> the soundfile subtype of the WAV we upload.
WAV_SUBTYPES = {"pcm_s16le": "PCM_16", "mulaw": "ULAW"}


def _samples(audio: bytes, sample_rate: int, encoding: str, channels: int) -> np.ndarray:
    """The audio as int16 samples, shape (frames, channels)."""
    if encoding == "pcm_s16le":
        return np.frombuffer(audio, dtype="<i2").reshape(-1, channels)
    raw = io.BytesIO(audio)
    data, _ = sf.read(raw, format="RAW", subtype="ULAW", samplerate=sample_rate, channels=channels,
                      dtype="int16", always_2d=True)
    return data


def encode_wav(audio: bytes, sample_rate: int, encoding: str, channels: int) -> bytes:
    """A complete WAV file holding `audio` (interleaved frames in the frame contract's encoding)."""
    where = f"{encoding} {sample_rate} Hz {channels} ch"
    if encoding not in WAV_SUBTYPES:
        raise ContractError(f"encoding must be one of {list(WAV_SUBTYPES)}", where)
    if sample_rate not in SAMPLE_RATES or channels not in CHANNELS:
        raise ContractError(f"sample rate must be one of {list(SAMPLE_RATES)} and channels one of {list(CHANNELS)}",
                            where)
    width = BYTES_PER_SAMPLE[encoding] * channels
    if len(audio) % width:
        raise ContractError(f"{len(audio)} bytes is not a whole number of {width}-byte frames", where)
    out = io.BytesIO()
    sf.write(out, _samples(audio, sample_rate, encoding, channels), sample_rate, format="WAV",
             subtype=WAV_SUBTYPES[encoding])
    return out.getvalue()


def chunk_wav(chunk: Chunk) -> bytes:
    """The chunk's audio as the WAV file we upload."""
    span = chunk.span
    return encode_wav(chunk.audio, span.sample_rate, span.encoding, span.channels)


def audio_hash(audio: bytes) -> str:
    """A short content hash of a chunk's audio, sent as a job tag to tell a job's audio apart from another's."""
    return hashlib.sha256(audio).hexdigest()[:32]
