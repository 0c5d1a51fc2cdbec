"""The chunking operator: one CallChunker per call id inside Bytewax's stateful_batch, plus metrics.

Input: (call_id, AudioFrame | CallStart). Output: StageOut(oks=(call_id, Chunk | CallStarted), errs=DeadLetter):
per call, one CallStarted first (the call was seen: its start message or first frame), then its chunks.

Why stateful_batch and not stateful: per-frame overhead is the budget (hundreds of thousands of 20 ms frames/s
per process), so metrics are published once per batch per call, not once per frame.

Timers (wall clock, via notify_at): an open call is flushed after `idle_timeout_seconds` without frames; a
flushed call keeps a small tombstone (next index, next seq, format; no audio) for `forget_seconds`, so late
frames continue the call (after an idle flush) or are dropped/refused (after its `end`) instead of opening a
"new" call whose chunk 0 would clash with the old one; then the state is discarded.

Recovery: Bytewax restores the state of the last snapshot and rewinds the input to the same point, so the
replayed frames meet exactly the state they met the first time and the chunks come out the same. Only two
things are not part of that replay: `closed_at` (the cut's wall-clock time, the latency clock; it is the one
field a resumed run may differ in), and the timers. Timers restart on restore (idle flush `idle_timeout_seconds`
after the restore, not after the last frame before the crash), so a call is never flushed before its replayed
frames arrive. A call discarded before the snapshot cannot see its frames again, since the input only
rewinds to the snapshot. The one divergence left: an idle flush that happened after the last snapshot and
before the crash, in a call that then revived, is not repeated (the replay sees its frames without the
pause), so that call's later chunk boundaries differ; keep `idle_timeout_seconds` well above the snapshot
interval's worth of producer stalls if that matters.

EOF of the input does not flush open calls: in Bytewax an EOF may be followed by a resumed execution that
continues the same calls, and flushing there would cut chunks an uninterrupted run would not. Calls end with
their `end` frame (or the idle timer, while the dataflow runs).
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timezone

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulBatchLogic

from bytewax.speechmatics.connectors.metrics import AUDIO_SECONDS, CHUNKS, DEAD_LETTERS, DUPLICATES, FRAMES, GAPS
from bytewax.speechmatics.connectors.status import BOARD
from bytewax.speechmatics.flows.chunking import STAGE, CallChunker, CallSnapshot, ChunkConfig, Output, Tally
from bytewax.speechmatics.flows.stages import StageOut, split_letters
from bytewax.speechmatics.schemas.call_start import CallStart
from bytewax.speechmatics.schemas.chunks import CallStarted, Chunk
from bytewax.speechmatics.schemas.dead_letters import DeadLetter
from bytewax.speechmatics.schemas.frames import AudioFrame

_CHUNKER_DEAD = DEAD_LETTERS.labels(stage=STAGE)


def publish(tally: Tally) -> None:
    """Add a tally to the Prometheus counters and zero it."""
    if tally.frames:
        FRAMES.inc(tally.frames)
    if tally.duplicates:
        DUPLICATES.inc(tally.duplicates)
    if tally.gaps:
        GAPS.inc(tally.gaps)
    if tally.dead:
        _CHUNKER_DEAD.inc(tally.dead)
    if tally.cuts:
        for reason, n in tally.cuts.items():
            CHUNKS.labels(reason=reason).inc(n)
        tally.cuts.clear()
    tally.frames = tally.duplicates = tally.gaps = tally.dead = 0


def report(core: CallChunker, before: float) -> None:
    """Count the audio received since `before` (seconds) and show the call on the status board."""
    seconds, chunks = core.progress()
    if seconds > before:
        AUDIO_SECONDS.inc(seconds - before)
    if core.call_id:
        BOARD.chunker(core.call_id, seconds, chunks, core.open)


class ChunkerLogic(StatefulBatchLogic[AudioFrame | CallStart, Chunk | CallStarted | DeadLetter, CallSnapshot]):
    """Bytewax's per-call-id logic around CallChunker: batches in, idle/forget timers, snapshots."""

    def __init__(self, config: ChunkConfig, resume: CallSnapshot | None) -> None:
        self.config = config
        self.tally = Tally()
        self.core = CallChunker(config, resume, tally=self.tally)
        self.deadline: float | None = None
        self.touched_at = 0.0
        self._armed_open = False  # whether `deadline` is an idle (open call) or a forget (flushed call) deadline
        self._wake: datetime | None = None  # `deadline` as the datetime notify_at returns (made once per arming)
        if resume is not None:
            # An open call's idle timer restarts (its replayed frames must arrive before an idle flush); a flushed
            # call's forget timer keeps running from its last activity, so frequent restarts cannot keep it forever.
            self._arm(time.time() if self.core.open or not resume.touched_at else resume.touched_at)

    def _timeout(self) -> float:
        cfg = self.config
        return cfg.idle_timeout_seconds if self.core.open else cfg.forget_seconds

    def _arm(self, now: float) -> None:
        self.touched_at = now
        self._set_deadline(now + self._timeout())

    def _set_deadline(self, at: float) -> None:
        self._armed_open = self.core.open
        self.deadline = at
        self._wake = datetime.fromtimestamp(at, tz=timezone.utc)

    def on_batch(self, values: list[AudioFrame | CallStart | list[AudioFrame | CallStart]]) -> tuple[Output, bool]:
        out: Output = []
        before = self.core.progress()[0]
        push = self.core.push
        for value in values:
            if value.__class__ is list:  # a call's frames of one consumed batch (audio_input)
                for frame in value:
                    push(frame, out)
            else:
                push(value, out)
        # The deadline is not moved on every batch (that is a new wake-up time for Bytewax to file per call per
        # batch): activity is noted, and a deadline that comes while the call was active is pushed on then.
        now = time.time()
        if self.deadline is None or self.core.open != self._armed_open:
            self._arm(now)
        else:
            self.touched_at = now
        publish(self.tally)
        report(self.core, before)
        return out, StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Output, bool]:
        now = time.time()
        if self.deadline is None or now < self.deadline:
            return [], StatefulBatchLogic.RETAIN
        due = self.touched_at + self._timeout()
        if now < due:  # active since the deadline was set: wait for the real one
            self._set_deadline(due)
            return [], StatefulBatchLogic.RETAIN
        if not self.core.open:
            return [], StatefulBatchLogic.DISCARD
        out: Output = []
        self.core.flush_idle(out)
        self._arm(now)
        publish(self.tally)
        report(self.core, self.core.progress()[0])
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self._wake

    def snapshot(self) -> CallSnapshot:
        return replace(self.core.snapshot(), touched_at=self.touched_at)


