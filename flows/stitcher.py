"""The stitching operator: one CallTimeline per call id inside Bytewax's `stateful`, emitting transcript events.

Input: (call_id, ChunkResult) from the submitter, in any order, and the call's CallStarted (passed through by the
submitter before any of the call's results), which becomes the call_started event at once. Output:
(call_id, Produced): each event with the `closed_at` of the chunk it came from, so the flow can measure "chunk
closed -> event produced" (and count events) where it produces them, while the events themselves carry no clock and
replay byte for byte. Every event of a call with metadata carries it (each chunk's result brings it along).

Speaker labels: the submitter relabels transcripts with its per-call SpeakerBook (flows/speakers.py) before they
get here, so by default the stitcher trusts the labels it is given and maps nothing. `relabel_speakers=True`
gives the stitcher a SpeakerBook of its own (applied in chunk order), for flows whose transcripts arrive with a
job's raw S<n> labels; then labels are only as stable as overlap evidence can make them (no enrolment).

After a call's call_completed the state shrinks to a tombstone kept `linger_seconds` (wall clock, via notify_at),
so a repeated result (a replay, a retried job) is ignored instead of opening the call again.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulLogic

from bytewax.speechmatics.connectors.metrics import BILLED_SECONDS, CALL_AUDIO_SECONDS, EVENTS, FAILED_SEGMENTS
from bytewax.speechmatics.flows.segments import Produced, batch_segment, call_completed, call_started
from bytewax.speechmatics.flows.speakers import SpeakerBook
from bytewax.speechmatics.flows.stages import StageOut, split_letters
from bytewax.speechmatics.flows.stitching import CallTimeline, Completion, Release, StitchSettings
from bytewax.speechmatics.schemas.chunks import CallStarted, ChunkResult
from bytewax.speechmatics.schemas.snapshots import evolvable

log = logging.getLogger(__name__)



@evolvable
@dataclass(slots=True)
class StitchState:
    """What is snapshotted per call: the timeline, the optional book, when the call completed (wall clock)."""

    timeline: CallTimeline
    book: SpeakerBook | None = None
    completed_at: float | None = None


def _produce(item: Release | Completion) -> Produced:
    """The validated event for one release, with the closed_at of the chunk it belongs to."""
    if isinstance(item, Completion):
        EVENTS.labels(type="call_completed").inc()
        log.info("call %s completed: %d chunks, %d failed, %d words", item.call_id, item.chunks,
                 item.failed_chunks, item.words)
        return Produced(call_completed(item), item.closed_at)
    event = batch_segment(item)
    EVENTS.labels(type="segment").inc()
    if item.part == "segment":
        span = item.span
        CALL_AUDIO_SECONDS.inc((span.end_sample - span.start_sample - span.overlap_samples) / span.sample_rate)
        BILLED_SECONDS.inc(item.billed_seconds)
    if item.error is not None:
        FAILED_SEGMENTS.inc()
        log.info("call %s chunk %d failed: segment emitted with its error", item.span.call_id, item.span.index)
    return Produced(event, item.span.closed_at)


class StitchLogic(StatefulLogic[ChunkResult | CallStarted, Produced, StitchState]):
    """Per call: hold results until they are next in order, release them through the timeline, emit events."""

    def __init__(self, settings: StitchSettings, linger_seconds: float, relabel_speakers: bool,
                 resume: StitchState | None) -> None:
        self.settings = settings
        self.linger = linger_seconds
        self.relabel_speakers = relabel_speakers
        self.state = resume

    def on_item(self, value: ChunkResult | CallStarted) -> tuple[list[Produced], bool]:
        if value.__class__ is CallStarted:  # no state of its own: the event depends on the message alone
            EVENTS.labels(type="call_started").inc()
            started = Produced(call_started(value))
            return [started], StatefulLogic.DISCARD if self.state is None else StatefulLogic.RETAIN
        if self.state is None:
            self.state = StitchState(CallTimeline(value.span.call_id),
                                     SpeakerBook() if self.relabel_speakers else None)
        if self.relabel_speakers and self.state.book is None:
            self.state.book = SpeakerBook()
        book = self.state.book
        items = self.state.timeline.push(value, self.settings, book.relabel if book is not None else None)
        out = [_produce(item) for item in items]
        if not self.state.timeline.completed:
            self.state.completed_at = None  # open, or reopened by a call that spoke again after an idle flush
        elif self.state.completed_at is None:
            self.state.completed_at = time.time()
            self.state.book = None
        return out, StatefulLogic.RETAIN

    def on_notify(self) -> tuple[list[Produced], bool]:
        return [], self._expired()

    def on_eof(self) -> tuple[list[Produced], bool]:
        return [], StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self.state is None or self.state.completed_at is None:
            return None
        return datetime.fromtimestamp(self.state.completed_at + self.linger, tz=timezone.utc)

    def _expired(self) -> bool:
        done = self.state.completed_at if self.state is not None else None
        return done is not None and time.time() >= done + self.linger

    def snapshot(self) -> StitchState:
        return copy.deepcopy(self.state)  # type: ignore[return-value]


@operator
def stitch_calls(step_id: str, up: KeyedStream[ChunkResult], config: StitchSettings | None = None
                 ) -> StageOut[Produced]:
    """Stitch each call's chunk results into one ordered timeline of transcript events: offset word times to the
    call, drop the words the overlap repeats, keep speaker labels stable, emit segments in chunk order and a
    `call_completed` event once every chunk of the call is in.

    Args:
        step_id: Unique ID.
        up: `(call_id, ChunkResult)` and `(call_id, CallStarted)`, as `transcribe_chunks(...).oks` gives them (any
            order, replays included).
        config: Seam tuning and how long a completed call is remembered; built-in defaults when omitted.

    Returns:
        `StageOut`: `oks` are `(call_id, Produced)`; `Produced.event` is a transcript event (a dict valid against
        `schemas/transcript_event.schema.json`, ids deterministic, so replays are byte-identical): the call's
        call_started, its segments in chunk order, then call_completed, each with the call's metadata. `errs` is
        empty today (a failed chunk is a segment with its `error` set; its dead letter comes from
        `transcribe_chunks`), and kept so every stage has the same shape.

    Example:
        >>> from bytewax.speechmatics.flows import stitch_calls
        >>> events = stitch_calls("stitch", results.oks)
        >>> op.output("out", op.map("json", events.oks, lambda kv: (kv[0], orjson.dumps(kv[1].event))), sink)
    """
    cfg = config or StitchSettings()

    def build(resume: StitchState | None) -> StitchLogic:
        return StitchLogic(cfg, cfg.linger_seconds, cfg.relabel_speakers, resume)

    return split_letters("out", op.stateful("stitch", up, build))
