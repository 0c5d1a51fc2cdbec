"""Word times kept inside the voiced audio of their channel (webrtcvad, as flows/vad.py uses it; the worker
does not import the flows package), for the whisper engine.

Whisper's word alignment drifts into silence: on a stereo call it times the caller's first "Hello?" 6.44-7.14 s
while the caller's channel is silent until 7.55 s, so the two channels' captions overlap where the parties do not
talk at once. Each word is moved inside the voiced stretches of its own track: clipped to the ones it overlaps,
or, when it overlaps none, moved onto the nearest one within MAX_SHIFT_S (its length kept where it fits).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import webrtcvad

FRAME_MS = 30
AGGRESSIVENESS = 2
#: Voiced stretches closer than this are one (a word's stop consonant or a breath is not a pause).
BRIDGE_S = 0.3
#: Voiced stretches are widened by this on each side (webrtcvad clips the soft onsets and tails of words).
PAD_S = 0.06
#: A word further than this from any voiced stretch keeps its times (VAD missed quiet speech: trust the recogniser).
MAX_SHIFT_S = 1.5


def voiced_spans(audio: np.ndarray, rate: int = 16000) -> list[tuple[float, float]]:
    """(start, end) seconds of the voiced stretches of float mono audio in [-1, 1]."""
    pcm = (np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767).astype("<i2").tobytes()
    vad = webrtcvad.Vad(AGGRESSIVENESS)
    size = rate * FRAME_MS // 1000 * 2
    flags = [vad.is_speech(pcm[i : i + size], rate) for i in range(0, len(pcm) - size + 1, size)]
    step = FRAME_MS / 1000
    spans: list[list[float]] = []
    for n, voiced in enumerate(flags):
        if not voiced:
            continue
        start = n * step
        if spans and start - spans[-1][1] <= BRIDGE_S:
            spans[-1][1] = start + step
        else:
            spans.append([start, start + step])
    duration = len(audio) / rate
    return [(max(0.0, a - PAD_S), min(duration, b + PAD_S)) for a, b in spans]


def clamp_word(start: float, end: float, spans: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """A word's (start, end) moved inside `spans` (sorted, disjoint), by the module's rule."""
    touching = [(a, b) for a, b in spans if a < end and b > start]
    if touching:
        return max(start, touching[0][0]), min(end, touching[-1][1])
    if not spans:
        return start, end
    mid = (start + end) / 2
    a, b = min(spans, key=lambda s: min(abs(s[0] - mid), abs(s[1] - mid)))
    if min(abs(a - mid), abs(b - mid)) > MAX_SHIFT_S:
        return start, end
    length = end - start
    if a >= end:  # the stretch comes after the word: the word starts where the voice does
        return a, min(b, a + length)
    return max(a, b - length), b  # the stretch ends before the word: the word ends where the voice does


def clamp_words(words: list[tuple[str, float, float, float]], audio: np.ndarray,
                rate: int = 16000) -> list[tuple[str, float, float, float]]:
    """Whisper's (text, start, end, probability) words with times inside their track's voiced audio."""
    spans = voiced_spans(audio, rate)
    out = []
    for text, start, end, prob in words:
        lo, hi = clamp_word(start, end, spans)
        out.append((text, lo, hi, prob))
    return out
