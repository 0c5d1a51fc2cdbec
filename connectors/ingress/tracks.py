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
    _index: dict[str, int] = field(default_factory=dict)  # track name -> its buffer

    def __post_init__(self) -> None:
        if not self.tracks or len(set(self.tracks)) != len(self.tracks):
            raise ValueError(f"tracks must be distinct names, got {list(self.tracks)}")
        self._buffers = [bytearray() for _ in self.tracks]
        self._heads = [0 for _ in self.tracks]
        self._filled = [0 for _ in self.tracks]
        self._ahead = [{} for _ in self.tracks]
        self._index = {name: i for i, name in enumerate(self.tracks)}

    @property
    def channels(self) -> int:
        return len(self.tracks)

    @property
    def buffered(self) -> int:
        """Bytes held (all tracks)."""
        return sum(len(b) for b in self._buffers)

    def add(self, track: str, position: int, audio: bytes) -> bytes:
        """Place one packet (`position` in samples from the stream's start); the interleaved audio now released.

        Runs once per packet (100 a second per two-track call): the usual case, a packet that continues its track,
        takes the short path.
        """
        index = self._index.get(track)
        if index is None:
            raise ValueError(f"track {track[:20]!r} is not one of {list(self.tracks)}")
        released = self.released
        end = position + len(audio)
        if end - released > self.max_gap + self.window:
            raise TimestampJump(f"a packet at {position / 8000:.3f} s is more than {self.max_gap / 8000:g} s ahead "
                                f"of the audio released so far ({released / 8000:.3f} s)")
        if position < released:  # (part of) the packet comes too late
            cut = min(len(audio), released - position)
            self.late_samples += cut
            audio, position = audio[cut:], released
            if not audio:
                return b""
        buf = self._buffers[index]
        start = position - released
        if start == len(buf):  # the usual case: right after what the track holds
            buf += audio
        else:
            if len(buf) < start:
                buf.extend(bytes([self.silence]) * (start - len(buf)))
            buf[start : start + len(audio)] = audio
        heads, filled = self._heads, self._filled
        if end > heads[index]:
            heads[index] = end
        if position <= filled[index]:  # the packet continues its track
            if end > filled[index]:
                filled[index] = end
                if self._ahead[index]:
                    self._advance(index)
        else:  # past a hole: wait for the hole's packets (or the window)
            ahead = self._ahead[index]
            ahead[position] = max(end, ahead.get(position, 0))
        ready = min(filled)  # every track has its audio up to here: nothing earlier can still arrive
        lead = max(heads) - self.window  # ... or one track is so far ahead that the others' holes are gaps
        upto = ready if ready > lead else lead
        if upto - released < self.min_release or upto <= released:
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
        count = len(self._buffers)
        out = bytearray(n * count) if count > 1 else None
        column = b""
        for i, buf in enumerate(self._buffers):
            column = buf[:n]
            del buf[:n]
            if len(column) < n:
                column += bytes([self.silence]) * (n - len(column))
            if out is not None:
                out[i::count] = column  # interleave: a strided copy in C, no per-sample Python
        self.released = upto
        for index in range(count):  # released holes are silence now: nothing is missing before upto
            if self._filled[index] < upto:
                self._filled[index] = upto
                self._advance(index)
        return bytes(out if out is not None else column)