@operator
def chunk_calls(step_id: str, up: KeyedStream[AudioFrame | CallStart | list[AudioFrame | CallStart]],
                config: ChunkConfig | None = None) -> StageOut[Chunk | CallStarted]:
    """Cut each call's frames into chunks: reorder by seq, drop replays, fill gaps with silence, cut fixed windows
    with overlap (or on silence with the `vad` policy), flush on the `end` frame or an idle timeout. A call's
    start message sets the settings and metadata its chunks carry.

    Args:
        step_id: Unique ID.
        up: `(call_id, AudioFrame)` and `(call_id, CallStart)`, as `decode_frames(...).oks` gives them, or
            `(call_id, [AudioFrame | CallStart, ...])` (a call's messages in offset order), as `audio_input` does.
        config: How calls are cut; the built-in defaults (30 s fixed windows, 0.3 s overlap) when omitted.

    Returns:
        `StageOut`: `oks` are, per call, one `(call_id, CallStarted)` (the call was seen; `transcribe_chunks`
        passes it on and `stitch_calls` makes it the call_started event) followed by `(call_id, Chunk)` in chunk
        order, each chunk with the call's settings (`Chunk.call`); `errs` are DeadLetters for frames the call
        cannot take (a format change mid-call, a seq too far ahead, frames or a start after the call ended).

    Example:
        >>> from bytewax.speechmatics.flows import ChunkConfig, chunk_calls
        >>> chunks = chunk_calls("chunk", frames.oks, config=ChunkConfig(policy="vad"))
    """
    cfg = config or ChunkConfig()

    def build(resume: CallSnapshot | None) -> ChunkerLogic:
        return ChunkerLogic(cfg, resume)

    return split_letters("out", op.stateful_batch("chunk", up, build))
