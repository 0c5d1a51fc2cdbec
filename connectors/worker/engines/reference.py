"""The reference engine: deterministic transcripts from registered ground truth, with chunking artefacts.

A test registers a call (its audio in a contract encoding and its word timeline). A submitted chunk is
located inside a registered call by exact sample comparison, and the truth's words inside it come back
json-v2 shaped, times relative to the chunk start. Chunk edges behave like a real recogniser's:
`midpoint` (default) keeps a cut word iff its midpoint lies in the chunk, `drop` keeps only words wholly
inside, `keep` keeps every overlapping word; kept words are clipped to the chunk. Punctuation follows the
word it attaches to. Speakers are S1, S2, ... per job in order of appearance; `get_speakers` returns
opaque per-job identifiers that this engine resolves back to the voice when a later job enrols them.
Audio it does not know yields an empty transcript.

It stands in for the real API in tests, so it declares every option (CAPABILITIES): its transcript is the truth
whatever the language, vocabulary or locale asked for, and it labels speakers and channels as the truth says.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from bytewax.speechmatics.connectors.speechmatics.capabilities import EngineCapabilities
from bytewax.speechmatics.connectors.worker.audio import RawAudio, canonical_samples
from bytewax.speechmatics.schemas.punctuation import group

EDGE_RULES = ("midpoint", "drop", "keep")
WORD, PUNCTUATION = "word", "punctuation"
#: Frames in the anchor searched for first; long enough to be unique, short enough to find fast.
ANCHOR_FRAMES = 4096
_SENTENCE_END = frozenset(".?!")
CAPABILITIES = EngineCapabilities("reference", version="reference")


class TruthError(ValueError):
    """A registered word timeline that cannot be used; the message says which word and why."""


@dataclass(frozen=True, slots=True)
class TruthWord:
    text: str
    start_time: float
    end_time: float
    type: str = WORD
    speaker: str = "UU"
    channel: int = 1
    confidence: float = 1.0
    attaches_to: str | None = None
    is_eos: bool | None = None

    @property
    def midpoint(self) -> float:
        return (self.start_time + self.end_time) / 2


def parse_truth(words: list[dict[str, Any]]) -> list[TruthWord]:
    """Validate a word timeline ({text, start_time, end_time, speaker, type, channel, ...}), sorted by time."""
    out = []
    for n, w in enumerate(words):
        where = f"words[{n}]"
        if not isinstance(w, dict):
            raise TruthError(f"{where}: expected an object, got {type(w).__name__}")
        text = w.get("text", w.get("content"))
        if not isinstance(text, str) or not text:
            raise TruthError(f"{where}: 'text' must be a non-empty string")
        try:
            start, end = float(w["start_time"]), float(w["end_time"])
        except (KeyError, TypeError, ValueError) as exc:
            raise TruthError(f"{where}: 'start_time' and 'end_time' must be numbers") from exc
        if start < 0 or end < start:
            raise TruthError(f"{where}: times must satisfy 0 <= start_time <= end_time, got {start}, {end}")
        kind = w.get("type", WORD)
        if kind not in (WORD, PUNCTUATION):
            raise TruthError(f"{where}: 'type' must be 'word' or 'punctuation', got {kind!r}")
        channel = w.get("channel", 1)
        if isinstance(channel, str) and channel.startswith("channel_"):
            channel = channel.removeprefix("channel_")
        try:
            channel = int(channel)
        except (TypeError, ValueError) as exc:
            raise TruthError(f"{where}: 'channel' must be 1, 2 or 'channel_N', got {w.get('channel')!r}") from exc
        out.append(
            TruthWord(
                text=text, start_time=start, end_time=end, type=kind, speaker=str(w.get("speaker", "UU")),
                channel=channel, confidence=float(w.get("confidence", 1.0)),
                attaches_to=w.get("attaches_to"), is_eos=w.get("is_eos"),
            )
        )
    return sorted(out, key=lambda t: (t.start_time, t.end_time))


_FRAME_DTYPES = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _first_change(needle: bytes, frame_bytes: int) -> int | None:
    """Index of the first frame that differs from frame 0, or None when every frame is the same."""
    dtype = _FRAME_DTYPES.get(frame_bytes)
    if dtype is None:  # unusual widths: compare whole frames
        first = needle[:frame_bytes]
        for i in range(1, len(needle) // frame_bytes):
            if needle[i * frame_bytes : (i + 1) * frame_bytes] != first:
                return i
        return None
    frames = np.frombuffer(needle, dtype=dtype)
    changed = np.flatnonzero(frames != frames[0])
    return int(changed[0]) if changed.size else None


def find_offset(haystack: bytes, needle: bytes, frame_bytes: int, max_candidates: int = 1000) -> int | None:
    """Frame index where `needle` lies inside `haystack`, or None.

    Digital silence can open a chunk and repeats all over a call, so the search anchors on the first
    non-constant stretch of the needle (one frame of the constant run before it included), then verifies
    the whole needle at each aligned hit. When no hit verifies (a chunk whose gaps were filled with
    silence, or padded past the call's end), the first anchored hit wins. A needle of one repeated frame
    is unknown audio.
    """
    n = len(needle) // frame_bytes
    if n == 0 or len(needle) > len(haystack):
        return None
    change = _first_change(needle, frame_bytes)
    if change is None:
        return None
    a = change - 1
    anchor = needle[a * frame_bytes : min(n, a + ANCHOR_FRAMES) * frame_bytes]
    total = len(haystack) // frame_bytes
    fallback = None
    pos = haystack.find(anchor)
    seen = 0
    while pos != -1 and seen < max_candidates:
        if pos % frame_bytes == 0:
            seen += 1
            start = pos // frame_bytes - a
            if start >= 0:
                if start + n <= total and haystack[start * frame_bytes : (start + n) * frame_bytes] == needle:
                    return start
                if fallback is None:
                    fallback = start
        pos = haystack.find(anchor, pos + 1)
    return fallback


#: Anchor lengths (frames after the first change) tried when locating the next piece of a chunk sent compacted.
PIECE_ANCHORS = (256, 64, 16)


def _matched(haystack: bytes, needle: bytes, start: int, frame_bytes: int) -> int:
    """How many frames of `needle` equal the haystack's from frame `start` on."""
    hay = haystack[start * frame_bytes : start * frame_bytes + len(needle)]
    n = len(hay) // frame_bytes
    a = np.frombuffer(hay, dtype=np.uint8, count=n * frame_bytes).reshape(n, frame_bytes)
    b = np.frombuffer(needle, dtype=np.uint8, count=n * frame_bytes).reshape(n, frame_bytes)
    differ = np.flatnonzero((a != b).any(axis=1))
    return int(differ[0]) if differ.size else n


def find_start(haystack: bytes, needle: bytes, frame_bytes: int) -> int | None:
    """find_offset, and when the needle is not one stretch of the haystack (a chunk sent in pieces), the place of
    its first piece by ever shorter anchors."""
    found = find_offset(haystack, needle, frame_bytes)
    change = _first_change(needle, frame_bytes) if found is None and len(needle) >= frame_bytes else None
    for size in PIECE_ANCHORS if change is not None else ():
        found = find_offset(haystack, needle[: (change + size) * frame_bytes], frame_bytes)
        if found is not None:
            break
    return found


def locate_pieces(haystack: bytes, needle: bytes, first: int, frame_bytes: int) -> list[tuple[int, int, int]]:
    """Where each stretch of `needle` lies in `haystack`, from frame `first` (find_offset's answer) on:
    (needle frame, haystack frame, frames), contiguous stretches merged.

    A chunk sent with its silences shortened is pieces of the call back to back: where the needle stops matching,
    the rest is located again by a short anchor after its leading constant run. Frames the call does not have at
    that place (silence filling a lost frame, padding past the call's end) stay in line with the call.
    """
    n = len(needle) // frame_bytes
    pieces: list[tuple[int, int, int]] = []
    pos, at = 0, first
    while pos < n:
        rest = needle[pos * frame_bytes :]
        m = _matched(haystack, rest, at, frame_bytes)
        if m == 0:
            change = _first_change(rest, frame_bytes)
            m = n - pos if change is None else change
        if pieces and pieces[-1][0] + pieces[-1][2] == pos and pieces[-1][1] + pieces[-1][2] == at:
            q, s, k = pieces.pop()
            pieces.append((q, s, k + m))
        else:
            pieces.append((pos, at, m))
        pos, at = pos + m, at + m
        found = find_start(haystack, needle[pos * frame_bytes :], frame_bytes) if pos < n else None
        if found is not None:
            at = found
    return pieces


def select_words(truth: list[TruthWord], start: float, end: float, rule: str) -> list[tuple[TruthWord, float, float]]:
    """The truth inside [start, end) by an edge rule, with times clipped to it (absolute seconds).

    Punctuation is kept iff the word it belongs to is kept (the channel rule of schemas/punctuation.py: a word of
    its own channel, `next` -> the following one, else the preceding one), so a sentence end never floats free of
    its word, nor goes with the other party's.
    """
    if rule not in EDGE_RULES:
        raise ValueError(f"edge rule must be one of {EDGE_RULES}, got {rule!r}")

    def word_kept(w: TruthWord) -> bool:
        if rule == "drop":
            return start <= w.start_time and w.end_time <= end
        if rule == "keep":
            return w.start_time < end and (w.end_time > start or w.start_time >= start)
        return start <= w.midpoint < end

    kept: set[int] = set()
    for members in group(range(len(truth)), is_word=lambda i: truth[i].type == WORD,
                         attaches_to=lambda i: truth[i].attaches_to, channel=lambda i: truth[i].channel):
        host = next((i for i in members if truth[i].type == WORD), members[0])
        if word_kept(truth[host]):
            kept.update(members)
    return [(w, min(max(w.start_time, start), end), min(max(w.end_time, start), end))
            for i, w in enumerate(truth) if i in kept]


@dataclass(frozen=True, slots=True)
class RegisteredCall:
    call_id: str
    audio: RawAudio
    truth: list[TruthWord]
    edge_rule: str = "midpoint"


class ReferenceEngine:
    """Registered calls plus the speaker identifiers handed out so far (thread-safe: jobs run in threads)."""

    def __init__(self) -> None:
        self._calls: dict[str, RegisteredCall] = {}
        self._voices: dict[str, str] = {}  # opaque identifier -> voice of the truth
        self._secret = secrets.token_bytes(16)
        self._lock = threading.Lock()

    def register(self, call_id: str, audio: RawAudio, words: list[dict[str, Any]], edge_rule: str = "midpoint") -> None:
        if edge_rule not in EDGE_RULES:
            raise TruthError(f"edge_rule must be one of {EDGE_RULES}, got {edge_rule!r}")
        audio = RawAudio(canonical_samples(audio), audio.sample_rate, audio.channels, audio.encoding)
        call = RegisteredCall(call_id, audio, parse_truth(words), edge_rule)
        with self._lock:
            self._calls[call_id] = call

    def remove(self, call_id: str) -> bool:
        with self._lock:
            return self._calls.pop(call_id, None) is not None

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()
            self._voices.clear()

    def calls(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"call_id": c.call_id, "duration": c.audio.duration, "words": len(c.truth), "edge_rule": c.edge_rule}
                for c in self._calls.values()
            ]

    def registered(self) -> list[RegisteredCall]:
        """The registered calls (the real-time endpoint locates one channel of a call itself)."""
        with self._lock:
            return list(self._calls.values())

    def locate(self, chunk: RawAudio) -> tuple[RegisteredCall, int] | None:
        """The registered call holding this chunk and the chunk's first frame in it."""
        with self._lock:
            calls = list(self._calls.values())
        needle = canonical_samples(chunk)
        for call in calls:
            a = call.audio
            if (a.encoding, a.sample_rate, a.channels) != (chunk.encoding, chunk.sample_rate, chunk.channels):
                continue
            offset = find_start(a.data, needle, chunk.frame_bytes)
            if offset is not None:
                return call, offset
        return None

    def _identifier(self, job_id: str, voice: str) -> str:
        token = hashlib.sha256(self._secret + job_id.encode() + b"\0" + voice.encode()).hexdigest()[:40]
        with self._lock:
            self._voices[token] = voice
        return token

    def transcribe(self, job_id: str, chunk: RawAudio, transcription_config: dict[str, Any]) -> dict[str, Any]:
        """{"results": [...], "speakers": [...] (only with get_speakers), "located": {...} | None}."""
        tc = transcription_config or {}
        sdc = tc.get("speaker_diarization_config") or {}
        get_speakers = bool(sdc.get("get_speakers"))
        found = self.locate(chunk)
        if found is None:
            return {"results": [], "speakers": [] if get_speakers else None, "located": None}
        call, offset = found
        rate = chunk.sample_rate
        selected = []
        for first, at, frames in locate_pieces(call.audio.data, canonical_samples(chunk), offset, chunk.frame_bytes):
            shift = (at - first) / rate  # call time - chunk time, in this piece
            piece = select_words(call.truth, at / rate, (at + frames) / rate, call.edge_rule)
            selected.extend((w, s - shift, e - shift) for w, s, e in piece)
        labeller = _SpeakerLabels(self._enrolled(sdc))
        diarization = str(tc.get("diarization") or "none")
        by_speaker = diarization in ("speaker", "channel_and_speaker")
        by_channel = diarization in ("channel", "channel_and_speaker") and chunk.channels > 1
        channel_labels = tc.get("channel_diarization_labels") or []
        language = str(tc.get("language") or "en")
        results: list[dict[str, Any]] = []
        last_speaker: dict[int, str] = {}  # channel -> speaker of its latest word
        for w, s, e in selected:
            speaker = "UU"
            if by_speaker and w.type == PUNCTUATION and w.speaker == "UU" and w.channel in last_speaker:
                speaker = last_speaker[w.channel]  # unvoiced punctuation: its word's speaker
            elif by_speaker:
                speaker = labeller.label(w.speaker)
                if w.type == WORD:
                    last_speaker[w.channel] = speaker
            alt = {"content": w.text, "confidence": w.confidence, "language": language, "speaker": speaker}
            result: dict[str, Any] = {
                "type": w.type,
                "start_time": round(s, 6),
                "end_time": round(e, 6),
                "alternatives": [alt],
            }
            if by_channel:
                n = w.channel
                result["channel"] = channel_labels[n - 1] if 0 < n <= len(channel_labels) else f"channel_{n}"
            if w.type == PUNCTUATION:
                result["attaches_to"] = w.attaches_to or "previous"
                result["is_eos"] = w.text in _SENTENCE_END if w.is_eos is None else bool(w.is_eos)
            results.append(result)
        speakers = None
        if get_speakers:
            speakers = [
                {"label": label, "speaker_identifiers": [self._identifier(job_id, voice)]}
                for voice, label in labeller.assigned.items()
            ]
        located = {"call_id": call.call_id, "start_frame": offset, "words": len(results)}
        return {"results": results, "speakers": speakers, "located": located}

    def _enrolled(self, sdc: dict[str, Any]) -> dict[str, str]:
        """voice -> label for the speakers a job enrols whose identifiers this engine issued."""
        out: dict[str, str] = {}
        with self._lock:
            for entry in sdc.get("speakers") or []:
                for ident in entry.get("speaker_identifiers") or []:
                    voice = self._voices.get(ident)
                    if voice is not None:
                        out.setdefault(voice, str(entry.get("label")))
        return out


class _SpeakerLabels:
    """Enrolled voices keep their given labels; other voices get S1, S2, ... in order of appearance."""

    def __init__(self, enrolled: dict[str, str]) -> None:
        self._enrolled = enrolled
        self.assigned: dict[str, str] = {}
        self._next = 1

    def label(self, voice: str) -> str:
        if voice not in self.assigned:
            if voice in self._enrolled:
                self.assigned[voice] = self._enrolled[voice]
            else:
                self.assigned[voice] = f"S{self._next}"
                self._next += 1
        return self.assigned[voice]
