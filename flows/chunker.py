"""The chunking operator: one CallChunker per call id inside Bytewax's stateful_batch, plus metrics.

Output: (call_id, Chunk | DeadLetter). Downstream splits them with op.branch (see `is_chunk`).

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
from prometheus_client import Counter

from bytewax.speechmatics.flows.chunking import STAGE, CallChunker, CallSnapshot, ChunkConfig, Output, Tally
from bytewax.speechmatics.flows.decode import DEAD_LETTERS
from bytewax.speechmatics.schemas.chunks import Chunk
from bytewax.speechmatics.schemas.dead_letters import DeadLetter
from bytewax.speechmatics.schemas.frames import AudioFrame

FRAMES = Counter("bwsm_chunker_frames_total", "Frames accepted by the chunker (duplicates excluded)")
DUPLICATES = Counter("bwsm_chunker_duplicate_frames_total",
                     "Frames dropped because their seq was already released or filled (replays, retries, late)")
GAPS = Counter("bwsm_chunker_gap_frames_total", "Missing frames filled with silence")
CHUNKS = Counter("bwsm_chunks_total", "Chunks cut, by reason (fixed, vad_pause, vad_forced, end, idle)", ["reason"])
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


class ChunkerLogic(StatefulBatchLogic[AudioFrame, Chunk | DeadLetter, CallSnapshot]):
    """Bytewax's per-call-id logic around CallChunker: batches in, idle/forget timers, snapshots."""

    def __init__(self, config: ChunkConfig, resume: CallSnapshot | None) -> None:
        self.config = config
        self.tally = Tally()
        self.core = CallChunker(config, resume, tally=self.tally)
        self.deadline: float | None = None
        self.touched_at = 0.0
        if resume is not None:
            # An open call's idle timer restarts (its replayed frames must arrive before an idle flush); a flushed
            # call's forget timer keeps running from its last activity, so frequent restarts cannot keep it forever.
            self._arm(time.time() if self.core.open or not resume.touched_at else resume.touched_at)

    def _arm(self, now: float) -> None:
        cfg = self.config
        self.touched_at = now
        self.deadline = now + (cfg.idle_timeout_seconds if self.core.open else cfg.forget_seconds)

    def on_batch(self, values: list[AudioFrame]) -> tuple[Output, bool]:
        out: Output = []
        push = self.core.push
        for frame in values:
            push(frame, out)
        self._arm(time.time())
        publish(self.tally)
        return out, StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Output, bool]:
        now = time.time()
        if self.deadline is None or now < self.deadline:
            return [], StatefulBatchLogic.RETAIN
        if not self.core.open:
            return [], StatefulBatchLogic.DISCARD
        out: Output = []
        self.core.flush_idle(out)
        self._arm(now)
        publish(self.tally)
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self.deadline is None:
            return None
        return datetime.fromtimestamp(self.deadline, tz=timezone.utc)

    def snapshot(self) -> CallSnapshot:
        return replace(self.core.snapshot(), touched_at=self.touched_at)


def is_chunk(item: Chunk | DeadLetter) -> bool:
    """For op.branch on the chunker's output: chunks on `trues`, dead letters on `falses`."""
    return isinstance(item, Chunk)


@operator
def chunk_calls(step_id: str, frames: KeyedStream[AudioFrame],
                config: ChunkConfig | None = None) -> KeyedStream[Chunk | DeadLetter]:
    """Cut each call's frames (keyed by call id) into chunks; config defaults to ChunkConfig.from_env()."""
    cfg = config if config is not None else ChunkConfig.from_env()

    def build(resume: CallSnapshot | None) -> ChunkerLogic:
        return ChunkerLogic(cfg, resume)

    return op.stateful_batch("chunk", frames, build)
