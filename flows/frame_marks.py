"""Where each frame a chunker holds starts, and which Kafka message it came from, in three compact arrays.

Why not a list of tuples: a call holds about 1,500 frames per 30 s chunk, and a (sample, (topic, partition,
offset)) tuple per frame cost about 180 bytes of Python objects (28 % of the 640-byte frame it describes) and a
tuple per frame to copy at every snapshot. Here a frame costs 18 bytes, and a snapshot copies three arrays.

Pure: no Bytewax, no I/O. Begins are call samples and never decrease (frames are appended in seq order).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from dataclasses import dataclass

from bytewax.speechmatics.schemas.chunks import SourceRange
from bytewax.speechmatics.schemas.snapshots import evolvable

#: origin of a frame the chunker filled with silence (no Kafka message behind it)
FILLED = -1


@evolvable
@dataclass(frozen=True, slots=True)
class MarksState:
    """A snapshot of FrameMarks (picklable copies)."""

    begins: array
    offsets: array
    origins: array
    sources: tuple[tuple[str, int], ...]


class FrameMarks:
    """Per held frame: its first call sample, its Kafka offset, and its (topic, partition) as an index."""

    __slots__ = ("begins", "offsets", "origins", "sources", "_index", "_last")

    def __init__(self, state: MarksState | None = None) -> None:
        self.begins = array("q", state.begins if state else ())
        self.offsets = array("q", state.offsets if state else ())
        self.origins = array("h", state.origins if state else ())
        self.sources: list[tuple[str, int]] = list(state.sources) if state else []
        self._index = {src: i for i, src in enumerate(self.sources)}
        self._last: tuple[str, int, int] | None = None  # (topic, partition, index) of the last frame added

    def __len__(self) -> int:
        return len(self.begins)

    def add(self, begin: int, topic: str | None, partition: int = -1, offset: int = -1) -> None:
        """A frame starting at call sample `begin`; `topic` None for a filled gap."""
        self.begins.append(begin)
        self.offsets.append(offset)
        if topic is None:
            self.origins.append(FILLED)
            return
        last = self._last
        if last is not None and last[0] == topic and last[1] == partition:
            self.origins.append(last[2])
            return
        index = self._index.get((topic, partition))
        if index is None:
            index = self._index[(topic, partition)] = len(self.sources)
            self.sources.append((topic, partition))
        self._last = (topic, partition, index)
        self.origins.append(index)

    def _end(self, i: int, end: int) -> int:
        """Where frame i ends: the next frame's begin, or `end` (the held audio's end) for the last frame."""
        return self.begins[i + 1] if i + 1 < len(self.begins) else end

    def first_kept(self, cut: int, end: int) -> int:
        """Index of the first frame that still matters from call sample `cut` on: frames ending after it, and
        empty frames lying at it."""
        first = bisect_left(self.begins, cut)
        if first > 0 and self._end(first - 1, end) > cut:
            return first - 1
        return first

    def drop_before(self, index: int) -> None:
        """Forget frames [0, index)."""
        if index > 0:
            del self.begins[:index], self.offsets[:index], self.origins[:index]

    def gaps(self, lo: int, hi: int, include_hi: bool) -> int:
        """Filled frames starting in [lo, hi) (or [lo, hi] when `include_hi`)."""
        begins, origins = self.begins, self.origins
        n = 0
        for i in range(bisect_left(begins, lo), len(begins)):
            b = begins[i]
            if b > hi or (b == hi and not include_hi):
                break
            if origins[i] == FILLED:
                n += 1
        return n

    def source_ranges(self, lo: int, hi: int, end: int) -> tuple[SourceRange, ...]:
        """(topic, partition, first, last offset) of the frames overlapping call samples [lo, hi] (an empty frame
        counts when it lies inside), in the order their (topic, partition) was first seen."""
        begins, origins, offsets = self.begins, self.origins, self.offsets
        ranges: dict[int, list[int]] = {}
        for i in range(max(0, bisect_left(begins, lo) - 1), len(begins)):
            b = begins[i]
            if b > hi:
                break
            e = self._end(i, end)
            origin = origins[i]
            if origin == FILLED or not ((b < hi and e > lo) or (b == e and lo <= b <= hi)):
                continue
            offset = offsets[i]
            seen = ranges.get(origin)
            if seen is None:
                ranges[origin] = [offset, offset]
            elif offset < seen[0]:
                seen[0] = offset
            elif offset > seen[1]:
                seen[1] = offset
        return tuple((*self.sources[o], first, last) for o, (first, last) in ranges.items())

    def state(self) -> MarksState:
        return MarksState(array("q", self.begins), array("q", self.offsets), array("h", self.origins),
                          tuple(self.sources))
