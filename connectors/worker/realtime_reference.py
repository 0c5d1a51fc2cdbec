"""The reference engine, streaming: a real-time session's words from a registered call's ground truth.

The session's audio is located inside a registered call (exact samples, as for batch chunks), so a session that
starts mid-call (a bridge resuming after a crash) gets the truth from that point on, with times relative to the
session's own start, as a real-time server reports them. Then, as audio arrives, the policy is deterministic:
- every token not yet final whose start has been heard is shown in an `AddPartialTranscript` (when partials are
  enabled, each time a word begins), end times cut at the audio heard so far;
- the longest run of tokens, in truth order, that have been heard to their end is final (`AddTranscript`), right
  after the partial that showed them: so a word is always shown as a partial before its final;
- with `conversation_config.end_of_utterance_silence_trigger`, an `EndOfUtterance` once that much silence has
  been heard after the last final word;
- at the end of the stream, whatever was heard of the remaining words is final.
Words whose midpoint lies before the session's start belong to an earlier session and are not repeated.
A multichannel session (channel diarization, `AddChannelAudio`) runs one stream per channel: its audio is located in
that channel of a registered 2-channel call, it transcribes that channel's words, and its messages and results
carry the channel's label.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from bytewax.speechmatics.connectors.worker.audio import RawAudio, canonical_samples
from bytewax.speechmatics.connectors.worker.engines.reference import (
    PUNCTUATION,
    ReferenceEngine,
    RegisteredCall,
    TruthWord,
    find_offset,
)

_SENTENCE_END = frozenset(".?!")
FORMAT = "2.1"


class ReferenceStream:
    """One session's transcript from the reference engine; `feed` and `finish` return the messages to send."""

    def __init__(self, engine: ReferenceEngine, sample_rate: int, encoding: str, *, language: str = "en",
                 enable_partials: bool = False, diarization: str = "none", eou_trigger: float = 0.0,
                 channel: int | None = None, label: str | None = None) -> None:
        self.engine = engine
        self.sample_rate = sample_rate
        self.encoding = encoding
        self.language = language
        self.enable_partials = enable_partials
        self.by_speaker = diarization in ("speaker", "channel_and_speaker")
        self.eou_trigger = eou_trigger
        self.audio = bytearray()
        self.call: RegisteredCall | None = None
        self.origin = 0.0  # call time (s) of the session's first sample
        self.tokens: list[TruthWord] = []
        self.final = 0  # tokens[:final] have been sent as finals
        self.shown: tuple[int, int] | None = None  # what the last partial showed
        self.eou_sent_for = -1  # index of the last final word an EndOfUtterance followed
        self.labels: dict[str, str] = {}
        self.channel, self.label = channel, label  # 1-based channel of a multichannel session, and its label

    @property
    def heard(self) -> float:
        """Seconds of audio received so far (session time)."""
        frame = 2 if self.encoding == "pcm_s16le" else 1
        return len(self.audio) / frame / self.sample_rate

    def feed(self, samples: bytes) -> list[dict[str, Any]]:
        """Messages after this audio (pcm_s16le or mulaw samples, mono, the session's rate)."""
        self.audio += samples
        if self.call is None and not self._locate():
            return []
        return self._advance(self.heard, end=False)

    def finish(self) -> list[dict[str, Any]]:
        """Messages at the end of the stream: every word heard is final."""
        if self.call is None:
            return []
        return self._advance(self.heard, end=True)

    def _locate(self) -> bool:
        audio = RawAudio(bytes(self.audio), self.sample_rate, 1, self.encoding)
        found = self.engine.locate(audio) if self.channel is None else self._locate_channel(audio)
        if found is None:
            return False
        self.call, frame = found
        self.origin = frame / self.sample_rate
        self.tokens = [w for w in self.call.truth if _midpoint_of(w, self.call.truth) >= self.origin
                       and (self.channel is None or w.channel == self.channel)]
        return True

    def _locate_channel(self, audio: RawAudio) -> tuple[RegisteredCall, int] | None:
        """This stream's channel found in one channel of a registered multi-channel call."""
        needle = canonical_samples(audio)
        for call in self.engine.registered():
            a = call.audio
            if (a.encoding, a.sample_rate) != (audio.encoding, audio.sample_rate) or a.channels < (self.channel or 1):
                continue
            width = audio.frame_bytes
            frames = np.frombuffer(a.data, dtype=np.uint8).reshape(-1, a.channels, width)
            haystack = frames[:, (self.channel or 1) - 1, :].tobytes()
            offset = find_offset(haystack, needle, width)
            if offset is not None:
                return call, offset
        return None

    def _advance(self, heard: float, end: bool) -> list[dict[str, Any]]:
        now = self.origin + heard  # call time
        started = self.final
        while started < len(self.tokens) and self.tokens[started].start_time < now:
            started += 1
        out: list[dict[str, Any]] = []
        if self.enable_partials and started > self.final:
            showing = (self.final, started)  # a new partial when a word begins (not per frame)
            if showing != self.shown:
                self.shown = showing
                out.append(self._transcript("AddPartialTranscript", self.tokens[self.final:started], now))
        done = self.final
        while done < started and (end or self.tokens[done].end_time <= now):
            done += 1
        if done > self.final:
            out.append(self._transcript("AddTranscript", self.tokens[self.final:done], now))
            self.final = done
        out.extend(self._end_of_utterance(now, end))
        return out

    def _end_of_utterance(self, now: float, end: bool) -> Iterable[dict[str, Any]]:
        if self.eou_trigger <= 0 or self.final == 0:
            return []
        last = max((i for i in range(self.final) if self.tokens[i].type != PUNCTUATION), default=-1)
        if last < 0 or last == self.eou_sent_for:
            return []
        quiet_until = self.tokens[self.final].start_time if self.final < len(self.tokens) else float("inf")
        if not end and (now - self.tokens[last].end_time < self.eou_trigger or quiet_until < now):
            return []
        self.eou_sent_for = last
        at = self._t(self.tokens[last].end_time)
        message = {"message": "EndOfUtterance", "format": FORMAT, "metadata": {"start_time": at, "end_time": at}}
        if self.label is not None:
            message["channel"] = self.label
        return [message]

    def _t(self, call_time: float) -> float:
        return round(max(0.0, call_time - self.origin), 6)

    def _speaker(self, voice: str) -> str:
        if not self.by_speaker:
            return "UU"
        return self.labels.setdefault(voice, f"S{len(self.labels) + 1}")

    def _transcript(self, kind: str, tokens: list[TruthWord], now: float) -> dict[str, Any]:
        results = []
        for w in tokens:
            alt = {"content": w.text, "confidence": w.confidence if kind == "AddTranscript" else 0.0,
                   "language": self.language, "speaker": self._speaker(w.speaker)}
            result: dict[str, Any] = {"type": w.type, "start_time": self._t(w.start_time),
                                      "end_time": self._t(min(w.end_time, now)), "alternatives": [alt]}
            if w.type == PUNCTUATION:
                result["attaches_to"] = w.attaches_to or "previous"
                result["is_eos"] = w.text in _SENTENCE_END if w.is_eos is None else bool(w.is_eos)
            else:
                result["is_eos"] = False
            if self.label is not None:
                result["channel"] = self.label
            results.append(result)
        message = transcript_message(kind, results, self._t(now))
        if self.label is not None:
            message["channel"] = self.label
        return message


def transcript_message(kind: str, results: list[dict[str, Any]], at: float) -> dict[str, Any]:
    """An AddTranscript / AddPartialTranscript of these results: metadata spans them (or `at` when empty) and
    carries their display text (punctuation attached)."""
    text = ""
    for r in results:
        content = r["alternatives"][0]["content"]
        text += content if (r["type"] == PUNCTUATION or not text) else f" {content}"
    start = results[0]["start_time"] if results else at
    finish = max((r["end_time"] for r in results), default=start)
    return {"message": kind, "format": FORMAT,
            "metadata": {"start_time": start, "end_time": finish, "transcript": text}, "results": results}


def _midpoint_of(token: TruthWord, truth: list[TruthWord]) -> float:
    """A word's midpoint; punctuation goes with the word before it (so it never starts a session alone)."""
    if token.type != PUNCTUATION:
        return token.midpoint
    before = [w for w in truth if w.type != PUNCTUATION and w.start_time <= token.start_time]
    return before[-1].midpoint if before else token.midpoint
