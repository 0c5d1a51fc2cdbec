"""The whisper engine, streaming: a rolling window re-decoded about every second, words finalised by agreement.

Whisper decodes whole windows, not streams, so real-time words come from re-decoding (the LocalAgreement policy of
Machacek et al., "Turning Whisper into Real-Time Transcription System", 2023):
- the window runs from the end of the last final word to the audio heard so far (at most WINDOW_SECONDS);
- every STEP_SECONDS of new audio the window is decoded again; the words past the last final are a partial;
- a word is final once two consecutive decodes agree on it and on every word before it (same text, in order), or
  once its end lies `max_delay` behind the audio heard (then the latest decode's word stands);
- at the end of the stream the last decode's words are final.
The agreement rule (`Agreement`) is pure and tested on its own; `WhisperStream` runs faster-whisper (Whisper base,
int8, beam 1) in a thread with 2 CPU threads, one decode at a time per model. Audio is resampled to 16 kHz.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bytewax.speechmatics.connectors.worker.engines.whisper import (
    WhisperConfig,
    resolve_model,
    split_word,
    word_confidence,
)
from bytewax.speechmatics.connectors.worker.realtime_reference import transcript_message

log = logging.getLogger(__name__)

RATE = 16000
STEP_SECONDS = 1.0
WINDOW_SECONDS = 20.0
THREADS = 2


@dataclass(frozen=True, slots=True)
class Word:
    text: str  # as Whisper wrote it, punctuation attached
    start: float  # session seconds
    end: float
    probability: float = 1.0

    @property
    def key(self) -> str:
        return split_word(self.text)[1].lower()


class Agreement:
    """LocalAgreement-2 over successive hypotheses of the words after the last final one."""

    def __init__(self, max_delay: float) -> None:
        self.max_delay = max_delay
        self.previous: list[Word] = []
        self.final_end = 0.0  # session time up to which words are final

    def update(self, hypothesis: list[Word], heard: float, end: bool = False) -> tuple[list[Word], list[Word]]:
        """(newly final words, the partial after them) from the latest decode of the window."""
        current = [w for w in hypothesis if (w.start + w.end) / 2 >= self.final_end]  # not a final one again
        if end:
            final, partial = current, []
        else:
            agreed = 0
            while (agreed < min(len(current), len(self.previous))
                   and current[agreed].key == self.previous[agreed].key):
                agreed += 1
            while agreed < len(current) and current[agreed].end <= heard - self.max_delay:
                agreed += 1  # waited long enough: the latest decode stands
            final, partial = current[:agreed], current[agreed:]
        if final:
            self.final_end = max(self.final_end, final[-1].end)
        elif not partial and not end:  # nothing said in the window: its settled part needs no second look
            self.final_end = max(self.final_end, heard - self.max_delay)
        self.previous = partial
        return final, partial


def _results(words: list[Word], language: str, final: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for w in words:
        _, word, trailing = split_word(w.text)
        alt = {"content": word, "confidence": word_confidence(w.probability) if final else 0.0,
               "language": language, "speaker": "UU"}
        if word:
            out.append({"type": "word", "start_time": round(w.start, 3), "end_time": round(w.end, 3),
                        "is_eos": False, "alternatives": [alt]})
        for mark in trailing[:1]:
            out.append({"type": "punctuation", "start_time": round(w.end, 3), "end_time": round(w.end, 3),
                        "attaches_to": "previous", "is_eos": mark in ".?!",
                        "alternatives": [{**alt, "content": mark, "confidence": 1.0}]})
    return out


class SharedModel:
    """One in-process WhisperModel for all real-time sessions of a worker, loaded on first use."""

    def __init__(self, config: WhisperConfig) -> None:
        self.config = config
        self._model: Any = None
        self._load = threading.Lock()
        self.decoding = threading.Lock()

    def get(self) -> Any:
        with self._load:
            if self._model is None:
                from faster_whisper import WhisperModel

                self._model = WhisperModel(resolve_model(self.config), device="cpu", compute_type="int8",
                                           cpu_threads=THREADS)
            return self._model

    def decode(self, audio: np.ndarray, language: str) -> list[tuple[str, float, float, float]]:
        model = self.get()
        with self.decoding:
            segments, _ = model.transcribe(audio, language=None if language == "auto" else language, beam_size=1,
                                           word_timestamps=True, condition_on_previous_text=False)
            return [(w.word, w.start, w.end, w.probability) for seg in segments for w in (seg.words or [])]


def to_float16k(samples: bytes, rate: int, encoding: str) -> np.ndarray:
    """Mono float32 at 16 kHz from pcm_s16le or mu-law samples."""
    if encoding == "mulaw":
        codes = np.frombuffer(samples, dtype=np.uint8)
        audio = _MULAW_TABLE[codes]
    else:
        audio = np.frombuffer(samples, dtype="<i2").astype(np.float32) / 32768.0
    if rate != RATE and audio.size:
        positions = np.arange(0, audio.size * RATE / rate) * rate / RATE
        audio = np.interp(positions, np.arange(audio.size), audio).astype(np.float32)
    return audio


def _mulaw_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.uint8)
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = ((mantissa.astype(np.int32) << 3) + 0x84) << exponent
    value = np.where(sign != 0, 0x84 - magnitude, magnitude - 0x84)
    return (value / 32768.0).astype(np.float32)


_MULAW_TABLE = _mulaw_table()


class WhisperStream:
    """One session's transcript from whisper; decodes run in the background and `send` their messages."""

    def __init__(self, model: SharedModel, sample_rate: int, encoding: str,
                 send: Callable[[dict[str, Any]], Awaitable[None]], *, language: str = "en",
                 enable_partials: bool = False, max_delay: float = 4.0) -> None:
        self.model, self.sample_rate, self.encoding, self.send = model, sample_rate, encoding, send
        self.language = "en" if language == "auto" else language
        self.enable_partials = enable_partials
        self.agreement = Agreement(max_delay)
        self.audio = np.zeros(0, dtype=np.float32)
        self.decoded_at = 0.0
        self.task: asyncio.Task | None = None
        self.shown: tuple[str, ...] = ()

    @property
    def heard(self) -> float:
        return self.audio.size / RATE

    def feed(self, samples: bytes) -> list[dict[str, Any]]:
        self.audio = np.concatenate([self.audio, to_float16k(samples, self.sample_rate, self.encoding)])
        if self.heard - self.decoded_at >= STEP_SECONDS and (self.task is None or self.task.done()):
            self.task = asyncio.ensure_future(self._pump())
        return []

    async def _pump(self) -> None:
        """Decode while a step of new audio is waiting (audio faster than decodes: the windows lag, none is skipped)."""
        while self.heard - self.decoded_at >= STEP_SECONDS:
            await self._step(end=False)

    async def finish(self) -> list[dict[str, Any]]:
        if self.task is not None:
            await self.task
        while self.heard - self.agreement.final_end > WINDOW_SECONDS:
            await self._step(end=False)
        await self._step(end=True)
        return []

    async def _step(self, end: bool) -> None:
        start = self.agreement.final_end
        heard = min(self.heard, start + WINDOW_SECONDS)
        self.decoded_at = heard
        window = self.audio[int(start * RATE):int(heard * RATE)]
        if window.size < RATE // 10:
            return
        raw = await asyncio.to_thread(self.model.decode, window, self.language)
        words = [Word(t, s + start, max(e, s) + start, p) for t, s, e, p in raw]
        final, partial = self.agreement.update(words, heard, end)
        shown = tuple(w.text for w in partial)
        if self.enable_partials and (final or shown != self.shown) and (final or partial):
            self.shown = shown
            await self.send(transcript_message("AddPartialTranscript", _results(final + partial, self.language, False),
                                               round(heard, 3)))
        if final:
            await self.send(transcript_message("AddTranscript", _results(final, self.language, True), round(heard, 3)))
