"""Silence compaction of a chunk before it is sent, and the time map that puts the transcript back on the call's
timeline (pure: no Bytewax, no I/O).

The API bills every second it is sent, and calls are largely not speech. A chunk's non-speech stretches (by
webrtcvad, speech in either channel counting as speech) are shortened to at most `keep` samples rather than removed:
the first half of the keep stays after the speech before it and the second half before the speech after it (the
padding on each side), so the engine still hears sentence boundaries and words clipped by the VAD keep their edges.
A chunk's leading silence keeps its last half, its trailing silence its first half; a chunk without speech keeps
nothing and is not sent.

A `TimeMap` lists the kept pieces of the chunk in order; the audio sent is those pieces back to back, and a time of
the transcript (seconds in the sent audio) maps back to seconds in the chunk. At the seam of two pieces a start time
belongs to the piece that follows and an end time (or an instant: a punctuation mark) to the piece before, so a word
is never stretched across the silence that was cut out. Everything depends on the chunk's audio alone (a fresh VAD
per chunk), and the map is kept in the submitter's state, so a replay sends the same audio and maps the same times.
"""

from __future__ import annotations

import copy
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bytewax.speechmatics.schemas.snapshots import evolvable

#: Digits kept of a mapped time (a microsecond: far below the 1 ms the stitcher rounds to).
MAPPED_DECIMALS = 6


@evolvable
@dataclass(frozen=True, slots=True)
class TimeMap:
    """The pieces of a chunk that are sent: (first sample in the chunk, length in samples), in chunk order."""

    pieces: tuple[tuple[int, int], ...]
    sample_rate: int

    @property
    def sent_samples(self) -> int:
        return sum(n for _, n in self.pieces)

    @property
    def sent_seconds(self) -> float:
        return self.sent_samples / self.sample_rate

    def _starts(self) -> list[int]:
        out, at = [], 0
        for _, n in self.pieces:
            out.append(at)
            at += n
        return out

    def to_chunk(self, seconds: float, *, end: bool) -> float:
        """A time of the sent audio as seconds in the chunk (`end`: at a seam, the piece before wins)."""
        if not self.pieces:
            return seconds
        at = seconds * self.sample_rate
        starts = self._starts()
        i = (bisect_left(starts, at) if end else bisect_right(starts, at)) - 1
        i = max(0, i)
        first, length = self.pieces[i]
        return (first + min(at - starts[i], length)) / self.sample_rate


def keep_plan(speech: Sequence[bool], frame_samples: int, total_samples: int, keep_samples: int,
              sample_rate: int) -> TimeMap | None:
    """The pieces to send of a chunk of `total_samples` whose VAD frames are `speech` (None: no speech at all).

    Samples past the last whole VAD frame count as non-speech.
    """
    if not any(speech):
        return None
    head, tail = keep_samples // 2, keep_samples - keep_samples // 2
    quiet: list[tuple[int, int]] = []  # runs of non-speech samples
    quiet_from: int | None = 0
    for i, is_speech in enumerate(speech):
        if is_speech and quiet_from is not None:
            quiet.append((quiet_from, i * frame_samples))
            quiet_from = None
        elif not is_speech and quiet_from is None:
            quiet_from = i * frame_samples
    quiet.append((len(speech) * frame_samples if quiet_from is None else quiet_from, total_samples))
    removed: list[tuple[int, int]] = []
    for lo, hi in quiet:
        if lo == 0 and hi - lo > tail:  # before the first speech: the padding before it
            removed.append((0, hi - tail))
        elif hi == total_samples and hi - lo > head:  # after the last speech: the padding after it
            removed.append((lo + head, hi))
        elif lo > 0 and hi < total_samples and hi - lo > keep_samples:
            removed.append((lo + head, hi - tail))
    pieces, at = [], 0
    for lo, hi in removed:
        if lo > at:
            pieces.append((at, lo - at))
        at = hi
    if at < total_samples:
        pieces.append((at, total_samples - at))
    return TimeMap(tuple(pieces), sample_rate)


def cut(audio: bytes, plan: TimeMap, frame_bytes: int) -> bytes:
    """The audio that is sent: the plan's pieces of `audio` back to back (`frame_bytes`: bytes per sample frame)."""
    return b"".join(audio[first * frame_bytes : (first + n) * frame_bytes] for first, n in plan.pieces)


def map_transcript(transcript: dict[str, Any], plan: TimeMap) -> dict[str, Any]:
    """A json-v2 transcript of the sent audio with every result's times moved to the chunk's timeline."""
    out = copy.deepcopy(transcript)
    for result in out.get("results") or ():
        try:
            start, end = float(result["start_time"]), float(result["end_time"])
        except (KeyError, TypeError, ValueError):
            continue  # the stitcher refuses it with its reason
        new_end = plan.to_chunk(end, end=True)
        new_start = plan.to_chunk(start, end=start >= end)
        result["start_time"] = round(new_start, MAPPED_DECIMALS)
        result["end_time"] = round(max(new_start, new_end), MAPPED_DECIMALS)
    return out
