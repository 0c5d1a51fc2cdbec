"""Merging a call's telephony tracks into one interleaved stream (pure: no I/O, no asyncio).

Telephony websockets send each party's audio as its own track of 20 ms packets, stamped with where they belong
(Twilio: `timestamp` in ms since the stream started, and `chunk`; Telnyx the same, and says the order of packets is
not guaranteed). The flow wants one call with one channel per party. So each packet is placed at its own position in
its track; audio is released once every track has reached a position (or once the most advanced track is more than
`window` ahead: a silent or stalled track does not hold the call back, its gap becomes silence). Packets that
arrive out of order within the window land where they belong; later ones are dropped and counted, because the audio
before them has gone out already. Memory per call is bounded by the window plus `max_gap` (a jump in timestamps
longer than that is refused: it would otherwise mean buffering minutes of silence).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

#: The mu-law code for zero (the silence that fills gaps).
MULAW_SILENCE = 0xFF


class TimestampJump(ValueError):
    """A packet claims a position too far ahead of what has been released."""


@dataclass
class TrackMixer:
    """Per call: one buffer per track, starting at the first position not yet released (`released`, in samples)."""

    tracks: Sequence[str]
    window: int = 8000  # samples (1 s at 8 kHz)
    max_gap: int = 8000 * 60
    silence: int = MULAW_SILENCE
    #: Release audio in pieces of at least this many samples (fewer, larger pieces: the interleaving and everything
    #: after it cost per piece; the producer holds audio for a whole frame anyway).
    min_release: int = 0
    released: int = 0
    late_samples: int = 0
    _buffers: list[bytearray] = field(default_factory=list)
    _heads: list[int] = field(default_factory=list)  # per track: the end of its furthest packet, in samples
    _filled: list[int] = field(default_factory=list)  # per track: audio is there without a hole up to here
    _ahead: list[dict[int, int]] = field(default_factory=list)  # per track: start -> end of packets past a hole

    def __post_init__(self) -> None:
        if not self.tracks or len(set(self.tracks)) != len(self.tracks):
            raise ValueError(f"tracks must be distinct names, got {list(self.tracks)}")
        self._buffers = [bytearray() for _ in self.tracks]
        self._heads = [0 for _ in self.tracks]
        self._filled = [0 for _ in self.tracks]
        self._ahead = [{} for _ in self.tracks]

    @property
    def channels(self) -> int:
        return len(self.tracks)

    @property
    def buffered(self) -> int:
        """Bytes held (all tracks)."""
        return sum(len(b) for b in self._buffers)

    def add(self, track: str, position: int, audio: bytes) -> bytes:
        """Place one packet (`position` in samples from the stream's start); the interleaved audio now released."""
        index = self.tracks.index(track)  # ValueError for a track the stream did not announce
        end = position + len(audio)
        if end - self.released > self.max_gap + self.window:
            raise TimestampJump(f"a packet at {position / 8000:.3f} s is more than {self.max_gap / 8000:g} s ahead "
                                f"of the audio released so far ({self.released / 8000:.3f} s)")
        if position < self.released:  # (part of) the packet comes too late
            cut = min(len(audio), self.released - position)
            self.late_samples += cut
            audio, position = audio[cut:], self.released
            if not audio:
                return b""
        buf = self._buffers[index]
        start = position - self.released
        if len(buf) < start:
            buf.extend(bytes([self.silence]) * (start - len(buf)))
        buf[start : start + len(audio)] = audio
        if end > self._heads[index]:
            self._heads[index] = end
        filled = self._filled[index]
        if position <= filled:  # the usual case: the packet continues its track
            if end > filled:
                self._filled[index] = end
                if self._ahead[index]:
                    self._advance(index)
        else:  # past a hole: wait for the hole's packets (or the window)
            ahead = self._ahead[index]
            ahead[position] = max(end, ahead.get(position, 0))
        ready = min(self._filled)  # every track has its audio up to here: nothing earlier can still arrive
        lead = max(self._heads) - self.window  # ... or one track is so far ahead that the others' holes are gaps
        upto = max(ready, lead)
        if upto - self.released < self.min_release:
            return b""
        return self._release(upto)

    def _advance(self, index: int) -> None:
        """Move the track's hole-free mark over the packets that now join it."""
        ahead, filled = self._ahead[index], self._filled[index]
        moved = True
        while moved:
            moved = False
            for start in [s for s in ahead if s <= filled]:
                filled = max(filled, ahead.pop(start))
                moved = True
        self._filled[index] = filled

    def finish(self) -> bytes:
        """Everything still held, gaps silent (the stream is over)."""
        return self._release(max(self._heads))

    def _release(self, upto: int) -> bytes:
        n = upto - self.released
        if n <= 0:
            return b""
        columns = []
        for buf in self._buffers:
            part = bytes(buf[:n])
            del buf[:n]
            if len(part) < n:
                part += bytes([self.silence]) * (n - len(part))
            columns.append(part)
        self.released = upto
        for index in range(len(self.tracks)):  # released holes are silence now: nothing is missing before upto
            if self._filled[index] < upto:
                self._filled[index] = upto
                self._advance(index)
        if len(columns) == 1:
            return columns[0]
        out = np.empty((n, len(columns)), dtype=np.uint8)
        for i, part in enumerate(columns):
            out[:, i] = np.frombuffer(part, dtype=np.uint8)
        return out.tobytes()
