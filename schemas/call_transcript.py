"""A call's transcript as a consumer needs it, built from the call's transcript events (pure: no I/O, no clock).

`CallTranscript.apply(event)` takes the events of one call as decoded from `calls.transcripts`, in any order, with
duplicates and replays; applying an event twice, or in another order, gives the same transcript. The semantics,
as the README states them in five lines:

1. One event per `event_id` counts: a final beats a partial, a later `end_time` beats an earlier one (a session's
   partials grow); repeats and replays change nothing.
2. A batch segment is authoritative for its `supersedes` span: a real-time word whose midpoint lies in [start, end)
   of such a span is replaced by the batch words.
3. Elsewhere (before the batch result lands, or where a chunk failed: `error` set, no span) real-time finals stand,
   and real-time partials count only past the `end_time` of their channel's latest final.
4. Each channel is its own timeline (`schemas/punctuation.py`): a punctuation mark belongs to a word of its own
   channel (with that word's speaker, at a time inside it). Words are ordered by time, channels interleaved; a
   turn is a run of one speaker's words on one channel; words without a speaker form paragraphs.
5. The call is complete when a batch `call_completed` is applied, every chunk it counts has its segment and every
   word it counts is present; `call_started`, `utterance_end` and unknown types add no words, and `metadata` is read
   from the events that carry it.

Exports: `to_txt()`, `to_srt()`, `to_vtt()` (caption cues per speaker turn) and `to_document()` / `to_json()` (the
document described by `call_transcript.schema.json`, the message of `calls.transcripts.final`).
"""

from __future__ import annotations

import bisect
import copy
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import orjson

from bytewax.speechmatics.schemas.errors import ContractError
from bytewax.speechmatics.schemas.punctuation import (
    display_text,
    host_of,
    label_of,
    placed,
    runs,
    turn_key,
    word_groups,
)

DOCUMENT_VERSION = "1.0"
DOCUMENT_SCHEMA_FILE = "call_transcript.schema.json"
#: The event schema major version this reader understands (minor versions only add fields and types).
EVENT_MAJOR = "1"
BATCH, REALTIME = "batch", "realtime"
SEGMENT, COMPLETED, STARTED = "segment", "call_completed", "call_started"
_EPS = 1e-3  # seconds: a stray mark this close to a word's edge belongs to it
UNDETERMINED_LANGUAGE = "und"
#: Caption cues: at most this many characters (two lines of 42) and seconds.
CUE_CHARS, CUE_SECONDS, LINE_CHARS = 84, 7.0, 42
#: Words without a speaker: a new paragraph after a sentence end and this long a pause (s), or at most this long.
PARAGRAPH_PAUSE, PARAGRAPH_SECONDS = 1.0, 30.0

Event = dict[str, Any]
Word = dict[str, Any]

_SOURCE_RANK = {BATCH: 0, REALTIME: 1}


@dataclass(frozen=True, slots=True)
class Turn:
    """Consecutive words of one speaker: its display text has punctuation attached."""

    speaker: str | None
    start_time: float
    end_time: float
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"speaker": self.speaker, "start_time": self.start_time, "end_time": self.end_time, "text": self.text}


@dataclass(frozen=True, slots=True)
class _Unit:
    """A word with the punctuation attached to it (or a punctuation mark with no word): kept or dropped whole."""

    words: tuple[Word, ...]
    host: Word
    order: tuple[Any, ...]  # sort key: host start, then where it came from (an event keeps its own order)
    channel: Any = None  # the word's channel, else its event's

    @property
    def mid(self) -> float:
        return (self.host["start_time"] + self.host["end_time"]) / 2


@dataclass(frozen=True, slots=True)
class _View:
    """Everything derived from the kept events; rebuilt when an event changes them."""

    units: tuple[_Unit, ...]
    batch_words: int
    realtime_words: int
    partial_words: int


