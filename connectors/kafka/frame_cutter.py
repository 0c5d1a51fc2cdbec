"""Cutting a call's audio, given in pieces of any length, into frames the audio contract accepts (pure: no I/O).

Why a cutter and not "one message per send": platforms hand over audio in whatever pieces they have (20 ms RTP
payloads, 1 s buffers, a whole file); the contract wants whole samples, at most BWSM_MAX_FRAME_SECONDS per frame and
gap-free `seq` numbers from 0. The cutter keeps the remainder of a piece (part of a frame, or part of a sample)
until the next piece, so any split of the same audio gives the same frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bytewax.speechmatics.schemas.errors import ContractError
from bytewax.speechmatics.schemas.frames import (
    BYTES_PER_SAMPLE,
    CHANNELS,
    DEFAULT_ENCODING,
    DEFAULT_MAX_FRAME_SECONDS,
    DEFAULT_SAMPLE_RATE,
    SAMPLE_RATES,
    AudioFrame,
    frame_samples,
)

#: Audio per frame by default: 100 ms keeps the message count at 10 per call and second (20 ms frames would be 50)
#: and adds at most 100 ms before audio reaches Kafka.
DEFAULT_FRAME_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """How a call's audio is encoded (the frame headers)."""

    sample_rate: int = DEFAULT_SAMPLE_RATE
    encoding: str = DEFAULT_ENCODING
    channels: int = 1

    def __post_init__(self) -> None:
        if self.sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {list(SAMPLE_RATES)}, got {self.sample_rate}")
        if self.encoding not in BYTES_PER_SAMPLE:
            raise ValueError(f"encoding must be one of {list(BYTES_PER_SAMPLE)}, got {self.encoding!r}")
        if self.channels not in CHANNELS:
            raise ValueError(f"channels must be one of {list(CHANNELS)}, got {self.channels}")

    @property
    def width(self) -> int:
        """Bytes of one sample across all channels."""
        return BYTES_PER_SAMPLE[self.encoding] * self.channels


def audio_bytes(audio: bytes | bytearray | memoryview | np.ndarray, fmt: AudioFormat) -> bytes:
    """Raw bytes in `fmt` from bytes, or from a numpy array (samples, or samples x channels).

    Arrays: int16 (pcm_s16le), floats in [-1, 1] (scaled and clipped to pcm_s16le), uint8 (mulaw code bytes).
    """
    if not isinstance(audio, np.ndarray):
        return bytes(audio)
    if audio.ndim == 2 and audio.shape[1] != fmt.channels:
        raise ValueError(f"array has {audio.shape[1]} channels, the call {fmt.channels}")
    if audio.ndim not in (1, 2):
        raise ValueError(f"array must be 1-D (samples) or 2-D (samples x channels), got {audio.ndim}-D")
    if fmt.encoding == "mulaw":
        if audio.dtype != np.uint8:
            raise ValueError(f"a mulaw call takes uint8 arrays (the code bytes), got {audio.dtype}")
        return np.ascontiguousarray(audio).tobytes()
    if np.issubdtype(audio.dtype, np.floating):
        audio = np.clip(np.rint(audio * 32767.0), -32768, 32767).astype("<i2")
    elif audio.dtype.kind == "i" and audio.dtype.itemsize == 2:
        audio = audio.astype("<i2", copy=False)
    else:
        raise ValueError(f"a pcm_s16le call takes int16 or float arrays, got {audio.dtype}")
    return np.ascontiguousarray(audio).tobytes()


@dataclass(slots=True)
class FrameCutter:
    """One call's framing state: the next seq, and audio not yet cut into a frame."""

    call_id: str
    fmt: AudioFormat = AudioFormat()
    frame_seconds: float = DEFAULT_FRAME_SECONDS
    max_frame_seconds: float = DEFAULT_MAX_FRAME_SECONDS
    seq: int = 0
    ended: bool = False
    _pending: bytearray = field(default_factory=bytearray)
    _frame_bytes: int = 0

    def __post_init__(self) -> None:
        if not self.call_id:
            raise ValueError("call_id must be a non-empty string")
        try:  # the one framing rule of every producer here (publish's --frame-ms too)
            samples = frame_samples(self.frame_seconds * 1000, self.fmt.sample_rate, self.max_frame_seconds)
        except ContractError as exc:
            raise ValueError(f"frame_seconds={self.frame_seconds:g}: {exc}") from None
        self._frame_bytes = samples * self.fmt.width

    @property
    def pending_bytes(self) -> int:
        """Audio held back until a whole frame (or the end) is there."""
        return len(self._pending)

    def push(self, audio: bytes) -> list[AudioFrame]:
        """The whole frames `audio` completes (maybe none); the rest waits for the next piece."""
        if self.ended:
            raise ValueError(f"call {self.call_id!r} has ended; no audio can follow its end frame")
        self._pending += audio
        return self._whole_frames(len(self._pending) // self._frame_bytes * self._frame_bytes)

    def finish_with(self, audio: bytes) -> list[AudioFrame]:
        """`audio` is the call's last: its frames, the last of them the end frame carrying the final piece (a whole
        frame or less), so audio that ends on a frame boundary needs no empty end frame."""
        if self.ended:
            raise ValueError(f"call {self.call_id!r} has already ended")
        self._pending += audio
        step = self._frame_bytes
        frames = self._whole_frames(max(0, (len(self._pending) - 1) // step * step))
        return [*frames, self.finish()]

    def _whole_frames(self, whole: int) -> list[AudioFrame]:
        """The first `whole` bytes pending (a multiple of the frame length) as frames."""
        step = self._frame_bytes
        if not whole:
            return []
        out = [self._frame(bytes(self._pending[i : i + step]), False) for i in range(0, whole, step)]
        del self._pending[:whole]
        return out

    def drain(self) -> list[AudioFrame]:
        """Whatever whole samples are pending, as one frame (none when nothing is); a partial sample keeps waiting."""
        whole = len(self._pending) // self.fmt.width * self.fmt.width
        if not whole:
            return []
        frame = self._frame(bytes(self._pending[:whole]), False)
        del self._pending[:whole]
        return [frame]

    def finish(self) -> AudioFrame:
        """The end frame, carrying the pending whole samples (a trailing partial sample is dropped: it is no audio)."""
        if self.ended:
            raise ValueError(f"call {self.call_id!r} has already ended")
        whole = len(self._pending) // self.fmt.width * self.fmt.width
        frame = self._frame(bytes(self._pending[:whole]), True)
        self._pending.clear()
        self.ended = True
        return frame

    def _frame(self, audio: bytes, end: bool) -> AudioFrame:
        frame = AudioFrame(self.call_id, self.seq, audio, self.fmt.sample_rate, self.fmt.encoding,
                           self.fmt.channels, end)
        self.seq += 1
        return frame
