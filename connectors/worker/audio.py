"""Reading submitted audio for the local worker: WAV headers parsed by hand, so samples compare exactly.

The reference engine matches a chunk's samples against a registered call in the frames' own encoding
(16-bit PCM or G.711 mu-law codes), so no decoder table can make two equal chunks differ. Other formats
(FLAC, ...) fall back to soundfile as 16-bit PCM.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from bytewax.speechmatics.schemas.frames import BYTES_PER_SAMPLE

_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_MULAW = 7
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


class AudioFormatError(ValueError):
    """The submitted file is not audio the worker can read."""


@dataclass(frozen=True, slots=True)
class RawAudio:
    """Interleaved samples in a contract encoding (pcm_s16le or mulaw)."""

    data: bytes
    sample_rate: int
    channels: int
    encoding: str

    @property
    def frame_bytes(self) -> int:
        return BYTES_PER_SAMPLE[self.encoding] * self.channels

    @property
    def frames(self) -> int:
        return len(self.data) // self.frame_bytes

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _wav_chunks(blob: bytes) -> dict[bytes, bytes]:
    """RIFF sub-chunks by id (first occurrence); a data chunk with a bogus size runs to the end of file."""
    if len(blob) < 12 or blob[:4] not in (b"RIFF", b"RF64") or blob[8:12] != b"WAVE":
        raise AudioFormatError("not a RIFF/WAVE file")
    chunks: dict[bytes, bytes] = {}
    pos = 12
    while pos + 8 <= len(blob):
        cid, size = blob[pos : pos + 4], struct.unpack_from("<I", blob, pos + 4)[0]
        body_start = pos + 8
        if cid == b"data" and (size == 0xFFFFFFFF or body_start + size > len(blob)):
            size = len(blob) - body_start  # streamed WAVs leave the size unset
        chunks.setdefault(cid, blob[body_start : body_start + size])
        pos = body_start + size + (size & 1)
    if b"fmt " not in chunks or b"data" not in chunks:
        raise AudioFormatError("WAV file without a 'fmt ' or 'data' chunk")
    return chunks


def parse_wav(blob: bytes) -> RawAudio:
    """Samples of a 16-bit PCM or mu-law WAV file exactly as stored."""
    chunks = _wav_chunks(blob)
    fmt = chunks[b"fmt "]
    if len(fmt) < 16:
        raise AudioFormatError("WAV 'fmt ' chunk too short")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _WAVE_FORMAT_EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]  # first two bytes of the sub-format GUID
    if tag == _WAVE_FORMAT_PCM and bits == 16:
        encoding = "pcm_s16le"
    elif tag == _WAVE_FORMAT_MULAW and bits == 8:
        encoding = "mulaw"
    else:
        raise AudioFormatError(f"unsupported WAV format tag {tag} with {bits} bits per sample")
    if channels < 1 or rate < 1:
        raise AudioFormatError(f"WAV header with {channels} channels at {rate} Hz")
    data = chunks[b"data"]
    width = BYTES_PER_SAMPLE[encoding] * channels
    return RawAudio(data[: len(data) - len(data) % width], rate, channels, encoding)


def read_audio(blob: bytes) -> RawAudio:
    """Any readable audio file as RawAudio: WAV parsed exactly, other formats decoded to 16-bit PCM."""
    try:
        return parse_wav(blob)
    except AudioFormatError:
        pass
    import soundfile

    try:
        samples, rate = soundfile.read(io.BytesIO(blob), dtype="int16", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types for unreadable input
        raise AudioFormatError(f"unreadable audio file ({type(exc).__name__})") from exc
    return RawAudio(samples.tobytes(), int(rate), int(samples.shape[1]), "pcm_s16le")



#: mu-law has two zeros (0x7F = -0, 0xFF = +0); a decode/encode round trip (as libsndfile does when a
#: submitter writes a ULAW WAV) turns 0x7F into 0xFF, so exact comparison folds them together.
_MULAW_CANONICAL = bytes(0xFF if code == 0x7F else code for code in range(256))


def canonical_samples(raw: RawAudio) -> bytes:
    """The sample bytes in a form where equal audio compares equal (mu-law's two zeros folded)."""
    return raw.data.translate(_MULAW_CANONICAL) if raw.encoding == "mulaw" else raw.data
