"""Speech/silence classification of a chunk's audio with webrtcvad, for choosing where to cut.

webrtcvad only reads 16-bit mono PCM, so mu-law is decoded and stereo is mixed to mono here, for the
classifier only: the chunk's own audio is never converted (it passes through in the frames' encoding).
"""

from __future__ import annotations

import numpy as np
import webrtcvad

from bytewax.speechmatics.schemas.frames import BYTES_PER_SAMPLE

#: The frame lengths webrtcvad accepts.
VAD_FRAME_MS = (10, 20, 30)
#: webrtcvad's modes: 0 is the least eager to call audio non-speech, 3 the most.
AGGRESSIVENESS = (0, 1, 2, 3)


def _mulaw_table() -> np.ndarray:
    """ITU-T G.711 mu-law byte -> linear 16-bit sample, for all 256 bytes."""
    table = np.empty(256, dtype="<i2")
    for byte in range(256):
        u = ~byte & 0xFF
        magnitude = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
        table[byte] = (0x84 - magnitude) if u & 0x80 else (magnitude - 0x84)
    return table


MULAW_TO_PCM16 = _mulaw_table()


def to_mono_pcm16(audio: bytes, encoding: str, channels: int) -> bytes:
    """The audio as 16-bit little-endian mono PCM (stereo channels are averaged: speech on either counts)."""
    if encoding == "pcm_s16le" and channels == 1:
        return audio
    if encoding == "mulaw":
        samples = MULAW_TO_PCM16[np.frombuffer(audio, dtype=np.uint8)]
    else:
        samples = np.frombuffer(audio, dtype="<i2")
    if channels == 2:
        pairs = samples.reshape(-1, 2).astype(np.int32)
        samples = ((pairs[:, 0] + pairs[:, 1]) >> 1).astype("<i2")
    return samples.astype("<i2", copy=False).tobytes()


class SpeechDetector:
    """Classifies consecutive VAD frames of one stretch of audio as speech or not.

    webrtcvad adapts to the audio it has seen (noise estimate, hangover after speech), so the answer for a
    frame depends on the frames fed before it: callers that need repeatable answers feed the same frames
    from a fresh detector (see chunking.Cutter's VAD warm-up after a restore).
    """

    def __init__(self, sample_rate: int, encoding: str, channels: int, aggressiveness: int, frame_ms: int) -> None:
        if frame_ms not in VAD_FRAME_MS:
            raise ValueError(f"VAD frame length must be one of {VAD_FRAME_MS} ms, got {frame_ms}")
        if aggressiveness not in AGGRESSIVENESS:
            raise ValueError(f"VAD aggressiveness must be one of {AGGRESSIVENESS}, got {aggressiveness}")
        self.sample_rate = sample_rate
        self.encoding = encoding
        self.channels = channels
        self.frame_samples = sample_rate * frame_ms // 1000
        self.frame_bytes = self.frame_samples * BYTES_PER_SAMPLE[encoding] * channels
        self._vad = webrtcvad.Vad(aggressiveness)

    def classify(self, audio: bytes) -> list[bool]:
        """Speech (True) or not for each whole VAD frame of `audio` (in the call's own encoding)."""
        whole = len(audio) - len(audio) % self.frame_bytes
        pcm = to_mono_pcm16(audio[:whole], self.encoding, self.channels)
        step = self.frame_samples * 2
        is_speech = self._vad.is_speech
        rate = self.sample_rate
        return [is_speech(pcm[i : i + step], rate) for i in range(0, len(pcm), step)]


def speech_frames(audio: bytes, sample_rate: int, encoding: str, channels: int, aggressiveness: int,
                  frame_ms: int) -> list[bool]:
    """Speech or not per whole VAD frame of `audio`, each channel judged on its own by a fresh detector: speech in
    either channel is speech (a quiet party is not averaged away by a silent one)."""
    if channels == 1:
        return SpeechDetector(sample_rate, encoding, 1, aggressiveness, frame_ms).classify(audio)
    width = BYTES_PER_SAMPLE[encoding]
    whole = len(audio) - len(audio) % (width * channels)
    frames = np.frombuffer(audio[:whole], dtype=np.uint8).reshape(-1, channels, width)
    votes = [SpeechDetector(sample_rate, encoding, 1, aggressiveness, frame_ms).classify(frames[:, c].tobytes())
             for c in range(channels)]
    return [any(v) for v in zip(*votes, strict=True)]
