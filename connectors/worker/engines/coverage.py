"""No dropped speech: voiced audio that whisper returned no words for is recognised again, on its own.

Why whisper stops early on a clip (faster-whisper's decoding of one 30 s window, `transcribe.py`): when the decoded
tokens end with a single timestamp, the decoder takes it for "no speech after the last timestamp" and seeks to the
end of the window, so everything after the point where it stopped is skipped; and a window whose no-speech
probability passes `no_speech_threshold` (0.6) with a low average log-probability is skipped whole. A chunk is one
such window, so one early end-of-text drops the rest of the chunk (the seam benchmark saw 9 words come back for 30 s
of speech). `condition_on_previous_text` and the hallucination-silence guard play no part in a single window.

The engine therefore checks its words against the track's voiced audio (webrtcvad, voiced.py): every voiced stretch
of at least MIN_GAP_S that no word covers is recognised again alone (with MARGIN_S either side), and the words found
there are added in time order. The second pass goes through the same no-speech rule, so noise the VAD took for
speech normally yields nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from bytewax.speechmatics.connectors.worker.engines.voiced import voiced_spans

Words = list[tuple[str, float, float, float]]
#: Uncovered voiced speech shorter than this is left alone (a breath, a click, a word whisper rightly dropped).
MIN_GAP_S = 2.0
#: A word covers the voiced audio this far either side of its times (word times are approximate).
WORD_REACH_S = 0.5
#: Audio kept either side of an uncovered stretch when it is recognised again.
MARGIN_S = 0.3


def uncovered(voiced: Sequence[tuple[float, float]], words: Sequence[tuple[float, float]],
              min_s: float = MIN_GAP_S) -> list[tuple[float, float]]:
    """Stretches of `voiced` (sorted spans) that no word (start, end), widened by WORD_REACH_S, touches, of at
    least `min_s` of voiced audio each (voiced pieces closer than WORD_REACH_S count as one stretch)."""
    reach = sorted((s - WORD_REACH_S, e + WORD_REACH_S) for s, e in words)
    pieces: list[tuple[float, float]] = []
    for a, b in voiced:
        cursor = a
        for s, e in reach:
            if e <= cursor or s >= b:
                continue
            if s > cursor:
                pieces.append((cursor, s))
            cursor = max(cursor, e)
        if cursor < b:
            pieces.append((cursor, b))
    stretches: list[list[float]] = []
    for a, b in pieces:
        if stretches and a - stretches[-1][1] < WORD_REACH_S and not any(
                s < a and e > stretches[-1][1] for s, e in reach):
            stretches[-1][1] = b
            stretches[-1][2] += b - a
        else:
            stretches.append([a, b, b - a])
    return [(a, b) for a, b, length in stretches if length >= min_s]


def fill_gaps(recognise: Callable[[np.ndarray], Words], audio: np.ndarray, words: Words, rate: int = 16000) -> Words:
    """`words` plus what `recognise` (audio -> words, times from its start) finds in the voiced audio they miss."""
    gaps = uncovered(voiced_spans(audio, rate), [(s, e) for _, s, e, _ in words])
    if not gaps:
        return words
    duration = len(audio) / rate
    extra: Words = []
    for a, b in gaps:
        lo, hi = max(0.0, a - MARGIN_S), min(duration, b + MARGIN_S)
        for text, s, e, prob in recognise(audio[int(lo * rate): int(hi * rate)]):
            start, end = s + lo, e + lo
            if not any(ws < end and we > start for _, ws, we, _ in words):  # never doubles a word already there
                extra.append((text, start, end, prob))
    # whisper's own words keep their order (their times may step back a little); each new word goes before the
    # first of them that starts after it
    extra.sort(key=lambda w: w[1])
    out: Words = []
    for word in words:
        while extra and extra[0][1] < word[1]:
            out.append(extra.pop(0))
        out.append(word)
    return out + extra