class CallTranscript:
    """One call's current best transcript. See the module docstring for the semantics.

    Example:
        >>> transcript = CallTranscript()
        >>> for event in events_of_one_call:  # any order, duplicates included
        ...     transcript.apply(event)
        >>> transcript.completed, transcript.text
    """

    def __init__(self) -> None:
        self._events: dict[str, Event] = {}
        self._call_id: str | None = None
        self._view: _View | None = None
        self._completed: bool | None = None

    @classmethod
    def from_events(cls, events: Iterable[Mapping[str, Any]]) -> CallTranscript:
        transcript = cls()
        for event in events:
            transcript.apply(event)
        return transcript

    # ------------------------------------------------------------------------------------------------ input

    def apply(self, event: Mapping[str, Any]) -> bool:
        """Apply one transcript event of this call; return whether the transcript changed.

        Raises:
            ContractError: the event is not a transcript event this reader can use (the message names the field),
                or it belongs to another call. The transcript is unchanged then.
        """
        checked = _checked(event, self._call_id)
        key = checked["event_id"]
        kept = self._events.get(key)
        if kept is not None and (kept == checked or _rank(checked) <= _rank(kept)):
            return False
        self._events[key] = copy.deepcopy(checked)
        self._call_id = checked["call_id"]
        self._view = None
        self._completed = None
        return True

    @property
    def events(self) -> list[Event]:
        """The events that count (one per event_id), ordered by id: enough to rebuild this transcript."""
        return [self._events[k] for k in sorted(self._events)]

    def __len__(self) -> int:
        return len(self._events)

    # ------------------------------------------------------------------------------------------------ views

    @property
    def call_id(self) -> str | None:
        return self._call_id

    @property
    def words(self) -> list[Word]:
        """The call's current best timeline: word dicts as in the event schema, ordered by time."""
        return [dict(w) for unit in self._built().units for w in unit.words]

    @property
    def turns(self) -> list[Turn]:
        """Runs of one speaker on one channel (labelled by the speaker, else the channel); a call without speakers
        in paragraphs (see `_paragraphs`)."""
        return [Turn(speaker, units[0].host["start_time"], max(u.host["end_time"] for u in units),
                     display_text(w for u in units for w in u.words))
                for speaker, units in self._turn_units()]

    @property
    def text(self) -> str:
        """The whole call as display text, punctuation attached: without labels, or with channel diarization
        (words carry a `channel`) one line per turn, `agent: ...`, as a segment's `transcript`."""
        units = self._built().units
        if any(u.host.get("channel") is not None for u in units):
            return "\n".join(f"{t.speaker}: {t.text}" if t.speaker else t.text for t in self.turns)
        return display_text(w for unit in units for w in unit.words)

    @property
    def speakers(self) -> list[str]:
        return sorted({w["speaker"] for u in self._built().units for w in u.words if w.get("speaker") is not None})

    @property
    def completed(self) -> bool:
        """A batch call_completed was applied, every chunk it counts has its segment, and its words are present."""
        if self._completed is None:
            self._completed = self._check_completed()
        return self._completed

    @property
    def metadata(self) -> dict[str, Any] | None:
        """The call's `metadata` object (from its start message), when its events carry one."""
        carriers = [e for e in self._events.values() if isinstance(e.get("metadata"), Mapping)]
        if not carriers:
            return None
        best = min(carriers, key=lambda e: (e["type"] != STARTED, _SOURCE_RANK.get(e["source"], 9), e["event_id"]))
        return copy.deepcopy(dict(best["metadata"]))

    @property
    def language(self) -> str:
        """The batch call_completed's language, else the language most of the words were recognised in."""
        done = self._completion()
        language = done.get("language") if done is not None else None
        if isinstance(language, str) and language not in ("", UNDETERMINED_LANGUAGE):
            return language
        counts = Counter(w.get("language") for u in self._built().units for w in u.words if w["type"] == "word")
        counts.pop(None, None)
        if not counts:
            languages = Counter(e.get("language") for e in self._events.values() if e["type"] == SEGMENT)
            languages.pop(UNDETERMINED_LANGUAGE, None)
            counts = Counter({k: n for k, n in languages.items() if isinstance(k, str) and k})
        if not counts:
            return UNDETERMINED_LANGUAGE
        return min(counts, key=lambda lang: (-counts[lang], lang))

    @property
    def failed_spans(self) -> list[dict[str, Any]]:
        """Chunks the batch path could not transcribe (their real-time words, if any, stand there)."""
        spans = {}
        for event in self._batch_segments():
            if event.get("error"):
                job = event.get("job") or {}
                spans[job.get("chunk_index", -1)] = {
                    "start_time": job.get("chunk_start", event["start_time"]),
                    "end_time": job.get("chunk_end", event["end_time"]), "error": str(event["error"])}
        return [spans[k] for k in sorted(spans)]

    # ------------------------------------------------------------------------------------------------ exports

    def to_document(self) -> dict[str, Any]:
        """The call as one JSON-ready document (schemas/call_transcript.schema.json)."""
        if self._call_id is None:
            raise ContractError("no event has been applied: the transcript has no call yet", "CallTranscript")
        view = self._built()
        words = self.words
        done = self._completion()
        batch = self._batch_segments()
        return {
            "schema_version": DOCUMENT_VERSION,
            "call_id": self._call_id,
            "completed": self.completed,
            "start_time": min((w["start_time"] for w in words), default=0.0),
            "end_time": max((w["end_time"] for w in words), default=0.0),
            "language": self.language,
            "speakers": self.speakers,
            "metadata": self.metadata,
            "text": self.text,
            "turns": [t.to_dict() for t in self.turns],
            "words": words,
            "failed_spans": self.failed_spans,
            "counts": {
                "words": view.batch_words + view.realtime_words + view.partial_words,
                "batch_words": view.batch_words, "realtime_words": view.realtime_words,
                "partial_words": view.partial_words,
                "chunks": (done["counts"]["chunks"] if done is not None
                           else len({e["job"]["chunk_index"] for e in batch})),
                "failed_chunks": len({e["job"]["chunk_index"] for e in batch if e.get("error")}),
                "events": len(self._events),
            },
        }

    def to_json(self, indent: bool = False) -> str:
        return orjson.dumps(self.to_document(), option=orjson.OPT_INDENT_2 if indent else 0).decode()

    def to_txt(self) -> str:
        """One line per speaker turn: `[HH:MM:SS] speaker: text`."""
        lines = [f"[{_clock(t.start_time)}] {t.speaker + ': ' if t.speaker else ''}{t.text}" for t in self.turns]
        return "".join(line + "\n" for line in lines)

    def to_srt(self, max_chars: int = CUE_CHARS, max_seconds: float = CUE_SECONDS) -> str:
        """SubRip captions: cues per speaker turn, at most `max_chars` characters and `max_seconds` each."""
        blocks = []
        for n, (start, end, speaker, text) in enumerate(self._cues(max_chars, max_seconds), 1):
            label = f"{speaker}: " if speaker else ""
            lines = _wrap(label + text, max(LINE_CHARS, max_chars // 2))
            blocks.append(f"{n}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n" + "\n".join(lines) + "\n")
        return "\n".join(blocks)

    def to_vtt(self, max_chars: int = CUE_CHARS, max_seconds: float = CUE_SECONDS) -> str:
        """WebVTT captions: the same cues as `to_srt`, the speaker as a voice span (`<v speaker>`)."""
        blocks = ["WEBVTT\n"]
        for start, end, speaker, text in self._cues(max_chars, max_seconds):
            lines = [_vtt_escape(line) for line in _wrap(text, max(LINE_CHARS, max_chars // 2))]
            if speaker:
                lines[0] = f"<v {_vtt_escape(speaker)}>{lines[0]}"
            blocks.append(f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n" + "\n".join(lines) + "\n")
        return "\n".join(blocks)

    # ------------------------------------------------------------------------------------------------ inside

    def _batch_segments(self) -> list[Event]:
        return [e for e in self._events.values() if e["type"] == SEGMENT and e["source"] == BATCH]

    def _completion(self) -> Event | None:
        done = [e for e in self._events.values() if e["type"] == COMPLETED and e["source"] == BATCH]
        return max(done, key=lambda e: (e["counts"]["chunks"], e["event_id"])) if done else None

    def _check_completed(self) -> bool:
        done = self._completion()
        if done is None:
            return False
        chunks, expected = done["counts"]["chunks"], done["counts"]["words"]
        batch = self._batch_segments()
        indexes = {e["job"]["chunk_index"] for e in batch}
        if indexes != set(range(chunks)):  # a segment missing, or the call went on after this completion
            return False
        return sum(1 for e in batch for w in e["words"] if w["type"] == "word") == expected

    def _built(self) -> _View:
        if self._view is None:
            self._view = _build(self._events.values())
        return self._view

    def _turn_units(self) -> list[tuple[str | None, list[_Unit]]]:
        turns: list[tuple[str | None, list[_Unit]]] = []
        for run in runs(self._built().units, lambda u: turn_key(u.host)):
            label = label_of(run[0].host)
            turns.extend((label, part) for part in ([run] if label is not None else _paragraphs(run)))
        return turns

    def _cues(self, max_chars: int, max_seconds: float) -> list[tuple[float, float, str | None, str]]:
        """(start, end, speaker, text) per cue: a turn cut where the next word would make the cue too long, or
        after a sentence's end once the cue is half full."""
        if max_chars < 1 or max_seconds <= 0:
            raise ValueError("captions need max_chars >= 1 and max_seconds > 0")
        cues = []
        for speaker, units in self._turn_units():
            label = len(speaker) + 2 if speaker else 0
            current: list[_Unit] = []
            for unit in units:
                if current:
                    longer = display_text(w for u in (*current, unit) for w in u.words)
                    too_long = len(longer) + label > max_chars
                    too_slow = unit.host["end_time"] - current[0].host["start_time"] > max_seconds
                    sentence = _ends_sentence(current[-1]) and \
                        len(display_text(w for u in current for w in u.words)) + label >= max_chars // 2
                    if too_long or too_slow or sentence:
                        cues.append(_cue(speaker, current))
                        current = []
                current.append(unit)
            if current:
                cues.append(_cue(speaker, current))
        return _one_at_a_time(cues)


# ---------------------------------------------------------------------------------------------------- building


def _build(events: Iterable[Event]) -> _View:
    segments = [e for e in events if e["type"] == SEGMENT]
    batch = [e for e in segments if e["source"] == BATCH and not e.get("error")]
    finals = [e for e in segments if e["source"] == REALTIME and e["is_final"]]
    partials = [e for e in segments if e["source"] == REALTIME and not e["is_final"]]
    covered = _Spans((e["supersedes"]["start_time"], e["supersedes"]["end_time"])
                     for e in batch if e.get("supersedes"))
    last_final: dict[Any, float] = {}
    for event in finals:
        channel = event.get("channel")
        last_final[channel] = max(last_final.get(channel, 0.0), event["end_time"])
    kept_batch = [u for e in batch for u in _units_of(e)]
    heard = _Heard(kept_batch)
    kept_finals = [u for e in finals for u in _units_of(e) if not covered.covers(u.mid) and not heard.again(u)]
    kept_partials = [u for e in partials for u in _units_of(e)
                     if not covered.covers(u.mid) and u.mid >= last_final.get(e.get("channel"), float("-inf"))
                     and not heard.again(u)]

    def count(units: list[_Unit]) -> int:
        return sum(1 for u in units for w in u.words if w["type"] == "word")

    units = sorted([*kept_batch, *kept_finals, *kept_partials], key=lambda u: u.order)
    return _View(tuple(_regrouped(units)), count(kept_batch), count(kept_finals), count(kept_partials))


def _regrouped(units: list[_Unit]) -> list[_Unit]:
    """The kept units with their marks placed inside their words, and every stray mark (one its event carried
    without its word: a real-time message can end before the mark of its last word) joined to the word of its
    channel it belongs to: the neighbour on its side whose time holds it. A stray mark whose word is not kept (a
    batch segment replaced it, with its own marks) is dropped, never shown alone or on another word."""
    words: list[list[Word]] = [list(u.words) for u in units]
    last_word: dict[Any, int] = {}
    waiting: dict[Any, list[int]] = {}  # channel -> stray `next` marks (unit indexes) before its next word
    keep = [True] * len(units)
    for n, unit in enumerate(units):
        ch = unit.channel
        if unit.host["type"] == "word":
            for k in waiting.pop(ch, []):
                _join(words, k, n, front=True)
                keep[k] = False
            last_word[ch] = n
        elif unit.host.get("attaches_to") == "next":
            waiting.setdefault(ch, []).append(n)
        else:
            if ch in last_word:
                _join(words, n, last_word[ch], front=False)
            keep[n] = False
    out = []
    for n, unit in enumerate(units):
        if keep[n] and unit.host["type"] == "word":
            out.append(_Unit(tuple(placed(words[n])), unit.host, unit.order, unit.channel))
    return out


def _join(words: list[list[Word]], stray: int, word: int, front: bool) -> None:
    """Join the stray marks of unit `stray` to unit `word` when the word's time holds them and it has no such mark
    yet (a mark both carry counts once)."""
    host = host_of(words[word])
    for mark in words[stray]:
        inside = host["start_time"] - _EPS <= mark["start_time"] <= host["end_time"] + _EPS
        if inside and all(w["text"] != mark["text"] or w is host for w in words[word]):
            words[word] = [mark, *words[word]] if front else [*words[word], mark]


def _units_of(event: Event) -> list[_Unit]:
    """The event's words grouped the way the flow groups them (`schemas/punctuation.py`: per channel, a mark
    with a word of its own channel)."""
    where = (_SOURCE_RANK.get(event["source"], 9), event["start_time"], event["event_id"])
    out = []
    for n, words in enumerate(word_groups(event["words"])):
        host = host_of(words)
        channel = host.get("channel", event.get("channel"))
        out.append(_Unit(tuple(words), host, (host["start_time"], *where, n), channel))
    return out


class _Heard:
    """The batch words per channel and text, so that a real-time copy of one (at the edge of a failed chunk, where
    the batch words of the chunk before end and real-time words stand) is not shown twice."""

    def __init__(self, units: Iterable[_Unit]) -> None:
        self.times: dict[tuple[Any, str], list[tuple[float, float]]] = {}
        for unit in units:
            if unit.host["type"] == "word":
                key = (unit.channel, unit.host["text"].casefold())
                self.times.setdefault(key, []).append((unit.host["start_time"], unit.host["end_time"]))

    def again(self, unit: _Unit) -> bool:
        """A real-time word that a batch word of its channel, with its text, overlaps in time."""
        host = unit.host
        times = self.times.get((unit.channel, host["text"].casefold()), ())
        return host["type"] == "word" and any(min(e, host["end_time"]) > max(s, host["start_time"]) for s, e in times)


class _Spans:
    """A union of half-open time spans [start, end), for `covers(t)` in O(log n)."""

    def __init__(self, spans: Iterable[tuple[float, float]]) -> None:
        merged: list[list[float]] = []
        for start, end in sorted((s, e) for s, e in spans if e > s):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self.starts = [s for s, _ in merged]
        self.ends = [e for _, e in merged]

    def covers(self, t: float) -> bool:
        i = bisect.bisect_right(self.starts, t) - 1
        return i >= 0 and t < self.ends[i]


def _rank(event: Event) -> tuple[bool, float, int, bytes]:
    """Which of two versions of one event_id counts: a final, else the later end_time, else the longer, else
    (different bytes for one id should not happen) the greater serialization, so the choice never depends on order."""
    return (bool(event.get("is_final")), float(event.get("end_time", 0.0)), len(event.get("words") or ()),
            orjson.dumps(event, option=orjson.OPT_SORT_KEYS))


# ---------------------------------------------------------------------------------------------------- checking


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _require(ok: bool, what: str, where: str) -> None:
    if not ok:
        raise ContractError(what, where)


def _checked(event: Any, call_id: str | None) -> Event:
    """The fields this reader uses, checked (messages name fields and types, never their text)."""
    _require(isinstance(event, Mapping), "a transcript event must be a JSON object", "transcript event")
    event_id = event.get("event_id")
    where = f"transcript event {event_id!s:.64}"
    _require(isinstance(event_id, str) and bool(event_id), "event_id must be a non-empty string", where)
    version = event.get("schema_version")
    _require(isinstance(version, str) and version.split(".")[0] == EVENT_MAJOR,
             f"schema_version must be {EVENT_MAJOR}.x", where)
    own = event.get("call_id")
    _require(isinstance(own, str) and bool(own), "call_id must be a non-empty string", where)
    where = f"{where} of call {own:.200}"
    if call_id is not None and own != call_id:
        raise ContractError(f"belongs to another call than {call_id:.200}", where)
    for name in ("type", "source"):
        _require(isinstance(event.get(name), str), f"{name} must be a string", where)
    _require(isinstance(event.get("is_final", False), bool), "is_final must be a boolean", where)
    for name in ("start_time", "end_time"):
        _require(_is_number(event.get(name, 0.0)), f"{name} must be a number", where)
    _require(event.get("metadata") is None or isinstance(event["metadata"], Mapping),
             "metadata must be an object or null", where)
    out = dict(event)
    out.setdefault("is_final", False)
    out.setdefault("start_time", 0.0)
    out.setdefault("end_time", out["start_time"])
    if out["type"] == SEGMENT:
        _check_segment(out, where)
    elif out["type"] == COMPLETED and out["source"] == BATCH:
        counts = out.get("counts")
        _require(isinstance(counts, Mapping) and all(isinstance(counts.get(k), int) and counts[k] >= 0
                                                     for k in ("chunks", "words")),
                 "counts.chunks and counts.words must be non-negative integers", where)
    return out


def _check_segment(event: Event, where: str) -> None:
    words = event.get("words")
    _require(isinstance(words, list), "words must be a list", where)
    for n, word in enumerate(words):
        at = f"{where}, words[{n}]"
        _require(isinstance(word, Mapping), "a word must be an object", at)
        _require(isinstance(word.get("text"), str), "text must be a string", at)
        _require(_is_number(word.get("start_time")) and _is_number(word.get("end_time")),
                 "start_time and end_time must be numbers", at)
        _require(word.get("type") in ("word", "punctuation"), "type must be word or punctuation", at)
    span = event.get("supersedes")
    _require(span is None or (isinstance(span, Mapping) and _is_number(span.get("start_time"))
                              and _is_number(span.get("end_time"))),
             "supersedes must be null or an object with numbers start_time and end_time", where)
    _require(event.get("error") is None or isinstance(event["error"], str), "error must be a string or null", where)
    if event["source"] == BATCH:
        job = event.get("job")
        _require(isinstance(job, Mapping) and isinstance(job.get("chunk_index"), int),
                 "a batch segment needs job.chunk_index (an integer)", where)


# ---------------------------------------------------------------------------------------------------- text


def _paragraphs(units: list[_Unit]) -> list[list[_Unit]]:
    """Words without a speaker as paragraphs: a new one after a sentence's end followed by a pause of
    PARAGRAPH_PAUSE seconds or more, and before a paragraph would last over PARAGRAPH_SECONDS (at its latest
    sentence end, else before the word that would make it too long)."""
    out: list[list[_Unit]] = []
    current: list[_Unit] = []
    for unit in units:
        if current:
            last = current[-1]
            if _ends_sentence(last) and unit.host["start_time"] - last.host["end_time"] >= PARAGRAPH_PAUSE:
                out.append(current)
                current = []
            elif unit.host["end_time"] - current[0].host["start_time"] > PARAGRAPH_SECONDS:
                cut = max((n + 1 for n, u in enumerate(current[:-1]) if _ends_sentence(u)), default=len(current))
                out.append(current[:cut])
                current = current[cut:]
        current.append(unit)
    if current:
        out.append(current)
    return out


def _ends_sentence(unit: _Unit) -> bool:
    last = unit.words[-1]
    return last["type"] == "punctuation" and (bool(last.get("is_eos")) or last["text"] in (".", "?", "!"))


def _one_at_a_time(cues: list[tuple[float, float, str | None, str]]) -> list[tuple[float, float, str | None, str]]:
    """Each speaker's cue ends where that speaker's next cue starts (a recogniser may time a word to end after the
    next one starts): one party's captions never overlap each other; two parties' overlap where they both talk."""
    out = list(cues)
    following: dict[str | None, int] = {}
    for n in range(len(out) - 1, -1, -1):
        start, end, speaker, text = out[n]
        later = following.get(speaker)
        if later is not None and start < out[later][0] < end:
            out[n] = (start, out[later][0], speaker, text)
        following[speaker] = n
    return out


def _cue(speaker: str | None, units: list[_Unit]) -> tuple[float, float, str | None, str]:
    start = units[0].host["start_time"]
    end = max(u.host["end_time"] for u in units)
    return start, max(end, start + 0.001), speaker, display_text(w for u in units for w in u.words)


def _wrap(text: str, width: int) -> list[str]:
    """Two lines at most: cut at the space nearest the middle when the text is longer than `width`."""
    if len(text) <= width or " " not in text:
        return [text]
    middle = len(text) // 2
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    cut = min(spaces, key=lambda i: (abs(i - middle), i))
    return [text[:cut], text[cut + 1:]]


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _clock(seconds: float) -> str:
    whole = max(0, int(seconds))
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


# ---------------------------------------------------------------------------------------------------- the document


@lru_cache(maxsize=1)
def document_schema() -> dict[str, Any]:
    """The call transcript document's JSON Schema, read from the installed package."""
    return json.loads(resources.files(__package__).joinpath(DOCUMENT_SCHEMA_FILE).read_text())


@lru_cache(maxsize=1)
def _document_validator() -> Callable[[Any], Any]:
    import fastjsonschema

    def sibling(uri: str) -> dict[str, Any]:  # `$ref`s to the other schema files resolve to the installed ones
        name = uri.rsplit("/", 1)[-1].split("#", 1)[0]
        return json.loads(resources.files(__package__).joinpath(name).read_text())

    return fastjsonschema.compile(document_schema(), handlers={"https": sibling, "http": sibling})


def validate_document(document: Mapping[str, Any]) -> Mapping[str, Any]:
    """Raise ContractError naming the first field that breaks call_transcript.schema.json; return the document."""
    import fastjsonschema

    try:
        _document_validator()(document)
    except fastjsonschema.JsonSchemaValueException as exc:
        path = "/".join(str(p) for p in exc.path[1:]) or "(top level)"
        what = exc.message.removeprefix(exc.name).strip() or exc.message
        raise ContractError(f"field {path}: {what}", "call transcript document") from None
    return document
