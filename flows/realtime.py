"""Real-time results from `calls.rt` (raw Speechmatics RT messages, key = call id) as transcript events.

Message by message, per call (in Kafka order, which the key's partition keeps). Every type of the speechmatics-rt
SDK's `ServerMessageType` has a mapping (MAPPING below; each message is counted in
`bwsm_realtime_messages_total{type, outcome}`, outcome `event` or `ignored`):
- RecognitionStarted -> `call_started` (source realtime); its session `id` becomes part of the call's event ids
  from then on, so a reconnected session (whose times and segments start again from 0) never reuses an earlier
  session's ids;
- AddPartialTranscript -> `segment` (source realtime, is_final false);
- AddTranscript -> `segment` (is_final true) that replaces the partials before it;
- EndOfUtterance -> `utterance_end` (a turn ended: voice agents act on it), with its times and channel;
- EndOfTranscript -> `call_completed` (source realtime: final words, audio seconds and speakers of the session),
  and the call's state is dropped;
- Error -> `call_completed` with `error` set (the server ends the session after an Error), state dropped;
- AudioAdded, ChannelAudioAdded (acknowledgements of audio sent), AudioEventStarted, AudioEventEnded (music,
  laughter: not speech), AddTranslation, AddPartialTranslation (another language's text: not this call's
  transcript), SpeakersResult (real-time labels are already stable within a session), Info, Warning ->
  counted and ignored;
- anything else (not JSON, not an object, no `message` string, a type the SDK does not define, a transcript or
  EndOfUtterance with malformed fields) -> a dead letter (stage `realtime`), and the call goes on.

Event ids: a final replaces its partials. An RT session finalises words in order: every partial shows the
words after the last final, and the next final confirms a prefix of them. So a channel's results fall into
consecutive *segments* numbered n = 0, 1, ...: segment n is everything after the n-th final up to and
including the (n+1)-th; its partials and its final share the id event_id(call, "realtime", "session/channel/n").
The id
deliberately does not use the partials' start time, which can shift as the recogniser revises them (and a
final may confirm only part of what the partials showed: the rest comes back in segment n+1's partials).
A final with no words finalises nothing, so it is dropped without ending the segment; an empty partial is only
emitted to clear a segment that already showed text. Times are seconds since the RT session started, plus the
session's `rt_offset` header (seconds of the call's audio before the session's first sample, set by the real-time
bridge when it resumes a call in a new session; absent = 0: the session started with the call).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream, operator
from bytewax.operators import StatefulLogic

from bytewax.speechmatics.connectors.metrics import DEAD_LETTERS, REALTIME_MESSAGES
from bytewax.speechmatics.flows.decode import SourceMessage
from bytewax.speechmatics.flows.segments import (
    Produced,
    realtime_completed,
    realtime_segment,
    realtime_started,
    utterance_end,
)
from bytewax.speechmatics.flows.stages import StageOut, split_letters
from bytewax.speechmatics.flows.stitching import UNDETERMINED_LANGUAGE, group_units, parse_tokens
from bytewax.speechmatics.schemas.dead_letters import DeadLetter, bad_message, fit
from bytewax.speechmatics.schemas.errors import ContractError
from bytewax.speechmatics.schemas.events import Event, load_json_object
from bytewax.speechmatics.schemas.snapshots import evolvable

log = logging.getLogger(__name__)

STAGE = "realtime"
PARTIAL, FINAL = "AddPartialTranscript", "AddTranscript"
END = "EndOfTranscript"
STARTED = "RecognitionStarted"
UTTERANCE_END = "EndOfUtterance"
ERROR = "Error"
IGNORED = "ignored"
#: Every ServerMessageType of the speechmatics-rt SDK and what it becomes (an event type, or IGNORED).
MAPPING: dict[str, str] = {
    STARTED: "call_started",
    PARTIAL: "segment",
    FINAL: "segment",
    UTTERANCE_END: "utterance_end",
    END: "call_completed",
    ERROR: "call_completed",
    "AudioAdded": IGNORED,
    "ChannelAudioAdded": IGNORED,
    "AudioEventStarted": IGNORED,
    "AudioEventEnded": IGNORED,
    "AddTranslation": IGNORED,
    "AddPartialTranslation": IGNORED,
    "SpeakersResult": IGNORED,
    "Info": IGNORED,
    "Warning": IGNORED,
}
SILENT = frozenset(kind for kind, becomes in MAPPING.items() if becomes == IGNORED)
#: An Error's text in call_completed.error is cut to this many characters.
_MAX_ERROR_CHARS = 500
_RT_DEAD = DEAD_LETTERS.labels(stage=STAGE)
#: Header of a calls.rt message: seconds of the call's audio before its session's first sample (a resumed session).
OFFSET_HEADER = "rt_offset"
#: BWSM_RT_IDLE_SECONDS: how long a real-time session may stay silent before its state is dropped.
DEFAULT_IDLE_SECONDS = 3600.0


@evolvable
@dataclass(slots=True)
class RealtimeState:
    """Per call: finals seen per channel (the open segment's number) and whether it has shown text."""

    finals: dict[str, int] = field(default_factory=dict)
    showing: dict[str, bool] = field(default_factory=dict)
    language: str = UNDETERMINED_LANGUAGE
    session: str = ""
    ended: bool = False
    last_seen: float = 0.0  # wall clock of the last message: a session that stops without EndOfTranscript expires
    words: int = 0  # final words of the session
    audio_seconds: float = 0.0  # the latest end time the session reported
    speakers: tuple[str, ...] = ()  # speakers of the session's finals
    utterances: dict[str, int] = field(default_factory=dict)  # EndOfUtterance messages per channel

    def new_session(self, session: str) -> None:
        self.session = session
        self.finals.clear()
        self.showing.clear()
        self.utterances.clear()
        self.words, self.audio_seconds, self.speakers = 0, 0.0, ()


def _seconds(meta: Mapping[str, Any], name: str, default: float, where: str) -> float:
    value = meta.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError(f"metadata.{name} must be a number, got {value!r}", where)
    return float(value)


def _channel_of(message: Mapping[str, Any]) -> str | None:
    channel = message.get("channel")
    return None if channel is None else str(channel)


def _completed(call_id: str, state: RealtimeState, error: str | None = None) -> Event:
    state.ended = True
    return realtime_completed(call_id, state.session, words=state.words, audio_seconds=state.audio_seconds,
                              speakers=state.speakers, language=state.language, error=error)


def _error_text(message: Mapping[str, Any]) -> str:
    kind, reason = message.get("type"), message.get("reason")
    text = f"real-time session error: {kind if isinstance(kind, str) else 'unknown'}"
    if isinstance(reason, str) and reason:
        text += f": {reason}"
    return text[:_MAX_ERROR_CHARS]


def normalize(call_id: str, message: Mapping[str, Any], state: RealtimeState, offset: float = 0.0) -> list[Event]:
    """The events one RT message makes (0 or 1); updates `state`. ContractError for a malformed message.

    `offset` (seconds) moves the session's times onto the call's timeline (a session resumed mid-call).
    """
    where = f"RT message of call {call_id}"
    kind = message.get("message")
    if not isinstance(kind, str):
        raise ContractError(f"field 'message' must be a string naming the message type, got {kind!r:.60}", where)
    if kind == END:
        return [_completed(call_id, state)]
    if kind == ERROR:
        return [_completed(call_id, state, _error_text(message))]
    if kind == STARTED:
        state.new_session(str(message.get("id") or ""))
        return [realtime_started(call_id, state.session, state.language)]
    if kind in SILENT:
        return []
    if kind == UTTERANCE_END:
        meta = message.get("metadata") or {}
        if not isinstance(meta, Mapping):
            raise ContractError("metadata must be an object", where)
        start = _seconds(meta, "start_time", 0.0, where) + offset
        end = _seconds(meta, "end_time", start - offset, where) + offset
        channel = _channel_of(message)
        key = channel or ""
        number = state.utterances.get(key, 0)
        state.utterances[key] = number + 1
        state.audio_seconds = max(state.audio_seconds, end)
        return [utterance_end(call_id, f"{state.session}/{key}/utterance/{number}", start=start, end=end,
                              language=state.language, channel=channel)]
    if kind not in (PARTIAL, FINAL):
        raise ContractError(f"unknown message type {kind[:60]!r}", where)
    tokens = parse_tokens(message, offset, where)
    channel = message.get("channel")
    channel = str(channel) if channel is not None else next((t.channel for t in tokens if t.channel), None)
    key = channel or ""
    number = state.finals.get(key, 0)
    has_words = any(t.kind == "word" for t in tokens)
    if kind == FINAL and not has_words:
        return []
    if kind == PARTIAL and not tokens and not state.showing.get(key):
        return []
    language = next((t.language for t in tokens if t.language), state.language)
    state.language = language
    meta = message.get("metadata") or {}
    if not isinstance(meta, Mapping):
        raise ContractError("metadata must be an object", where)
    start = _seconds(meta, "start_time", min((t.start for t in tokens), default=offset) - offset, where) + offset
    end = _seconds(meta, "end_time", max((t.end for t in tokens), default=start) - offset, where) + offset
    event = realtime_segment(call_id, f"{state.session}/{key}/{number}", is_final=kind == FINAL, start=start, end=end,
                             units=group_units(tokens), language=language, channel=channel)
    state.audio_seconds = max(state.audio_seconds, end)
    if kind == FINAL:
        state.finals[key] = number + 1
        state.showing[key] = False
        state.words += sum(1 for t in tokens if t.kind == "word")
        heard = {t.speaker for t in tokens if t.speaker is not None}
        if not heard <= set(state.speakers):
            state.speakers = tuple(sorted(heard | set(state.speakers)))
    else:
        state.showing[key] = bool(tokens)
    return [event]




class RealtimeLogic(StatefulLogic[tuple[str, bytes], "Produced | DeadLetter", RealtimeState]):
    """One call's RT messages -> events; a bad message becomes a dead letter and the call goes on."""

    def __init__(self, resume: RealtimeState | None, idle_seconds: float = DEFAULT_IDLE_SECONDS) -> None:
        self.state = resume if resume is not None else RealtimeState()
        self.idle_seconds = idle_seconds

    def notify_at(self) -> datetime | None:
        return datetime.fromtimestamp(self.state.last_seen + self.idle_seconds, tz=timezone.utc)

    def on_notify(self) -> tuple[list[Produced | DeadLetter], bool]:
        """A session that went quiet for BWSM_RT_IDLE_SECONDS without EndOfTranscript is forgotten."""
        return [], time.time() >= self.state.last_seen + self.idle_seconds

    def on_item(self, value: tuple[str, bytes] | tuple[str, bytes, float]) -> tuple[list[Produced | DeadLetter], bool]:
        call_id, raw = value[0], value[1]
        offset = value[2] if len(value) > 2 else 0.0
        first = self.state.last_seen == 0.0  # a refused first message must not leave state behind
        self.state.last_seen = time.time()
        try:
            message = load_json_object(raw, f"calls.rt message of call {call_id}")
            events = normalize(call_id, message, self.state, offset)
        except (ContractError, TypeError, ValueError, KeyError, AttributeError) as exc:  # never crash on input
            _RT_DEAD.inc()
            what = exc.what if isinstance(exc, ContractError) else f"unreadable message ({type(exc).__name__})"
            log.debug("bad RT message for call %s: %s", call_id, what)  # rate-limited as a dead letter
            letter = fit(DeadLetter(reason=f"calls.rt message of call {call_id}: {what}", stage=STAGE,
                                    key=call_id.encode(), value=raw))
            return [letter], first
        kind = message["message"]  # normalize accepted it: one of MAPPING's types
        REALTIME_MESSAGES.labels(type=kind, outcome=IGNORED if MAPPING[kind] == IGNORED else "event").inc()
        out: list[Produced | DeadLetter] = [Produced(event) for event in events]
        return out, self.state.ended

    def snapshot(self) -> RealtimeState:
        return copy.deepcopy(self.state)


@dataclass(frozen=True)
class RealtimeSettings:
    """The real-time branch of the flow."""

    enabled: bool = True  # build_flow also normalises the real-time topic (BWSM_REALTIME)
    idle_seconds: float = DEFAULT_IDLE_SECONDS  # a session silent this long without EndOfTranscript is forgotten

    def __post_init__(self) -> None:
        if self.idle_seconds <= 0:
            raise ValueError(f"realtime idle_seconds must be > 0, got {self.idle_seconds}")


def _keyed(msg: SourceMessage) -> tuple[str, tuple[str, bytes, float]] | DeadLetter:
    """(call_id, (call_id, raw RT message, session offset)), or a dead letter when the message has no usable call id,
    value or `rt_offset` header."""
    if msg.value is None:
        return _refused(msg, "null value (a tombstone is not a real-time message)")
    if not msg.key:
        return _refused(msg, "message has no key (the key must be the call id)")
    try:
        call_id = msg.key.decode("utf-8")
    except UnicodeDecodeError:
        return _refused(msg, "key is not UTF-8 (the key must be the call id)")
    offset = 0.0
    for name, value in msg.headers or ():
        if name == OFFSET_HEADER:
            try:
                offset = float(value or b"0")
            except ValueError:
                return _refused(msg, f"header {OFFSET_HEADER} is not a number of seconds")
            if not 0.0 <= offset < float("inf"):
                return _refused(msg, f"header {OFFSET_HEADER} must be >= 0 seconds")
    return call_id, (call_id, msg.value, offset)


def _refused(msg: SourceMessage, what: str) -> DeadLetter:
    _RT_DEAD.inc()
    reason = f"{msg.topic}[{msg.partition}]@{msg.offset}: {what}"
    return bad_message(reason, STAGE, msg.key, msg.value, list(msg.headers or ()), msg.topic or "",
                       -1 if msg.partition is None else msg.partition, -1 if msg.offset is None else msg.offset)


@operator
def normalize_realtime(step_id: str, up: Stream[SourceMessage], config: RealtimeSettings | None = None
                       ) -> StageOut[Produced]:
    """Turn raw Speechmatics real-time messages (`calls.rt`, key = call id) into transcript events in the same
    schema as the batch results (see the module docstring for the mapping).

    Args:
        step_id: Unique ID.
        up: Kafka messages of the real-time topic (`KafkaSourceMessage` or anything with `key`, `value`,
            `headers`, `topic`, `partition`, `offset`).
        config: Idle expiry of sessions; built-in defaults when omitted.

    Returns:
        `StageOut`: `oks` are `(call_id, Produced)` (real-time `call_started`, `segment`, `utterance_end` and
        `call_completed` events); `errs` are DeadLetters for messages without a call id or that are not real-time
        messages. Never raises on bad input.

    Example:
        >>> from bytewax.speechmatics.flows import normalize_realtime
        >>> rt = normalize_realtime("rt", kop.input("rt_in", flow, brokers=brokers, topics=["calls.rt"]).oks)
    """
    cfg = config or RealtimeSettings()
    keyed = split_letters("keyed", op.map("key", up, _keyed))
    out = op.stateful("normalize", keyed.oks, lambda resume: RealtimeLogic(resume, cfg.idle_seconds))
    normalized = split_letters("out", out)
    return StageOut(oks=normalized.oks, errs=op.merge("errs", keyed.errs, normalized.errs))
