"""Collect each call's transcript events into one document: a `CallTranscript` per call id inside Bytewax's
`stateful`, emitted once the call completes (and, when configured, provisionally once it goes idle).

Input: (call_id, transcript event) in any order, replays included: event dicts as decoded from `calls.transcripts`,
or `Produced` as `stitch_calls` / `normalize_realtime` give them. Output: (call_id, document), the dict described
by `schemas/call_transcript.schema.json`; `document["completed"]` tells a final document from a provisional one.

Lifecycle per call (wall clock, via notify_at, so it survives recovery):
- open: every event is applied; the moment the transcript is complete the final document goes out and the call's
  state shrinks to a tombstone;
- idle (`idle_seconds`, off by default): a call that changed and then received nothing for this long is emitted as
  a provisional document (`completed` false) and stays open: a later completion still emits the final one;
- forgotten: a tombstone `forget_seconds` after the final document (until then repeats and late events of the call
  are ignored, so a replay never emits a second final document), and an open call `forget_seconds` after its last
  event (without a document, unless the idle timeout gave one).

State is the call's kept events (one per event_id), a list of plain dicts: snapshot-safe, and rebuilt into a
`CallTranscript` on resume. Logs name calls and counts, never transcript text or metadata values.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulLogic

from bytewax.speechmatics.connectors.metrics import DEAD_LETTERS
from bytewax.speechmatics.flows.segments import Produced
from bytewax.speechmatics.flows.stages import StageOut, split_letters
from bytewax.speechmatics.schemas.call_transcript import CallTranscript
from bytewax.speechmatics.schemas.dead_letters import DeadLetter, fit
from bytewax.speechmatics.schemas.errors import ContractError
from bytewax.speechmatics.schemas.events import Event
from bytewax.speechmatics.schemas.snapshots import evolvable

log = logging.getLogger(__name__)

STAGE = "collect"
_DEAD = DEAD_LETTERS.labels(stage=STAGE)
_now = time.time  # the wall clock (a test replaces it)
Document = dict[str, Any]


@dataclass(frozen=True)
class CollectSettings:
    """When `collect_transcripts` emits and forgets a call (BWSM_COLLECT_* variables)."""

    idle_seconds: float | None = None  # emit a provisional document after this long without events (None: never)
    forget_seconds: float = 3600.0  # how long a call is remembered after its final document, or after its last event

    def __post_init__(self) -> None:
        if self.idle_seconds is not None and self.idle_seconds <= 0:
            raise ValueError(f"BWSM_COLLECT_IDLE_SECONDS must be > 0, got {self.idle_seconds}")
        if self.forget_seconds <= 0:
            raise ValueError(f"BWSM_COLLECT_FORGET_SECONDS must be > 0, got {self.forget_seconds}")
        if self.idle_seconds is not None and self.forget_seconds <= self.idle_seconds:
            raise ValueError("BWSM_COLLECT_FORGET_SECONDS must exceed BWSM_COLLECT_IDLE_SECONDS, got "
                             f"{self.forget_seconds} <= {self.idle_seconds}")


@evolvable
@dataclass(slots=True)
class CollectState:
    """What is snapshotted per call: its kept events (one per event_id; none once the final document is out)."""

    events: list[Event] | None = None
    last_seen: float = 0.0  # wall clock of the last event
    changed: bool = False  # the transcript changed since the last document
    done_at: float | None = None  # wall clock of the final document


class CollectLogic(StatefulLogic["tuple[str, Event | Produced]", "Document | DeadLetter", CollectState]):
    """One call: apply its events to a CallTranscript, emit its document(s), then forget it."""

    def __init__(self, settings: CollectSettings, resume: CollectState | None) -> None:
        self.settings = settings
        self.state = resume if resume is not None else CollectState()
        self.transcript = CallTranscript.from_events(self.state.events or ())
        self.state.events = None  # live, the transcript holds them; snapshot() lists them again

    def on_item(self, value: tuple[str, Event | Produced]) -> tuple[list, bool]:
        call_id, item = value
        event = item.event if isinstance(item, Produced) else item
        if self.state.done_at is not None:
            return [], StatefulLogic.RETAIN  # a repeat or a late event of a call already delivered
        try:
            if isinstance(event, dict) and event.get("call_id") != call_id:
                raise ContractError("call_id differs from the message key", f"transcript event of call {call_id}")
            changed = self.transcript.apply(event)
        except ContractError as exc:
            return [self._refused(call_id, event, exc)], len(self.transcript) == 0
        self.state.last_seen = _now()
        if not changed:
            return [], StatefulLogic.RETAIN
        self.state.changed = True
        if self.transcript.completed:
            document = self._document("final")
            self.state = CollectState(events=None, last_seen=self.state.last_seen, done_at=_now())
            self.transcript = CallTranscript()
            return [document], StatefulLogic.RETAIN
        return [], StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self.state.done_at is not None:
            at = self.state.done_at + self.settings.forget_seconds
        else:
            at = self.state.last_seen + self.settings.forget_seconds
            if self.settings.idle_seconds is not None and self.state.changed:
                at = min(at, self.state.last_seen + self.settings.idle_seconds)
        return datetime.fromtimestamp(at, tz=timezone.utc)

    def on_notify(self) -> tuple[list, bool]:
        now = _now()
        if self.state.done_at is not None:
            return [], now >= self.state.done_at + self.settings.forget_seconds
        if now >= self.state.last_seen + self.settings.forget_seconds:
            log.info("call %s forgotten incomplete after %.0f s without events (%d events kept)",
                     self.transcript.call_id, self.settings.forget_seconds, len(self.transcript))
            return [], StatefulLogic.DISCARD
        idle = self.settings.idle_seconds
        if idle is not None and self.state.changed and now >= self.state.last_seen + idle:
            return self._provisional(), StatefulLogic.RETAIN
        return [], StatefulLogic.RETAIN

    def on_eof(self) -> tuple[list, bool]:
        """The input ended (a bounded source): with an idle timeout set, an open call that changed since its last
        document is emitted provisionally now, since nothing more can arrive."""
        if self.state.done_at is None and self.settings.idle_seconds is not None and self.state.changed:
            return self._provisional(), StatefulLogic.RETAIN
        return [], StatefulLogic.RETAIN

    def snapshot(self) -> CollectState:
        # Kept events are never mutated once applied (a newer version replaces the dict), so a new list is a copy.
        events = None if self.state.done_at is not None else self.transcript.events
        return CollectState(events=events, last_seen=self.state.last_seen, changed=self.state.changed,
                            done_at=self.state.done_at)

    def _provisional(self) -> list[Document]:
        self.state.changed = False
        return [self._document("provisional")]

    def _document(self, kind: str) -> Document:
        document = self.transcript.to_document()
        counts = document["counts"]
        log.info("call %s: %s transcript (%d words, %d batch, %d real-time, %d partial; %d failed chunks)",
                 document["call_id"], kind, counts["words"], counts["batch_words"], counts["realtime_words"],
                 counts["partial_words"], counts["failed_chunks"])
        return document

    def _refused(self, call_id: str, event: Any, exc: ContractError) -> DeadLetter:
        _DEAD.inc()
        log.debug("call %s: transcript event refused: %s", call_id, exc.what)  # rate-limited as a dead letter
        try:
            value = orjson.dumps(event)
        except TypeError:
            value = None
        return fit(DeadLetter(reason=str(exc), stage=STAGE, key=call_id.encode(), value=value))


@operator
def collect_transcripts(step_id: str, events: KeyedStream[Event | Produced], config: CollectSettings | None = None
                        ) -> StageOut[Document]:
    """Collect each call's transcript events into its whole transcript (`CallTranscript`), and emit it as one
    document when the call completes: exactly one final document per call, whatever the order of its events and
    however often they repeat.

    Args:
        step_id: Unique ID.
        events: `(call_id, event)`: transcript event dicts (as decoded from `calls.transcripts`, any schema 1.x,
            any order, replays included) or `Produced` (`stitch_calls(...).oks`, `normalize_realtime(...).oks`).
        config: Provisional documents after an idle timeout (off by default) and how long a call is remembered;
            built-in defaults when omitted.

    Returns:
        `StageOut`: `oks` are `(call_id, document)`, the dict described by `schemas/call_transcript.schema.json`
        (`completed` true for the final document, false for a provisional one); `errs` are DeadLetters (stage
        `collect`) for events that are not transcript events of their key's call. Never raises on bad input.

    Example:
        >>> from bytewax.speechmatics.flows import collect_transcripts
        >>> finals = collect_transcripts("collect", op.merge("events", stitched.oks, realtime.oks))
        >>> op.output("out", op.map("json", finals.oks, lambda kv: (kv[0], orjson.dumps(kv[1]))), sink)
    """
    cfg = config or CollectSettings()
    with_keys = op.map("with_key", events, lambda kv: (kv[0], kv))  # the logic checks events against their key
    return split_letters("out", op.stateful("collect", with_keys, lambda resume: CollectLogic(cfg, resume)))
